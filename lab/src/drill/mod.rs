//! `lab drill`: zero-loss failover, proven. Each drill starts a fresh cluster
//! (Redis — one server, Sentinels or a Redis Cluster —, two apps or more,
//! a subscriber per app, the TLS lb), connects N resilient
//! clients through `wss://` spread over rooms, lets them send at a steady
//! rate, injects one fault and heals it, stops sending, waits until every
//! send is acked and every client is connected and caught up, and reconciles
//! a ledger of every acked message against every chat each client received
//! (raw, before its dedup). Any loss, duplicate, reordering, unacked send or
//! client that gave up fails the drill.
//!
//! `cluster` builds the cluster, `load` runs the clients, `faults` breaks and
//! heals (`slots` the Redis Cluster faults), `ledger` reconciles, `report`
//! prints.

pub mod cluster;
pub mod faults;
pub mod ledger;
pub mod load;
pub mod report;
pub mod slots;
pub mod store;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

pub use faults::Fault;
use load::{ClientTuning, Ended, Load, LoadPlan};
pub use report::DrillReport;

use self::cluster::{DrillCluster, DrillClusterError, RedisLayout};
use crate::token::Minter;
use wsmesh_testkit::cluster::LocalOptions;

/// Why a drill could not run (a drill that ran and found losses is not an error).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// Building, starting or healing the cluster failed.
    #[error("drill {fault}: {source}")]
    Cluster {
        /// The fault whose drill could not run.
        fault: Fault,
        /// What failed.
        source: DrillClusterError,
    },
    /// Not every client connected before the fault (the cluster is too small or too slow).
    #[error("drill {fault}: only {connected} of {clients} clients connected within {limit:?}")]
    NotConnected {
        /// The fault whose drill could not start.
        fault: Fault,
        /// Clients that got a `welcome` in time.
        connected: usize,
        /// Clients that were started.
        clients: usize,
        /// How long we waited.
        limit: Duration,
    },
}

/// Messages per second: over all clients, or per client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Over all clients together.
    Total(f64),
    /// Per client, so the load grows with the client count.
    PerClient(f64),
}

impl Rate {
    /// Messages per second over `clients`.
    pub fn total(self, clients: usize) -> f64 {
        match self {
            Rate::Total(r) => r,
            Rate::PerClient(r) => r * clients as f64,
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `200` (total per second) or `0.2/client`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (num, per_client) = match s.strip_suffix("/client") {
            Some(n) => (n, true),
            None => (s, false),
        };
        let r: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("bad rate {s:?}: a number (total per second) or N/client"))?;
        if !(r.is_finite() && r > 0.0) {
            return Err(format!("bad rate {s:?}: must be above 0"));
        }
        Ok(if per_client {
            Rate::PerClient(r)
        } else {
            Rate::Total(r)
        })
    }
}

/// `60s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {s:?}: e.g. 60s, 500ms, 2m, 1h");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Checks a `--fault` value while clap parses, so a typo is a usage error.
fn fault_arg(s: &str) -> Result<String, String> {
    if s == "all" {
        return Ok(s.to_string());
    }
    s.parse::<Fault>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// What `lab drill` is asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// all, kill-app, drain-app, lb-drain, kill-subscriber, restart-redis, freeze-app, kill-lb,
    /// kill-redis-master, freeze-redis-master, kill-cluster-master or reshard-during-chat
    /// (repeatable).
    #[arg(long, default_value = "all", value_parser = fault_arg)]
    pub fault: Vec<String>,
    /// Resilient clients connected through the lb during each drill.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Rooms (clients are spread evenly).
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// Apps (each with its subscriber) behind the lb.
    #[arg(long, default_value_t = 2)]
    pub apps: usize,
    /// Redis for the faults that work on any: single, sentinel or cluster. The Redis faults
    /// pick their own (restart-redis: single; kill/freeze-redis-master: sentinel;
    /// kill-cluster-master, reshard-during-chat: cluster).
    #[arg(long, value_enum)]
    pub redis: Option<RedisLayout>,
    /// Messages per second over all clients (e.g. 200), or per client (e.g. 0.2/client).
    #[arg(long, default_value = "0.2/client")]
    pub rate: String,
    /// Sending time per drill (the fault comes after a quarter of it, at most 10 s in).
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Longest wait for quiet after sending stops.
    #[arg(long, default_value = "60s")]
    pub quiesce: String,
    /// Print the reports as JSON (one array) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Keep each drill's directory (configs and process logs) and print its path.
    #[arg(long)]
    pub keep_logs: bool,
    /// Run the apps in jwt mode: each client gets its own token (sub and name d<i>, its
    /// room only), minted afresh for every connection.
    #[arg(long)]
    pub auth: bool,
    /// With --auth: how long each token is valid; shorter than the drill makes every client
    /// go through expiry (4001) and a resume with a fresh token.
    #[arg(long, default_value = "1h")]
    pub token_ttl: String,
}

