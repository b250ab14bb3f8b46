//! The Redis side of `lab up --ha`: a master and two replicas (AOF, fsync
//! every second, `min-replicas-to-write 1`) and three Sentinels watching
//! them as `wsmesh` with quorum 2, all on loopback.
//!
//! Two replicas, not one: the apps ack a send only after `WAIT 1` and every
//! node refuses writes without a replica, so a promoted master needs a
//! replica left to acknowledge, or every send after a failover would be
//! `unavailable` until the old master came back.
//!
//! The roles are those of a fresh start every time (node 1 master, the
//! others its replicas, new Sentinel config files), so the data of a kept
//! `--redis-dir` is node 1's: what a replica promoted in an earlier run
//! took on its own is dropped when it resyncs.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use wsmesh_testkit::process::ProcessSpec;
use wsmesh_testkit::redis::{self, Fsync, Persistence, RedisOptions};
use wsmesh_testkit::sentinel::{self, SentinelTiming};

use super::UpError;

/// Ports of the data nodes before `--port-offset`; the first starts as master.
pub const NODE_PORTS: [u16; 3] = [6390, 6391, 6392];

/// How fast the lab's Sentinels fail over: a master silent for 2 s is down.
pub const TIMING: SentinelTiming = SentinelTiming {
    down_after: Duration::from_millis(2000),
    failover_timeout: Duration::from_secs(10),
};

/// The data nodes and Sentinels of the HA layout: the nodes on
/// `NODE_PORTS` moved by `offset`, each with its data in `dir/<name>`, and a
/// Sentinel on each address of `sentinels` (the apps' `redis.sentinels`),
/// its config file written into `dir`.
pub fn specs(sentinels: &[SocketAddr], offset: u16, dir: &Path) -> Result<Vec<ProcessSpec>, UpError> {
    let mut nodes = Vec::new();
    for port in NODE_PORTS {
        let port = port.checked_add(offset).ok_or_else(|| UpError::PortPast {
            what: "Redis node".into(),
            port,
            offset,
        })?;
        nodes.push(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    specs_at(&nodes, sentinels, TIMING, dir).map_err(|e| UpError::Cluster(e.into()))
}

/// The processes of the HA layout on given addresses: `redis1…` on `nodes`
/// (the first starts as master, the others replicate it) and `sentinel1…`
/// on `sentinels`, watching with `timing`. Data and Sentinel configs go
/// into `dir`.
pub fn specs_at(
    nodes: &[SocketAddr],
    sentinels: &[SocketAddr],
    timing: SentinelTiming,
    dir: &Path,
) -> std::io::Result<Vec<ProcessSpec>> {
    let Some(&master) = nodes.first() else {
        return Ok(Vec::new());
    };
    let mut specs = Vec::new();
    for (i, addr) in nodes.iter().enumerate() {
        let name = format!("redis{}", i + 1);
        let data = dir.join(&name);
        std::fs::create_dir_all(&data)?;
        let mut args: Vec<String> = sentinel::MIN_REPLICAS.iter().map(|a| a.to_string()).collect();
        args.extend(["--repl-diskless-sync-delay".into(), "0".into()]);
        if *addr != master {
            args.extend([
                "--replicaof".into(),
                master.ip().to_string(),
                master.port().to_string(),
            ]);
        }
        let opts = RedisOptions {
            persistence: Persistence::Aof(Fsync::EverySec),
            args,
        };
        specs.push(redis::spec(&name, *addr, &data, &opts));
    }
    for (i, addr) in sentinels.iter().enumerate() {
        let name = format!("sentinel{}", i + 1);
        specs.push(sentinel::sentinel_spec(&name, *addr, dir, master, timing)?);
    }
    Ok(specs)
}

/// `redis.sentinels` of an app's config as socket addresses.
pub fn sentinel_addrs(file: &Path, sentinels: &[String]) -> Result<Vec<SocketAddr>, UpError> {
    if sentinels.len() != 3 {
        return Err(UpError::Config {
            file: file.to_path_buf(),
            key: "redis.sentinels (three, for quorum 2)".into(),
        });
    }
    sentinels
        .iter()
        .map(|s| super::addr_of(file, "redis.sentinels", s))
        .collect()
}

/// Waits until the replicas are in sync and every Sentinel knows both of
/// them and the other two Sentinels: only then can the master's loss be
/// survived, which is what the ready line promises.
/// `listens` are those of every process (see `ProcessSpec::listens`).
pub async fn wait_failover_ready(listens: &[(SocketAddr, String)], limit: Duration) -> Result<(), UpError> {
    let listening = |what: &str| -> Vec<SocketAddr> {
        listens
            .iter()
            .filter(|(_, w)| w == what)
            .map(|(a, _)| *a)
            .collect()
    };
    let sentinels = listening("sentinel");
    let replicas: Vec<SocketAddr> = listening("redis").into_iter().skip(1).collect();
    let deadline = tokio::time::Instant::now() + limit;
    while !sentinel::ready_for_failover(&replicas, &sentinels).await {
        if tokio::time::Instant::now() >= deadline {
            return Err(UpError::NotFailoverReady(limit));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
