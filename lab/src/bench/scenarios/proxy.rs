//! Scenarios 1–4 and 7: the lb against HAProxy and against no proxy at all,
//! on the fixed fast backend. 1: keep-alive requests/s and latency, with a
//! 13-byte and a 3 KB body; 2: new TLS connections per second; 3: WebSocket
//! echo at several connection counts; 4: memory per idle tunnel; 7: HTTP/2
//! keep-alive with `h2load`. 1–3 and 7 also record each proxy's CPU time
//! per operation, from process accounting.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Findings, Params};
use crate::bench::backend::PAGE_PATH;
use crate::bench::h2load;
use crate::bench::loadgen::{self, Budget, Run};
use crate::bench::net::{Sources, Target};
use crate::bench::proxies::{ProxySystems, DIRECT, LB};
use crate::bench::sys::{cpu_micros, rss_bytes};

/// Systems of scenarios 1–3, in run order.
fn systems(p: &ProxySystems) -> Vec<String> {
    p.targets.iter().map(|(s, _)| s.clone()).collect()
}

/// Every system once for warm-up, then `rounds` alternating rounds.
fn schedule(p: &ProxySystems, params: &Params) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = systems(p).into_iter().map(|s| (s, true)).collect();
    for _ in 0..params.rounds {
        out.extend(systems(p).into_iter().map(|s| (s, false)));
    }
    out
}

fn budget(params: &Params, warmup: bool) -> Budget {
    Budget {
        duration: if warmup { params.warmup } else { params.duration },
        max_ops: params.max_ops,
    }
}

/// What a throughput scenario records of each run past warm-up.
struct Recorded<'a> {
    scenario: &'a str,
    /// Name of the per-second rate (higher is better).
    metric: &'a str,
    /// Name of the proxy's CPU time per operation (lower is better).
    cpu: &'a str,
    /// Latency quantiles: metric name, quantile.
    quantiles: &'a [(&'a str, f64)],
}

