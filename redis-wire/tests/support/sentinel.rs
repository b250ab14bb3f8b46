//! Redis nodes and a Sentinel-watched pair for tests, on free loopback
//! ports: `Node` is one `redis-server` (or `redis-sentinel`) that can be
//! killed, frozen (SIGSTOP) and thawed; `SentinelCluster` is a master, one
//! replica (or more) and three Sentinels monitoring them as `wsmesh`, with a short
//! `down-after-milliseconds` so a failover takes a few seconds. Every test
//! that starts these processes comes through here. Shared by the redis-wire,
//! app and subscriber tests (`#[path]`), so not every item is used by each.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wsmesh_common::ports::free_loopback_port;

/// The name the Sentinels monitor the pair under.
pub const MASTER_NAME: &str = "wsmesh";

/// One Redis process on a loopback port; killed when dropped.
pub struct Node {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl Node {
    /// A `redis-server` with no persistence, plus `extra` arguments.
    pub fn server(dir: &Path, extra: &[&str]) -> Node {
        let port = free_loopback_port().expect("free port");
        let log = dir.join(format!("redis-{port}.log"));
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(extra);
        Node::spawn(cmd, port)
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
        let mut cmd = Command::new("redis-sentinel");
        cmd.arg(&conf);
        Node::spawn(cmd, port)
    }

    fn spawn(mut cmd: Command, port: u16) -> Node {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server / redis-sentinel on PATH (apt-get install redis-server redis-sentinel)");
        let node = Node { port, child };
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the socket stays open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.thaw_quietly();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn thaw_quietly(&self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
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
