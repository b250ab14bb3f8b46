//! `lab up`: the default local cluster on the fixed ports of ARCHITECTURE.md,
//! with the committed config files used as they are. It refuses to start over
//! a taken port (naming the holder), waits until every part is healthy, prints
//! one `ready` line, never restarts what dies (faults stay visible), and stops
//! everything in order on Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::{self, Cluster, ClusterError};
use crate::ports;
use crate::process::{Kind, ProcessSpec};

/// How long a process gets between SIGTERM and SIGKILL; covers the app's drain
/// (grace + window in the committed configs).
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Why the cluster could not come up.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A fixed port is in use.
    #[error("port {addr} ({what}) is already in use{holder}; stop it first (a previous `lab up`?)")]
    PortTaken {
        /// The address.
        addr: SocketAddr,
        /// Which process of ours needs it.
        what: String,
        /// `by PID (name)` when known.
        holder: String,
    },
    /// `redis-server` is not installed.
    #[error("redis-server not found on PATH: install it with `apt-get install redis-server` (`make up` does this)")]
    NoRedis,
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
    /// Signal handlers could not be installed.
    #[error("signals: {0}")]
    Signal(std::io::Error),
}

/// Where to find things.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Directory with app1.toml, app2.toml, subscriber1.toml, subscriber2.toml.
    pub configs: PathBuf,
    /// Redis data directory (AOF lives here between runs).
    pub redis_dir: PathBuf,
    /// How long to wait for health before giving up.
    pub start_timeout: Duration,
}

/// A string key of a config file, as a socket address.
fn addr_key(file: &Path, table: &toml::Table, dotted: &str) -> Result<SocketAddr, UpError> {
    let bad = || UpError::Config {
        file: file.to_path_buf(),
        key: dotted.to_string(),
    };
    let mut value = None::<&toml::Value>;
    let mut here = table;
    for part in dotted.split('.') {
        let v = here.get(part).ok_or_else(bad)?;
        if let Some(t) = v.as_table() {
            here = t;
        }
        value = Some(v);
    }
    let text = value.and_then(|v| v.as_str()).ok_or_else(bad)?;
    // redis://host:port/ → host:port
    let text = text
        .strip_prefix("redis://")
        .unwrap_or(text)
        .trim_end_matches('/');
    text.parse().map_err(|_| bad())
}

/// The wsmesh executables to run.
#[derive(Debug, Clone)]
struct Binaries {
    /// The chat server.
    app: PathBuf,
    /// The forwarder.
    subscriber: PathBuf,
    /// The load balancer.
    lb: PathBuf,
}

/// The lb's frontends (https ones first, so the ready line shows https) and
/// its admin listener, read from its config.
fn lb_listens(file: &Path, table: &toml::Table) -> Result<(Vec<(SocketAddr, String)>, SocketAddr), UpError> {
    let bad = |key: &str| UpError::Config {
        file: file.to_path_buf(),
        key: key.to_string(),
    };
    let frontends = table
        .get("frontend")
        .and_then(|f| f.as_array())
        .ok_or_else(|| bad("frontend"))?;
    let mut listens = Vec::new();
    for frontend in frontends {
        let frontend = frontend.as_table().ok_or_else(|| bad("frontend"))?;
        let addr = frontend
            .get("listen")
            .and_then(|l| l.as_str())
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("frontend.listen"))?;
        let tls = frontend.contains_key("cert");
        listens.push((addr, if tls { "https" } else { "http" }.to_string()));
    }
    listens.sort_by_key(|(_, what)| what != "https");
    let admin = match table.get("admin").and_then(|a| a.as_table()) {
        Some(admin) => addr_key(file, admin, "listen")?,
        None => return Err(bad("admin.listen")),
    };
    Ok((listens, admin))
}

