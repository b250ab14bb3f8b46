//! Redis nodes and a Sentinel-watched pair for tests, on free loopback
//! ports: `Node` is one `redis-server` (or `redis-sentinel`) that can be
//! killed, frozen (SIGSTOP) and thawed; `SentinelCluster` is a master, one
//! replica (or more) and three Sentinels monitoring them as `wsmesh`, with a
//! short `down-after-milliseconds` so a failover takes a few seconds. Each
//! node is a [`Process`], so it is killed however a test ends.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ports::free_loopback_port;
use crate::process::{Health, Kind, Output, Process, ProcessSpec};

/// The name the Sentinels monitor the pair under.
pub const MASTER_NAME: &str = "wsmesh";

/// How quickly the Sentinels act on a master that stopped answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentinelTiming {
    /// `down-after-milliseconds`: silence before a Sentinel calls the master down.
    pub down_after: Duration,
    /// `failover-timeout`: how long one failover attempt may take before
    /// another Sentinel tries (Redis' default, 3 minutes, would stall a lab).
    pub failover_timeout: Duration,
}

impl SentinelTiming {
    /// Tests: a failover within a few seconds.
    pub const TEST: SentinelTiming = SentinelTiming {
        down_after: Duration::from_millis(1000),
        failover_timeout: Duration::from_millis(3000),
    };
}

/// `redis-sentinel` on `addr` watching `master` as `MASTER_NAME` with quorum 2,
/// healthy when it listens. Its config file is written into `dir` now (a
/// Sentinel rewrites it as it learns the replicas and the other Sentinels, so
/// each start gets a fresh one).
pub fn sentinel_spec(
    name: &str,
    addr: SocketAddr,
    dir: &Path,
    master: SocketAddr,
    timing: SentinelTiming,
) -> std::io::Result<ProcessSpec> {
    let port = addr.port();
    let conf = dir.join(format!("sentinel-{port}.conf"));
    let text = format!(
        "port {port}\nbind {ip}\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel-{port}.log\n\
         sentinel monitor {MASTER_NAME} {master_ip} {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} {down_after}\n\
         sentinel failover-timeout {MASTER_NAME} {failover_timeout}\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        ip = addr.ip(),
        dir = dir.display(),
        master_ip = master.ip(),
        master_port = master.port(),
        down_after = timing.down_after.as_millis(),
        failover_timeout = timing.failover_timeout.as_millis(),
    );
    std::fs::write(&conf, text)?;
    let mut spec = ProcessSpec::new(
        name,
        Kind::Redis,
        "redis-sentinel",
        vec![conf.into()],
        Health::Listening(vec![addr]),
    );
    spec.listens = vec![(addr, "sentinel".into())];
    Ok(spec)
}

/// One Redis process on a loopback port; killed when dropped.
pub struct Node {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The running `redis-server` or `redis-sentinel`.
    process: Process,
}

