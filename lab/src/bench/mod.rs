//! `lab bench`: wsmesh against HAProxy, against no proxy, and against the
//! chat stacks users would pick instead, side by side in one run on one
//! machine, so every change can be measured again the same way.
//!
//! The path of a run: `proxies` and `peers` start the systems, `scenarios`
//! drive `loadgen` / `chatgen` at them (systems alternating per round),
//! `report` summarises and checks the goals, `chart` draws the SVG charts.
//! Scenario 8 (scale-out) starts a stack per design and size (`scaleout`)
//! and draws its trend as a line chart (`trend`).

pub mod backend;
pub mod chart;
pub mod chatgen;
pub mod h2load;
pub mod haproxy;
pub mod lbconf;
pub mod loadgen;
pub mod net;
pub mod peers;
pub mod proxies;
pub mod report;
pub mod scaleout;
pub mod scenarios;
pub mod sys;
pub mod trend;

use std::path::PathBuf;
use std::time::Instant;

use report::{Goal, Metric, Report};
use scenarios::scale_out::ScaleParams;
use scenarios::{Findings, Params};

/// Why a bench run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting a system failed.
    #[error(transparent)]
    Cluster(#[from] wsmesh_testkit::cluster::ClusterError),
    /// TLS client setup failed.
    #[error(transparent)]
    Tls(#[from] wsmesh_client::tls::TlsError),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    /// Serialising the report failed.
    #[error("report JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The short run.
    pub quick: bool,
    /// Where report.md, report.json and the SVG charts go.
    pub out: PathBuf,
    /// Scenario numbers to run (1–8); empty: all.
    pub only: Vec<u8>,
    /// The command line, for the report.
    pub command: String,
    /// The wsmesh apps of scenarios 5 and 6 in jwt mode, their clients with a token.
    pub auth: bool,
}

fn wants(opts: &BenchOptions, n: u8) -> bool {
    opts.only.is_empty() || opts.only.contains(&n)
}

/// Runs the bench and writes the report; returns it.
pub async fn run(opts: BenchOptions) -> Result<Report, BenchError> {
    let t0 = Instant::now();
    let started = utc_now();
    let nofile = sys::raise_nofile();
    let params = if opts.quick {
        Params::quick()
    } else {
        Params::full()
    };
    std::fs::create_dir_all(&opts.out)?;
    let dir = tempfile::Builder::new().prefix("wsmesh-bench-").tempdir()?;
    let certs = lbconf::gen_certs(&dir.path().join("certs"))?;
    let tls = wsmesh_client::tls::client_config(&certs.ca)?;
    let sources = net::Sources::loopback(8);
    let minter = opts.auth.then(crate::token::Minter::generate);
    let mut f = Findings::default();
    if nofile < 2 * params.tunnels as u64 + 100 {
        f.notes.push(format!(
            "open-file limit {nofile} is below 2 × {} tunnels: scenario 4 may fail to open them all",
            params.tunnels
        ));
    }

    if [1, 2, 3, 4, 7].into_iter().any(|n| wants(&opts, n)) {
        let with_haproxy = which("haproxy");
        if !with_haproxy {
            f.notes
                .push("haproxy not installed: HAProxy left out (make bench installs it)".into());
        }
        let mut p = proxies::start(&certs, tls.clone(), dir.path(), with_haproxy).await?;
        tracing::info!("proxy systems up");
        if wants(&opts, 1) {
            scenarios::proxy::keepalive(&p, &params, sources.clone(), &mut f).await;
        }
        if wants(&opts, 2) {
            scenarios::proxy::handshakes(&p, &params, sources.clone(), &mut f).await;
        }
        if wants(&opts, 3) {
            scenarios::proxy::ws_echo(&p, &params, sources.clone(), &mut f).await;
        }
        if wants(&opts, 7) {
            if which("h2load") {
                scenarios::proxy::h2(&p, &params, &mut f).await;
            } else {
                f.notes.push(
                    "h2load not installed: scenario 7 left out (make bench installs nghttp2-client)".into(),
                );
            }
        }
        // Last: it restarts the proxies.
        if wants(&opts, 4) {
            scenarios::proxy::tunnel_memory(&mut p, &params, sources.clone(), &mut f).await;
        }
    }
    if wants(&opts, 5) || wants(&opts, 6) {
        let max_conns = (params.scale_clients as u64 * 2).max(10_000);
        let c = peers::start(&certs, tls.clone(), dir.path(), max_conns, minter.as_ref()).await?;
        tracing::info!("chat systems up");
        if wants(&opts, 5) {
            scenarios::chat::fan_out(&c, &params, sources.clone(), &mut f).await;
        }
        if wants(&opts, 6) {
            scenarios::chat::scale(&c, &params, sources.clone(), &mut f).await;
        }
    }

    let scale = if opts.quick {
        ScaleParams::quick()
    } else {
        ScaleParams::full()
    };
    if wants(&opts, 8) {
        scenarios::scale_out::run(&scale, &certs, tls.clone(), sources.clone(), &mut f).await;
    }

    let mut goals = goals(&f.metrics);
    goals.extend(scenarios::scale_out::goals(&f.metrics));
    let mut parameters = params.describe();
    parameters.push(scale.describe());
    let report = Report {
        mode: if opts.quick { "quick" } else { "full" }.into(),
        command: opts.command.clone(),
        started,
        seconds: t0.elapsed().as_secs_f64(),
        machine: sys::machine(nofile),
        rounds: params.rounds,
        parameters,
        metrics: f.metrics,
        goals,
        notes: f.notes,
    };
    let mut charts = chart::write_all(&report.metrics, &opts.out)?;
    charts.extend(scenarios::scale_out::write_chart(&report.metrics, &opts.out)?);
    std::fs::write(opts.out.join("report.md"), report.markdown(&charts))?;
    std::fs::write(
        opts.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

/// Whether `program` is on PATH.
fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Current time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Checks the performance goals (lb against HAProxy and direct, chat
/// fan-out and latency against the peers) against the medians. `find`
/// takes the first metric whose scenario contains the text: the 13-byte
/// scenario 1 is recorded before the 3 KB one.
pub fn goals(metrics: &[Metric]) -> Vec<Goal> {
    let find = |scenario_part: &str, name: &str| {
        metrics
            .iter()
            .find(|m| m.scenario.contains(scenario_part) && m.name == name)
    };
    // ratio = reference ÷ peer; `at_least` says which way the goal points.
    let check = |goal: &str, m: Option<&Metric>, peer: &str, at_least: Option<f64>, at_most: Option<f64>| {
        let Some(m) = m else {
            return Goal {
                goal: goal.into(),
                met: None,
                detail: "not measured".into(),
            };
        };
        match (m.of(&m.reference), m.of(peer), m.ratio(peer)) {
            (Some(r), Some(p), Some(ratio)) => {
                let met = at_least.is_none_or(|x| ratio >= x) && at_most.is_none_or(|x| ratio <= x);
                Goal {
                    goal: goal.into(),
                    met: Some(met),
                    detail: format!(
                        "{} {}: {} {} vs {} {} (ratio {})",
                        m.scenario,
                        m.name,
                        m.reference,
                        report::fmt_num(r.median),
                        peer,
                        report::fmt_num(p.median),
                        report::fmt_num(ratio)
                    ),
                }
            }
            _ => Goal {
                goal: goal.into(),
                met: None,
                detail: format!("no {peer} figure"),
            },
        }
    };
    use scenarios::proxy::{CPU_PER_CONNECTION, CPU_PER_REQUEST, SCENARIO_1, SCENARIO_1_PAGE};
    // An absolute bound on the reference system's own median.
    let bound = |goal: &str, m: Option<&Metric>, at_most: f64| {
        let Some(m) = m else {
            return Goal {
                goal: goal.into(),
                met: None,
                detail: "not measured".into(),
            };
        };
        match m.of(&m.reference) {
            Some(r) => Goal {
                goal: goal.into(),
                met: Some(r.median <= at_most),
                detail: format!(
                    "{} {}: {} {}",
                    m.scenario,
                    m.name,
                    m.reference,
                    report::fmt_num(r.median)
                ),
            },
            None => Goal {
                goal: goal.into(),
                met: None,
                detail: format!("no {} figure", m.reference),
            },
        }
    };
    vec![
        check(
            "lb ≥ 1.2 × HAProxy on keep-alive requests/s",
            find(SCENARIO_1, "requests/s"),
            "haproxy",
            Some(1.2),
            None,
        ),
        check(
            "lb ≤ 0.8 × HAProxy on CPU per keep-alive request (13 B)",
            find(SCENARIO_1, CPU_PER_REQUEST),
            "haproxy",
            None,
            Some(0.8),
        ),
        check(
            "lb ≤ 0.8 × HAProxy on CPU per keep-alive request (3 KB)",
            find(SCENARIO_1_PAGE, CPU_PER_REQUEST),
            "haproxy",
            None,
            Some(0.8),
        ),
        check(
            "lb ≤ 0.6 × HAProxy on CPU per full TLS handshake",
            find("2 new", CPU_PER_CONNECTION),
            "haproxy",
            None,
            Some(0.6),
        ),
        check(
            "lb ≥ HAProxy on handshakes/s",
            find("2 new", "connections/s"),
            "haproxy",
            Some(1.0),
            None,
        ),
        check(
            "lb ≤ HAProxy on p99 (keep-alive)",
            find("1 https", "p99 ms"),
            "haproxy",
            None,
            Some(1.0),
        ),
        check(
            "lb ≤ HAProxy on p99 (ws echo, 100 conns)",
            find("3 ws echo, 100 conns", "p99 ms"),
            "haproxy",
            None,
            Some(1.0),
        ),
        check(
            "lb ≤ HAProxy on memory per tunnel",
            find("4 idle", "KiB per tunnel"),
            "haproxy",
            None,
            Some(1.0),
        ),
        bound(
            "lb ≤ 6 KiB per idle wss tunnel",
            find("4 idle", "KiB per tunnel"),
            6.0,
        ),
        check(
            "lb within 20 % of direct on keep-alive requests/s",
            find("1 https", "requests/s"),
            "direct",
            Some(0.8),
            None,
        ),
        check(
            "chat fan-out ≥ 20× seed-python (saturation)",
            find("saturation", "delivered msg/s"),
            "seed-python",
            Some(20.0),
            None,
        ),
        check(
            "chat fan-out ≥ 2× node (saturation)",
            find("saturation", "delivered msg/s"),
            "node",
            Some(2.0),
            None,
        ),
        check(
            "chat p99 < seed-python at the fixed rate",
            find("offered", "p99 ms"),
            "seed-python",
            None,
            Some(1.0),
        ),
        check(
            "chat p99 < node at the fixed rate",
            find("offered", "p99 ms"),
            "node",
            None,
            Some(1.0),
        ),
    ]
}
