//! A wsmesh cluster made of real processes: `redis-server`, apps,
//! subscribers and the lb, each a `Process`. `Cluster` is the set and its
//! order of start and stop; `LocalCluster` is the test layout on free
//! loopback ports with configs built from `configs/local/*.toml` (see
//! `configs::local`), so the committed files stay the source of truth and a
//! test only changes what it must. Dropping a cluster kills every process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsmesh_client::{ClientError, ConnectOptions, Connection, Endpoint, Scheme};

pub use crate::configs::local::{render_local, AppInfo, LocalLayout, LocalOptions};
use crate::configs::ConfigError;
use crate::process::{Health, Kind, Process, ProcessError, ProcessSpec};
use crate::redis::{self, RedisOptions};

/// Environment overrides that would silently beat a rendered config.
const OVERRIDE_VARS: [&str; 2] = ["WSMESH_REDIS_URL", "WSMESH_INTERNAL_TOKEN"];

/// Why a cluster could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A config could not be read, built or written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A wsmesh binary was not found.
    #[error(
        "{name} binary not found in {looked:?}; build it with `cargo build -p {name}` or set WSMESH_BIN_DIR"
    )]
    Binary {
        /// Binary name.
        name: String,
        /// Directories searched.
        looked: Vec<PathBuf>,
    },
    /// Filesystem or port trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No process by that name.
    #[error("no process named {0}")]
    NoSuchProcess(String),
}

/// Where the wsmesh binaries are: `WSMESH_BIN_DIR`, else next to the running
/// executable or one level up (test executables live in `target/debug/deps`).
pub fn binary(name: &str) -> Result<PathBuf, ClusterError> {
    let mut looked = Vec::new();
    if let Some(dir) = wsmesh_common::config::env_override("WSMESH_BIN_DIR") {
        looked.push(PathBuf::from(dir));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            looked.push(dir.to_path_buf());
            if let Some(parent) = dir.parent() {
                looked.push(parent.to_path_buf());
            }
        }
    }
    looked
        .iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ClusterError::Binary {
            name: name.to_string(),
            looked,
        })
}

/// `redis-server` on `addr` with AOF persistence (fsync every second) in `dir`.
pub fn redis_spec(name: &str, addr: SocketAddr, dir: &Path) -> ProcessSpec {
    redis::spec(name, addr, dir, &RedisOptions::default())
}

/// An app on `config`, healthy when `public/healthz` is 200.
pub fn app_spec(
    name: &str,
    program: PathBuf,
    config: &Path,
    public: SocketAddr,
    internal: SocketAddr,
) -> ProcessSpec {
    let health = Health::Http(format!("http://{public}/healthz"));
    let mut spec = ProcessSpec::new(name, Kind::App, program, config_args(config), health);
    spec.listens = vec![(public, "public".into()), (internal, "internal".into())];
    spec
}

/// A subscriber on `config`, healthy when `health/healthz` is 200.
pub fn subscriber_spec(name: &str, program: PathBuf, config: &Path, health: SocketAddr) -> ProcessSpec {
    let check = Health::Http(format!("http://{health}/healthz"));
    let mut spec = ProcessSpec::new(name, Kind::Subscriber, program, config_args(config), check);
    spec.listens = vec![(health, "health".into())];
    spec
}

/// The lb on `config`. `listens` are its frontends, the public (https) one
/// first: `lab up`'s ready line shows that one. `admin` is its admin listener;
/// it is healthy when `/api/backends` lists every server `up`.
pub fn lb_spec(
    name: &str,
    program: PathBuf,
    config: &Path,
    listens: Vec<(SocketAddr, String)>,
    admin: SocketAddr,
) -> ProcessSpec {
    let health = Health::LbServersUp(format!("http://{admin}/api/backends"));
    let mut spec = ProcessSpec::new(name, Kind::Lb, program, config_args(config), health);
    spec.listens = listens;
    spec.listens.push((admin, "admin".into()));
    spec
}

/// `--config FILE`.
fn config_args(config: &Path) -> Vec<std::ffi::OsString> {
    vec!["--config".into(), config.into()]
}

