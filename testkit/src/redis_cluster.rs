//! A Redis Cluster of real `redis-server`s on loopback: three masters and
//! three replicas made with `redis-cli --cluster create`, ready once every
//! node says `cluster_state:ok` and knows all the others. A short
//! `cluster-node-timeout` makes a failover take a couple of seconds.
//! [`master_of`] finds the master that owns a key's slot, so a test or a
//! drill can kill or reshard exactly the node that holds a room.
//!
//! `node_spec` and `create` are the parts `lab up --redis cluster` uses;
//! [`RedisCluster`] runs a whole cluster for a test and kills it on drop.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ports;
use crate::process::{Health, Kind, Output, Process, ProcessError, ProcessSpec};

/// Masters in a cluster made here; each gets `REPLICAS_PER_MASTER` replicas.
pub const MASTERS: usize = 3;
/// Replicas of each master.
pub const REPLICAS_PER_MASTER: usize = 1;
/// `cluster-node-timeout`: how long a silent master stays a master.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long creating a cluster and its agreeing on the slot map may take.
const SETTLE: Duration = Duration::from_secs(30);

/// Why a cluster could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClusterSetupError {
    /// `redis-cli` could not be run.
    #[error("redis-cli: {0} (apt-get install redis-tools)")]
    Cli(std::io::Error),
    /// `redis-cli --cluster create` failed.
    #[error("redis-cli --cluster create failed: {0}")]
    Create(String),
    /// The nodes did not agree on a complete slot map in time.
    #[error("the cluster was not ready within {waited:?}: {last}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// What the last check saw.
        last: String,
    },
    /// A node's process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// `redis-server` as a cluster node on `addr` (bus on `bus_port`), its data
/// and `nodes.conf` in `dir`, no persistence (a node that dies is replaced
/// by its replica, not restarted with old data).
pub fn node_spec(name: &str, addr: SocketAddr, bus_port: u16, dir: &Path) -> ProcessSpec {
    let port = addr.port().to_string();
    let conf = dir.join(format!("nodes-{port}.conf"));
    let log = dir.join(format!("redis-{port}.log"));
    let timeout = NODE_TIMEOUT.as_millis().to_string();
    let bus = bus_port.to_string();
    let ip = addr.ip().to_string();
    let args: Vec<OsString> = [
        "--port",
        &port,
        "--bind",
        &ip,
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        &bus,
        "--cluster-node-timeout",
        &timeout,
        "--appendonly",
        "no",
        "--save",
        "",
        "--daemonize",
        "no",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(OsString::from)
    .chain([
        "--dir".into(),
        dir.as_os_str().to_owned(),
        "--cluster-config-file".into(),
        conf.into(),
        "--logfile".into(),
        log.into(),
    ])
    .collect();
    let mut spec = ProcessSpec::new(name, Kind::Redis, "redis-server", args, Health::RedisPing(addr));
    spec.listens = vec![
        (addr, "redis cluster node".into()),
        (bus_addr(addr, bus_port), "cluster bus".into()),
    ];
    spec
}

fn bus_addr(addr: SocketAddr, bus_port: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), bus_port)
}

/// Makes a cluster of the (running, empty) nodes at `addrs`, the first
/// `addrs.len() / (1 + replicas)` of them masters, and waits until every
/// node reports `cluster_state:ok` and knows every other node.
pub async fn create(addrs: &[SocketAddr], replicas: usize) -> Result<(), ClusterSetupError> {
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.arg("--cluster").arg("create");
    cmd.args(addrs.iter().map(SocketAddr::to_string));
    cmd.arg("--cluster-replicas")
        .arg(replicas.to_string())
        .arg("--cluster-yes");
    let out = cmd.output().await.map_err(ClusterSetupError::Cli)?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return Err(ClusterSetupError::Create(text.trim().to_string()));
    }
    wait_ok(addrs, SETTLE).await
}

