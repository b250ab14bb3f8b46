//! `h2load` (nghttp2) as the HTTP/2 load generator of scenario 7: it speaks
//! h2 over TLS by ALPN, multiplexes many streams per connection and is the
//! client HTTP/2 benchmarks usually quote, so the lb and HAProxy are
//! measured by a program neither of them wrote.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::Command;

/// What one `h2load` run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct H2Run {
    /// Requests that got a response.
    pub succeeded: u64,
    /// Requests that failed, errored or timed out.
    pub failed: u64,
    /// Requests per second over the measured duration.
    pub rate: f64,
    /// Mean time per request, milliseconds.
    pub mean_ms: f64,
}

/// Why a run gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum H2loadError {
    /// The program could not be started (not installed: `make bench` installs nghttp2-client).
    #[error("h2load: {0}")]
    Spawn(#[from] std::io::Error),
    /// It ran longer than its duration allows.
    #[error("h2load did not finish in time")]
    Timeout,
    /// Its output had no summary.
    #[error("h2load output not understood (exit {status}): {tail}")]
    Output {
        /// Exit status.
        status: String,
        /// The end of its output, for the note.
        tail: String,
    },
}

/// `h2load -c conns -m streams -t 1 -D secs https://addr{path}`.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    conns: usize,
    streams: usize,
    duration: Duration,
) -> Result<H2Run, H2loadError> {
    let secs = duration.as_secs().max(1);
    let url = format!("https://{addr}{path}");
    let child = Command::new("h2load")
        .args(["-t", "1", "-c", &conns.to_string(), "-m", &streams.to_string()])
        .args(["-D", &secs.to_string(), &url])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(secs + 30), child)
        .await
        .map_err(|_| H2loadError::Timeout)??;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).ok_or_else(|| H2loadError::Output {
        status: out.status.to_string(),
        tail: text.lines().rev().take(3).collect::<Vec<_>>().join(" | "),
    })
}

/// Reads the summary lines `finished in …, N req/s`, `requests: … N
/// succeeded, N failed, N errored, N timeout` and `time for request: min
/// max mean …`.
pub fn parse(text: &str) -> Option<H2Run> {
    let line = |prefix: &str| text.lines().map(str::trim).find(|l| l.starts_with(prefix));
    let rate = line("finished in")?
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" req/s"))?
        .trim()
        .parse()
        .ok()?;
    let requests = line("requests:")?;
    let count = |what: &str| -> Option<u64> {
        requests
            .split(',')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(what))
            .and_then(|n| n.trim().rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    };
    let succeeded = count("succeeded")?;
    let failed = count("failed")? + count("errored")? + count("timeout")?;
    let mean = line("time for request:")?
        .trim_start_matches("time for request:")
        .split_whitespace()
        .nth(2)?;
    Some(H2Run {
        succeeded,
        failed,
        rate,
        mean_ms: duration_ms(mean)?,
    })
}

/// `624us`, `15.20ms` or `1.2s` in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    n.parse::<f64>().ok().map(|v| v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_read() {
        let text = "\
finished in 4.01s, 10341.67 req/s, 30.56MB/s
requests: 31025 total, 31025 started, 31025 done, 31020 succeeded, 3 failed, 2 errored, 0 timeout
status codes: 31023 2xx, 0 3xx, 0 4xx, 0 5xx
                     min         max         mean         sd        +/- sd
time for request:      624us    169.68ms     15.20ms     11.82ms    91.56%
";
        let run = parse(text).unwrap();
        assert_eq!(
            run,
            H2Run {
                succeeded: 31020,
                failed: 5,
                rate: 10341.67,
                mean_ms: 15.2
            }
        );
        assert_eq!(duration_ms("624us"), Some(0.624));
        assert_eq!(duration_ms("1.5s"), Some(1500.0));
        assert!(parse("connect failed").is_none());
    }
}
