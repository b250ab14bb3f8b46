//! The faults a drill injects, each with its healing: one function per fault
//! with the same shape (break it, wait as a real outage would, repair it, wait
//! until the cluster says it is whole), so adding a fault means copying one.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::cluster::{DrillCluster, DrillClusterError, RedisLayout, RoomServers};
use super::slots;

/// A process gets this long to come back healthy (the lb: to see every server up).
const HEAL_LIMIT: Duration = Duration::from_secs(60);

/// How long a killed process stays dead before it is started again: long
/// enough for clients to notice and move, as a real crash plus restart would.
const DEAD_FOR: Duration = Duration::from_secs(2);

/// How long the app stays frozen: longer than the lb's health verdict on a
/// silent server (check `timeout` 1 s × `fall` 3 after up to an `interval`)
/// and longer than the clients' idle timeout, so both detections are exercised.
const FROZEN_FOR: Duration = Duration::from_secs(7);

/// How long the app stays in lb drain before it is made ready again.
const DRAINED_FOR: Duration = Duration::from_secs(4);

/// Longest wait for a killed app's rooms to show up on other apps in the lb.
const MOVE_LIMIT: Duration = Duration::from_secs(15);

/// SIGTERM drain of an app: its `drain.grace` + `drain.window` and a margin.
const DRAIN_EXIT_LIMIT: Duration = Duration::from_secs(20);

/// One fault a drill injects into a running cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 the app with the most sessions, start it again.
    KillApp,
    /// SIGTERM the app with the most sessions (it drains: 503, grace, 1012
    /// spread), start it again.
    DrainApp,
    /// Drain the app with the most sessions through the lb admin API, then
    /// make it ready again.
    LbDrain,
    /// kill -9 subscriber1, start it again.
    KillSubscriber,
    /// Restart redis-server (SIGTERM, AOF on disk, start).
    RestartRedis,
    /// SIGSTOP the app with the most sessions past the health timeout, then SIGCONT.
    FreezeApp,
    /// kill -9 the lb, start it again on the same ports.
    KillLb,
    /// kill -9 the Redis master (Sentinel layout); the Sentinels promote a
    /// replica; the old master is started again and rejoins as a replica.
    KillRedisMaster,
    /// SIGSTOP the Redis master past the Sentinels' down-after; a replica is
    /// promoted; SIGCONT: the old master must be demoted, not take writes.
    FreezeRedisMaster,
    /// kill -9 the Redis Cluster master whose rooms have the most sessions;
    /// its replica takes its slots over; the old one is started again and
    /// rejoins as a replica.
    KillClusterMaster,
    /// Move the slots of the busiest rooms to other Redis Cluster masters
    /// while they chat; each room's subscriber follows its channel.
    ReshardDuringChat,
}

impl Fault {
    /// Every fault, in the order `lab drill --fault all` runs them.
    pub const ALL: [Fault; 11] = [
        Fault::KillApp,
        Fault::DrainApp,
        Fault::LbDrain,
        Fault::KillSubscriber,
        Fault::RestartRedis,
        Fault::FreezeApp,
        Fault::KillLb,
        Fault::KillRedisMaster,
        Fault::FreezeRedisMaster,
        Fault::KillClusterMaster,
        Fault::ReshardDuringChat,
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
            Fault::KillRedisMaster => "kill-redis-master",
            Fault::FreezeRedisMaster => "freeze-redis-master",
            Fault::KillClusterMaster => "kill-cluster-master",
            Fault::ReshardDuringChat => "reshard-during-chat",
        }
    }
}

