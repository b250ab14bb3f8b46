//! The lab's network, built from nothing but network namespaces: one per host
//! of the Vagrant lab (`lb1`, `lb2`, `app1`, `app2`, `redis`) plus `client`
//! (the machine you browse from, `.1` as VirtualBox's host-only adapter), each with
//! one `eth0` on a bridge that lives in a `hub` namespace of its own. Nothing
//! is created in the root namespace and no namespace has a default route, so
//! the lab's addresses exist nowhere else and no packet can leave the machine.
//!
//! Names carry a per-run prefix (`wsm-<pid>-`): parallel runs never collide,
//! and leftovers of dead runs are recognised and removed at start.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::NetnsError;

/// Prefix of every namespace this module creates; the pid follows.
pub const PREFIX: &str = "wsm-";

/// A host of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The first lb of the pair on the virtual IP (wins a cold start).
    Lb1,
    /// The second lb of the pair.
    Lb2,
    /// The first app VM: app, subscriber, a Redis replica and a Sentinel.
    App1,
    /// The second app VM, the same as the first.
    App2,
    /// The Redis VM: the master at a cold start and a Sentinel.
    Redis,
    /// Where the browser sits (the VirtualBox host).
    Client,
}

impl Role {
    /// Every host, in creation order.
    pub const ALL: [Role; 6] = [
        Role::Redis,
        Role::App1,
        Role::App2,
        Role::Lb1,
        Role::Lb2,
        Role::Client,
    ];

    /// Name as in the Vagrantfile.
    pub fn name(self) -> &'static str {
        match self {
            Role::Lb1 => "lb1",
            Role::Lb2 => "lb2",
            Role::App1 => "app1",
            Role::App2 => "app2",
            Role::Redis => "redis",
            Role::Client => "client",
        }
    }

    /// Key of the host number in `configs/vagrant/hosts.env`.
    fn hosts_env_key(self) -> &'static str {
        match self {
            Role::Lb1 => "HOST_LB1",
            Role::Lb2 => "HOST_LB2",
            Role::App1 => "HOST_APP1",
            Role::App2 => "HOST_APP2",
            Role::Redis => "HOST_REDIS",
            Role::Client => "HOST_CLIENT",
        }
    }
}

/// The address table of `configs/vagrant/hosts.env`, the same one the
/// Vagrantfile and the provisioning scripts read.
#[derive(Debug, Clone)]
pub struct HostTable {
    /// Network prefix, e.g. `192.168.56`.
    pub net: String,
    /// Address per host.
    addrs: Vec<(Role, Ipv4Addr)>,
    /// The lb pair's virtual IP (`HOST_VIP`): what clients connect to.
    pub vip: Ipv4Addr,
    /// Redis port of every data node (`REDIS_PORT`).
    pub redis_port: u16,
    /// Port of every Sentinel (`SENTINEL_PORT`).
    pub sentinel_port: u16,
}

impl HostTable {
    /// Reads `hosts.env`: `KEY=VALUE` lines, `#` comments.
    pub fn read(path: &Path) -> Result<HostTable, NetnsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NetnsError::Setup(format!("{}: {e}", path.display())))?;
        HostTable::parse(&text).map_err(|reason| NetnsError::Setup(format!("{}: {reason}", path.display())))
    }

    fn parse(text: &str) -> Result<HostTable, String> {
        let pairs: Vec<(&str, &str)> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.trim())
                .ok_or_else(|| format!("{key} is missing"))
        };
        let net = get("LAB_NET")?.to_string();
        let addr = |key: &str| -> Result<Ipv4Addr, String> {
            let host = get(key)?;
            format!("{net}.{host}")
                .parse()
                .map_err(|_| format!("{net}.{host} ({key}) is not an IPv4 address"))
        };
        let mut addrs = Vec::new();
        for role in Role::ALL {
            addrs.push((role, addr(role.hosts_env_key())?));
        }
        let port = |key: &str| -> Result<u16, String> {
            get(key)?.parse().map_err(|_| format!("{key} is not a port"))
        };
        Ok(HostTable {
            vip: addr("HOST_VIP")?,
            redis_port: port("REDIS_PORT")?,
            sentinel_port: port("SENTINEL_PORT")?,
            net,
            addrs,
        })
    }

    /// The address of `role`.
    pub fn addr(&self, role: Role) -> Ipv4Addr {
        self.addrs
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, a)| *a)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}

/// The namespaces and links of one run. Dropping it kills every process left
/// in its namespaces and deletes them.
#[derive(Debug)]
pub struct Topology {
    /// `wsm-<pid>-`.
    prefix: String,
    /// Namespaces created so far, in creation order (the hub first).
    created: Vec<String>,
}