/// A drill's parameters.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Resilient clients connected through the lb.
    pub clients: usize,
    /// Rooms the clients are spread over evenly.
    pub rooms: usize,
    /// Apps (each with its subscriber) behind the lb.
    pub apps: usize,
    /// Redis for the faults that do not pick their own; one server when `None`.
    pub redis: Option<RedisLayout>,
    /// How fast the clients send, together or each.
    pub rate: Rate,
    /// Sending time (extended to cover the fault and its healing).
    pub duration: Duration,
    /// Longest wait for quiet after sending.
    pub quiesce: Duration,
    /// Keep the cluster directory.
    pub keep_logs: bool,
    /// Backoff, re-send and ping timing of every client.
    pub tuning: ClientTuning,
    /// `Some(ttl)`: the apps run in jwt mode and every client's tokens are
    /// valid this long.
    pub token_ttl: Option<Duration>,
}

impl DrillOptions {
    /// The small size `make test` runs: 24 clients in 3 rooms, 2 messages/s
    /// each, 8 s of sending.
    pub fn small() -> DrillOptions {
        DrillOptions {
            clients: 24,
            rooms: 3,
            apps: 2,
            redis: None,
            rate: Rate::PerClient(2.0),
            duration: Duration::from_secs(8),
            quiesce: Duration::from_secs(30),
            keep_logs: false,
            tuning: ClientTuning::default(),
            token_ttl: None,
        }
    }

    /// The small size of the scale-out drills: 4 apps on a Redis Cluster,
    /// 40 clients in 20 rooms, a message a second each, 10 s of sending.
    pub fn small_cluster() -> DrillOptions {
        DrillOptions {
            clients: 40,
            rooms: 20,
            apps: 4,
            redis: Some(RedisLayout::Cluster),
            rate: Rate::PerClient(1.0),
            duration: Duration::from_secs(10),
            ..DrillOptions::small()
        }
    }

    /// The Redis a drill of `fault` runs on.
    pub fn layout(&self, fault: Fault) -> RedisLayout {
        fault.redis_layout().or(self.redis).unwrap_or(RedisLayout::Single)
    }
}

impl DrillArgs {
    /// The faults and options asked for.
    pub fn parse(&self) -> Result<(Vec<Fault>, DrillOptions), String> {
        let mut faults = Vec::new();
        for f in &self.fault {
            if f == "all" {
                faults.extend(Fault::ALL);
            } else {
                faults.push(f.parse().map_err(|e: faults::UnknownFault| e.to_string())?);
            }
        }
        if self.clients == 0 || self.rooms == 0 || self.apps == 0 {
            return Err("--clients, --rooms and --apps must be at least 1".into());
        }
        Ok((
            faults,
            DrillOptions {
                clients: self.clients,
                rooms: self.rooms,
                apps: self.apps,
                redis: self.redis,
                rate: self.rate.parse()?,
                duration: parse_duration(&self.duration)?,
                quiesce: parse_duration(&self.quiesce)?,
                keep_logs: self.keep_logs,
                tuning: ClientTuning::default(),
                token_ttl: match self.auth {
                    true => Some(parse_duration(&self.token_ttl)?),
                    false => None,
                },
            },
        ))
    }
}

