//! Scenarios 5 and 6: chat fan-out (wsmesh vs seed-python vs node, all
//! behind the same lb, at a fixed offered rate and at saturation) and
//! connection scale (idle wsmesh clients through the lb until a time or
//! memory budget; memory per connection of the lb and the apps).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Findings, Params};
use crate::bench::chatgen::{self, FanOut, Offer};
use crate::bench::net::Sources;
use crate::bench::peers::{ChatSystems, WSMESH};
use crate::bench::sys::rss_bytes;

/// Scenario 5, both offers.
pub async fn fan_out(c: &ChatSystems, params: &Params, sources: Arc<Sources>, f: &mut Findings) {
    let offers = [
        (
            format!("5 chat fan-out, {} msg/s offered", params.offered_rate),
            Offer::Rate(params.offered_rate),
        ),
        (
            "5 chat fan-out, saturation".to_string(),
            Offer::Saturate(params.window),
        ),
    ];
    let mut run_no = 0u32;
    for (scenario, offer) in &offers {
        for round in 0..=params.rounds {
            let warmup = round == 0;
            for (system, target) in &c.targets {
                run_no += 1;
                let shape = FanOut {
                    rooms: params.rooms,
                    per_room: params.per_room,
                    senders: params.senders,
                    offer: *offer,
                    duration: if warmup {
                        params.warmup
                    } else {
                        params.chat_duration
                    },
                    max_msgs: params.max_ops,
                    grace: params.grace,
                };
                // A new room set per run, so wsmesh's history of an earlier run is not replayed.
                let tag = format!("b{run_no}");
                let run = chatgen::fan_out(target, sources.clone(), shape, &tag).await;
                tracing::info!(
                    scenario = scenario.as_str(),
                    system,
                    warmup,
                    sent = run.sent,
                    delivered = run.delivered,
                    expected = run.expected,
                    rate = run.rate(),
                    p99 = run.ms(0.99),
                    errors = run.errors,
                    "run"
                );
                if warmup {
                    continue;
                }
                f.errors(scenario, system, run.errors, run.first_error.as_ref());
                if run.delivered < run.expected {
                    f.notes.push(format!(
                        "{scenario}, {system}: {} of {} deliveries arrived within the window + {:?}",
                        run.delivered, run.expected, params.grace
                    ));
                }
                f.metric(scenario, "delivered msg/s", true, WSMESH)
                    .push(system, run.rate());
                for (name, q) in [("p50 ms", 0.5), ("p99 ms", 0.99), ("p99.9 ms", 0.999)] {
                    f.metric(scenario, name, false, WSMESH).push(system, run.ms(q));
                }
                // Let a slow system finish what it still had queued.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn rss_sum(c: &ChatSystems, names: &[&str]) -> u64 {
    names.iter().filter_map(|n| c.pid(n).and_then(rss_bytes)).sum()
}

/// Scenario 6.
pub async fn scale(c: &ChatSystems, params: &Params, sources: Arc<Sources>, f: &mut Findings) {
    let scenario = "6 idle chat clients";
    let Some((_, target)) = c.targets.iter().find(|(s, _)| s == WSMESH) else {
        return;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lb_before = rss_sum(c, &["lb"]);
    let apps_before = rss_sum(c, &["app1", "app2"]);
    let started = Instant::now();
    let mut open = Vec::new();
    let mut failed = 0;
    let batch = 500;
    let mut stop = "client count reached";
    while open.len() < params.scale_clients {
        let left = params.scale_time.saturating_sub(started.elapsed());
        if left.is_zero() {
            stop = "time budget";
            break;
        }
        if rss_sum(c, &["lb", "app1", "app2"]) > params.scale_memory {
            stop = "memory budget";
            break;
        }
        let n = batch.min(params.scale_clients - open.len());
        let (mut more, bad) = chatgen::idle_clients(target, sources.clone(), n, 64, left).await;
        failed += bad;
        open.append(&mut more);
        if bad > n as u64 / 2 {
            stop = "most connects failing";
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = open.len();
    let lb_after = rss_sum(c, &["lb"]);
    let apps_after = rss_sum(c, &["app1", "app2"]);
    tracing::info!(
        scenario,
        n,
        failed,
        stop,
        lb_before,
        lb_after,
        apps_before,
        apps_after,
        "scale"
    );
    f.errors(scenario, WSMESH, failed, Some(&"connect failures".to_string()));
    f.notes.push(format!(
        "{scenario}: {n} clients open in {:.1} s, stopped by: {stop}",
        started.elapsed().as_secs_f64()
    ));
    if n > 0 {
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64 / 1024.0;
        f.metric(scenario, "clients open", true, WSMESH)
            .push(WSMESH, n as f64);
        f.metric(scenario, "lb KiB per client", false, WSMESH)
            .push(WSMESH, per(lb_after, lb_before));
        f.metric(scenario, "apps KiB per client", false, WSMESH)
            .push(WSMESH, per(apps_after, apps_before));
    }
    drop(open);
}
