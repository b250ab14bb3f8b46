//! A `redis-server` for tests and clusters: on a free loopback port or a
//! given one, its data in a directory of its own, stopped and started again
//! on the same port (a Redis restart is a fault the tests drive). Test
//! helpers here panic with what failed: they are the test failing.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::ports;
use crate::process::{Health, Kind, Output, Process, ProcessError, ProcessSpec};

/// How long a Redis may take to answer `PING`, and to stop on SIGTERM.
const WAIT: Duration = Duration::from_secs(10);

/// When the AOF is flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Once a second (what a cluster runs with).
    EverySec,
    /// After every write: nothing written is lost by a SIGKILL.
    Always,
}

/// What Redis keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: a restart starts empty.
    Off,
    /// An append-only file, flushed as said.
    Aof(Fsync),
}

/// How a Redis is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// What survives a restart.
    pub persistence: Persistence,
    /// More `redis-server` arguments (e.g. `--stream-node-max-entries 4`).
    pub args: Vec<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            persistence: Persistence::Aof(Fsync::EverySec),
            args: Vec::new(),
        }
    }
}

/// `redis-server` on `addr` with its data in `dir`, healthy when it answers
/// `PING` (not `-LOADING`).
pub fn spec(name: &str, addr: SocketAddr, dir: &Path, opts: &RedisOptions) -> ProcessSpec {
    let (appendonly, fsync) = match opts.persistence {
        Persistence::Off => ("no", "everysec"),
        Persistence::Aof(Fsync::EverySec) => ("yes", "everysec"),
        Persistence::Aof(Fsync::Always) => ("yes", "always"),
    };
    let port = addr.port().to_string();
    let ip = addr.ip().to_string();
    let dir = dir.display().to_string();
    let fixed = [
        "--port",
        &port,
        "--bind",
        &ip,
        "--dir",
        &dir,
        "--appendonly",
        appendonly,
        "--appendfsync",
        fsync,
        "--save",
        "",
        "--daemonize",
        "no",
    ];
    let args: Vec<OsString> = fixed
        .iter()
        .map(OsString::from)
        .chain(opts.args.iter().map(OsString::from))
        .collect();
    let mut spec = ProcessSpec::new(name, Kind::Redis, "redis-server", args, Health::RedisPing(addr));
    spec.listens = vec![(addr, "redis".into())];
    spec
}

/// A running `redis-server` of a test; killed on drop, its data removed.
#[derive(Debug)]
pub struct RedisServer {
    /// The process (declared before `dir`: it stops before its data goes).
    process: Process,
    /// Where it listens; kept across restarts.
    addr: SocketAddr,
    /// Its data directory.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A Redis with AOF (fsync every second) on a free port.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default()).await
    }

    /// A Redis run as `opts` says on a free port; tries other ports when the
    /// chosen one was taken meanwhile.
    pub async fn start_with(opts: RedisOptions) -> RedisServer {
        let mut last = None;
        for _ in 0..3 {
            let addr = ports::free_addr().expect("a free loopback port");
            match RedisServer::try_start(addr, &opts).await {
                Ok(redis) => return redis,
                Err(e @ ProcessError::Exited { .. }) => last = Some(e),
                Err(e) => panic!("redis-server: {e}"),
            }
        }
        panic!("redis-server did not start three times: {last:?}");
    }

    /// A Redis on `port` (e.g. "the same" Redis after a kill), empty.
    pub async fn start_on(port: u16, opts: RedisOptions) -> RedisServer {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        RedisServer::try_start(addr, &opts)
            .await
            .unwrap_or_else(|e| panic!("redis-server on {addr}: {e}"))
    }

    async fn try_start(addr: SocketAddr, opts: &RedisOptions) -> Result<RedisServer, ProcessError> {
        let dir = tempfile::Builder::new()
            .prefix("wsmesh-redis-")
            .tempdir()
            .expect("a temporary directory");
        let mut spec = spec("redis", addr, dir.path(), opts);
        spec.output = Output::Capture;
        let mut process = Process::spawn(spec)?;
        process.wait_healthy(WAIT).await?;
        Ok(RedisServer {
            process,
            addr,
            _dir: dir,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A new connection.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    /// The process, for signals.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Stops it cleanly (SIGTERM: the AOF is complete) and starts it again
    /// on the same port with the same data.
    pub async fn restart(&mut self) {
        self.process.restart(WAIT).await.expect("redis-server restarts");
        self.process
            .wait_healthy(WAIT)
            .await
            .expect("redis-server answers again");
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill9().expect("redis-server killed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;

    #[tokio::test]
    async fn aof_data_survives_a_restart_on_the_same_port() {
        let mut redis = RedisServer::start_with(RedisOptions {
            persistence: Persistence::Aof(Fsync::Always),
            args: vec![],
        })
        .await;
        let port = redis.port();
        let mut conn = redis.conn().await;
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .unwrap();
        redis.restart().await;
        assert_eq!(redis.port(), port);
        let mut conn = redis.conn().await;
        let v: String = redis::cmd("GET").arg("k").query_async(&mut conn).await.unwrap();
        assert_eq!(v, "v");
    }

    #[tokio::test]
    async fn extra_arguments_reach_redis() {
        let redis = RedisServer::start_with(RedisOptions {
            persistence: Persistence::Off,
            args: vec!["--stream-node-max-entries".into(), "4".into()],
        })
        .await;
        let mut conn = redis.conn().await;
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("stream-node-max-entries")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(v[1], "4");
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(v[1], "no");
    }

    #[tokio::test]
    async fn a_cluster_redis_is_pingable_and_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let addr = ports::free_addr().unwrap();
        let mut cluster = Cluster::new();
        let redis = cluster
            .spawn(spec("redis", addr, dir.path(), &RedisOptions::default()))
            .unwrap();
        redis.wait_healthy(Duration::from_secs(10)).await.unwrap();
        redis.restart(Duration::from_secs(5)).await.unwrap();
        redis.wait_healthy(Duration::from_secs(10)).await.unwrap();
        cluster.shutdown(Duration::from_secs(5)).await.unwrap();
        assert!(cluster.reap().is_empty(), "shutdown reaps everything itself");
        let aof = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("appendonly"));
        assert!(aof, "AOF persistence is on");
    }
}
