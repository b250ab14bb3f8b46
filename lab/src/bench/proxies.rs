//! The three systems of scenarios 1–4: two fast backends (`lab backend`,
//! like app1/app2), the wsmesh lb in front of them, HAProxy in front of the
//! same two, and "direct" (the load generator straight to the backends, no
//! proxy: the floor for any proxy's overhead).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wsmesh_testkit::cluster::{binary, Cluster, ClusterError};
use wsmesh_testkit::configs::ConfigError;
use wsmesh_testkit::ports::free_addr;
use wsmesh_testkit::process::{Health, Kind, ProcessSpec};

use super::haproxy;
use super::lbconf::{self, Certs, Route};
use super::net::Target;

/// System names in the report.
pub const LB: &str = "lb";
/// HAProxy in front of the same backend, the system the lb is measured against.
pub const HAPROXY: &str = "haproxy";
/// The backend without a proxy: the ceiling of what a proxy can reach.
pub const DIRECT: &str = "direct";

/// The running proxy systems; dropping stops them.
#[derive(Debug)]
pub struct ProxySystems {
    /// Proxies first (dropped first), then backends.
    pub proxies: Cluster,
    /// The two backends.
    pub backends: Cluster,
    /// (system, targets to spread connections over).
    pub targets: Vec<(String, Vec<Target>)>,
    /// The lb's admin listener.
    pub admin: SocketAddr,
}

impl ProxySystems {
    /// pid of `lb` or `haproxy`.
    pub fn pid(&self, system: &str) -> Option<u32> {
        let name = if system == LB { "lb-proxy" } else { system };
        self.proxies.get(name).ok()?.pid()
    }

    /// Restarts the proxy of `system` (same config and ports) and waits
    /// until it serves again, so a memory measurement starts from a fresh process.
    pub async fn restart(&mut self, system: &str) -> Result<(), ClusterError> {
        let name = if system == LB { "lb-proxy" } else { system };
        let process = self.proxies.get_mut(name)?;
        process.restart(Duration::from_secs(15)).await?;
        process.wait_healthy(Duration::from_secs(20)).await?;
        if system == LB {
            lbconf::wait_all_up(self.admin, Duration::from_secs(30))
                .await
                .map_err(|reason| ConfigError {
                    path: name.into(),
                    reason,
                })?;
        }
        Ok(())
    }

    /// Targets of `system`.
    pub fn targets(&self, system: &str) -> Vec<Target> {
        self.targets
            .iter()
            .find(|(s, _)| s == system)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    }
}

/// `lab backend --listen addr`.
pub fn backend_spec(name: &str, addr: SocketAddr) -> Result<ProcessSpec, ClusterError> {
    Ok(ProcessSpec {
        name: name.into(),
        kind: Kind::App,
        program: binary("lab")?,
        args: vec!["backend".into(), "--listen".into(), addr.to_string().into()],
        env: vec![("RUST_LOG".into(), "warn".into())],
        env_remove: vec![],
        health: Health::Http(format!("http://{addr}/healthz")),
        listens: vec![(addr, "backend".into())],
        output: Default::default(),
    })
}

/// Starts backends, lb and HAProxy; `with_haproxy` false leaves HAProxy out.
pub async fn start(
    certs: &Certs,
    tls: Arc<rustls::ClientConfig>,
    dir: &Path,
    with_haproxy: bool,
) -> Result<ProxySystems, ClusterError> {
    let mut backends = Cluster::new();
    let mut servers = Vec::new();
    for i in 1..=2 {
        let addr = free_addr()?;
        backends.spawn(backend_spec(&format!("backend{i}"), addr)?)?;
        servers.push((format!("app{i}"), addr));
    }
    backends.wait_healthy(Duration::from_secs(20)).await?;

    let mut proxies = Cluster::new();
    let lb_listen = free_addr()?;
    let admin = free_addr()?;
    let config = dir.join("lb-proxy.toml");
    lbconf::render(
        &[Route {
            name: "apps".into(),
            listen: lb_listen,
            servers: servers.clone(),
        }],
        certs,
        admin,
        &config,
    )?;
    proxies.spawn(lbconf::spec("lb-proxy", &config, admin)?)?;
    let mut targets = vec![(LB.to_string(), vec![Target::tls(lb_listen, tls.clone())])];
    if with_haproxy {
        let listen = free_addr()?;
        let monitor = free_addr()?;
        let pem = haproxy::combined_pem(certs, &dir.join("haproxy.pem"))?;
        let text = haproxy::config(
            listen,
            &pem,
            &servers,
            monitor,
            lbconf::worker_threads(),
            super::sys::raise_nofile(),
        );
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, text)?;
        proxies.spawn(haproxy::spec(&cfg, monitor))?;
        targets.push((HAPROXY.to_string(), vec![Target::tls(listen, tls.clone())]));
    }
    targets.push((
        DIRECT.to_string(),
        servers.iter().map(|(_, a)| Target::plain(*a)).collect(),
    ));
    proxies.wait_healthy(Duration::from_secs(20)).await?;
    lbconf::wait_all_up(admin, Duration::from_secs(30))
        .await
        .map_err(|reason| ConfigError { path: config, reason })?;
    Ok(ProxySystems {
        proxies,
        backends,
        targets,
        admin,
    })
}
