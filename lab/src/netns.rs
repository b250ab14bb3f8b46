//! `lab netns`: the 4-host Vagrant lab (lb, app1, app2, redis) on this one
//! machine, in network namespaces, so the Vagrantfile's layout, the files in
//! `configs/vagrant/` and the environment the systemd units give the services
//! are exercised without VirtualBox. It starts redis-server, two apps, two
//! subscribers and the lb inside their hosts' namespaces, runs a chat check
//! and a failover drill (app1's link goes down) from a `client` namespace,
//! and removes everything it created on every path: normal end, error,
//! panic (drop guards) and SIGINT/SIGTERM (checked between steps).
//!
//! Traffic goes only to the namespaces' own addresses: the bridge lives in a
//! namespace of its own and no namespace has a route anywhere else.
//!
//! Needs root (CAP_NET_ADMIN); elsewhere it reports why and exits with
//! [`EXIT_SKIPPED`]; `lab/tests/integration/netns.rs` is ignored unless asked for, and
//! fails on that exit when it was.

mod drill;
mod enter;
mod procs;
mod topology;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use self::procs::{Procs, Spec};
use self::topology::{HostTable, Role, Topology};

/// Exit code of `lab netns` when the machine cannot run it (automake's "skipped").
pub const EXIT_SKIPPED: u8 = 77;

/// `lab netns` options.
#[derive(Debug, Clone, Args)]
pub struct NetnsArgs {
    /// Directory with the lab's files (hosts.env, app1.toml, …, lb.toml, redis.conf).
    #[arg(long, default_value = "configs/vagrant")]
    pub configs: PathBuf,
    /// The provisioning scripts (certs.sh); default: `deploy/provision` of
    /// the repository that holds `--configs`.
    #[arg(long)]
    pub provision: Option<PathBuf>,
    /// Directory with the `lb`, `app` and `subscriber` binaries; default: next
    /// to this `lab` binary.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Keep the temporary directory (logs, certificates) and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// Why the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Something needed to start is missing or unusable.
    #[error("setup: {0}")]
    Setup(String),
    /// A command (`ip`, `lb gen-cert`, …) failed.
    #[error("command failed: {0}")]
    Command(String),
    /// A service exited while it should run.
    #[error("{name} exited ({status}); last log lines:\n{log_tail}")]
    Died {
        /// The process that died, e.g. `app1`.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// Something did not become true in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A check saw the wrong thing.
    #[error("check failed: {0}")]
    Check(String),
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted")]
    Interrupted,
}

/// How a run ended, when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    /// Everything passed; one line per check.
    Passed(Vec<String>),
    /// The machine cannot run the lab, and why.
    Skipped(String),
}

/// Set by the SIGINT/SIGTERM handler; checked between steps.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// An error if a signal asked us to stop.
pub(crate) fn check_interrupted() -> Result<(), NetnsError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(NetnsError::Interrupted)
    } else {
        Ok(())
    }
}

/// Entry point of the `lab netns` subcommand: the process exit code (0
/// passed, [`EXIT_SKIPPED`], 1 failed). Everything it started is gone when
/// it returns.
pub fn cli(args: NetnsArgs) -> i32 {
    match run(&args) {
        Ok(Outcome::Passed(_)) => {
            println!("netns lab: passed");
            0
        }
        Ok(Outcome::Skipped(reason)) => {
            println!("skipped: {reason}");
            i32::from(EXIT_SKIPPED)
        }
        Err(e) => {
            eprintln!("netns lab: FAILED: {e}");
            1
        }
    }
}

/// The binaries and files one run uses.
#[derive(Debug)]
struct Inputs {
    /// `configs/vagrant`, absolute.
    configs: PathBuf,
    /// The lb binary.
    lb: PathBuf,
    /// The app binary.
    app: PathBuf,
    /// The subscriber binary.
    subscriber: PathBuf,
    /// redis-server.
    redis_server: PathBuf,
    /// The address table.
    hosts: HostTable,
    /// `deploy/provision/certs.sh`.
    certs_script: PathBuf,
}

