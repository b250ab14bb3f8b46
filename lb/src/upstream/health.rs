//! Active HTTP health checks with HAProxy's meaning: every `interval` (or
//! `fastinter` while a server is changing state, `downinter` while it is
//! down) a `GET path` whose status must equal `expect_status`; results feed
//! the server's rise/fall counter. Checks are spread with jitter so servers
//! are not all probed at the same instant. A server in maintenance is not
//! checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::check_result::{CheckResult, CheckStatus};
use super::server::{AdminState, Server};
use crate::config::Check;

/// Largest response head read from a checked server.
const MAX_HEAD: usize = 4096;

/// Starts checking `server`; abort the handle to stop.
pub fn spawn(server: Arc<Server>, check: Check) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Spread the first checks over one interval.
        let first = rand::rng().random_range(0.0..1.0) * check.interval.as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(first)).await;
        loop {
            if server.admin_state() != AdminState::Maint {
                let result = probe(server.addr, &check).await;
                server.record(result);
            }
            tokio::time::sleep(jittered(next_interval(&server, &check))).await;
        }
    })
}

/// `interval`, `fastinter` or `downinter`, depending on where the server stands.
fn next_interval(server: &Server, check: &Check) -> Duration {
    let view = server.view();
    let max = check.rise + check.fall - 1;
    match view.health {
        0 => check.down_interval(),
        h if h == max => check.interval,
        _ => check.fast_interval(),
    }
}

/// Up to 10 % earlier, so checks that started together drift apart.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..=1.0))
}

/// One check against `addr`.
pub async fn probe(addr: SocketAddr, check: &Check) -> CheckResult {
    let budget = check.check_timeout();
    let result = |status, code, detail: String| CheckResult { status, code, detail };
    let started = tokio::time::Instant::now();
    let mut stream = match tokio::time::timeout(budget, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => {
            return result(
                CheckStatus::L4Tout,
                None,
                format!("no connection within {budget:?}"),
            )
        }
        Ok(Err(e)) => return result(CheckStatus::L4Con, None, e.to_string()),
        Ok(Ok(s)) => s,
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wsmesh-lb-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    let remaining = budget.saturating_sub(started.elapsed());
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(head)
    };
    let head = match tokio::time::timeout(remaining, exchange).await {
        Err(_) => {
            return result(
                CheckStatus::L7Tout,
                None,
                format!("no response within {budget:?}"),
            )
        }
        Ok(Err(e)) => return result(CheckStatus::L7Rsp, None, e.to_string()),
        Ok(Ok(h)) => h,
    };
    match status_code(&head) {
        None => result(CheckStatus::L7Rsp, None, "not an HTTP response".into()),
        Some(code) if code == check.expect_status => result(CheckStatus::L7Ok, Some(code), String::new()),
        Some(404) if check.disable_on_404 => result(
            CheckStatus::L7OkCond,
            Some(404),
            "404: drain (disable_on_404)".into(),
        ),
        Some(code) => result(
            CheckStatus::L7Sts,
            Some(code),
            format!("expected {}", check.expect_status),
        ),
    }
}

/// The status code of an `HTTP/1.x NNN …` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn interval_is_fastinter_while_changing_and_downinter_while_down() {
        let check = Check {
            interval: Duration::from_secs(2),
            fastinter: Some(Duration::from_millis(500)),
            downinter: Some(Duration::from_secs(5)),
            ..Check::default()
        };
        let cfg: crate::config::Server = toml::from_str("name = \"s\"\naddr = \"127.0.0.1:1\"\n").unwrap();
        let shared = crate::upstream::ServerShared::new(check.rise, 1);
        let server = Server::new(&cfg, "127.0.0.1:1".parse().unwrap(), Some(&check), shared);
        let ok = || CheckResult {
            status: CheckStatus::L7Ok,
            code: Some(200),
            detail: String::new(),
        };
        let bad = || CheckResult {
            status: CheckStatus::L4Con,
            code: None,
            detail: String::new(),
        };
        // Started up at health = rise: not yet steady.
        assert_eq!(next_interval(&server, &check), check.fast_interval());
        server.record(ok());
        assert_eq!(next_interval(&server, &check), check.interval, "fully up");
        server.record(bad());
        assert_eq!(
            next_interval(&server, &check),
            check.fast_interval(),
            "going down"
        );
        for _ in 0..2 {
            server.record(bad());
        }
        assert_eq!(next_interval(&server, &check), check.down_interval(), "down");
    }

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(status_code(b"HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"HTTP/1.0 200\r\n"), Some(200));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    async fn answer_once(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn expected_status_is_l7ok_and_other_is_l7sts() {
        let check = Check::default();
        let ok = probe(
            answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await,
            &check,
        )
        .await;
        assert_eq!(ok.status, CheckStatus::L7Ok);
        let bad = probe(answer_once(b"HTTP/1.1 503 Busy\r\n\r\n").await, &check).await;
        assert_eq!((bad.status, bad.code), (CheckStatus::L7Sts, Some(503)));
        let not_found = b"HTTP/1.1 404 Not Found\r\n\r\n";
        let plain = probe(answer_once(not_found).await, &check).await;
        assert_eq!(plain.status, CheckStatus::L7Sts, "404 is a failure by default");
        let soft = Check {
            disable_on_404: true,
            ..Check::default()
        };
        let cond = probe(answer_once(not_found).await, &soft).await;
        assert_eq!(cond.status, CheckStatus::L7OkCond);
    }

    #[tokio::test]
    async fn refused_connect_is_l4con() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert_eq!(probe(addr, &Check::default()).await.status, CheckStatus::L4Con);
    }
}