/// One throughput scenario: runs `load` on every system of the schedule, logs
/// each run, and records the errors, the rate, the latency quantiles and
/// (for the proxies) the CPU time per operation of the runs past warm-up.
async fn throughput<L, Fut>(p: &ProxySystems, params: &Params, f: &mut Findings, rec: Recorded<'_>, load: L)
where
    L: Fn(Vec<Target>, Budget) -> Fut,
    Fut: Future<Output = Run>,
{
    for (system, warmup) in schedule(p, params) {
        let pid = p.pid(&system);
        let cpu_before = pid.and_then(cpu_micros);
        let run = load(p.targets(&system), budget(params, warmup)).await;
        let cpu = match (pid.and_then(cpu_micros), cpu_before) {
            (Some(after), Some(before)) if run.ok > 0 => {
                Some(after.saturating_sub(before) as f64 / run.ok as f64)
            }
            _ => None,
        };
        tracing::info!(
            scenario = rec.scenario,
            system,
            warmup,
            rate = run.rate(),
            unit = rec.metric,
            p99 = run.ms(0.99),
            cpu_us = cpu,
            errors = run.errors,
            "run"
        );
        if warmup {
            continue;
        }
        f.errors(rec.scenario, &system, run.errors, run.first_error.as_ref());
        f.metric(rec.scenario, rec.metric, true, LB)
            .push(&system, run.rate());
        for (name, q) in rec.quantiles {
            f.metric(rec.scenario, name, false, LB).push(&system, run.ms(*q));
        }
        if let Some(cpu) = cpu {
            f.metric(rec.scenario, rec.cpu, false, LB).push(&system, cpu);
        }
    }
}

/// Scenario 1, once with the 13-byte body and once with the 3 KB page.
pub async fn keepalive(p: &ProxySystems, params: &Params, sources: Arc<Sources>, f: &mut Findings) {
    // The 13-byte scenario runs first: goals that look for "1 https" find it.
    for (scenario, path) in [(SCENARIO_1, "/bench/small"), (SCENARIO_1_PAGE, PAGE_PATH)] {
        let conns = params.keepalive_conns;
        let load = |targets: Vec<Target>, budget| {
            let sources = sources.clone();
            async move { loadgen::http_keepalive(&targets, sources, conns, path, budget).await }
        };
        let quantiles = [("p50 ms", 0.5), ("p99 ms", 0.99)];
        let rec = Recorded {
            scenario,
            metric: "requests/s",
            cpu: CPU_PER_REQUEST,
            quantiles: &quantiles,
        };
        throughput(p, params, f, rec, load).await;
    }
}

/// Scenario 1 with the 13-byte body.
pub const SCENARIO_1: &str = "1 https keep-alive";
/// Scenario 1 with the 3 KB body.
pub const SCENARIO_1_PAGE: &str = "1 https keep-alive, 3 KB body";
/// Scenario 7.
pub const SCENARIO_7: &str = "7 https/2 keep-alive (h2load)";
/// The proxy's CPU time per request, µs.
pub const CPU_PER_REQUEST: &str = "CPU µs/request";
/// The proxy's CPU time per new TLS connection (handshake + one request), µs.
pub const CPU_PER_CONNECTION: &str = "CPU µs/connection";

/// Scenario 2.
pub async fn handshakes(p: &ProxySystems, params: &Params, sources: Arc<Sources>, f: &mut Findings) {
    let scenario = "2 new TLS connections";
    let concurrency = params.handshake_concurrency;
    let load = |targets: Vec<Target>, budget| {
        let sources = sources.clone();
        async move { loadgen::http_new_conns(&targets, sources, concurrency, budget).await }
    };
    // Direct is plain TCP to the backend: no TLS handshake, the floor.
    let rec = Recorded {
        scenario,
        metric: "connections/s",
        cpu: CPU_PER_CONNECTION,
        quantiles: &[("p99 ms", 0.99)],
    };
    throughput(p, params, f, rec, load).await;
}

/// Scenario 3, for each connection count.
pub async fn ws_echo(p: &ProxySystems, params: &Params, sources: Arc<Sources>, f: &mut Findings) {
    for &conns in &params.echo_conns {
        let scenario = format!("3 ws echo, {conns} conns");
        let scenario = scenario.as_str();
        let load = |targets: Vec<Target>, budget| {
            let sources = sources.clone();
            async move { loadgen::ws_echo(&targets, sources, conns, budget).await }
        };
        let rec = Recorded {
            scenario,
            metric: "messages/s",
            cpu: "CPU µs/message",
            quantiles: &[("p99 ms", 0.99)],
        };
        throughput(p, params, f, rec, load).await;
    }
}

/// Scenario 7: `h2load` over HTTP/2 (h2 by ALPN on the TLS frontends) to
/// the lb and HAProxy, `h2_conns` connections with `h2_streams` requests in
/// flight on each, GET of the 13-byte body. Direct is left out: the
/// backends speak HTTP/1 only.
pub async fn h2(p: &ProxySystems, params: &Params, f: &mut Findings) {
    let proxies: Vec<String> = systems(p).into_iter().filter(|s| s != DIRECT).collect();
    let mut order: Vec<(String, bool)> = proxies.iter().map(|s| (s.clone(), true)).collect();
    for _ in 0..params.rounds {
        order.extend(proxies.iter().map(|s| (s.clone(), false)));
    }
    for (system, warmup) in order {
        let (Some(pid), Some(target)) = (p.pid(&system), p.targets(&system).first().cloned()) else {
            continue;
        };
        let duration = if warmup { params.warmup } else { params.duration };
        let before = cpu_micros(pid);
        let run = h2load::run(
            target.addr,
            "/bench/small",
            params.h2_conns,
            params.h2_streams,
            duration,
        )
        .await;
        let after = cpu_micros(pid);
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                f.notes.push(format!("{SCENARIO_7}, {system}: {e}"));
                continue;
            }
        };
        let cpu = match (before, after) {
            (Some(b), Some(a)) if run.succeeded > 0 => {
                Some(a.saturating_sub(b) as f64 / run.succeeded as f64)
            }
            _ => None,
        };
        tracing::info!(
            scenario = SCENARIO_7,
            system,
            warmup,
            rate = run.rate,
            cpu_us = cpu,
            failed = run.failed,
            "run"
        );
        if warmup {
            continue;
        }
        f.errors(SCENARIO_7, &system, run.failed, None);
        f.metric(SCENARIO_7, "requests/s", true, LB)
            .push(&system, run.rate);
        f.metric(SCENARIO_7, "mean ms", false, LB)
            .push(&system, run.mean_ms);
        if let Some(cpu) = cpu {
            f.metric(SCENARIO_7, CPU_PER_REQUEST, false, LB)
                .push(&system, cpu);
        }
    }
}

/// Scenario 4: for the lb and HAProxy, RSS of a freshly restarted proxy
/// before and with `tunnels` idle tunnels open (a process that served the
/// earlier scenarios keeps pooled memory that would hide the cost).
pub async fn tunnel_memory(p: &mut ProxySystems, params: &Params, sources: Arc<Sources>, f: &mut Findings) {
    let scenario = "4 idle ws tunnels";
    let proxies: Vec<String> = systems(p).into_iter().filter(|s| s != DIRECT).collect();
    for _ in 0..params.tunnel_rounds {
        for system in &proxies {
            if let Err(e) = p.restart(system).await {
                f.notes.push(format!("{scenario}, {system}: restart failed: {e}"));
                continue;
            }
            let (Some(pid), Some(target)) = (p.pid(system), p.targets(system).first().cloned()) else {
                continue;
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(before) = rss_bytes(pid) else { continue };
            let (open, failed) = loadgen::idle_tunnels(
                &target,
                sources.clone(),
                params.tunnels,
                64,
                Duration::from_secs(120),
            )
            .await;
            // Let the proxy settle its buffers before reading.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let after = rss_bytes(pid).unwrap_or(before);
            let n = open.len();
            tracing::info!(scenario, system, n, failed, before, after, "tunnels");
            f.errors(
                scenario,
                system,
                failed,
                Some(&format!("{failed} of {} tunnels failed to open", params.tunnels)),
            );
            if n > 0 {
                let per = after.saturating_sub(before) as f64 / n as f64 / 1024.0;
                f.metric(scenario, "KiB per tunnel", false, LB).push(system, per);
                f.metric(scenario, "tunnels open", true, LB)
                    .push(system, n as f64);
            }
            drop(open);
            // Let the closes go through before the next system.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
