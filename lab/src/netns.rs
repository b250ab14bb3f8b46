//! `lab netns`: the Vagrant lab (two lbs on a virtual IP, app1, app2, and
//! Redis with a replica on each app host and a Sentinel on each of redis,
//! app1 and app2) on this one machine, in network namespaces, so the
//! Vagrantfile's layout, the files in `configs/vagrant/` and `deploy/` and
//! the environment the systemd units give the services are exercised without
//! VirtualBox. It starts every service inside its host's namespace
//! (`services`), runs a chat check through the VIP and the failover drills
//! from a `client` namespace — app1's link down (`drill`), the active lb's
//! host down and the Redis master's host down, each under load with the
//! drill's ledger (`hostloss`) — and removes everything it created on every
//! path: normal end, error, panic (drop guards) and SIGINT/SIGTERM (checked
//! between steps).
//!
//! Traffic goes only to the namespaces' own addresses: the bridge lives in a
//! namespace of its own and no namespace has a route anywhere else.
//!
//! Needs root (CAP_NET_ADMIN); elsewhere it reports why and exits with
//! [`EXIT_SKIPPED`]; `lab/tests/integration/netns.rs` is ignored unless asked for, and
//! fails on that exit when it was.

mod drill;
mod enter;
mod hostloss;
mod procs;
mod report;
mod sentinels;
mod services;
mod topology;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use self::hostloss::Fault;
use self::procs::Procs;
use self::topology::{HostTable, Role, Topology};
use crate::drill::{parse_duration, DrillOptions, Rate};

/// Exit code of `lab netns` when the machine cannot run it (automake's "skipped").
pub const EXIT_SKIPPED: u8 = 77;

/// `lab netns` options.
#[derive(Debug, Clone, Args)]
pub struct NetnsArgs {
    /// Directory with the lab's files (hosts.env, app1.toml, …, lb.toml,
    /// redis.conf, sentinel.conf).
    #[arg(long, default_value = "configs/vagrant")]
    pub configs: PathBuf,
    /// The `deploy` directory (provision/certs.sh, provision/redis-lines.sh,
    /// keepalived/); default: `deploy` of the repository that holds `--configs`.
    #[arg(long)]
    pub deploy: Option<PathBuf>,
    /// Directory with the `lb`, `app` and `subscriber` binaries; default: next
    /// to this `lab` binary.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// The redis-sentinel binary.
    #[arg(long, default_value = "redis-sentinel")]
    pub redis_sentinel: PathBuf,
    /// The keepalived binary.
    #[arg(long, default_value = "keepalived")]
    pub keepalived: PathBuf,
    /// all, app-link-down, lb-host-down or redis-host-down (repeatable); the
    /// chat check always runs first.
    #[arg(long, default_value = "all", value_parser = fault_arg)]
    pub fault: Vec<String>,
    /// The host-loss drills at full size: 1000 clients in 20 rooms, 0.2
    /// messages/s each, 60 s of sending (default: 24 clients in 3 rooms,
    /// 2 messages/s each, 8 s, as `make test` runs them).
    #[arg(long)]
    pub full: bool,
    /// Clients of each host-loss drill, instead of the size's.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Sending time of each host-loss drill, instead of the size's (e.g. 30s).
    #[arg(long)]
    pub duration: Option<String>,
    /// Keep the temporary directory (logs, configs, certificates) and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// Checks a `--fault` value while clap parses, so a typo is a usage error.
fn fault_arg(s: &str) -> Result<String, String> {
    if s == "all" {
        return Ok(s.to_string());
    }
    s.parse::<Fault>().map(|_| s.to_string())
}

impl NetnsArgs {
    /// The faults asked for, in the order they run.
    fn faults(&self) -> Vec<Fault> {
        Fault::ALL
            .into_iter()
            .filter(|f| self.fault.iter().any(|a| a == "all" || a == f.name()))
            .collect()
    }

