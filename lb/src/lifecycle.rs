//! The running lb from start to exit: build the first runtime and open the
//! listeners, start health checks and the admin API; on SIGHUP reload
//! (new configuration and certificates for new connections, established
//! connections and tunnels untouched, a broken file refused with its reason
//! while the running configuration stays); on SIGTERM/SIGINT stop accepting,
//! let requests finish and tunnels run out their grace, then return.

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
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The parts a reload replaces or touches.
struct RunningLb {
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

/// Runs the lb until SIGTERM or SIGINT.
pub async fn run(path: &Path) -> Result<(), LifecycleError> {
    let mut hangup = signal(SignalKind::hangup()).map_err(LifecycleError::Signals)?;
    let terminate = wsmesh_common::signal::terminate();
    tokio::pin!(terminate);

    let rt = Arc::new(load(path, None)?);
    let admin_addr = rt.admin_listen;
    let admin = TcpListener::bind(admin_addr)
        .await
        .map_err(|source| LifecycleError::Admin {
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
    let opened = listeners.bind_new(&rt).await?;
    listeners.apply(opened, &rt, &shared);
    let mut lb = RunningLb {
        path: path.to_path_buf(),
        runtime: tx,
        checks: rt.start_checks(),
        listeners,
        shared,
    };
    tokio::spawn(crate::admin::serve(admin, rx, drain.clone()));
    tracing::info!(config = %path.display(), admin = %admin_addr, "lb ready");

    loop {
        tokio::select! {
            _ = hangup.recv() => lb.reload().await,
            r = &mut terminate => {
                r.map_err(LifecycleError::Signals)?;
                break;
            }
        }
    }

    let grace = lb.runtime.borrow().config.global.grace;
    tracing::info!(
        ?grace,
        "stopping: no new connections, finishing requests and tunnels"
    );
    drain.begin();
    lb.listeners.close_all();
    for c in lb.checks.drain(..) {
        c.abort();
    }
    // A little over the grace, so tunnels closed at its end are counted out.
    let left = drain.wait_idle(grace + Duration::from_millis(500)).await;
    tracing::info!(left, "stopped");
    Ok(())
}

impl RunningLb {
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
        let opened = self.listeners.bind_new(&new).await?;
        self.runtime.send_replace(new.clone());
        self.listeners.apply(opened, &new, &self.shared);
        for c in self.checks.drain(..) {
            c.abort();
        }
        self.checks = new.start_checks();
        Ok(())
    }
}