impl Fault {
    /// The Redis the fault needs: a master to lose needs Sentinels and
    /// replicas, slots need a Redis Cluster. `None`: any (one server by default).
    pub fn redis_layout(self) -> Option<RedisLayout> {
        match self {
            Fault::KillRedisMaster | Fault::FreezeRedisMaster => Some(RedisLayout::Sentinel),
            Fault::KillClusterMaster | Fault::ReshardDuringChat => Some(RedisLayout::Cluster),
            Fault::RestartRedis => Some(RedisLayout::Single),
            _ => None,
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
#[error("unknown fault {0:?}; one of: all, kill-app, drain-app, lb-drain, kill-subscriber, restart-redis, freeze-app, kill-lb, kill-redis-master, freeze-redis-master, kill-cluster-master, reshard-during-chat")]
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
    /// What shows that the fault did what it is for.
    pub evidence: Vec<Evidence>,
}

/// A fault's effect as seen from outside: the proof that the drill tested
/// what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Evidence {
    /// A replica took over a killed Redis Cluster master's slots.
    Promoted {
        /// The killed master's process name.
        old: String,
        /// The promoted replica's.
        new: String,
        /// Drill rooms whose slots it held.
        rooms: usize,
    },
    /// A room's slot moved to another master, and its channel is subscribed there.
    SlotMoved {
        /// The room.
        room: String,
        /// The master it left.
        from: String,
        /// The master that owns it now.
        to: String,
        /// `PUBSUB SHARDNUMSUB` of its channel on `to` afterwards.
        subscribers: u64,
    },
    /// A killed app's room is served by other apps (the lb's hash keys).
    RoomMoved {
        /// The room.
        room: String,
        /// The killed app.
        from: String,
        /// The apps its sessions are on now.
        to: Vec<String>,
    },
}

impl Timeline {
    pub(super) fn note(&mut self, t0: Instant, step: impl Into<String>) {
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
        Fault::KillApp => {
            let app = c.busiest_app().await?;
            let before = c.room_servers().await?;
            let rooms = before
                .values()
                .filter(|servers| servers.contains_key(&app))
                .count();
            c.cluster.get_mut(&app)?.kill9()?;
            tl.note(t0, format!("{app} killed (SIGKILL), holding {rooms} rooms"));
            rooms_moved(c, &app, &before, &mut tl, t0).await?;
            c.cluster.get_mut(&app)?.start()?;
            tl.note(t0, format!("{app} started"));
            c.wait_healthy(&app, HEAL_LIMIT).await?;
        }
        Fault::DrainApp => {
            let app = c.busiest_app().await?;
            c.cluster.get_mut(&app)?.term()?;
            tl.note(t0, format!("{app} SIGTERM (drain)"));
            let status = c.cluster.get_mut(&app)?.wait_exit(DRAIN_EXIT_LIMIT).await;
            match status {
                Some(s) => tl.note(t0, format!("{app} exited ({s})")),
                None => {
                    tl.note(t0, format!("{app} still running after the drain limit; killed"));
                    c.cluster.get_mut(&app)?.kill9()?;
                }
            }
            c.cluster.get_mut(&app)?.start()?;
            tl.note(t0, format!("{app} started"));
            c.wait_healthy(&app, HEAL_LIMIT).await?;
        }
        Fault::LbDrain => {
            let app = c.busiest_app().await?;
            c.set_server_state(&app, "drain").await?;
            tl.note(t0, format!("{app} set to drain (lb admin API)"));
            tokio::time::sleep(DRAINED_FOR).await;
            c.set_server_state(&app, "ready").await?;
            tl.note(t0, format!("{app} set to ready"));
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
            apps_healthy(c).await?;
        }
        Fault::FreezeApp => {
            let app = c.busiest_app().await?;
            c.cluster.get_mut(&app)?.stop()?;
            tl.note(t0, format!("{app} frozen (SIGSTOP)"));
            tokio::time::sleep(FROZEN_FOR).await;
            c.cluster.get_mut(&app)?.cont()?;
            tl.note(t0, format!("{app} resumed (SIGCONT)"));
            c.wait_healthy(&app, HEAL_LIMIT).await?;
        }
        Fault::KillLb => kill_and_start(c, "lb", "lb started on the same ports", &mut tl, t0).await?,
        Fault::KillRedisMaster => {
            let (old, name) = master_and_name(c).await?;
            c.cluster.get_mut(&name)?.kill9()?;
            tl.note(t0, format!("{name} (master) killed (SIGKILL)"));
            let new = promoted(c, old, &mut tl, t0).await?;
            apps_healthy(c).await?;
            tl.note(t0, format!("apps healthy on {new}"));
            c.cluster.get_mut(&name)?.start()?;
            tl.note(t0, format!("{name} started again"));
            demoted(c, old, &name, &mut tl, t0).await?;
        }
        Fault::FreezeRedisMaster => {
            let (old, name) = master_and_name(c).await?;
            c.cluster.get_mut(&name)?.stop()?;
            tl.note(t0, format!("{name} (master) frozen (SIGSTOP)"));
            let new = promoted(c, old, &mut tl, t0).await?;
            c.cluster.get_mut(&name)?.cont()?;
            tl.note(t0, format!("{name} resumed (SIGCONT)"));
            demoted(c, old, &name, &mut tl, t0).await?;
            apps_healthy(c).await?;
            tl.note(t0, format!("apps healthy on {new}"));
        }
        Fault::KillClusterMaster => {
            slots::kill_master(c, &mut tl, t0).await?;
            apps_healthy(c).await?;
            tl.note(t0, "apps healthy");
        }
        Fault::ReshardDuringChat => slots::reshard(c, &mut tl, t0).await?,
    }
    // Whole again means: the lb sees both apps up.
    c.wait_healthy("lb", HEAL_LIMIT).await?;
    tl.note(t0, "lb sees every server up");
    Ok(tl)
}

/// The master now and its process name.
async fn master_and_name(c: &DrillCluster) -> Result<(SocketAddr, String), DrillClusterError> {
    let master = c.master().await?;
    let name = c.node_name(master).ok_or(DrillClusterError::NoMaster)?;
    Ok((master, name))
}

/// Waits until the Sentinels name a master other than `old`.
async fn promoted(
    c: &DrillCluster,
    old: SocketAddr,
    tl: &mut Timeline,
    t0: Instant,
) -> Result<String, DrillClusterError> {
    let deadline = Instant::now() + HEAL_LIMIT;
    loop {
        if let Ok(now) = c.master().await {
            if now != old {
                let name = c.node_name(now).unwrap_or_else(|| now.to_string());
                tl.note(t0, format!("sentinels promoted {name}"));
                return Ok(name);
            }
        }
        if Instant::now() >= deadline {
            return Err(DrillClusterError::NoFailover(HEAL_LIMIT));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the old master at `addr` answers as a replica (the
/// Sentinels reconfigured it): from then on it cannot take a write.
async fn demoted(
    c: &DrillCluster,
    addr: SocketAddr,
    name: &str,
    tl: &mut Timeline,
    t0: Instant,
) -> Result<(), DrillClusterError> {
    let deadline = Instant::now() + HEAL_LIMIT;
    while c.role(addr).await.as_deref() != Some("slave") {
        if Instant::now() >= deadline {
            return Err(DrillClusterError::NotDemoted(name.to_string(), HEAL_LIMIT));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tl.note(t0, format!("{name} is a replica again"));
    Ok(())
}

/// Every app answers `/healthz` 200 (their health includes Redis).
async fn apps_healthy(c: &mut DrillCluster) -> Result<(), DrillClusterError> {
    for app in c.apps.clone() {
        c.wait_healthy(&app, HEAL_LIMIT).await?;
    }
    Ok(())
}

/// Keeps the killed `app` dead for `DEAD_FOR`, and until each room it held
/// (by the lb's sessions `before` the kill) has more sessions on other
/// apps than it had then (at most `MOVE_LIMIT`): with `balance = "hash"` a
/// room's reconnecting members go to its next server on the ring. Each
/// room seen moved is evidence; one not seen is noted.
async fn rooms_moved(
    c: &DrillCluster,
    app: &str,
    before: &RoomServers,
    tl: &mut Timeline,
    t0: Instant,
) -> Result<(), DrillClusterError> {
    let killed = Instant::now();
    let mut waiting: Vec<&String> = before
        .iter()
        .filter(|(_, servers)| servers.contains_key(app))
        .map(|(room, _)| room)
        .collect();
    loop {
        let now = c.room_servers().await?;
        waiting.retain(|room| {
            let had = |server: &String| {
                before
                    .get(*room)
                    .and_then(|s| s.get(server))
                    .copied()
                    .unwrap_or(0)
            };
            let to: Vec<String> = now
                .get(*room)
                .into_iter()
                .flatten()
                .filter(|(server, n)| *server != app && **n > had(server))
                .map(|(server, _)| server.clone())
                .collect();
            if to.is_empty() {
                return true;
            }
            tl.note(t0, format!("room {room} moved from {app} to {}", to.join(", ")));
            tl.evidence.push(Evidence::RoomMoved {
                room: (*room).clone(),
                from: app.to_string(),
                to,
            });
            false
        });
        let elapsed = killed.elapsed();
        if (waiting.is_empty() && elapsed >= DEAD_FOR) || elapsed >= MOVE_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for room in waiting {
        tl.note(
            t0,
            format!("room {room} not seen on another app within {MOVE_LIMIT:?}"),
        );
    }
    Ok(())
}
