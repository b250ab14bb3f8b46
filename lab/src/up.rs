//! `lab up`: the default local cluster on the fixed ports of the committed
//! config files in `configs/local/`, which are used as they are. It refuses to start over
//! a taken port (naming the holder), waits until every part is healthy, prints
//! one `ready` line, never restarts what dies (faults stay visible), and stops
//! everything in order on Ctrl-C / SIGTERM.
//!
//! With `--port-offset N` the same configs run moved by N ports (see `shift`)
//! from a temporary directory, so a second cluster (the browser tests) can run
//! next to the real one; `--pid-dir` tells a test which pid to kill.
//!
//! With `--ha` (configs in `configs/ha/`) Redis is a master, two replicas
//! and three Sentinels (see `ha`), the apps and subscribers find the master
//! through the Sentinels, and the ready line also names the Sentinels.
//!
//! With `--auth` the apps run in jwt mode (see `auth`) and the ready line
//! ends with a chat URL that carries a token.
//!
//! With `--apps N` (other than 2) or `--redis cluster` the configs are
//! written into the run directory from the committed ones (see `fleet`);
//! on a cluster, six Redis nodes are made a 3-master, 3-replica Redis
//! Cluster before anything else starts (see `redis_cluster`), and the ready
//! line also names the nodes.
//!
//! (Over 600 lines: the unit tests of the port layouts are a third of it.)

pub(crate) mod auth;
pub mod fleet;
pub(crate) mod ha;
pub mod redis_cluster;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wsmesh_testkit::cluster::{self, Cluster, ClusterError};
use wsmesh_testkit::configs::shift::{self, ShiftError};
use wsmesh_testkit::configs::{self, AppConfig, LbConfig, SubscriberConfig};
use wsmesh_testkit::process::{Kind, ProcessSpec};

use crate::ports;

/// How long a process gets between SIGTERM and SIGKILL; covers the app's drain
/// (grace + window in the committed configs).
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Redis data without `--redis-dir` on the fixed ports: kept between runs.
const DEFAULT_REDIS_DIR: &str = "target/lab/redis";

/// Which cluster to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One `redis-server`, found by `redis.url`.
    Single,
    /// A Redis master, two replicas and three Sentinels; the configs name
    /// the Sentinels.
    Ha,
    /// A Redis Cluster of three masters and three replicas on the fixed
    /// node ports of `redis_cluster`; the configs are written for it.
    Cluster,
}

impl Layout {
    /// The committed configs of this layout.
    pub fn default_configs(self) -> PathBuf {
        match self {
            Layout::Single | Layout::Cluster => "configs/local".into(),
            Layout::Ha => "configs/ha".into(),
        }
    }
}

/// Environment overrides that would beat a moved config and point a moved
/// cluster back at the real one's Redis (or lock its lb's admin API).
const OVERRIDE_VARS: [&str; 3] = ["WSMESH_REDIS_URL", "WSMESH_INTERNAL_TOKEN", "WSMESH_ADMIN_TOKEN"];