/// Waits until every node in `addrs` says `cluster_state:ok` and knows
/// them all.
pub async fn wait_ok(addrs: &[SocketAddr], limit: Duration) -> Result<(), ClusterSetupError> {
    let deadline = Instant::now() + limit;
    loop {
        let mut last = String::new();
        for addr in addrs {
            match cluster_info(*addr).await {
                Ok(info) => {
                    let state = field(&info, "cluster_state");
                    let known = field(&info, "cluster_known_nodes");
                    if state != Some("ok") || known != Some(&addrs.len().to_string()) {
                        last = format!("{addr}: cluster_state {state:?}, known nodes {known:?}");
                    }
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
            if !last.is_empty() {
                break;
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ClusterSetupError::NotReady { waited: limit, last });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A field of `CLUSTER INFO`.
pub fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
}

async fn node_conn(addr: SocketAddr) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(format!("redis://{addr}/"))?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

fn cmd(parts: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(parts[0]);
    for part in &parts[1..] {
        cmd.arg(*part);
    }
    cmd
}

/// `CLUSTER INFO` of the node at `addr` (read a field with [`field`]).
pub async fn cluster_info(addr: SocketAddr) -> redis::RedisResult<String> {
    let mut conn = node_conn(addr).await?;
    redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await
}

/// The master that owns `key`'s slot, as the node at `ask` sees the slot
/// map (`CLUSTER KEYSLOT`, then `CLUSTER SLOTS`).
pub async fn master_of(ask: SocketAddr, key: &str) -> redis::RedisResult<SocketAddr> {
    let mut conn = node_conn(ask).await?;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await?;
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (Some(start), Some(end), Some(master)) = (parts.first(), parts.get(1), parts.get(2)) else {
            continue;
        };
        let start: u16 = redis::from_redis_value_ref(start)?;
        let end: u16 = redis::from_redis_value_ref(end)?;
        if !(start..=end).contains(&slot) {
            continue;
        }
        let (host, port): (String, u16) = match master {
            redis::Value::Array(node) if node.len() >= 2 => (
                redis::from_redis_value_ref(&node[0])?,
                redis::from_redis_value_ref(&node[1])?,
            ),
            _ => continue,
        };
        let ip: IpAddr = host
            .parse()
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Parse, "node host", host.clone())))?;
        return Ok(SocketAddr::new(ip, port));
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Parse,
        "no master owns the slot",
        format!("{key} (slot {slot})"),
    )))
}

/// Moves `key`'s slot, with its keys, from its master `from` to the
/// master `to`, as `redis-cli --cluster reshard` moves one slot: IMPORTING
/// and MIGRATING, `MIGRATE` of the slot's keys in batches, then `SETSLOT
/// NODE` on both masters (the others learn it by gossip). Nothing happens
/// when `from` is `to`.
pub async fn move_slot(from: SocketAddr, key: &str, to: SocketAddr) -> redis::RedisResult<()> {
    if from == to {
        return Ok(());
    }
    let mut src = node_conn(from).await?;
    let mut dst = node_conn(to).await?;
    let slot: u16 = cmd(&["CLUSTER", "KEYSLOT", key]).query_async(&mut src).await?;
    let slot = slot.to_string();
    let src_id: String = cmd(&["CLUSTER", "MYID"]).query_async(&mut src).await?;
    let dst_id: String = cmd(&["CLUSTER", "MYID"]).query_async(&mut dst).await?;
    let set = |state: &'static str, id: &str| cmd(&["CLUSTER", "SETSLOT", &slot, state, id]);
    let _: () = set("IMPORTING", &src_id).query_async(&mut dst).await?;
    let _: () = set("MIGRATING", &dst_id).query_async(&mut src).await?;
    loop {
        let keys: Vec<String> = cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
            .query_async(&mut src)
            .await?;
        if keys.is_empty() {
            break;
        }
        let mut migrate = cmd(&[
            "MIGRATE",
            &to.ip().to_string(),
            &to.port().to_string(),
            "",
            "0",
            "5000",
            "KEYS",
        ]);
        migrate.arg(&keys);
        let _: () = migrate.query_async(&mut src).await?;
    }
    let _: () = set("NODE", &dst_id).query_async(&mut dst).await?;
    set("NODE", &dst_id).query_async(&mut src).await
}