impl Node {
    /// A `redis-server` with no persistence, plus `extra` arguments.
    pub fn server(dir: &Path, extra: &[&str]) -> Node {
        let port = free_loopback_port().expect("free port");
        let log = dir.join(format!("redis-{port}.log"));
        let mut args: Vec<OsString> = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]
            .iter()
            .chain(&["--appendonly", "no", "--repl-diskless-sync-delay", "0"])
            .map(OsString::from)
            .collect();
        args.extend([
            OsString::from("--dir"),
            dir.into(),
            "--logfile".into(),
            log.into(),
        ]);
        args.extend(extra.iter().map(OsString::from));
        Node::spawn("redis-server", args, port)
    }

    /// A `redis-sentinel` watching `master` as `MASTER_NAME` (quorum 2).
    pub fn sentinel(dir: &Path, master: u16) -> Node {
        let port = free_loopback_port().expect("free port");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let master = SocketAddr::from((Ipv4Addr::LOCALHOST, master));
        let mut spec =
            sentinel_spec("sentinel", addr, dir, master, SentinelTiming::TEST).expect("sentinel config");
        spec.output = Output::Capture;
        Node::start(spec, port)
    }

    fn spawn(program: &str, args: Vec<OsString>, port: u16) -> Node {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut spec = ProcessSpec::new(program, Kind::Redis, program, args, Health::Listening(vec![addr]));
        spec.output = Output::Capture;
        Node::start(spec, port)
    }

    fn start(spec: ProcessSpec, port: u16) -> Node {
        let process = Process::spawn(spec)
            .expect("redis-server / redis-sentinel on PATH (apt-get install redis-server redis-sentinel)");
        let node = Node { port, process };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:port` as a socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain connection to this node.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connects")
    }

    /// `kill -9`: gone without a word, as when its host dies.
    pub fn kill(&mut self) {
        self.process.kill9().expect("kill -9");
    }

    /// SIGSTOP: the socket stays open, nothing answers.
    pub fn freeze(&mut self) {
        self.process.stop().expect("SIGSTOP");
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&mut self) {
        self.process.cont().expect("SIGCONT");
    }
}

/// What `min-replicas-to-write 1` / `min-replicas-max-lag 10` make of every
/// data node, as the shipped configs set them.
pub const MIN_REPLICAS: &[&str] = &["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"];

/// A master, one or more replicas and three Sentinels, ready for a failover.
pub struct SentinelCluster {
    /// The first master.
    pub master: Node,
    /// Its replica, promoted when the master dies.
    pub replica: Node,
    /// Further replicas (`start_with`): with one, a promoted replica still
    /// has a replica to acknowledge replicated writes.
    pub more_replicas: Vec<Node>,
    /// Three Sentinels, quorum 2.
    pub sentinels: Vec<Node>,
    /// Configs and logs; removed last.
    _dir: tempfile::TempDir,
}

impl SentinelCluster {
    /// Starts everything and waits until every Sentinel knows the replica
    /// and the other two Sentinels (before that a failover cannot happen).
    pub async fn start() -> SentinelCluster {
        SentinelCluster::start_with(1, &[]).await
    }

    /// Like `start`, with `replicas` replicas (at least one) and every data
    /// node started with `server_args` too (e.g. `MIN_REPLICAS`).
    pub async fn start_with(replicas: usize, server_args: &[&str]) -> SentinelCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let master = Node::server(dir.path(), server_args);
        let master_port = master.port.to_string();
        let replica_args: Vec<&str> = ["--replicaof", "127.0.0.1", master_port.as_str()]
            .into_iter()
            .chain(server_args.iter().copied())
            .collect();
        let mut all: Vec<Node> = (0..replicas.max(1))
            .map(|_| Node::server(dir.path(), &replica_args))
            .collect();
        let replica = all.remove(0);
        let sentinels: Vec<Node> = (0..3).map(|_| Node::sentinel(dir.path(), master.port)).collect();
        let cluster = SentinelCluster {
            master,
            replica,
            more_replicas: all,
            sentinels,
            _dir: dir,
        };
        cluster.wait_ready().await;
        cluster
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let replicas: Vec<SocketAddr> = self.replicas().map(Node::socket_addr).collect();
        let sentinels: Vec<SocketAddr> = self.sentinels.iter().map(Node::socket_addr).collect();
        while !ready_for_failover(&replicas, &sentinels).await {
            assert!(Instant::now() < deadline, "sentinels did not settle");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every replica the cluster started with.
    pub fn replicas(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.replica).chain(&self.more_replicas)
    }

    /// Every replica, to freeze or kill.
    pub fn replicas_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        std::iter::once(&mut self.replica).chain(&mut self.more_replicas)
    }

    /// The data node (master or replica) at `host:port`.
    pub fn node(&self, addr: &str) -> &Node {
        std::iter::once(&self.master)
            .chain(self.replicas())
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("no node at {addr}"))
    }

    /// `host:port` of every Sentinel, for `redis.sentinels`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::addr).collect()
    }

    /// Waits until every Sentinel names a master other than `old`, and
    /// returns it.
    pub async fn wait_failover(&self, old: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let mut named = Vec::new();
            for s in &self.sentinels {
                named.push(master_named_by(s).await);
            }
            if let Some(Some(first)) = named.first() {
                if first != old && named.iter().all(|n| n.as_deref() == Some(first.as_str())) {
                    return first.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no failover away from {old} within {within:?}: {named:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How long one readiness question may take (a frozen node never answers).
const ASK_LIMIT: Duration = Duration::from_secs(1);

/// A connection to `addr`, or `None` when nothing answers there in time.
async fn try_conn(addr: SocketAddr) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    tokio::time::timeout(ASK_LIMIT, client.get_multiplexed_async_connection())
        .await
        .ok()?
        .ok()
}

/// Whether every replica finished its first sync and every Sentinel knows
/// all the replicas and the other two Sentinels: before that a failover
/// cannot happen (or would promote without a replica left to follow).
pub async fn ready_for_failover(replicas: &[SocketAddr], sentinels: &[SocketAddr]) -> bool {
    for replica in replicas {
        if !replica_synced(*replica).await {
            return false;
        }
    }
    let want_replicas = replicas.len().to_string();
    let want_others = sentinels.len().saturating_sub(1).to_string();
    for sentinel in sentinels {
        let info = sentinel_master_info(*sentinel).await;
        let field = |k: &str| {
            info.iter()
                .position(|x| x == k)
                .and_then(|i| info.get(i + 1))
                .map(String::as_str)
        };
        if field("num-slaves") != Some(want_replicas.as_str())
            || field("num-other-sentinels") != Some(want_others.as_str())
        {
            return false;
        }
    }
    true
}

/// Whether the replica at `addr` finished its first sync.
async fn replica_synced(addr: SocketAddr) -> bool {
    let Some(mut c) = try_conn(addr).await else {
        return false;
    };
    let mut ask = redis::cmd("INFO");
    ask.arg("replication");
    match tokio::time::timeout(ASK_LIMIT, ask.query_async::<String>(&mut c)).await {
        Ok(Ok(info)) => info.contains("master_link_status:up"),
        _ => false,
    }
}

/// `SENTINEL master wsmesh` as a flat list of names and values (empty when
/// the Sentinel does not answer).
async fn sentinel_master_info(sentinel: SocketAddr) -> Vec<String> {
    let Some(mut c) = try_conn(sentinel).await else {
        return Vec::new();
    };
    let mut ask = redis::cmd("SENTINEL");
    ask.arg("master").arg(MASTER_NAME);
    match tokio::time::timeout(ASK_LIMIT, ask.query_async::<Vec<String>>(&mut c)).await {
        Ok(Ok(info)) => info,
        _ => Vec::new(),
    }
}

/// `host:port` the Sentinel names as master now.
pub async fn master_named_by(sentinel: &Node) -> Option<String> {
    master_named_at(sentinel.socket_addr()).await
}

/// `host:port` the Sentinel at `sentinel` names as master now; `None` when
/// it does not answer.
pub async fn master_named_at(sentinel: SocketAddr) -> Option<String> {
    let mut c = try_conn(sentinel).await?;
    let mut ask = redis::cmd("SENTINEL");
    ask.arg("get-master-addr-by-name").arg(MASTER_NAME);
    let named: Option<(String, u16)> = tokio::time::timeout(ASK_LIMIT, ask.query_async(&mut c))
        .await
        .ok()?
        .ok()?;
    named.map(|(h, p)| format!("{h}:{p}"))
}