/// Why the cluster could not come up.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A fixed port is in use.
    #[error("port {addr} ({what}) is already in use{holder}; stop it first (a previous `lab up`?)")]
    PortTaken {
        /// The listen address a config asks for.
        addr: SocketAddr,
        /// Which process of ours needs it.
        what: String,
        /// `by PID (name)` when known.
        holder: String,
    },
    /// `redis-server` is not installed.
    #[error("redis-server not found on PATH: install it with `apt-get install redis-server` (`make up` does this)")]
    NoRedis,
    /// `redis-sentinel` is not installed (`--ha`).
    #[error("redis-sentinel not found on PATH: install it with `apt-get install redis-sentinel`")]
    NoSentinel,
    /// `redis-cli` is not installed (`--redis cluster`).
    #[error("redis-cli not found on PATH: install it with `apt-get install redis-tools`")]
    NoRedisCli,
    /// A port that no config file holds moved past 65535.
    #[error("{what} port {port} moved by {offset} is past 65535; use a smaller --port-offset")]
    PortPast {
        /// Whose port.
        what: String,
        /// The port before the offset.
        port: u16,
        /// The requested offset.
        offset: u16,
    },
    /// `--apps` out of range.
    #[error("--apps {0}: from 1 to {max} apps (the port scheme 900i)", max = fleet::MAX_APPS)]
    Apps(usize),
    /// `redis-cli --cluster create` failed or the cluster did not settle.
    #[error("making the Redis Cluster: {0}")]
    ClusterCreate(String),
    /// The replicas or Sentinels did not settle in time (`--ha`).
    #[error("the Redis replicas and Sentinels were not ready for a failover within {0:?}")]
    NotFailoverReady(Duration),
    /// A config file failed its binary's `check-config`.
    #[error("{0}")]
    CheckConfig(String),
    /// A committed config lacks a key we need.
    #[error("{file}: missing or bad `{key}`")]
    Config {
        /// The config file.
        file: PathBuf,
        /// The dotted key.
        key: String,
    },
    /// Anything the harness reports.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The configs could not be moved to other ports.
    #[error(transparent)]
    Shift(#[from] ShiftError),
    /// A pid file could not be written.
    #[error("pid file {path}: {source}")]
    PidFile {
        /// The pid file that could not be written or removed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("signals: {0}")]
    Signal(std::io::Error),
}

/// Where to find things.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Which cluster.
    pub layout: Layout,
    /// Directory with app1.toml, app2.toml, subscriber1.toml, subscriber2.toml.
    pub configs: PathBuf,
    /// Apps (each with its subscriber); other than 2, their configs are
    /// written from the committed first ones (see `fleet`).
    pub apps: usize,
    /// Redis data directory (AOF lives here between runs); by default
    /// `target/lab/redis`, or the temporary directory with `port_offset` or
    /// the HA layout.
    pub redis_dir: Option<PathBuf>,
    /// How long to wait for health before giving up.
    pub start_timeout: Duration,
    /// Run the configs moved by this many ports, from a temporary directory.
    pub port_offset: Option<u16>,
    /// Write `<dir>/<name>.pid` for every process (removed when it exits).
    pub pid_dir: Option<PathBuf>,
    /// Run the apps in jwt mode with a generated secret.
    pub auth: bool,
}

/// The pid files of `--pid-dir`. A file is removed as soon as its process is
/// reaped and all at exit, so a test never kills a reused pid from a stale file.
#[derive(Debug)]
struct PidFiles {
    /// The directory, when asked for.
    dir: Option<PathBuf>,
    /// Files written and not yet removed.
    written: Vec<PathBuf>,
}

impl PidFiles {
    /// Writes `<dir>/<name>.pid` (when there is a dir).
    fn write(&mut self, name: &str, pid: Option<u32>) -> Result<(), UpError> {
        let (Some(dir), Some(pid)) = (&self.dir, pid) else {
            return Ok(());
        };
        let path = dir.join(format!("{name}.pid"));
        let fail = |source| UpError::PidFile {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        std::fs::write(&path, format!("{pid}\n")).map_err(fail)?;
        self.written.push(path);
        Ok(())
    }

    /// Removes the file of `name`, whose process has exited.
    fn remove(&mut self, name: &str) {
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{name}.pid"));
            let _ = std::fs::remove_file(&path);
            self.written.retain(|p| *p != path);
        }
    }
}