/// The process specs of the default cluster, from the committed configs.
fn specs(opts: &UpOptions, bins: &Binaries) -> Result<Vec<ProcessSpec>, UpError> {
    let mut specs = Vec::new();
    let first_app = opts.configs.join("app1.toml");
    let redis = addr_key(&first_app, &cluster::read_table(&first_app)?, "redis.url")?;
    specs.push(cluster::redis_spec("redis", redis, &opts.redis_dir));
    for i in 1..=2 {
        let app = opts.configs.join(format!("app{i}.toml"));
        let table = cluster::read_table(&app)?;
        let public = addr_key(&app, &table, "listen.public")?;
        let internal = addr_key(&app, &table, "listen.internal")?;
        specs.push(cluster::app_spec(
            &format!("app{i}"),
            bins.app.clone(),
            &app,
            public,
            internal,
        ));
    }
    let lb = opts.configs.join("lb.toml");
    if lb.exists() {
        let (listens, admin) = lb_listens(&lb, &cluster::read_table(&lb)?)?;
        specs.push(cluster::lb_spec("lb", bins.lb.clone(), &lb, listens, admin));
    }
    for i in 1..=2 {
        let sub = opts.configs.join(format!("subscriber{i}.toml"));
        let health = addr_key(&sub, &cluster::read_table(&sub)?, "listen.health")?;
        let bin = bins.subscriber.clone();
        specs.push(cluster::subscriber_spec(
            &format!("subscriber{i}"),
            bin,
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
            if !ports::is_free(*addr) {
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

/// The `ready` line: the lb's URL first once it exists, then each app's.
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
    format!("ready: {}", parts.join("  "))
}

/// Runs the cluster until Ctrl-C / SIGTERM.
pub async fn run(opts: UpOptions) -> Result<(), UpError> {
    let bins = Binaries {
        app: cluster::binary("app")?,
        subscriber: cluster::binary("subscriber")?,
        lb: cluster::binary("lb")?,
    };
    let specs = specs(&opts, &bins)?;
    if !on_path("redis-server") {
        return Err(UpError::NoRedis);
    }
    check_ports(&specs)?;
    check_configs(&specs)?;
    std::fs::create_dir_all(&opts.redis_dir).map_err(ClusterError::from)?;
    let ready = ready_line(&specs);

    // Children sit in their own process group, so a terminal's Ctrl-C reaches only us;
    // should we die anyway, PR_SET_PDEATHSIG takes them down.
    let stop = wsmesh_common::signal::terminate();
    tokio::pin!(stop);
    let mut cluster = Cluster::new();
    for spec in specs {
        cluster.spawn(spec)?;
    }
    tokio::select! {
        healthy = cluster.wait_healthy(opts.start_timeout) => healthy?,
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
    fn addr_key_reads_listen_and_redis_addresses() {
        let t: toml::Table =
            "[listen]\npublic = \"127.0.0.1:9001\"\n[redis]\nurl = \"redis://127.0.0.1:6390/\"\n"
                .parse()
                .unwrap();
        let f = Path::new("x.toml");
        assert_eq!(addr_key(f, &t, "listen.public").unwrap().port(), 9001);
        assert_eq!(addr_key(f, &t, "redis.url").unwrap().port(), 6390);
        let err = addr_key(f, &t, "listen.internal").unwrap_err();
        assert!(err.to_string().contains("listen.internal"), "{err}");
    }

    #[test]
    fn committed_configs_give_the_documented_fixed_ports() {
        let dir = tempfile::tempdir().unwrap();
        let opts = UpOptions {
            configs: cluster::configs_dir(),
            redis_dir: dir.path().into(),
            start_timeout: Duration::from_secs(1),
        };
        let bins = Binaries {
            app: "app".into(),
            subscriber: "subscriber".into(),
            lb: "lb".into(),
        };
        let specs = specs(&opts, &bins).unwrap();
        let mut ports: Vec<u16> = specs
            .iter()
            .flat_map(|s| s.listens.iter().map(|(a, _)| a.port()))
            .collect();
        ports.sort();
        assert_eq!(
            ports,
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
