//! The faults a drill injects, each with its healing: one function per fault
//! with the same shape (break it, wait as a real outage would, repair it, wait
//! until the cluster says it is whole), so adding a fault means copying one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::cluster::{DrillCluster, DrillClusterError};

/// A process gets this long to come back healthy (the lb: to see every server up).
const HEAL_LIMIT: Duration = Duration::from_secs(60);

/// How long a killed process stays dead before it is started again: long
/// enough for clients to notice and move, as a real crash plus restart would.
const DEAD_FOR: Duration = Duration::from_secs(2);

/// How long app1 stays frozen: longer than the lb's health verdict on a
/// silent server (check `timeout` 1 s × `fall` 3 after up to an `interval`)
/// and longer than the clients' idle timeout, so both detections are exercised.
const FROZEN_FOR: Duration = Duration::from_secs(7);

/// How long app1 stays in lb drain before it is made ready again.
const DRAINED_FOR: Duration = Duration::from_secs(4);

/// SIGTERM drain of an app: its `drain.grace` + `drain.window` and a margin.
const DRAIN_EXIT_LIMIT: Duration = Duration::from_secs(20);

/// One fault a drill injects into a running cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 app1, start it again.
    KillApp,
    /// SIGTERM app2 (it drains: 503, grace, 1012 spread), start it again.
    DrainApp,
    /// Drain app1 through the lb admin API, then make it ready again.
    LbDrain,
    /// kill -9 subscriber1, start it again.
    KillSubscriber,
    /// Restart redis-server (SIGTERM, AOF on disk, start).
    RestartRedis,
    /// SIGSTOP app1 past the health timeout, then SIGCONT.
    FreezeApp,
    /// kill -9 the lb, start it again on the same ports.
    KillLb,
}

impl Fault {
    /// Every fault, in the order `lab drill --fault all` runs them.
    pub const ALL: [Fault; 7] = [
        Fault::KillApp,
        Fault::DrainApp,
        Fault::LbDrain,
        Fault::KillSubscriber,
        Fault::RestartRedis,
        Fault::FreezeApp,
        Fault::KillLb,
    ];

    /// CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillApp => "kill-app",
            Fault::DrainApp => "drain-app",
            Fault::LbDrain => "lb-drain",
            Fault::KillSubscriber => "kill-subscriber",
            Fault::RestartRedis => "restart-redis",
            Fault::FreezeApp => "freeze-app",
            Fault::KillLb => "kill-lb",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of `Fault::ALL`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown fault {0:?}; one of: all, kill-app, drain-app, lb-drain, kill-subscriber, restart-redis, freeze-app, kill-lb")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

/// What was done, with offsets from the fault's start, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// `(seconds since injection, step)`.
    pub steps: Vec<(f64, String)>,
}

impl Timeline {
    fn note(&mut self, t0: Instant, step: impl Into<String>) {
        self.steps.push((t0.elapsed().as_secs_f64(), step.into()));
    }
}

/// `kill -9` on `name`, dead for `DEAD_FOR`, started again and healthy.
async fn kill_and_start(
    c: &mut DrillCluster,
    name: &str,
    started: &str,
    tl: &mut Timeline,
    t0: Instant,
) -> Result<(), DrillClusterError> {
    c.cluster.get_mut(name)?.kill9()?;
    tl.note(t0, format!("{name} killed (SIGKILL)"));
    tokio::time::sleep(DEAD_FOR).await;
    c.cluster.get_mut(name)?.start()?;
    tl.note(t0, started.to_string());
    c.wait_healthy(name, HEAL_LIMIT).await
}

/// Injects `fault` and heals it; returns when the cluster is whole again.
pub async fn inject_and_heal(fault: Fault, c: &mut DrillCluster) -> Result<Timeline, DrillClusterError> {
    let t0 = Instant::now();
    let mut tl = Timeline::default();
    match fault {
        Fault::KillApp => kill_and_start(c, "app1", "app1 started", &mut tl, t0).await?,
        Fault::DrainApp => {
            c.cluster.get_mut("app2")?.term()?;
            tl.note(t0, "app2 SIGTERM (drain)");
            let status = c.cluster.get_mut("app2")?.wait_exit(DRAIN_EXIT_LIMIT).await;
            match status {
                Some(s) => tl.note(t0, format!("app2 exited ({s})")),
                None => {
                    tl.note(t0, "app2 still running after the drain limit; killed");
                    c.cluster.get_mut("app2")?.kill9()?;
                }
            }
            c.cluster.get_mut("app2")?.start()?;
            tl.note(t0, "app2 started");
            c.wait_healthy("app2", HEAL_LIMIT).await?;
        }
        Fault::LbDrain => {
            c.set_server_state("app1", "drain").await?;
            tl.note(t0, "app1 set to drain (lb admin API)");
            tokio::time::sleep(DRAINED_FOR).await;
            c.set_server_state("app1", "ready").await?;
            tl.note(t0, "app1 set to ready");
        }
        Fault::KillSubscriber => {
            kill_and_start(c, "subscriber1", "subscriber1 started", &mut tl, t0).await?;
        }
        Fault::RestartRedis => {
            c.cluster
                .get_mut("redis")?
                .restart(Duration::from_secs(10))
                .await?;
            tl.note(t0, "redis-server restarted (SIGTERM, start)");
            c.wait_healthy("redis", HEAL_LIMIT).await?;
            // The apps' health includes Redis: wait until both answer 200 again.
            c.wait_healthy("app1", HEAL_LIMIT).await?;
            c.wait_healthy("app2", HEAL_LIMIT).await?;
        }
        Fault::FreezeApp => {
            c.cluster.get_mut("app1")?.stop()?;
            tl.note(t0, "app1 frozen (SIGSTOP)");
            tokio::time::sleep(FROZEN_FOR).await;
            c.cluster.get_mut("app1")?.cont()?;
            tl.note(t0, "app1 resumed (SIGCONT)");
            c.wait_healthy("app1", HEAL_LIMIT).await?;
        }
        Fault::KillLb => kill_and_start(c, "lb", "lb started on the same ports", &mut tl, t0).await?,
    }
    // Whole again means: the lb sees both apps up.
    c.wait_healthy("lb", HEAL_LIMIT).await?;
    tl.note(t0, "lb sees every server up");
    Ok(tl)
}
