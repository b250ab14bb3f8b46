//! A wsmesh cluster made of real processes: `redis-server`, apps and
//! subscribers (and later the lb), each a `Process`. `Cluster` is the set and
//! its order of start and stop; `Cluster::start_local` builds the test layout
//! on free loopback ports with configs rendered from `configs/local/*.toml`, so
//! the committed files stay the source of truth and a test only overrides what
//! it must. Dropping a cluster kills every process.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsmesh_client::{ClientError, ConnectOptions, Connection, Endpoint, Scheme};
use crate::ports;
use crate::process::{Health, Kind, Process, ProcessError, ProcessSpec};

/// Environment overrides that would silently beat a rendered config.
const OVERRIDE_VARS: [&str; 2] = ["WSMESH_REDIS_URL", "WSMESH_INTERNAL_TOKEN"];

/// Why a cluster could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A config template could not be read, changed or written.
    #[error("config {path}: {reason}")]
    Config {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
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

/// The committed local configs (`configs/local`) of this checkout.
pub fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/local")
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

/// Reads a TOML file as a table.
pub fn read_table(path: &Path) -> Result<toml::Table, ClusterError> {
    let err = |reason: String| ClusterError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    text.parse::<toml::Table>().map_err(|e| err(e.to_string()))
}

/// Sets a dotted key (`health.subscriber_max_age`), creating tables on the way.
pub fn set_key(table: &mut toml::Table, dotted: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop().filter(|k| !k.is_empty()) else {
        return Err(format!("bad key {dotted:?}"));
    };
    let mut here = table;
    for part in parts {
        let entry = here
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        here = entry
            .as_table_mut()
            .ok_or_else(|| format!("{dotted:?}: {part:?} is not a table"))?;
    }
    here.insert(last.to_string(), value);
    Ok(())
}

/// Renders `template` with `overrides` applied into `out`.
pub fn render(template: &Path, overrides: &[(String, toml::Value)], out: &Path) -> Result<(), ClusterError> {
    let mut table = read_table(template)?;
    for (key, value) in overrides {
        set_key(&mut table, key, value.clone()).map_err(|reason| ClusterError::Config {
            path: template.to_path_buf(),
            reason,
        })?;
    }
    let text = toml::to_string(&table).map_err(|e| ClusterError::Config {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    std::fs::write(out, text).map_err(|e| ClusterError::Config {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `redis-server` on `addr` with AOF persistence (fsync every second) in `dir`.
pub fn redis_spec(name: &str, addr: SocketAddr, dir: &Path) -> ProcessSpec {
    let args: Vec<OsString> = [
        "--port",
        &addr.port().to_string(),
        "--bind",
        &addr.ip().to_string(),
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    ProcessSpec {
        name: name.to_string(),
        kind: Kind::Redis,
        program: "redis-server".into(),
        args,
        env: vec![],
        env_remove: vec![],
        health: Health::RedisPing(addr),
        listens: vec![(addr, "redis".into())],
    }
}

/// An app on `config`, healthy when `public/healthz` is 200.
pub fn app_spec(
    name: &str,
    program: PathBuf,
    config: &Path,
    public: SocketAddr,
    internal: SocketAddr,
) -> ProcessSpec {
    ProcessSpec {
        name: name.to_string(),
        kind: Kind::App,
        program,
        args: vec!["--config".into(), config.into()],
        env: vec![],
        env_remove: vec![],
        health: Health::Http(format!("http://{public}/healthz")),
        listens: vec![(public, "public".into()), (internal, "internal".into())],
    }
}

/// A subscriber on `config`, healthy when `health/healthz` is 200.
pub fn subscriber_spec(name: &str, program: PathBuf, config: &Path, health: SocketAddr) -> ProcessSpec {
    ProcessSpec {
        name: name.to_string(),
        kind: Kind::Subscriber,
        program,
        args: vec!["--config".into(), config.into()],
        env: vec![],
        env_remove: vec![],
        health: Health::Http(format!("http://{health}/healthz")),
        listens: vec![(health, "health".into())],
    }
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
    let mut listens = listens;
    listens.push((admin, "admin".into()));
    ProcessSpec {
        name: name.to_string(),
        kind: Kind::Lb,
        program,
        args: vec!["--config".into(), config.into()],
        env: vec![],
        env_remove: vec![],
        health: Health::LbServersUp(format!("http://{admin}/api/backends")),
        listens,
    }
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

/// What a test changes in the rendered configs.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// Dotted keys set in both app configs.
    pub app: Vec<(String, toml::Value)>,
    /// Dotted keys set in both subscriber configs.
    pub subscriber: Vec<(String, toml::Value)>,
}

impl LocalOptions {
    /// Sets `key` in both app configs.
    pub fn app(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.app.push((key.to_string(), value.into()));
        self
    }

    /// Sets `key` in both subscriber configs.
    pub fn subscriber(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.subscriber.push((key.to_string(), value.into()));
        self
    }
}

/// Addresses of one app of a local cluster.
#[derive(Debug, Clone)]
pub struct AppInfo {
    /// Instance name, e.g. `app1`.
    pub name: String,
    /// Public listener.
    pub public: SocketAddr,
    /// Internal listener.
    pub internal: SocketAddr,
}

impl AppInfo {
    /// `ws://public/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    /// `http://public`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// `http://internal`.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.internal)
    }
}

/// Addresses of a local cluster whose configs were rendered on free ports.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    /// Redis address (all configs point at it).
    pub redis: SocketAddr,
    /// app1 and app2.
    pub apps: Vec<AppInfo>,
    /// subscriber1's and subscriber2's health listeners.
    pub subscribers: Vec<SocketAddr>,
    /// Internal bearer token (from the committed app1 config).
    pub token: String,
}

/// Writes `app1.toml`, `app2.toml`, `subscriber1.toml` and `subscriber2.toml`
/// into `dir`: the committed configs with free loopback ports, Redis on a free
/// port, and `opts` applied on top.
pub fn render_local(dir: &Path, opts: &LocalOptions) -> Result<LocalLayout, ClusterError> {
    let templates = configs_dir();
    let redis = ports::free_addr()?;
    let redis_url = format!("redis://{redis}/");
    let token = read_table(&templates.join("app1.toml"))?
        .get("internal")
        .and_then(|t| t.get("token"))
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let mut apps = Vec::new();
    let mut subscribers = Vec::new();
    for i in 1..=2 {
        let name = format!("app{i}");
        let info = AppInfo {
            name: name.clone(),
            public: ports::free_addr()?,
            internal: ports::free_addr()?,
        };
        let mut overrides = vec![
            ("instance".to_string(), name.clone().into()),
            ("listen.public".to_string(), info.public.to_string().into()),
            ("listen.internal".to_string(), info.internal.to_string().into()),
            ("redis.url".to_string(), redis_url.clone().into()),
        ];
        overrides.extend(opts.app.iter().cloned());
        let file = format!("{name}.toml");
        render(&templates.join(&file), &overrides, &dir.join(&file))?;

        let health = ports::free_addr()?;
        let mut overrides = vec![
            ("redis.url".to_string(), redis_url.clone().into()),
            ("app.internal_url".to_string(), info.internal_url().into()),
            ("listen.health".to_string(), health.to_string().into()),
        ];
        overrides.extend(opts.subscriber.iter().cloned());
        let file = format!("subscriber{i}.toml");
        render(&templates.join(&file), &overrides, &dir.join(&file))?;
        apps.push(info);
        subscribers.push(health);
    }
    Ok(LocalLayout {
        redis,
        apps,
        subscribers,
        token,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_key_creates_tables_and_refuses_to_descend_into_values() {
        let mut t: toml::Table = "a = 1\n[health]\nx = 2\n".parse().unwrap();
        set_key(&mut t, "health.subscriber_max_age", "1s".into()).unwrap();
        set_key(&mut t, "new.deep.key", 5.into()).unwrap();
        assert_eq!(t["health"]["subscriber_max_age"].as_str(), Some("1s"));
        assert_eq!(t["health"]["x"].as_integer(), Some(2));
        assert_eq!(t["new"]["deep"]["key"].as_integer(), Some(5));
        assert!(set_key(&mut t, "a.b", 1.into()).is_err());
        assert!(set_key(&mut t, "", 1.into()).is_err());
    }

    #[test]
    fn rendered_configs_keep_the_committed_keys_and_apply_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("app1.toml");
        let overrides = vec![
            ("listen.public".to_string(), "127.0.0.1:1".into()),
            ("health.subscriber_max_age".to_string(), "1s".into()),
        ];
        render(&configs_dir().join("app1.toml"), &overrides, &out).unwrap();
        let t = read_table(&out).unwrap();
        let committed = read_table(&configs_dir().join("app1.toml")).unwrap();
        assert_eq!(t["listen"]["public"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(t["health"]["subscriber_max_age"].as_str(), Some("1s"));
        assert_eq!(t["instance"], committed["instance"]);
        assert_eq!(t["limits"], committed["limits"]);
    }

    #[test]
    fn missing_template_is_a_config_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = render(Path::new("/nonexistent/x.toml"), &[], &dir.path().join("x.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.toml"), "{err}");
    }

    #[tokio::test]
    async fn redis_spec_starts_a_pingable_persistent_redis() {
        let dir = tempfile::tempdir().unwrap();
        let addr = ports::free_addr().unwrap();
        let mut cluster = Cluster::new();
        let redis = cluster.spawn(redis_spec("redis", addr, dir.path())).unwrap();
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