impl Inputs {
    fn gather(args: &NetnsArgs) -> Result<Inputs, NetnsError> {
        let configs = std::path::absolute(&args.configs)
            .map_err(|e| NetnsError::Setup(format!("{}: {e}", args.configs.display())))?;
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .ok_or_else(|| {
                    NetnsError::Setup("cannot tell where the lab binary is; pass --bin-dir".into())
                })?,
        };
        let bin = |name: &str| {
            let p = bin_dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(NetnsError::Setup(format!(
                    "{} is missing: build it first (cargo build -p lb -p app -p subscriber)",
                    p.display()
                )))
            }
        };
        let redis_server = which(&args.redis_server).ok_or_else(|| {
            NetnsError::Setup(format!(
                "{} not found: apt-get install redis-server",
                args.redis_server.display()
            ))
        })?;
        let hosts = HostTable::read(&configs.join("hosts.env"))?;
        for file in [
            "app1.toml",
            "app2.toml",
            "subscriber1.toml",
            "subscriber2.toml",
            "lb.toml",
            "redis.conf",
        ] {
            if !configs.join(file).is_file() {
                return Err(NetnsError::Setup(format!(
                    "{} is missing",
                    configs.join(file).display()
                )));
            }
        }
        let provision = match &args.provision {
            Some(p) => p.clone(),
            None => configs.join("../../deploy/provision"),
        };
        let certs_script = provision.join("certs.sh");
        if !certs_script.is_file() {
            return Err(NetnsError::Setup(format!(
                "{} is missing (pass --provision)",
                certs_script.display()
            )));
        }
        Ok(Inputs {
            certs_script,
            lb: bin("lb")?,
            app: bin("app")?,
            subscriber: bin("subscriber")?,
            redis_server,
            hosts,
            configs,
        })
    }
}

/// `program` as given when it has a slash, else found on PATH.
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs the whole lab; see the module doc.
pub fn run(args: &NetnsArgs) -> Result<Outcome, NetnsError> {
    if let Some(reason) = topology::unsupported_reason() {
        return Ok(Outcome::Skipped(reason));
    }
    install_signal_handlers();
    let inputs = Inputs::gather(args)?;
    let removed = topology::remove_leftovers()?;
    if removed > 0 {
        tracing::info!(removed, "removed leftover namespaces of earlier runs");
    }
    remove_leftover_dirs();
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| NetnsError::Setup(format!("tempdir: {e}")))?;
    let started = Instant::now();
    // Declared in this order so they drop in reverse: processes stop before
    // their namespaces go.
    let topo = Topology::create(&inputs.hosts)?;
    let mut procs = Procs::new(tmp.path());
    let result = run_in(&inputs, &topo, &mut procs, tmp.path());
    let result = match result {
        Ok(mut lines) => {
            say(
                &mut lines,
                format!("total {:.1}s", started.elapsed().as_secs_f64()),
            );
            Ok(Outcome::Passed(lines))
        }
        Err(e) => {
            eprintln!("{}", procs.log_tails(20));
            Err(e)
        }
    };
    procs.stop_all(Duration::from_secs(8));
    drop(topo);
    if args.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    result
}

/// Prefix of the per-run temporary directory; the pid follows.
const TMP_PREFIX: &str = "wsmesh-netns-";