/// Raises this process's open-file limit to its hard limit, so a thousand
/// clients (and the processes we start, which inherit it) have descriptors.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Config changes for drills: the apps must not throttle the load (rate limit,
/// connection cap) so that what is measured is failover, not admission; with
/// `minter`, they run in jwt mode with its secret.
fn local_options(opts: &DrillOptions, minter: Option<Minter>) -> LocalOptions {
    let conns = opts.clients.saturating_mul(4).max(10_000);
    LocalOptions::default().apps(opts.apps).app(move |c| {
        c.limits.max_connections = conns;
        c.limits.rate_burst = 1000;
        c.limits.rate_per_sec = 1000.0;
        if let Some(minter) = &minter {
            minter.enable(c, None);
        }
    })
}

/// Runs one drill.
pub async fn run_one(fault: Fault, opts: &DrillOptions) -> Result<DrillReport, DrillError> {
    let err = |source| DrillError::Cluster { fault, source };
    let tokens = opts.token_ttl.map(|ttl| (Minter::generate(), ttl));
    let minter = tokens.as_ref().map(|(m, _)| m.clone());
    let mut c = DrillCluster::start(&local_options(opts, minter), opts.keep_logs, opts.layout(fault))
        .await
        .map_err(err)?;
    let plan = LoadPlan {
        clients: opts.clients,
        rooms: opts.rooms,
        rate: opts.rate.total(opts.clients),
        connect: c.connect_options(),
        tuning: opts.tuning.clone(),
        room_prefix: format!("drill-{}-", fault.name()),
        tokens,
    };
    let load = Load::start(&plan).await;
    let limit = Duration::from_secs(30) + Duration::from_millis(20 * opts.clients as u64);
    let connected = load.wait_connected(limit).await;
    if connected < opts.clients {
        let _ = load.finish().await;
        return Err(DrillError::NotConnected {
            fault,
            connected,
            clients: opts.clients,
            limit,
        });
    }

    let started = Instant::now();
    load.set_sending(true);
    let warmup = (opts.duration / 4).min(Duration::from_secs(10));
    tokio::time::sleep(warmup).await;
    let injected = Instant::now();
    let timeline = faults::inject_and_heal(fault, &mut c).await.map_err(err)?;
    // Keep sending for the planned time, and at least a second past the healing.
    let Ended {
        outcomes,
        sending_s,
        quiesced,
        quiesce_s,
    } = load.end(started, started + opts.duration, opts.quiesce).await;

    let ledgers: Vec<_> = outcomes.iter().map(|o| o.ledger.clone()).collect();
    let rooms: BTreeSet<String> = ledgers.iter().map(|l| l.room.clone()).collect();
    let rooms: Vec<String> = rooms.into_iter().collect();
    let stored = c.stored(&rooms).await.map_err(err)?;
    let totals = ledger::reconcile(&ledgers, &stored);
    let lost_sample = ledger::lost_sample(&ledgers, 10)
        .into_iter()
        .map(|(i, room, id)| {
            let on: Vec<&str> = outcomes[i]
                .connections
                .iter()
                .map(|r| r.instance.as_str())
                .collect();
            let sender = outcomes
                .iter()
                .position(|o| o.ledger.acks.iter().any(|(_, acked)| *acked == id))
                .map_or_else(|| "?".to_string(), |k| k.to_string());
            format!(
                "client {i} (on {}) room {room} id {id} (sent by client {sender})",
                on.join("→")
            )
        })
        .collect();
    // A loss must explain itself even where the logs are not kept (CI): the
    // processes' counters and warnings/errors, and the lb's state changes.
    let diagnosis = if totals.clean() {
        Vec::new()
    } else {
        let mut lines = c.counters().await;
        lines.extend(c.log_excerpt(15));
        // The apps log a socket's end once they see its close.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, room, id) in ledger::seen_then_lost_sample(&ledgers, &stored, 10) {
            let newest = stored
                .ids
                .get(&room)
                .and_then(|ids| ids.iter().max().copied())
                .unwrap_or_default();
            lines.push(format!(
                "seen then lost: client {i} room {room} id {id} (the store holds {} ids of the room, the newest {newest})",
                stored.ids.get(&room).map_or(0, |ids| ids.len())
            ));
        }
        let lost_clients: BTreeSet<usize> = ledger::lost_sample(&ledgers, 10)
            .into_iter()
            .map(|(i, _, _)| i)
            .collect();
        for i in lost_clients {
            lines.extend(arrivals(i, &outcomes[i]));
            lines.extend(c.socket_ends(&format!("nick=d{i} ")));
        }
        lines
    };
    let reconnects: Vec<Duration> = outcomes
        .iter()
        .flat_map(|o| o.connections.iter().skip(1).filter_map(|r| r.reconnect_took))
        .collect();
    let back_after_s = outcomes
        .iter()
        .flat_map(|o| o.welcomed_at.iter().skip(1))
        .filter(|at| **at >= injected)
        .map(|at| at.duration_since(injected).as_secs_f64())
        .reduce(f64::max);
    let moved = outcomes
        .iter()
        .filter(|o| {
            let first = o.connections.first().map(|r| &r.instance);
            let last = o.connections.last().map(|r| &r.instance);
            first != last
        })
        .count() as u64;
    let logs = opts.keep_logs.then(|| c.dir.display().to_string());
    drop(c);
    Ok(DrillReport {
        fault,
        clients: opts.clients,
        rooms: opts.rooms,
        sending_s,
        totals,
        reconnect: report::Latency::of(&reconnects),
        ack_after: report::Latency::of(
            &outcomes
                .iter()
                .flat_map(|o| o.ack_after.iter().copied())
                .collect::<Vec<_>>(),
        ),
        caught_up: report::Latency::of(
            &outcomes
                .iter()
                .flat_map(|o| o.caught_up.iter().copied())
                .collect::<Vec<_>>(),
        ),
        back_after_s,
        moved,
        moved_share: moved as f64 / opts.clients.max(1) as f64,
        refused: outcomes.iter().map(|o| o.refused).sum(),
        quiesced,
        quiesce_s,
        timeline,
        logs,
        lost_sample,
        diagnosis,
    })
}

