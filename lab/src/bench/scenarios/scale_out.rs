//! Scenario 8: scale-out. The same offered chat load (R rooms × M members,
//! S messages/s) on 2, 4 and 8 instances of each design (see
//! `bench::scaleout`), and what it costs: CPU time (user + system) of every
//! server process — apps, subscribers, node instances, every Redis node —
//! over the sending window, per delivery; the lb's the same, apart; and
//! delivered ÷ offered, which must be about 1 for the point to count. The
//! machine has two cores shared with the load generator, so this compares
//! CPU per delivery, not throughput: it shows whether adding instances adds
//! work per message.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Findings;
use crate::bench::chatgen::{self, FanOut, FanOutRun, Offer, Phase};
use crate::bench::lbconf::Certs;
use crate::bench::net::Sources;
use crate::bench::report::{fmt_num, Goal, Metric};
use crate::bench::scaleout::{Design, Role, Stack};
use crate::bench::sys::cpu_micros;
use crate::bench::trend::{self, Labels, Series};

/// The system the ratio column compares with.
const REFERENCE: Design = Design::Hash;
/// Server CPU per delivery: the scenario's point.
const CPU: &str = "server CPU µs per delivery";
/// The lb's CPU per delivery.
const LB_CPU: &str = "lb CPU µs per delivery";
/// Chats the subscribers posted to their apps ÷ chats sent: how many apps
/// take each chat in (wsmesh only).
const FORWARDS: &str = "chats forwarded to apps per chat sent";
/// Deliveries ÷ (offered messages × members per room).
const DELIVERED: &str = "delivered ÷ offered";
/// Delivered ÷ offered outside this range: the point does not count.
const COMPLETE: std::ops::RangeInclusive<f64> = 0.95..=1.05;
/// Largest growth of CPU per delivery from the fewest to the most instances
/// that still counts as flat.
const FLAT: f64 = 1.25;
/// The chart's file name in the report directory.
pub const CHART: &str = "scale-out-cpu-per-delivery.svg";

/// Sizes of scenario 8.
#[derive(Debug, Clone)]
pub struct ScaleParams {
    /// Instance counts, each run with every design.
    pub instances: Vec<usize>,
    /// Rooms (at least 4 × the most instances, so hashing spreads them).
    pub rooms: usize,
    /// Members per room (at least the most instances, so fewest-sessions
    /// balancing puts a member of every room on every app).
    pub per_room: usize,
    /// Senders, spread over the rooms.
    pub senders: usize,
    /// Offered messages/s over all senders.
    pub rate: f64,
    /// Measured sending time per run.
    pub duration: Duration,
    /// An unmeasured run on each fresh stack first, this long.
    pub warmup: Duration,
    /// Deliveries still counted after the window, for messages sent in it.
    pub grace: Duration,
    /// Rounds; each starts every stack afresh and measures one run.
    pub rounds: usize,
}

impl ScaleParams {
    /// `make bench QUICK=1`.
    pub fn quick() -> ScaleParams {
        ScaleParams {
            instances: vec![2, 8],
            rounds: 1,
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            ..ScaleParams::full()
        }
    }

    /// `make bench`.
    pub fn full() -> ScaleParams {
        ScaleParams {
            instances: vec![2, 4, 8],
            rooms: 64,
            per_room: 8,
            senders: 64,
            rate: 400.0,
            duration: Duration::from_secs(8),
            warmup: Duration::from_secs(2),
            grace: Duration::from_secs(1),
            rounds: 3,
        }
    }

    /// Deliveries a run should make: offered messages × members per room.
    fn offered(&self) -> f64 {
        self.rate * self.duration.as_secs_f64() * self.per_room as f64
    }

    /// The report's parameter line.
    pub fn describe(&self) -> String {
        let designs: Vec<&str> = Design::ALL.iter().map(|d| d.name()).collect();
        format!(
            "8: {} rooms × {} clients, {} senders at {} msg/s over all ({} deliveries/s), on {:?} instances of each of {}; {} rounds, each starting every stack afresh in turn and measuring one run of {:?} after a {:?} warm-up, deliveries counted for messages sent in the window ({:?} grace); CPU = utime + stime from /proc/PID/stat over the window; server = apps + subscribers (or node instances) + every Redis node; the load generator is not counted, the lb apart",
            self.rooms,
            self.per_room,
            self.senders,
            self.rate,
            self.rate * self.per_room as f64,
            self.instances,
            designs.join(", "),
            self.rounds,
            self.duration,
            self.warmup,
            self.grace
        )
    }
}

/// The scenario name of one instance count.
fn scenario(instances: usize) -> String {
    format!("8 scale-out, {instances} instances")
}

/// The instance count of a scenario-8 name.
fn instances_of(scenario: &str) -> Option<usize> {
    scenario
        .strip_prefix("8 scale-out, ")?
        .strip_suffix(" instances")?
        .parse()
        .ok()
}