impl Drop for PidFiles {
    fn drop(&mut self) {
        for path in &self.written {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A config's address field as a socket address; `redis://host:port/`
/// gives `host:port`.
fn addr_of(file: &Path, key: &str, text: &str) -> Result<SocketAddr, UpError> {
    let text = text
        .strip_prefix("redis://")
        .unwrap_or(text)
        .trim_end_matches('/');
    text.parse().map_err(|_| UpError::Config {
        file: file.to_path_buf(),
        key: key.to_string(),
    })
}

/// Loads a config file of one of the binaries.
fn load<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, UpError> {
    Ok(configs::load(file).map_err(ClusterError::from)?)
}

/// The wsmesh executables to run.
#[derive(Debug, Clone)]
struct Binaries {
    /// The chat server.
    app: PathBuf,
    /// The Redis → app event forwarder.
    subscriber: PathBuf,
    /// The load balancer.
    lb: PathBuf,
}

/// The lb's frontends (https ones first, so the ready line shows https) and
/// its admin listener, read from its config.
fn lb_listens(file: &Path, config: &LbConfig) -> Result<(Vec<(SocketAddr, String)>, SocketAddr), UpError> {
    let mut listens = Vec::new();
    for frontend in &config.frontends {
        let addr = addr_of(file, "frontend.listen", frontend.listen.get_ref())?;
        let tls = !frontend.certs.is_empty();
        listens.push((addr, if tls { "https" } else { "http" }.to_string()));
    }
    listens.sort_by_key(|(_, what)| what != "https");
    let admin = addr_of(file, "admin.listen", config.admin.listen.get_ref())?;
    Ok((listens, admin))
}

/// Where the Redis processes come from: the layout, and the offset their
/// ports move by (the HA nodes' ports are not in any config file).
#[derive(Debug, Clone, Copy)]
struct RedisPlan {
    /// Which cluster.
    layout: Layout,
    /// `--port-offset`, or 0.
    offset: u16,
    /// Apps and subscribers in the configs.
    apps: usize,
}

/// The process specs of the cluster, from the configs in `configs`: Redis
/// (and with `Layout::Ha` its Sentinels) first, then the apps, the lb and
/// the subscribers.
fn specs(
    configs: &Path,
    redis_dir: &Path,
    bins: &Binaries,
    plan: RedisPlan,
) -> Result<Vec<ProcessSpec>, UpError> {
    let first_app = configs.join("app1.toml");
    let redis = load::<AppConfig>(&first_app)?.redis;
    let mut specs = match plan.layout {
        Layout::Single => vec![cluster::redis_spec(
            "redis",
            addr_of(&first_app, "redis.url", &redis.url)?,
            redis_dir,
        )],
        Layout::Ha => ha::specs(
            &ha::sentinel_addrs(&first_app, &redis.sentinels)?,
            plan.offset,
            redis_dir,
        )?,
        Layout::Cluster => redis_cluster::specs(&redis_cluster::nodes(plan.offset)?, redis_dir)
            .map_err(ClusterError::from)?,
    };
    for i in 1..=plan.apps {
        let app = configs.join(format!("app{i}.toml"));
        let config: AppConfig = load(&app)?;
        specs.push(cluster::app_spec(
            &format!("app{i}"),
            bins.app.clone(),
            &app,
            config.listen.public,
            config.listen.internal,
        ));
    }
    let lb = configs.join("lb.toml");
    if lb.exists() {
        let (listens, admin) = lb_listens(&lb, &load(&lb)?)?;
        specs.push(cluster::lb_spec("lb", bins.lb.clone(), &lb, listens, admin));
    }
    for i in 1..=plan.apps {
        let sub = configs.join(format!("subscriber{i}.toml"));
        let health = load::<SubscriberConfig>(&sub)?.listen.health;
        specs.push(cluster::subscriber_spec(
            &format!("subscriber{i}"),
            bins.subscriber.clone(),
            &sub,
            health,
        ));
    }
    Ok(specs)
}

/// Refuses when any fixed port is taken, naming the holder when it can be told.
fn check_ports(specs: &[ProcessSpec]) -> Result<(), UpError> {
    for spec in specs {
        for (addr, what) in &spec.listens {
            if !wsmesh_testkit::ports::is_free(*addr) {
                let holder = ports::holder(addr.port())
                    .map(|h| format!(" by pid {} ({})", h.pid, h.name))
                    .unwrap_or_default();
                return Err(UpError::PortTaken {
                    addr: *addr,
                    what: format!("{} {what}", spec.name),
                    holder,
                });
            }
        }
    }
    Ok(())
}

/// Runs `<binary> check-config FILE` for every wsmesh process, so a broken
/// config or a missing certificate is reported with its reason before
/// anything starts, not as a health timeout.
fn check_configs(specs: &[ProcessSpec]) -> Result<(), UpError> {
    for spec in specs.iter().filter(|s| s.kind != Kind::Redis) {
        let Some(config) = spec.args.iter().skip_while(|a| *a != "--config").nth(1) else {
            continue;
        };
        let out = std::process::Command::new(&spec.program)
            .arg("check-config")
            .arg(config)
            .output()
            .map_err(|e| {
                UpError::CheckConfig(format!(
                    "{}: cannot run {}: {e}",
                    spec.name,
                    spec.program.display()
                ))
            })?;
        if !out.status.success() {
            let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let hint = if spec.kind == Kind::Lb && reason.contains("cert") {
                " (make the dev certificates with `lb gen-cert --dir certs`; `make up` does this)"
            } else {
                ""
            };
            return Err(UpError::CheckConfig(format!("{}: {reason}{hint}", spec.name)));
        }
    }
    Ok(())
}

/// Whether `program` is an executable on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// The `ready` line: the lb's URL first once it exists, then each app's,
/// then the Sentinels (`sentinels ip:port,ip:port,ip:port`) or the Redis
/// Cluster's nodes (`cluster ip:port,…`) when there are.
fn ready_line(specs: &[ProcessSpec]) -> String {
    let mut parts = Vec::new();
    for kind in [Kind::Lb, Kind::App] {
        for spec in specs.iter().filter(|s| s.kind == kind) {
            if let Some((addr, _)) = spec.listens.first() {
                let scheme = if kind == Kind::Lb { "https" } else { "http" };
                parts.push(format!("{} {scheme}://{addr}", spec.name));
            }
        }
    }
    for (listen, label) in [("sentinel", "sentinels"), ("redis cluster node", "cluster")] {
        let addrs: Vec<String> = specs
            .iter()
            .flat_map(|s| &s.listens)
            .filter(|(_, what)| what == listen)
            .map(|(addr, _)| addr.to_string())
            .collect();
        if !addrs.is_empty() {
            parts.push(format!("{label} {}", addrs.join(",")));
        }
    }
    format!("ready: {}", parts.join("  "))
}

/// Runs the cluster until Ctrl-C / SIGTERM.
pub async fn run(opts: UpOptions) -> Result<(), UpError> {
    let bins = Binaries {
        app: cluster::binary("app")?,
        subscriber: cluster::binary("subscriber")?,
        lb: cluster::binary("lb")?,
    };
    // Declared before the cluster, so it is removed after every process stopped.
    let offset = opts.port_offset.unwrap_or(0);
    let nodes = match opts.layout {
        Layout::Cluster => Some(redis_cluster::nodes(offset)?),
        Layout::Single | Layout::Ha => None,
    };
    let written = opts.apps != 2 || nodes.is_some();
    let moved = if written || opts.port_offset.is_some() {
        let dir = tempfile::Builder::new()
            .prefix("wsmesh-up-")
            .tempdir()
            .map_err(ClusterError::from)?;
        if written {
            let fleet = fleet::Fleet {
                apps: opts.apps,
                offset,
                cluster: nodes.as_deref(),
            };
            fleet::render(&opts.configs, dir.path(), fleet)?;
        } else {
            shift::render_dir(&opts.configs, dir.path(), offset)?;
        }
        Some(dir)
    } else {
        None
    };
    // The HA layout's data starts afresh each time (see `ha`) unless asked.
    let fresh = match (&moved, opts.layout, &opts.redis_dir) {
        (None, Layout::Ha, None) => Some(
            tempfile::Builder::new()
                .prefix("wsmesh-up-ha-")
                .tempdir()
                .map_err(ClusterError::from)?,
        ),
        _ => None,
    };
    let (configs, redis_dir) = match (&moved, opts.redis_dir) {
        (Some(dir), redis_dir) => (
            dir.path().to_path_buf(),
            redis_dir.unwrap_or_else(|| dir.path().join("redis")),
        ),
        (None, redis_dir) => (
            opts.configs,
            redis_dir.unwrap_or_else(|| match &fresh {
                Some(dir) => dir.path().to_path_buf(),
                None => DEFAULT_REDIS_DIR.into(),
            }),
        ),
    };
    // Declared after `moved`, so a copy it makes goes first.
    let auth = match opts.auth {
        true => Some(auth::AuthRun::prepare(&configs, moved.is_some())?),
        false => None,
    };
    let configs = auth.as_ref().map_or(configs, |a| a.configs.clone());
    if !on_path("redis-server") {
        return Err(UpError::NoRedis);
    }
    if opts.layout == Layout::Ha && !on_path("redis-sentinel") {
        return Err(UpError::NoSentinel);
    }
    if opts.layout == Layout::Cluster && !on_path("redis-cli") {
        return Err(UpError::NoRedisCli);
    }
    std::fs::create_dir_all(&redis_dir).map_err(ClusterError::from)?;
    let plan = RedisPlan {
        layout: opts.layout,
        offset,
        apps: opts.apps,
    };
    let mut specs = specs(&configs, &redis_dir, &bins, plan)?;
    for spec in &mut specs {
        if moved.is_some() {
            spec.env_remove = OVERRIDE_VARS.iter().map(|v| v.to_string()).collect();
        } else if opts.layout == Layout::Ha {
            // A Redis URL from the environment would clash with the Sentinels.
            spec.env_remove = vec![OVERRIDE_VARS[0].to_string()];
        }
    }
    check_ports(&specs)?;
    check_configs(&specs)?;
    let mut ready = ready_line(&specs);
    if let Some(auth) = &auth {
        ready = format!("{ready}  {}", auth.chat_entry(&specs)?);
        println!("{}", auth.hint());
    }
    let listens: Vec<(SocketAddr, String)> = specs.iter().flat_map(|s| s.listens.clone()).collect();
    let mut pid_files = PidFiles {
        dir: opts.pid_dir,
        written: Vec::new(),
    };

    // Children sit in their own process group, so a terminal's Ctrl-C reaches only us;
    // should we die anyway, PR_SET_PDEATHSIG takes them down.
    let stop = wsmesh_common::signal::terminate();
    tokio::pin!(stop);
    let mut cluster = Cluster::new();
    // Redis first: a Redis Cluster is made of running nodes before the
    // apps and subscribers look for it.
    let (redis, rest): (Vec<_>, Vec<_>) = specs.into_iter().partition(|s| s.kind == Kind::Redis);
    tokio::select! {
        healthy = async {
            for spec in redis {
                let process = cluster.spawn(spec)?;
                pid_files.write(process.name(), process.pid())?;
            }
            cluster.wait_healthy(opts.start_timeout).await?;
            if let Some(nodes) = &nodes {
                redis_cluster::create(nodes).await?;
            }
            for spec in rest {
                let process = cluster.spawn(spec)?;
                pid_files.write(process.name(), process.pid())?;
            }
            cluster.wait_healthy(opts.start_timeout).await?;
            if opts.layout == Layout::Ha {
                ha::wait_failover_ready(&listens, opts.start_timeout).await?;
            }
            Ok::<(), UpError>(())
        } => healthy?,
        signalled = &mut stop => {
            signalled.map_err(UpError::Signal)?;
            cluster.shutdown(STOP_GRACE).await?;
            return Ok(());
        }
    }
    println!("{ready}");
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            signalled = &mut stop => {
                signalled.map_err(UpError::Signal)?;
                break;
            }
            _ = tick.tick() => {
                for (name, status) in cluster.reap() {
                    pid_files.remove(&name);
                    println!("{name} exited ({status})");
                    tracing::error!(%name, %status, "process exited; not restarting");
                }
            }
        }
    }
    println!("stopping");
    cluster.shutdown(STOP_GRACE).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_of_reads_listen_and_redis_addresses() {
        let f = Path::new("x.toml");
        assert_eq!(addr_of(f, "admin.listen", "127.0.0.1:9001").unwrap().port(), 9001);
        assert_eq!(
            addr_of(f, "redis.url", "redis://127.0.0.1:6390/").unwrap().port(),
            6390
        );
        let err = addr_of(f, "redis.url", "redis://redis.example:6390/").unwrap_err();
        assert!(err.to_string().contains("redis.url"), "{err}");
    }

    const SINGLE: RedisPlan = RedisPlan {
        layout: Layout::Single,
        offset: 0,
        apps: 2,
    };

    fn bins() -> Binaries {
        Binaries {
            app: "app".into(),
            subscriber: "subscriber".into(),
            lb: "lb".into(),
        }
    }

    fn sorted_ports(specs: &[ProcessSpec]) -> Vec<u16> {
        let mut ports: Vec<u16> = specs
            .iter()
            .flat_map(|s| s.listens.iter().map(|(a, _)| a.port()))
            .collect();
        ports.sort();
        ports
    }

    #[test]
    fn moved_configs_give_every_fixed_port_plus_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        shift::render_dir(&configs::configs_dir(), dir.path(), 10000).unwrap();
        let specs = specs(dir.path(), dir.path(), &bins(), SINGLE).unwrap();
        assert_eq!(
            sorted_ports(&specs),
            vec![16390, 18080, 18404, 18443, 19001, 19002, 19101, 19102, 19201, 19202]
        );
        assert_eq!(
            ready_line(&specs),
            "ready: lb https://127.0.0.1:18443  app1 http://127.0.0.1:19001  app2 http://127.0.0.1:19002"
        );
        let sub: SubscriberConfig = configs::load(&dir.path().join("subscriber2.toml")).unwrap();
        assert_eq!(sub.app.internal_url, "http://127.0.0.1:19102");
    }

