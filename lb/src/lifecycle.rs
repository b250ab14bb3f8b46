//! The running lb from start to exit: build the first runtime and open the
//! listeners, start health checks and the admin API; on SIGHUP reload
//! (new configuration and certificates for new connections, established
//! connections and tunnels untouched, a broken file refused with its reason
//! while the running configuration stays); on SIGTERM/SIGINT stop accepting,
//! let requests finish and tunnels run out their grace, then return.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use wsmesh_common::config::ConfigError;

use crate::config::Config;
use crate::drain::Drain;
use crate::listener::{BindError, Listeners, Shared};
use crate::runtime::Runtime;

/// Why the lb could not start (or reload).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("admin listener {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Sockets the caller opened before starting the lb, by the address the
/// configuration gives them: the lb serves on these instead of binding the
/// addresses itself. Tests bind port 0 and write the ports they got into
/// the configuration, so no two lbs race for a port.
#[derive(Debug, Default)]
pub struct Prebound {
    /// Frontend sockets, by their `listen` address in the configuration.
    pub frontends: HashMap<SocketAddr, TcpListener>,
    /// The admin API's socket, for `admin.listen`.
    pub admin: Option<TcpListener>,
}

/// Where a started lb listens (with port 0 in the configuration, the port
/// the system chose).
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Each frontend's name and bound address.
    pub frontends: Vec<(String, SocketAddr)>,
    /// The admin API's bound address.
    pub admin: SocketAddr,
}

/// A started lb: its sockets are open and it serves until [`Lb::serve`]'s
/// shutdown future resolves.
pub struct Lb {
    /// Config file, re-read on SIGHUP.
    path: PathBuf,
    /// Publishes the runtime in force.
    runtime: watch::Sender<Arc<Runtime>>,
    /// Open listening sockets.
    listeners: Listeners,
    /// Health check tasks of the runtime in force.
    checks: Vec<JoinHandle<()>>,
    /// Shared with accept loops.
    shared: Arc<Shared>,
    /// Where it listens.
    addresses: Addresses,
}

/// Builds a runtime from the file, replacing `previous` if given.
fn load(path: &Path, previous: Option<&Runtime>) -> Result<Runtime, ConfigError> {
    let (config, source) = Config::load(path)?;
    Runtime::build(config, &source, previous)
}

/// `lb check-config`: everything a start would check except binding.
pub fn check(path: &Path) -> Result<(), ConfigError> {
    load(path, None).map(|_| ())
}

/// Runs the lb from the file at `path` until `shutdown` resolves (the
/// binary passes SIGTERM/SIGINT), reloading on SIGHUP; then stops
/// gracefully and returns.
pub async fn run(
    path: &Path,
    shutdown: impl Future<Output = std::io::Result<()>>,
) -> Result<(), LifecycleError> {
    Lb::start(path, Prebound::default()).await?.serve(shutdown).await
}

impl Lb {
    /// Loads the configuration, opens every socket (taking `prebound` ones
    /// where given), starts health checks and the admin API.
    pub async fn start(path: &Path, mut prebound: Prebound) -> Result<Lb, LifecycleError> {
        let rt = Arc::new(load(path, None)?);
        let admin_addr = rt.admin_listen;
        let admin = match prebound.admin.take() {
            Some(l) => l,
            None => TcpListener::bind(admin_addr)
                .await
                .map_err(|source| LifecycleError::Admin {
                    addr: admin_addr,
                    source,
                })?,
        };
        let admin_bound = admin.local_addr().map_err(|source| LifecycleError::Admin {
            addr: admin_addr,
            source,
        })?;
        let (tx, rx) = watch::channel(rt.clone());
        let drain = Drain::default();
        let shared = Arc::new(Shared {
            runtime: rx.clone(),
            global: Arc::new(Semaphore::new(rt.config.global.maxconn)),
            drain: drain.clone(),
        });
        let mut listeners = Listeners::default();
        let opened = listeners.bind_new(&rt, &mut prebound.frontends).await?;
        let frontends = opened
            .iter()
            .filter_map(|(addr, l)| Some((rt.frontends.get(addr)?.name.clone(), l.local_addr().ok()?)))
            .collect();
        listeners.apply(opened, &rt, &shared);
        tokio::spawn(crate::admin::serve(admin, rx, drain));
        tracing::info!(config = %path.display(), admin = %admin_addr, "lb ready");
        Ok(Lb {
            path: path.to_path_buf(),
            runtime: tx,
            checks: rt.start_checks(),
            listeners,
            shared,
            addresses: Addresses {
                frontends,
                admin: admin_bound,
            },
        })
    }

    /// Where the lb listens since it started.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// Serves, reloading on SIGHUP, until `shutdown` resolves; then stops
    /// accepting, lets requests finish and tunnels run out their grace.
    pub async fn serve(
        mut self,
        shutdown: impl Future<Output = std::io::Result<()>>,
    ) -> Result<(), LifecycleError> {
        let mut hangup = signal(SignalKind::hangup()).map_err(LifecycleError::Signals)?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = hangup.recv() => self.reload().await,
                r = &mut shutdown => {
                    r.map_err(LifecycleError::Signals)?;
                    break;
                }
            }
        }

        let grace = self.runtime.borrow().config.global.grace;
        tracing::info!(
            ?grace,
            "stopping: no new connections, finishing requests and tunnels"
        );
        let drain = self.shared.drain.clone();
        drain.begin();
        self.listeners.close_all();
        for c in self.checks.drain(..) {
            c.abort();
        }
        // A little over the grace, so tunnels closed at its end are counted out.
        let left = drain.wait_idle(grace + Duration::from_millis(500)).await;
        tracing::info!(left, "stopped");
        Ok(())
    }

    async fn reload(&mut self) {
        match self.try_reload().await {
            Ok(()) => tracing::info!(config = %self.path.display(), "configuration reloaded"),
            Err(e) => tracing::error!(reason = %e, "reload refused; the running configuration stays"),
        }
    }

    async fn try_reload(&mut self) -> Result<(), LifecycleError> {
        let current = self.runtime.borrow().clone();
        let new = Arc::new(load(&self.path, Some(&current))?);
        if new.admin_listen != current.admin_listen {
            tracing::warn!(admin = %new.admin_listen, "admin.listen changes apply at the next restart");
        }
        let opened = self.listeners.bind_new(&new, &mut HashMap::new()).await?;
        self.runtime.send_replace(new.clone());
        self.listeners.apply(opened, &new, &self.shared);
        for c in self.checks.drain(..) {
            c.abort();
        }
        self.checks = new.start_checks();
        Ok(())
    }
}