/// Runs `ip ARGS`, bounded in time; a failure names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetnsError::Command(format!("{program} {}: {e}", args.join(" "))))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NetnsError::Command(format!(
                    "{program} {}: timed out",
                    args.join(" ")
                )));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetnsError::Command(format!("{program} {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(NetnsError::Command(format!(
            "{program} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespace names of one run, without owning them: cheap to clone and
/// to hand to the thread that drives a drill.
#[derive(Debug, Clone)]
pub struct Names {
    /// `wsm-<pid>-`.
    prefix: String,
}

impl Names {
    /// Namespace name of `role` in this run.
    pub fn ns(&self, role: Role) -> String {
        format!("{}{}", self.prefix, role.name())
    }

    /// The hub namespace, which holds the bridge.
    fn hub(&self) -> String {
        format!("{}hub", self.prefix)
    }

    /// A handle that takes `role`'s link down and up from any thread.
    pub fn link_switch(&self, role: Role) -> LinkSwitch {
        LinkSwitch {
            hub: self.hub(),
            port: Topology::port(role),
        }
    }
}

impl Topology {
    /// Namespace name of `role` in this run.
    pub fn ns(&self, role: Role) -> String {
        self.names().ns(role)
    }

    /// The names, for other threads.
    pub fn names(&self) -> Names {
        Names {
            prefix: self.prefix.clone(),
        }
    }

    fn hub(&self) -> String {
        self.names().hub()
    }

    /// Name of `role`'s bridge port in the hub namespace (≤ 15 bytes).
    fn port(role: Role) -> String {
        format!("v-{}", role.name())
    }

    /// Creates the hub with its bridge and one namespace per host, each with
    /// `lo` and `eth0` up and its address from the table. Any failure removes
    /// what was made so far (through `Drop`).
    pub fn create(table: &HostTable) -> Result<Topology, NetnsError> {
        let mut topo = Topology {
            prefix: format!("{PREFIX}{}-", std::process::id()),
            created: Vec::new(),
        };
        let hub = topo.hub();
        topo.add_ns(&hub)?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for role in Role::ALL {
            let ns = topo.ns(role);
            topo.add_ns(&ns)?;
            let port = Self::port(role);
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/24", table.addr(role));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(topo)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), NetnsError> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A handle that takes `role`'s link down and up from any thread.
    pub fn link_switch(&self, role: Role) -> LinkSwitch {
        self.names().link_switch(role)
    }

    /// Kills whatever still runs in the namespaces and deletes them; safe to
    /// call twice.
    pub fn destroy(&mut self) {
        for ns in self.created.drain(..).rev() {
            remove_ns(&ns);
        }
    }
}

/// One host's cable to the bridge.
#[derive(Debug, Clone)]
pub struct LinkSwitch {
    /// The hub namespace.
    hub: String,
    /// The host's port on the bridge.
    port: String,
}

impl LinkSwitch {
    /// Takes the link down or up (the cable, as seen from the switch: the
    /// host keeps its address, its packets go nowhere).
    pub fn set(&self, up: bool) -> Result<(), NetnsError> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub, "link", "set", &self.port, state]).map(|_| ())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// SIGKILLs every process in `ns`, then deletes it. Best effort, logged.
fn remove_ns(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid read from `ip netns pids`; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    // A namespace is busy for a moment while its last process is reaped.
    for attempt in 0..50 {
        match ip(&["netns", "del", ns]) {
            Ok(_) => return,
            Err(e) if attempt == 49 => tracing::warn!(ns, error = %e, "could not delete namespace"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The pid in a name `wsm-<pid>-<host>`, if it is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, host) = rest.split_once('-')?;
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether `pid` is a live `lab` process (a parallel run whose namespaces
/// must be left alone).
pub(crate) fn is_live_lab(pid: u32) -> bool {
    // `/proc/PID/stat` is `pid (comm) state …`; a zombie (Z) or dead (X)
    // process owns nothing any more.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") ")) else {
            return false;
        };
        comm == "lab" && !rest.starts_with(['Z', 'X'])
    })
}

/// Removes namespaces named by this module whose run is gone. Returns how
/// many were removed.
pub fn remove_leftovers() -> Result<usize, NetnsError> {
    let list = ip(&["netns", "list"])?;
    let mut removed = 0;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = owner_pid(name) else {
            continue;
        };
        if pid == std::process::id() || is_live_lab(pid) {
            continue;
        }
        tracing::info!(ns = name, "removing a leftover namespace of a dead run");
        remove_ns(name);
        removed += 1;
    }
    Ok(removed)
}

/// Why this machine cannot run the lab, if it cannot: not root, or network
/// namespaces unavailable.
pub fn unsupported_reason() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("`lab netns` needs root (CAP_NET_ADMIN) to create network namespaces".into());
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("network namespaces are not available here: {e}"));
    }
    let veth = ip(&[
        "-n", &probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
    ]);
    remove_ns(&probe);
    if let Err(e) = veth {
        return Some(format!("veth pairs are not available here: {e}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_table_reads_the_shipped_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/vagrant/hosts.env");
        let t = HostTable::read(&path).unwrap();
        assert_eq!(t.net, "192.168.56");
        assert_eq!(t.addr(Role::Lb1), Ipv4Addr::new(192, 168, 56, 10));
        assert_eq!(t.addr(Role::Lb2), Ipv4Addr::new(192, 168, 56, 14));
        assert_eq!(t.vip, Ipv4Addr::new(192, 168, 56, 100));
        assert_eq!(t.addr(Role::App1), Ipv4Addr::new(192, 168, 56, 11));
        assert_eq!(t.addr(Role::App2), Ipv4Addr::new(192, 168, 56, 12));
        assert_eq!(t.addr(Role::Redis), Ipv4Addr::new(192, 168, 56, 13));
        assert_eq!((t.redis_port, t.sentinel_port), (6379, 26379));
    }

    #[test]
    fn host_table_names_a_missing_key() {
        let e = HostTable::parse("LAB_NET=10.0.0\nHOST_LB1=1\n").unwrap_err();
        assert!(e.contains("is missing"), "{e}");
    }

    #[test]
    fn only_our_names_are_leftovers() {
        assert_eq!(owner_pid("wsm-1234-app1"), Some(1234));
        assert_eq!(owner_pid("wsm-1234-hub"), Some(1234));
        assert_eq!(owner_pid("wsm-x-app1"), None);
        assert_eq!(owner_pid("other-1234-app1"), None);
        assert_eq!(owner_pid("wsm-1234-"), None);
    }

    #[test]
    fn bridge_port_names_fit_ifnamsiz() {
        for role in Role::ALL {
            assert!(Topology::port(role).len() <= 15);
        }
    }
}