/// CPU used over a run's sending window.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    lb: Duration,
    /// The server processes' by [`Role`], in [`Role::ALL`] order (every
    /// server process has one role).
    roles: [Duration; 3],
}

impl Cpu {
    /// Every server process's: apps, subscribers, node instances, Redis.
    fn servers(&self) -> Duration {
        self.roles.iter().sum()
    }
}

fn cpu_sum(pids: &[u32]) -> Duration {
    Duration::from_micros(pids.iter().filter_map(|p| cpu_micros(*p)).sum())
}

/// One fan-out run on `stack`, with the CPU its processes used from the
/// first send to the end of the grace.
async fn measure(
    stack: &Stack,
    shape: FanOut,
    tag: &str,
    sources: Arc<Sources>,
) -> (FanOutRun, (Cpu, Option<u64>)) {
    let lb = stack.lb_pids();
    let roles = Role::ALL.map(|r| stack.role_pids(r));
    let (phase, mut seen) = watch::channel(Phase::Joining);
    let sample = async {
        // Nothing is sent while the clients join: the count before is exact.
        let forwarded_before = stack.forwarded_chats().await;
        let _ = seen.wait_for(|p| *p != Phase::Joining).await;
        let lb_before = cpu_sum(&lb);
        let roles_before = roles.each_ref().map(|p| cpu_sum(p));
        let _ = seen.wait_for(|p| *p == Phase::Settled).await;
        let mut by_role = roles.each_ref().map(|p| cpu_sum(p));
        for (now, then) in by_role.iter_mut().zip(roles_before) {
            *now = now.saturating_sub(then);
        }
        let cpu = Cpu {
            lb: cpu_sum(&lb).saturating_sub(lb_before),
            roles: by_role,
        };
        let forwarded = match (forwarded_before, stack.forwarded_chats().await) {
            (Some(then), Some(now)) => Some(now.saturating_sub(then)),
            _ => None,
        };
        (cpu, forwarded)
    };
    let run = chatgen::fan_out_watched(&stack.target, sources, shape, tag, &phase);
    tokio::join!(run, sample)
}

