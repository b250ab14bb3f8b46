//! Starting the lab's services in their hosts' namespaces as the
//! provisioning installs them on the VMs: each host gets its own
//! `/etc/wsmesh` (here `<run>/<host>/etc/wsmesh`, the configs of
//! `configs/vagrant/` installed with that path in place of `/etc/wsmesh/`,
//! as `install_config` installs them with another network prefix), the same
//! secrets, the Redis and Sentinel lines of `deploy/provision/redis-lines.sh`,
//! certificates from `certs.sh`, keepalived configs from
//! `deploy/keepalived/render.sh`. Then it waits until the lab is whole:
//! every service healthy, both lbs seeing both apps, the Sentinels ready for
//! a failover and exactly one lb holding the virtual IP.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::enter::{block_in_netns, http_get_in};
use super::procs::{Procs, Spec};
use super::sentinels::SentinelSet;
use super::topology::{Names, Role, Topology};
use super::{say, toml_str, wait_until, Inputs, NetnsError, CA_FILE};

/// Hosts with a Redis data node and a Sentinel; the first is the master at a cold start.
pub const REDIS_HOSTS: [Role; 3] = [Role::Redis, Role::App1, Role::App2];

/// The lb pair.
pub const LBS: [Role; 2] = [Role::Lb1, Role::Lb2];

/// The app hosts, app1 first.
pub const APPS: [Role; 2] = [Role::App1, Role::App2];

/// Secrets generated per run, as the Vagrantfile generates them per lab.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The internal API's bearer token.
    pub internal_token: String,
    /// `requirepass` of every Redis data node and Sentinel.
    pub redis_password: String,
}

impl Secrets {
    /// Fresh random secrets.
    pub fn generate() -> Secrets {
        Secrets {
            internal_token: random_hex(),
            redis_password: random_hex(),
        }
    }
}

fn random_hex() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the checks and drills need to know about the running lab.
#[derive(Debug, Clone)]
pub struct Running {
    /// The lab CA the clients trust.
    pub ca: PathBuf,
    /// The lbs' admin listener (on each lb host's loopback).
    pub admin: String,
    /// The Sentinels, to find the master.
    pub sentinels: SentinelSet,
    /// The apps' key prefix, to read the rooms' streams.
    pub prefix: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetnsError + '_ {
    move |e| NetnsError::Setup(format!("{}: {e}", path.display()))
}

/// Writes `text` to `path`, creating its directory.
fn write(path: &Path, text: &str) -> Result<(), NetnsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::write(path, text).map_err(io_err(path))
}

/// Copies `from` to `to`, creating `to`'s directory.
fn copy(from: &Path, to: &Path) -> Result<(), NetnsError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::copy(from, to).map(drop).map_err(io_err(to))
}