    /// The size of the host-loss drills.
    fn size(&self) -> Result<DrillOptions, NetnsError> {
        let mut opts = if self.full {
            DrillOptions {
                clients: 1000,
                rooms: 20,
                rate: Rate::PerClient(0.2),
                duration: Duration::from_secs(60),
                quiesce: Duration::from_secs(60),
                ..DrillOptions::small()
            }
        } else {
            DrillOptions::small()
        };
        if let Some(n) = self.clients {
            if n == 0 {
                return Err(NetnsError::Setup("--clients must be at least 1".into()));
            }
            opts.clients = n;
            opts.rooms = opts.rooms.min(n);
        }
        if let Some(d) = &self.duration {
            opts.duration = parse_duration(d).map_err(NetnsError::Setup)?;
        }
        Ok(opts)
    }
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
pub(crate) struct Inputs {
    /// `configs/vagrant`, absolute.
    configs: PathBuf,
    /// `deploy`, absolute.
    deploy: PathBuf,
    /// The lb binary.
    lb: PathBuf,
    /// The app binary.
    app: PathBuf,
    /// The subscriber binary.
    subscriber: PathBuf,
    /// redis-server.
    redis_server: PathBuf,
    /// redis-sentinel.
    redis_sentinel: PathBuf,
    /// keepalived.
    keepalived: PathBuf,
    /// The address table.
    hosts: HostTable,
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
        let tool = |program: &Path, package: &str| {
            which(program).ok_or_else(|| {
                NetnsError::Setup(format!(
                    "{} not found: apt-get install {package}",
                    program.display()
                ))
            })
        };
        let hosts = HostTable::read(&configs.join("hosts.env"))?;
        let deploy = match &args.deploy {
            Some(p) => {
                std::path::absolute(p).map_err(|e| NetnsError::Setup(format!("{}: {e}", p.display())))?
            }
            None => configs.join("../../deploy"),
        };
        let needed = [
            "app1.toml",
            "app2.toml",
            "subscriber1.toml",
            "subscriber2.toml",
            "lb.toml",
            "redis.conf",
            "sentinel.conf",
        ]
        .map(|f| configs.join(f))
        .into_iter()
        .chain(
            [
                "provision/certs.sh",
                "provision/redis-lines.sh",
                "keepalived/render.sh",
                "keepalived/check-lb.sh",
            ]
            .map(|f| deploy.join(f)),
        );
        for file in needed {
            if !file.is_file() {
                return Err(NetnsError::Setup(format!("{} is missing", file.display())));
            }
        }
        Ok(Inputs {
            lb: bin("lb")?,
            app: bin("app")?,
            subscriber: bin("subscriber")?,
            redis_server: tool(&args.redis_server, "redis-server")?,
            redis_sentinel: tool(&args.redis_sentinel, "redis-sentinel")?,
            keepalived: tool(&args.keepalived, "keepalived")?,
            hosts,
            configs,
            deploy,
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
    let size = args.size()?;
    if let Err(e) = crate::drill::raise_nofile_limit() {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
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
    let result = run_in(&inputs, &args.faults(), &size, &topo, &mut procs, tmp.path());
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
        // Renamed out of the per-run names, so the next run's clean-up of
        // dead runs' directories leaves it alone.
        let dir = tmp.keep();
        let kept = dir.with_file_name(format!("{KEPT_PREFIX}{}", std::process::id()));
        match std::fs::rename(&dir, &kept) {
            Ok(()) => println!("kept {}", kept.display()),
            Err(_) => println!("kept {}", dir.display()),
        }
    }
    result
}

/// Prefix of the per-run temporary directory; the pid follows.
const TMP_PREFIX: &str = "wsmesh-netns-";

/// Name of a directory kept with `--keep` (never removed by a later run);
/// the pid follows.
const KEPT_PREFIX: &str = "wsmesh-netns-kept-";

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

fn run_in(
    inputs: &Inputs,
    faults: &[Fault],
    size: &DrillOptions,
    topo: &Topology,
    procs: &mut Procs,
    tmp: &Path,
) -> Result<Vec<String>, NetnsError> {
    let hosts = &inputs.hosts;
    let mut lines = Vec::new();
    let addrs: Vec<String> = Role::ALL
        .iter()
        .map(|r| format!("{} {}", r.name(), hosts.addr(*r)))
        .collect();
    say(
        &mut lines,
        format!(
            "namespaces up: {}* on {}.0/24 ({}; VIP {})",
            topo.ns(Role::Client).trim_end_matches("client"),
            hosts.net,
            addrs.join(", "),
            hosts.vip
        ),
    );
    let running = services::start(inputs, topo, procs, tmp, &mut lines)?;
    let url = format!("http://{}/", hosts.vip);
    let (status, _) = enter::http_get_in(&topo.ns(Role::Client), &url, Duration::from_secs(3))?;
    if status != 301 {
        return Err(NetnsError::Check(format!(
            "{url} answered {status}, expected 301 to https"
        )));
    }
    say(&mut lines, format!("{url} redirects to https (301)"));

    let app_link_down = faults.contains(&Fault::AppLink);
    lines.extend(drill::run(inputs, topo, procs, &running, app_link_down)?);
    let mut reports = Vec::new();
    for fault in faults.iter().filter(|f| **f != Fault::AppLink) {
        services::wait_whole(inputs, topo, procs, &running)?;
        let report = hostloss::run(*fault, inputs, topo, procs, &running, size)?;
        println!("{}", report.table());
        reports.push(report);
    }
    if !reports.is_empty() {
        println!("{}", report::summary(&reports));
        services::wait_whole(inputs, topo, procs, &running)?;
        say(&mut lines, "the lab is whole again after the drills".into());
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.clean())
        .map(|r| r.fault.name())
        .collect();
    if !failed.is_empty() {
        return Err(NetnsError::Check(format!(
            "the ledger is not clean after {}",
            failed.join(", ")
        )));
    }
    Ok(lines)
}

/// A dotted key of a TOML file, as a string.
pub(crate) fn toml_str(path: &Path, keys: &[&str]) -> Result<String, NetnsError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| NetnsError::Setup(format!("{}: {e}", path.display())))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| NetnsError::Setup(format!("{}: {e}", path.display())))?;
    keys.iter()
        .try_fold(&value, |v, k| v.get(k))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| NetnsError::Setup(format!("{}: no {}", path.display(), keys.join("."))))
}

/// Runs `job` on a thread inside the client namespace while this thread
/// keeps watching the services and the signals; bounded by `limit`.
pub(crate) fn in_client<T, F, Fut>(
    topo: &Topology,
    procs: &mut Procs,
    what: &str,
    limit: Duration,
    job: F,
) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, NetnsError>>,
{
    let client_ns = topo.ns(Role::Client);
    let handle = std::thread::Builder::new()
        .name("netns-client".into())
        .spawn(move || enter::block_in_netns(&client_ns, job))
        .map_err(|e| NetnsError::Setup(format!("thread: {e}")))?;
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        check_interrupted()?;
        procs.check_alive()?;
        if Instant::now() > deadline {
            return Err(NetnsError::Timeout(format!("{what} took over {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    handle
        .join()
        .map_err(|_| NetnsError::Check(format!("{what} panicked")))?
}

/// CA certificate written by `deploy/provision/certs.sh` (trusted by the clients).
pub(crate) const CA_FILE: &str = "dev-ca.pem";

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
