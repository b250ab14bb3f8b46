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
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel-{port}.log\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display()
        );
        std::fs::write(&conf, text).expect("sentinel config");
        Node::spawn("redis-sentinel", vec![conf.into()], port)
    }

    fn spawn(program: &str, args: Vec<OsString>, port: u16) -> Node {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut spec = ProcessSpec::new(program, Kind::Redis, program, args, Health::Listening(vec![addr]));
        spec.output = Output::Capture;
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
        loop {
            let mut ready = true;
            for replica in self.replicas() {
                ready &= sync_done(replica).await;
            }
            let replicas = (1 + self.more_replicas.len()).to_string();
            for s in &self.sentinels {
                let info = sentinel_master_info(s).await;
                let field = |k: &str| {
                    info.iter()
                        .position(|x| x == k)
                        .and_then(|i| info.get(i + 1))
                        .cloned()
                };
                ready &= field("num-slaves").as_deref() == Some(replicas.as_str())
                    && field("num-other-sentinels").as_deref() == Some("2");
            }
            if ready {
                return;
            }
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

/// Whether `replica` finished its first sync.
async fn sync_done(replica: &Node) -> bool {
    let mut c = replica.conn().await;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    info.contains("master_link_status:up")
}

/// `SENTINEL master wsmesh` as a flat list of names and values.
async fn sentinel_master_info(sentinel: &Node) -> Vec<String> {
    let mut c = sentinel.conn().await;
    redis::cmd("SENTINEL")
        .arg("master")
        .arg(MASTER_NAME)
        .query_async(&mut c)
        .await
        .unwrap_or_default()
}

/// `host:port` the Sentinel names as master now.
pub async fn master_named_by(sentinel: &Node) -> Option<String> {
    let mut c = sentinel.conn().await;
    let named: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query_async(&mut c)
        .await
        .ok()?;
    named.map(|(h, p)| format!("{h}:{p}"))
}