    #[test]
    fn the_ha_layout_moves_nodes_and_sentinels_and_names_the_sentinels() {
        let dir = tempfile::tempdir().unwrap();
        shift::render_dir(&configs::ha_configs_dir(), dir.path(), 10000).unwrap();
        let plan = RedisPlan {
            layout: Layout::Ha,
            offset: 10000,
            apps: 2,
        };
        let specs = specs(dir.path(), dir.path(), &bins(), plan).unwrap();
        assert_eq!(
            sorted_ports(&specs),
            vec![
                16390, 16391, 16392, 18080, 18404, 18443, 19001, 19002, 19101, 19102, 19201, 19202, 36390,
                36391, 36392
            ]
        );
        assert!(ready_line(&specs).ends_with(
            "app2 http://127.0.0.1:19002  sentinels 127.0.0.1:36390,127.0.0.1:36391,127.0.0.1:36392"
        ));
        let sub: SubscriberConfig = configs::load(&dir.path().join("subscriber1.toml")).unwrap();
        assert_eq!(sub.redis.sentinels[2], "127.0.0.1:36392");
    }

    #[test]
    fn the_cluster_layout_runs_n_apps_and_six_nodes_and_names_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = redis_cluster::nodes(3000).unwrap();
        let fleet = fleet::Fleet {
            apps: 4,
            offset: 3000,
            cluster: Some(&nodes),
        };
        fleet::render(&configs::configs_dir(), dir.path(), fleet).unwrap();
        let plan = RedisPlan {
            layout: Layout::Cluster,
            offset: 3000,
            apps: 4,
        };
        let specs = specs(dir.path(), dir.path(), &bins(), plan).unwrap();
        assert_eq!(
            sorted_ports(&specs),
            vec![
                10001, 10002, 10003, 10004, 10005, 10006, 11080, 11404, 11443, 12001, 12002, 12003, 12004,
                12101, 12102, 12103, 12104, 12201, 12202, 12203, 12204, 20001, 20002, 20003, 20004, 20005,
                20006
            ]
        );
        assert_eq!(
            ready_line(&specs),
            "ready: lb https://127.0.0.1:11443  app1 http://127.0.0.1:12001  app2 http://127.0.0.1:12002  \
             app3 http://127.0.0.1:12003  app4 http://127.0.0.1:12004  cluster 127.0.0.1:10001,\
             127.0.0.1:10002,127.0.0.1:10003,127.0.0.1:10004,127.0.0.1:10005,127.0.0.1:10006"
        );
    }

    #[test]
    fn pid_files_are_written_removed_on_exit_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let mut files = PidFiles {
            dir: Some(pids.clone()),
            written: Vec::new(),
        };
        files.write("app1", Some(41)).unwrap();
        files.write("app2", Some(42)).unwrap();
        files.write("gone", None).unwrap();
        assert_eq!(std::fs::read_to_string(pids.join("app1.pid")).unwrap(), "41\n");
        assert!(!pids.join("gone.pid").exists());
        files.remove("app1");
        assert!(!pids.join("app1.pid").exists());
        assert!(pids.join("app2.pid").exists());
        drop(files);
        assert!(!pids.join("app2.pid").exists());
        let mut none = PidFiles {
            dir: None,
            written: Vec::new(),
        };
        none.write("app1", Some(1)).unwrap();
    }

    #[test]
    fn committed_configs_give_the_documented_fixed_ports() {
        let dir = tempfile::tempdir().unwrap();
        let specs = specs(&configs::configs_dir(), dir.path(), &bins(), SINGLE).unwrap();
        assert_eq!(
            sorted_ports(&specs),
            vec![6390, 8080, 8404, 8443, 9001, 9002, 9101, 9102, 9201, 9202]
        );
        assert_eq!(
            ready_line(&specs),
            "ready: lb https://127.0.0.1:8443  app1 http://127.0.0.1:9001  app2 http://127.0.0.1:9002"
        );
    }

    #[test]
    fn a_taken_port_is_refused_naming_its_holder() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spec = cluster::redis_spec("redis", addr, dir.path());
        let err = check_ports(&[spec]).unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }
}