/// Removes temporary directories of runs that were killed (SIGKILL leaves
/// them; everything else is removed by drop guards). Best effort.
fn remove_leftover_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TMP_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !topology::is_live_lab(pid) {
            tracing::info!(dir = %entry.path().display(), "removing a leftover directory of a dead run");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Secrets generated per run, as provisioning generates them per lab.
#[derive(Debug)]
struct Secrets {
    /// The internal API's bearer token.
    internal_token: String,
    /// Redis' `requirepass`.
    redis_password: String,
}

fn random_hex() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_in(
    inputs: &Inputs,
    topo: &Topology,
    procs: &mut Procs,
    tmp: &Path,
) -> Result<Vec<String>, NetnsError> {
    let hosts = &inputs.hosts;
    let secrets = Secrets {
        internal_token: random_hex(),
        redis_password: random_hex(),
    };
    let mut lines = Vec::new();
    say(
        &mut lines,
        format!(
            "namespaces up: {}* on {}.0/24 (lb {}, app1 {}, app2 {}, redis {}, client {})",
            topo.ns(Role::Lb).trim_end_matches("lb"),
            hosts.net,
            hosts.addr(Role::Lb),
            hosts.addr(Role::App1),
            hosts.addr(Role::App2),
            hosts.addr(Role::Redis),
            hosts.addr(Role::Client)
        ),
    );

    // redis VM: the shared settings plus the host-specific lines, as redis.sh writes them.
    let redis_dir = tmp.join("redis");
    std::fs::create_dir_all(&redis_dir)
        .map_err(|e| NetnsError::Setup(format!("{}: {e}", redis_dir.display())))?;
    let redis_conf = redis_dir.join("redis.conf");
    let conf = format!(
        "include {}\nbind {} 127.0.0.1\nrequirepass {}\ndir {}\ndaemonize no\nlogfile \"\"\n",
        inputs.configs.join("redis.conf").display(),
        hosts.addr(Role::Redis),
        secrets.redis_password,
        redis_dir.display()
    );
    std::fs::write(&redis_conf, conf)
        .map_err(|e| NetnsError::Setup(format!("{}: {e}", redis_conf.display())))?;
    procs.spawn(Spec {
        name: "redis",
        ns: &topo.ns(Role::Redis),
        program: &inputs.redis_server,
        args: vec![redis_conf.display().to_string()],
        env: Vec::new(),
    })?;

    // The environment the units get from /etc/wsmesh/wsmesh.env.
    let env = vec![
        (
            "WSMESH_REDIS_URL".to_string(),
            format!(
                "redis://:{}@{}:{}/",
                secrets.redis_password,
                hosts.addr(Role::Redis),
                hosts.redis_port
            ),
        ),
        (
            "WSMESH_INTERNAL_TOKEN".to_string(),
            secrets.internal_token.clone(),
        ),
    ];
    for (n, role) in [(1, Role::App1), (2, Role::App2)] {
        let ns = topo.ns(role);
        let app_config = inputs.configs.join(format!("app{n}.toml"));
        let sub_config = inputs.configs.join(format!("subscriber{n}.toml"));
        procs.spawn(Spec {
            name: &format!("app{n}"),
            ns: &ns,
            program: &inputs.app,
            args: vec!["--config".into(), app_config.display().to_string()],
            env: env.clone(),
        })?;
        procs.spawn(Spec {
            name: &format!("subscriber{n}"),
            ns: &ns,
            program: &inputs.subscriber,
            args: vec!["--config".into(), sub_config.display().to_string()],
            env: env.clone(),
        })?;
    }

    // lb VM: /etc/wsmesh/lb.toml next to /etc/wsmesh/certs/, here a copy of
    // the very file in its own directory with certificates made by `lb gen-cert`.
    let lb_dir = tmp.join("lb");
    let certs = lb_dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(|e| NetnsError::Setup(format!("{}: {e}", certs.display())))?;
    let lb_config = lb_dir.join("lb.toml");
    std::fs::copy(inputs.configs.join("lb.toml"), &lb_config)
        .map_err(|e| NetnsError::Setup(format!("{}: {e}", lb_config.display())))?;
    gen_cert(&inputs.certs_script, &inputs.lb, &certs, hosts)?;
    procs.spawn(Spec {
        name: "lb",
        ns: &topo.ns(Role::Lb),
        program: &inputs.lb,
        args: vec!["--config".into(), lb_config.display().to_string()],
        env: Vec::new(),
    })?;

    let plan = drill::Plan {
        client_ns: topo.ns(Role::Client),
        lb_ns: topo.ns(Role::Lb),
        app_ns: [topo.ns(Role::App1), topo.ns(Role::App2)],
        lb_addr: hosts.addr(Role::Lb),
        ca: certs.join(CA_FILE),
        configs: inputs.configs.clone(),
    };
    lines.extend(drill::run(&plan, topo, procs)?);
    Ok(lines)
}

/// CA certificate written by `deploy/provision/certs.sh` (trusted by the clients).
pub(crate) const CA_FILE: &str = "dev-ca.pem";

/// Makes the lab CA and the lb's server certificate with the very script
/// `deploy/provision/lb.sh` runs on the lb VM.
fn gen_cert(script: &Path, lb: &Path, dir: &Path, hosts: &HostTable) -> Result<(), NetnsError> {
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .arg(hosts.addr(Role::Lb).to_string())
        .env("LB_BIN", lb)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| NetnsError::Command(format!("{}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(NetnsError::Command(format!(
            "{}: {}: {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    tracing::info!(output = %String::from_utf8_lossy(&out.stdout).trim(), "certificates");
    if !dir.join(CA_FILE).is_file() {
        return Err(NetnsError::Setup(format!(
            "{} wrote no {}",
            script.display(),
            dir.join(CA_FILE).display()
        )));
    }
    Ok(())
}

/// Prints a summary line at once (so a failure still shows what passed) and keeps it.
pub(crate) fn say(lines: &mut Vec<String>, line: String) {
    println!("{line}");
    lines.push(line);
}

/// Waits until `probe` returns `Ok(Some(_))`, checking processes and signals
/// in between; bounded by `limit`.
pub(crate) fn wait_until<T>(
    what: &str,
    limit: Duration,
    procs: &mut Procs,
    mut probe: impl FnMut() -> Result<Option<T>, NetnsError>,
) -> Result<T, NetnsError> {
    let deadline = Instant::now() + limit;
    let mut last_err = String::new();
    loop {
        check_interrupted()?;
        procs.check_alive()?;
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(NetnsError::Timeout(format!("{what} after {limit:?} {last_err}")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