/// A running 3-master, 3-replica cluster of a test on free ports; every
/// node is killed on drop and its data removed.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in the order they were created (masters first).
    nodes: Vec<Process>,
    addrs: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes and makes them a cluster.
    pub async fn start() -> RedisCluster {
        let dir = tempfile::Builder::new()
            .prefix("wsmesh-redis-cluster-")
            .tempdir()
            .expect("a temporary directory");
        let count = MASTERS * (1 + REPLICAS_PER_MASTER);
        let mut nodes = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        for i in 0..count {
            let addr = ports::free_addr().expect("a free port");
            let bus = ports::free_loopback_port().expect("a free port");
            let mut spec = node_spec(&format!("redis-node{}", i + 1), addr, bus, dir.path());
            spec.output = Output::Capture;
            let process = Process::spawn(spec).expect("redis-server on PATH");
            nodes.push(process);
            addrs.push(addr);
        }
        for node in &mut nodes {
            node.wait_healthy(Duration::from_secs(10))
                .await
                .expect("a cluster node answers PING");
        }
        create(&addrs, REPLICAS_PER_MASTER)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        RedisCluster {
            nodes,
            addrs,
            _dir: dir,
        }
    }

    /// One cluster for a whole test binary, started at the first call on a
    /// thread of its own that lives as long as the binary: the nodes die
    /// with the thread that spawned them (see `process`), and a test's
    /// thread ends with the test. Tests sharing it use rooms of their own.
    pub fn shared() -> &'static RedisCluster {
        static SHARED: std::sync::OnceLock<&'static RedisCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let cluster: &'static RedisCluster =
                    Box::leak(Box::new(runtime.block_on(RedisCluster::start())));
                let _ = tx.send(cluster);
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("the shared redis cluster starts")
        })
    }

    /// Every node, `127.0.0.1:port`, for `redis.cluster`.
    pub fn nodes(&self) -> Vec<String> {
        self.addrs.iter().map(SocketAddr::to_string).collect()
    }

    /// Every node's address.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The master that owns `key`'s slot now, as a node that is up sees it.
    pub async fn master_of(&self, key: &str) -> SocketAddr {
        let mut last = None;
        for (addr, node) in self.addrs.iter().zip(&self.nodes) {
            if node.pid().is_none() {
                continue;
            }
            match master_of(*addr, key).await {
                Ok(master) => return master,
                Err(e) => last = Some(e),
            }
        }
        panic!("no node named the master of {key}: {last:?}");
    }

    /// Moves `key`'s slot, with its keys, from its master to the master
    /// `to` (see [`move_slot`]).
    pub async fn move_slot(&self, key: &str, to: SocketAddr) {
        let from = self.master_of(key).await;
        move_slot(from, key, to).await.expect("the slot moves");
    }

    /// The node process listening on `addr`, for signals.
    pub fn node(&mut self, addr: SocketAddr) -> &mut Process {
        let i = self
            .addrs
            .iter()
            .position(|a| *a == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"));
        &mut self.nodes[i]
    }

    /// A plain connection to one node (no redirections followed).
    pub async fn conn(&self, addr: SocketAddr) -> redis::aio::MultiplexedConnection {
        node_conn(addr).await.expect("connect to a cluster node")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_fields_are_read_by_name() {
        let info = "cluster_state:ok\r\ncluster_known_nodes:6\r\ncluster_size:3\r\n";
        assert_eq!(field(info, "cluster_state"), Some("ok"));
        assert_eq!(field(info, "cluster_known_nodes"), Some("6"));
        assert_eq!(field(info, "cluster_size"), Some("3"));
        assert_eq!(field(info, "cluster"), None);
    }

    #[tokio::test]
    async fn a_cluster_serves_every_slot_and_names_each_keys_master() {
        let cluster = RedisCluster::start().await;
        let masters: std::collections::BTreeSet<SocketAddr> = {
            let mut set = std::collections::BTreeSet::new();
            for room in ["a", "b", "c", "d", "e", "f", "g", "h"] {
                set.insert(cluster.master_of(&format!("wsmesh:room:{{{room}}}")).await);
            }
            set
        };
        assert!(masters.len() > 1, "rooms spread over the masters: {masters:?}");
        let key = "wsmesh:room:{lobby}";
        let master = cluster.master_of(key).await;
        let mut conn = cluster.conn(master).await;
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        let tagged = cluster.master_of("wsmesh:chat:{lobby}").await;
        assert_eq!(tagged, master, "a room's names share its slot");
    }
}