/// A set of named processes, started in order, stopped in reverse dependency
/// order (front ends first, Redis last), killed on drop.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Processes in start order.
    processes: Vec<Process>,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Starts `spec` and adds it.
    pub fn spawn(&mut self, spec: ProcessSpec) -> Result<&mut Process, ClusterError> {
        self.processes.push(Process::spawn(spec)?);
        let last = self.processes.len() - 1;
        Ok(&mut self.processes[last])
    }

    /// All processes, in start order.
    pub fn processes(&self) -> &[Process] {
        &self.processes
    }

    /// The process called `name`.
    pub fn get(&self, name: &str) -> Result<&Process, ClusterError> {
        self.processes
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| ClusterError::NoSuchProcess(name.to_string()))
    }

    /// The process called `name`, for signals and restarts.
    pub fn get_mut(&mut self, name: &str) -> Result<&mut Process, ClusterError> {
        self.processes
            .iter_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| ClusterError::NoSuchProcess(name.to_string()))
    }

    /// Waits until every process is healthy; the first failure is returned.
    pub async fn wait_healthy(&mut self, limit: Duration) -> Result<(), ClusterError> {
        let results =
            futures_util::future::join_all(self.processes.iter_mut().map(|p| p.wait_healthy(limit))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    /// Processes that exited since the last call, with their status (each once).
    pub fn reap(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        self.processes
            .iter_mut()
            .filter_map(|p| p.reap().map(|s| (p.name().to_string(), s)))
            .collect()
    }

    /// Graceful stop: everything but Redis first (SIGTERM, SIGKILL after `grace`),
    /// then Redis, so apps drain against a live Redis.
    pub async fn shutdown(&mut self, grace: Duration) -> Result<(), ClusterError> {
        for redis_turn in [false, true] {
            let stopping = self
                .processes
                .iter_mut()
                .filter(|p| (p.spec().kind == Kind::Redis) == redis_turn)
                .map(|p| p.shutdown(grace));
            let results = futures_util::future::join_all(stopping).await;
            results.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Front ends first, like shutdown, so nothing logs a dead Redis needlessly.
        while let Some(p) = self.processes.pop() {
            drop(p);
        }
    }
}

/// Test processes: no environment override beats the rendered config, and
/// logs are plain text (they end up in test output, not a terminal).
fn quiet_env(spec: &mut ProcessSpec) {
    spec.env_remove = OVERRIDE_VARS.iter().map(|v| v.to_string()).collect();
    spec.env.push(("NO_COLOR".into(), "1".into()));
}

/// A test cluster: Redis, two apps and two subscribers on free loopback ports,
/// configs and Redis data in a temporary directory.
#[derive(Debug)]
pub struct LocalCluster {
    /// The processes (`redis`, `app1`, `app2`, `subscriber1`, `subscriber2`).
    pub cluster: Cluster,
    /// The apps' addresses, `apps[0]` is app1.
    pub apps: Vec<AppInfo>,
    /// Redis address.
    pub redis: SocketAddr,
    /// Internal bearer token of the rendered configs.
    pub token: String,
    /// Configs and Redis data; removed on drop, after the processes (field order).
    pub dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Tries a few times, since a free port can be taken between picking and binding.
    const ATTEMPTS: usize = 3;

    /// Starts the cluster and waits until every part is healthy.
    pub async fn start(opts: LocalOptions) -> Result<LocalCluster, ClusterError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&opts).await {
                Err(ClusterError::Process(e @ ProcessError::Exited { .. })) if attempt < Self::ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "cluster start failed; retrying on new ports");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn start_once(opts: &LocalOptions) -> Result<LocalCluster, ClusterError> {
        let dir = tempfile::Builder::new().prefix("wsmesh-lab-").tempdir()?;
        let app_bin = binary("app")?;
        let sub_bin = binary("subscriber")?;
        let layout = render_local(dir.path(), opts)?;
        let mut cluster = Cluster::new();
        let data = dir.path().join("redis");
        std::fs::create_dir_all(&data)?;
        cluster
            .spawn(redis_spec("redis", layout.redis, &data))?
            .wait_healthy(Duration::from_secs(10))
            .await?;
        for (i, (app, health)) in layout.apps.iter().zip(&layout.subscribers).enumerate() {
            let config = dir.path().join(format!("{}.toml", app.name));
            let mut spec = app_spec(&app.name, app_bin.clone(), &config, app.public, app.internal);
            quiet_env(&mut spec);
            cluster.spawn(spec)?;
            let sub_name = format!("subscriber{}", i + 1);
            let config = dir.path().join(format!("{sub_name}.toml"));
            let mut spec = subscriber_spec(&sub_name, sub_bin.clone(), &config, *health);
            quiet_env(&mut spec);
            cluster.spawn(spec)?;
        }
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(LocalCluster {
            cluster,
            apps: layout.apps,
            redis: layout.redis,
            token: layout.token,
            dir,
        })
    }

    /// App `i` (0-based: `app(0)` is app1).
    pub fn app(&self, i: usize) -> &AppInfo {
        &self.apps[i % self.apps.len()]
    }

    /// v1 connect options for app `i`'s `/ws` (0-based).
    pub fn ws(&self, i: usize) -> ConnectOptions {
        ConnectOptions::for_endpoint(Endpoint {
            scheme: Scheme::Ws,
            host: self.app(i).public.ip().to_string(),
            port: self.app(i).public.port(),
            path: "/ws".into(),
        })
    }

    /// A v1 connection to app `i` in `room`, past its welcome and history.
    pub async fn join(&self, i: usize, room: &str) -> Result<Connection, ClientError> {
        let mut conn = Connection::connect(&self.ws(i).room(room)).await?;
        conn.join(Duration::from_secs(10)).await?;
        Ok(conn)
    }

    /// The process called `name`, for signals and restarts.
    pub fn process(&mut self, name: &str) -> Result<&mut Process, ClusterError> {
        self.cluster.get_mut(name)
    }
}