/// Scenario 8. Each round starts every (instance count, design) afresh, in
/// turn, so drift on the shared machine hits every point alike; a stack
/// warms up with one short run, then one run is measured.
pub async fn run(
    params: &ScaleParams,
    certs: &Certs,
    tls: Arc<rustls::ClientConfig>,
    sources: Arc<Sources>,
    f: &mut Findings,
) {
    let client = Client { certs, tls, sources };
    for round in 1..=params.rounds {
        for &n in &params.instances {
            for design in Design::ALL {
                one_stack(params, &client, (round, n, design), f).await;
                // Let the ports and the CPUs settle before the next stack.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What the load generator brings to every stack.
struct Client<'a> {
    certs: &'a Certs,
    tls: Arc<rustls::ClientConfig>,
    sources: Arc<Sources>,
}

/// Starts `design` with `n` instances, warms it up, measures one run.
async fn one_stack(
    params: &ScaleParams,
    client: &Client<'_>,
    (round, n, design): (usize, usize, Design),
    f: &mut Findings,
) {
    let scenario = scenario(n);
    let system = design.name();
    let stack = match Stack::start(design, n, client.certs, client.tls.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(scenario, system, error = %e, "start failed");
            f.notes.push(format!(
                "{scenario}, {system}: round {round} could not start: {e}"
            ));
            return;
        }
    };
    let shape = |duration| FanOut {
        rooms: params.rooms,
        per_room: params.per_room,
        senders: params.senders,
        offer: Offer::Rate(params.rate),
        duration,
        max_msgs: (params.rate * params.duration.as_secs_f64() * 2.0) as u64,
        grace: params.grace,
    };
    // Rooms of their own per run: the measured run replays no history.
    let sources = client.sources.clone();
    let (warm, _) = measure(&stack, shape(params.warmup), "warm", sources.clone()).await;
    f.errors(&scenario, system, warm.errors, warm.first_error.as_ref());
    let (run, (cpu, forwarded)) = measure(&stack, shape(params.duration), "run", sources).await;
    tracing::info!(
        scenario,
        system,
        round,
        sent = run.sent,
        delivered = run.delivered,
        server_cpu_ms = cpu.servers().as_millis() as u64,
        lb_cpu_ms = cpu.lb.as_millis() as u64,
        app_cpu_ms = cpu.roles[0].as_millis() as u64,
        subscriber_cpu_ms = cpu.roles[1].as_millis() as u64,
        redis_cpu_ms = cpu.roles[2].as_millis() as u64,
        errors = run.errors,
        logs = %stack.log_dir().display(),
        "run"
    );
    drop(stack);
    f.errors(&scenario, system, run.errors, run.first_error.as_ref());
    let delivered = run.delivered as f64;
    let offered = params.offered();
    let share = delivered / offered;
    f.metric(&scenario, DELIVERED, true, REFERENCE.name())
        .push(system, share);
    if !COMPLETE.contains(&share) {
        f.notes.push(format!(
            "{scenario}, {system}, round {round}: {} deliveries of {offered:.0} offered ({}): left out of the CPU figures",
            run.delivered,
            fmt_num(share)
        ));
        return;
    }
    let per = |d: Duration| d.as_micros() as f64 / delivered;
    f.metric(&scenario, CPU, false, REFERENCE.name())
        .push(system, per(cpu.servers()));
    f.metric(&scenario, LB_CPU, false, REFERENCE.name())
        .push(system, per(cpu.lb));
    for (role, used) in Role::ALL.into_iter().zip(cpu.roles) {
        if !used.is_zero() {
            f.metric(&scenario, &role_metric(role), false, REFERENCE.name())
                .push(system, per(used));
        }
    }
    if let Some(forwarded) = forwarded.filter(|_| run.sent > 0) {
        f.metric(&scenario, FORWARDS, false, REFERENCE.name())
            .push(system, forwarded as f64 / run.sent as f64);
    }
}

/// The name of one role's share of the server CPU per delivery.
fn role_metric(role: Role) -> String {
    format!("{CPU}: {}", role.name())
}

/// Median server CPU per delivery of every design, by instance count.
fn series(metrics: &[Metric]) -> Vec<Series> {
    Design::ALL
        .iter()
        .map(|d| {
            let mut points: Vec<(f64, f64)> = metrics
                .iter()
                .filter(|m| m.name == CPU)
                .filter_map(|m| Some((instances_of(&m.scenario)? as f64, m.of(d.name())?.median)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (d.name().to_string(), points)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// Draws server CPU per delivery against instances, one line per design,
/// into `dir`; returns the file name, or nothing when scenario 8 did not run.
pub fn write_chart(metrics: &[Metric], dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let series = series(metrics);
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let labels = Labels {
        title: "8 scale-out: server CPU µs per delivery",
        subtitle: "same offered load; lower is better, flat means adding instances adds no work",
        x: "instances (apps + subscribers, or node processes)",
    };
    std::fs::write(dir.join(CHART), trend::line_chart(labels, &series)?)?;
    Ok(vec![CHART.to_string()])
}

/// The scale-out goals: CPU per delivery flat under room affinity (on one
/// Redis and on the cluster), growing with instances under fewest-sessions
/// balancing and for node.
pub fn goals(metrics: &[Metric]) -> Vec<Goal> {
    let series = series(metrics);
    Design::ALL
        .iter()
        .map(|d| {
            let flat = matches!(d, Design::Hash | Design::HashCluster);
            let goal = if flat {
                format!(
                    "{}: CPU per delivery flat as instances grow (≤ {FLAT}×)",
                    d.name()
                )
            } else {
                format!("{}: CPU per delivery grows with instances (> {FLAT}×)", d.name())
            };
            let points = series
                .iter()
                .find(|(s, _)| s == d.name())
                .map(|(_, p)| p.as_slice());
            match points {
                Some([first, .., last]) if first.1 > 0.0 => {
                    let growth = last.1 / first.1;
                    Goal {
                        goal,
                        met: Some(if flat { growth <= FLAT } else { growth > FLAT }),
                        detail: format!(
                            "8 scale-out {CPU}: {} at {} instances, {} at {} ({}×)",
                            fmt_num(first.1),
                            first.0,
                            fmt_num(last.1),
                            last.0,
                            fmt_num(growth)
                        ),
                    }
                }
                _ => Goal {
                    goal,
                    met: None,
                    detail: "not measured at two instance counts".into(),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(n: usize, values: &[(Design, f64)]) -> Metric {
        let mut m = Metric::new(&scenario(n), CPU, false, REFERENCE.name());
        for (d, v) in values {
            m.push(d.name(), *v);
        }
        m
    }

    #[test]
    fn scenario_names_carry_the_instance_count() {
        assert_eq!(instances_of(&scenario(8)), Some(8));
        assert_eq!(instances_of("5 chat fan-out, saturation"), None);
    }

    #[test]
    fn goals_want_affinity_flat_and_the_others_growing() {
        let metrics = [
            metric(
                2,
                &[
                    (Design::Hash, 10.0),
                    (Design::Leastconn, 10.0),
                    (Design::Node, 8.0),
                ],
            ),
            metric(
                8,
                &[
                    (Design::Hash, 11.0),
                    (Design::Leastconn, 30.0),
                    (Design::Node, 8.5),
                ],
            ),
        ];
        let goals = goals(&metrics);
        let met = |d: Design| goals.iter().find(|g| g.goal.starts_with(d.name())).unwrap().met;
        assert_eq!(met(Design::Hash), Some(true));
        assert_eq!(met(Design::Leastconn), Some(true));
        assert_eq!(met(Design::Node), Some(false), "8 → 8.5 is not growth");
        assert_eq!(met(Design::HashCluster), None);
        let s = series(&metrics);
        assert_eq!(s[0].0, Design::Leastconn.name());
        assert_eq!(s[0].1, vec![(2.0, 10.0), (8.0, 30.0)]);
    }
}