/// What arrived on each connection of client `i`, beside what the apps say
/// they wrote to it (`socket ended` lines): tells a chat never written from
/// one lost on the way.
fn arrivals(i: usize, outcome: &load::ClientOutcome) -> Vec<String> {
    outcome
        .arrived
        .iter()
        .enumerate()
        .map(|(k, a)| {
            let on = outcome.connections.get(k).map_or("?", |r| r.instance.as_str());
            format!(
                "client {i} connection {k} on {on}: replayed {} (to {}), live {} (to {}), undecodable frames {}",
                a.replayed, a.replayed_last, a.live, a.live_last, outcome.ledger.undecodable
            )
        })
        .collect()
}

/// Runs `faults` one after the other, each on a fresh cluster; `each` sees
/// every report as it is made.
pub async fn run(
    faults: &[Fault],
    opts: &DrillOptions,
    mut each: impl FnMut(&DrillReport),
) -> Result<Vec<DrillReport>, DrillError> {
    if let Err(e) = raise_nofile_limit() {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    let mut reports = Vec::new();
    for fault in faults {
        let r = run_one(*fault, opts).await?;
        each(&r);
        reports.push(r);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!("200".parse::<Rate>(), Ok(Rate::Total(200.0)));
        assert_eq!("0.5/client".parse::<Rate>().map(|r| r.total(10)), Ok(5.0));
        assert!("0".parse::<Rate>().is_err());
        assert!("x/client".parse::<Rate>().is_err());
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn fault_names_round_trip_and_all_expands() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>().ok(), Some(f));
        }
        let args = DrillArgs {
            fault: vec!["all".into()],
            clients: 2,
            rooms: 1,
            apps: 2,
            redis: None,
            rate: "1".into(),
            duration: "1s".into(),
            quiesce: "1s".into(),
            json: false,
            keep_logs: false,
            auth: true,
            token_ttl: "30s".into(),
        };
        assert_eq!(args.parse().map(|(f, _)| f.len()), Ok(Fault::ALL.len()));
        let ttl = args.parse().map(|(_, o)| o.token_ttl);
        assert_eq!(ttl, Ok(Some(Duration::from_secs(30))));
        let bad = DrillArgs {
            fault: vec!["nope".into()],
            ..args
        };
        assert!(bad.parse().is_err());
    }
}