/// Runs a script of the repository with bash; its stdout.
fn script(path: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<String, NetnsError> {
    let out = std::process::Command::new("bash")
        .arg(path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| NetnsError::Command(format!("{}: {e}", path.display())))?;
    if !out.status.success() {
        return Err(NetnsError::Command(format!(
            "{} {}: {}: {}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One host's `/etc/wsmesh`.
struct Etc {
    dir: PathBuf,
}

impl Etc {
    /// `<run>/<host>/etc/wsmesh`.
    fn of(run: &Path, role: Role) -> Etc {
        Etc {
            dir: run.join(role.name()).join("etc/wsmesh"),
        }
    }

    /// Writes the secrets the provisioning installs on every host.
    fn write_secrets(&self, secrets: &Secrets) -> Result<(), NetnsError> {
        write(
            &self.dir.join("internal-token"),
            &format!("{}\n", secrets.internal_token),
        )?;
        write(
            &self.dir.join("redis-password"),
            &format!("{}\n", secrets.redis_password),
        )
    }

    /// The Redis password's file.
    fn password(&self) -> PathBuf {
        self.dir.join("redis-password")
    }

    /// `configs/vagrant/<src>` installed as `<name>`, `/etc/wsmesh/` pointing here.
    fn install(&self, inputs: &Inputs, src: &str, name: &str) -> Result<PathBuf, NetnsError> {
        let from = inputs.configs.join(src);
        let text = std::fs::read_to_string(&from).map_err(io_err(&from))?;
        let to = self.dir.join(name);
        write(
            &to,
            &text.replace("/etc/wsmesh/", &format!("{}/", self.dir.display())),
        )?;
        Ok(to)
    }
}

/// Starts everything, in the order the Vagrantfile brings the VMs up, and
/// waits until the lab is whole; one summary line per step into `lines`.
pub fn start(
    inputs: &Inputs,
    topo: &Topology,
    procs: &mut Procs,
    run: &Path,
    lines: &mut Vec<String>,
) -> Result<Running, NetnsError> {
    let hosts = &inputs.hosts;
    let secrets = Secrets::generate();
    let started = Instant::now();
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Client) {
        Etc::of(run, role).write_secrets(&secrets)?;
    }
    let lines_sh = inputs.deploy.join("provision/redis-lines.sh");
    let master = hosts.addr(REDIS_HOSTS[0]).to_string();

    for role in REDIS_HOSTS {
        let password = Etc::of(run, role).password();
        let addr = hosts.addr(role).to_string();
        let port = hosts.redis_port.to_string();
        let mut args = vec!["server", addr.as_str(), path_str(&password)?];
        if role != REDIS_HOSTS[0] {
            args.extend([master.as_str(), port.as_str()]);
        }
        let data = run.join(role.name()).join("redis");
        let conf = format!(
            "include {}\n{}dir {}\ndaemonize no\nlogfile \"\"\n",
            inputs.configs.join("redis.conf").display(),
            script(&lines_sh, &args, &[])?,
            data.display()
        );
        let file = data.join("redis.conf");
        write(&file, &conf)?;
        procs.spawn(Spec {
            name: &format!("redis@{}", role.name()),
            ns: &topo.ns(role),
            program: &inputs.redis_server,
            args: vec![file.display().to_string()],
            env: Vec::new(),
        })?;
    }
    let shared = inputs.configs.join("sentinel.conf");
    let shared = std::fs::read_to_string(&shared).map_err(io_err(&shared))?;
    for role in REDIS_HOSTS {
        let password = Etc::of(run, role).password();
        let dir = run.join(role.name()).join("sentinel");
        let addr = hosts.addr(role).to_string();
        let own = script(&lines_sh, &["sentinel", &addr, path_str(&password)?], &[])?;
        let file = dir.join("sentinel.conf");
        write(
            &file,
            &format!(
                "{shared}\n{own}dir {}\ndaemonize no\nlogfile \"\"\n",
                dir.display()
            ),
        )?;
        procs.spawn(Spec {
            name: &format!("sentinel@{}", role.name()),
            ns: &topo.ns(role),
            program: &inputs.redis_sentinel,
            args: vec![file.display().to_string()],
            env: Vec::new(),
        })?;
    }

    // The environment the units get from /etc/wsmesh/wsmesh.env.
    let env = vec![(
        "WSMESH_INTERNAL_TOKEN".to_string(),
        secrets.internal_token.clone(),
    )];
    for (n, role) in (1..).zip(APPS) {
        let etc = Etc::of(run, role);
        let app = etc.install(inputs, &format!("app{n}.toml"), "app.toml")?;
        let sub = etc.install(inputs, &format!("subscriber{n}.toml"), "subscriber.toml")?;
        for (name, program, config) in [
            (format!("app{n}"), &inputs.app, app),
            (format!("subscriber{n}"), &inputs.subscriber, sub),
        ] {
            procs.spawn(Spec {
                name: &name,
                ns: &topo.ns(role),
                program,
                args: vec!["--config".into(), config.display().to_string()],
                env: env.clone(),
            })?;
        }
    }

    // One CA and one certificate for both lbs and the VIP, so a client
    // trusts whichever lb holds the VIP (the Vagrantfile makes them once on
    // the host for the same reason).
    let certs = run.join("certs");
    let addrs: Vec<String> = LBS
        .iter()
        .map(|r| hosts.addr(*r))
        .chain([hosts.vip])
        .map(|a| a.to_string())
        .collect();
    let mut args = vec![path_str(&certs)?];
    args.extend(addrs.iter().map(String::as_str));
    let out = script(
        &inputs.deploy.join("provision/certs.sh"),
        &args,
        &[("LB_BIN", &inputs.lb)],
    )?;
    tracing::info!(output = %out.trim(), "certificates");
    let check = install_check_script(inputs, run)?;
    for (n, role) in (1..).zip(LBS) {
        let etc = Etc::of(run, role);
        let config = etc.install(inputs, "lb.toml", "lb.toml")?;
        // As the Vagrantfile uploads them: everything but the CA's key.
        for file in ["server.pem", "server.key", CA_FILE] {
            copy(&certs.join(file), &etc.dir.join("certs").join(file))?;
        }
        procs.spawn(Spec {
            name: &format!("lb{n}"),
            ns: &topo.ns(role),
            program: &inputs.lb,
            args: vec!["--config".into(), config.display().to_string()],
            env: Vec::new(),
        })?;
        let dir = run.join(role.name()).join("keepalived");
        let conf = dir.join("keepalived.conf");
        let hosts_env = inputs.configs.join("hosts.env");
        let text = script(
            &inputs.deploy.join("keepalived/render.sh"),
            &[
                &format!("lb{n}"),
                path_str(&hosts_env)?,
                "eth0",
                "",
                path_str(&check)?,
            ],
            &[],
        )?;
        write(&conf, &text)?;
        // In the foreground, logging to its stdout and not to syslog, its
        // pid files here: nothing of it lands in the machine's /run or log.
        let file = |name: &str| dir.join(name).display().to_string();
        let mut args: Vec<String> = [
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
        ]
        .map(String::from)
        .to_vec();
        for (flag, name) in [
            ("--use-file", "keepalived.conf"),
            ("--pid", "keepalived.pid"),
            ("--vrrp_pid", "vrrp.pid"),
            ("--checkers_pid", "checkers.pid"),
            ("--bfd_pid", "bfd.pid"),
        ] {
            args.push(format!("{flag}={}", file(name)));
        }
        procs.spawn(Spec {
            name: &format!("keepalived@lb{n}"),
            ns: &topo.ns(role),
            program: &inputs.keepalived,
            args,
            env: Vec::new(),
        })?;
    }

    let sentinels = SentinelSet {
        addrs: REDIS_HOSTS
            .iter()
            .map(|r| SocketAddr::from((hosts.addr(*r), hosts.sentinel_port)))
            .collect(),
        password: secrets.redis_password.clone(),
    };
    let running = Running {
        ca: certs.join(CA_FILE),
        admin: toml_str(&inputs.configs.join("lb.toml"), &["admin", "listen"])?,
        prefix: toml_str(&inputs.configs.join("app1.toml"), &["redis", "prefix"])?,
        sentinels,
    };
    wait_whole(inputs, topo, procs, &running)?;
    say(
        lines,
        format!(
            "whole in {:.1}s: redis master on redis, replicas on app1 and app2, 3 Sentinels ready \
             for a failover; app1, app2, subscriber1, subscriber2 healthy; lb1 and lb2 see both apps up; \
             {} holds the VIP {}",
            started.elapsed().as_secs_f64(),
            vip_holder(&topo.names(), hosts.vip)?.name(),
            hosts.vip
        ),
    );
    Ok(running)
}

fn path_str(p: &Path) -> Result<&str, NetnsError> {
    p.to_str()
        .ok_or_else(|| NetnsError::Setup(format!("{} is not UTF-8", p.display())))
}

/// keepalived runs its check as `nobody` and refuses a script that a
/// non-root user could change or that sits in such a directory: a root-owned
/// copy in a directory only root writes, which `nobody` may enter.
fn install_check_script(inputs: &Inputs, run: &Path) -> Result<PathBuf, NetnsError> {
    let dir = run.join("bin");
    let to = dir.join("check-lb.sh");
    copy(&inputs.deploy.join("keepalived/check-lb.sh"), &to)?;
    for (path, mode) in [(run, 0o755), (dir.as_path(), 0o755), (to.as_path(), 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
    }
    Ok(to)
}

/// The lb that holds the VIP now; an error unless exactly one does.
pub fn vip_holder(names: &Names, vip: std::net::Ipv4Addr) -> Result<Role, NetnsError> {
    let holders = vip_holders(names, vip)?;
    match holders.as_slice() {
        [one] => Ok(*one),
        _ => Err(NetnsError::Check(format!(
            "the VIP {vip} is held by {} lbs: {holders:?}",
            holders.len()
        ))),
    }
}

/// Every lb whose `eth0` holds the VIP now (keepalived adds and removes it).
pub fn vip_holders(names: &Names, vip: std::net::Ipv4Addr) -> Result<Vec<Role>, NetnsError> {
    let mut holders = Vec::new();
    for role in LBS {
        let out = super::topology::ip(&["-n", &names.ns(role), "-4", "-o", "addr", "show", "dev", "eth0"])?;
        if out.split_whitespace().any(|w| w == format!("{vip}/24")) {
            holders.push(role);
        }
    }
    Ok(holders)
}

/// Waits until the lab is whole (see the module doc).
pub fn wait_whole(
    inputs: &Inputs,
    topo: &Topology,
    procs: &mut Procs,
    running: &Running,
) -> Result<(), NetnsError> {
    let client = topo.ns(Role::Client);
    for (n, role) in (1..).zip(APPS) {
        let public = toml_str(
            &inputs.configs.join(format!("app{n}.toml")),
            &["listen", "public"],
        )?;
        let url = format!("http://{public}/healthz");
        wait_until(
            &format!("app{n} {url} → 200 from the client"),
            LIMIT,
            procs,
            || {
                Ok(http_get_in(&client, &url, Duration::from_secs(2))
                    .ok()
                    .filter(|(s, _)| *s == 200))
            },
        )?;
        let health = toml_str(
            &inputs.configs.join(format!("subscriber{n}.toml")),
            &["listen", "health"],
        )?;
        let url = format!("http://{health}/healthz");
        let ns = topo.ns(role);
        wait_until(
            &format!("subscriber{n} {url} → 200 on its host"),
            LIMIT,
            procs,
            || {
                Ok(http_get_in(&ns, &url, Duration::from_secs(2))
                    .ok()
                    .filter(|(s, _)| *s == 200))
            },
        )?;
    }
    for role in LBS {
        let ns = topo.ns(role);
        wait_until(
            &format!("{} to see app1 and app2 up", role.name()),
            LIMIT,
            procs,
            || {
                let states = super::drill::lb_states(&ns, &running.admin)?;
                Ok(["app1", "app2"]
                    .iter()
                    .all(|s| states.get(*s).map(String::as_str) == Some("up"))
                    .then_some(()))
            },
        )?;
    }
    let sentinels = running.sentinels.clone();
    wait_until("the Sentinels to be ready for a failover", LIMIT, procs, || {
        let sentinels = sentinels.clone();
        block_in_netns(&client, move || async move {
            let Some(master) = sentinels.agreed_master().await else {
                return Err(NetnsError::Check("the Sentinels name no common master".into()));
            };
            sentinels.ready(master, 2).await.map_err(NetnsError::Check)?;
            Ok(Some(()))
        })
    })?;
    wait_until("exactly one lb to hold the VIP", LIMIT, procs, || {
        Ok(vip_holder(&topo.names(), inputs.hosts.vip).ok())
    })?;
    Ok(())
}

/// How long the lab may take to become whole, at the start or after a drill.
const LIMIT: Duration = Duration::from_secs(60);
