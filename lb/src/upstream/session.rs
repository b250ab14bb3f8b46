//! A session on a server (a request in flight or an open tunnel): counted
//! while it lives, and told when `on_marked_down` shuts the server's
//! sessions down.

use std::sync::Arc;

use tokio::sync::watch;

use super::server::Server;

/// A session on a server; dropping it ends the session.
#[derive(Debug)]
pub struct SessionGuard {
    /// The server the session is on.
    pub server: Arc<Server>,
    /// The server's shutdown signal as it was when the session opened.
    pub(super) shutdown: watch::Receiver<u64>,
    /// The hash key the session was placed by, listed on its server while
    /// it lives.
    key: Option<Arc<str>>,
}

impl SessionGuard {
    /// Opens a session on `server`, placed by hash `key` if any: it is
    /// counted, and listed with the server's open keys, until the guard drops.
    pub fn open(server: &Arc<Server>, key: Option<Arc<str>>) -> SessionGuard {
        let counters = &server.shared.counters;
        counters.session_opened();
        if let Some(k) = &key {
            counters.keys.opened(k);
        }
        SessionGuard {
            server: server.clone(),
            shutdown: server.shared.shutdown_signal(),
            key,
        }
    }

    /// Resolves once the server's sessions are shut down (marked down or
    /// put in maintenance with `on_marked_down = "shutdown-sessions"`, or
    /// unreachable or in maintenance with `"shutdown-unreachable"`) after
    /// this session opened; never otherwise.
    pub async fn shut_down(&mut self) {
        if self.shutdown.changed().await.is_err() {
            // The sender lives as long as the server, which this guard
            // keeps alive, so this does not happen; never resolve if it did.
            std::future::pending::<()>().await;
        }
    }

    /// The same signal as [`SessionGuard::shut_down`], as a future that
    /// owns its receiver, for a response body that outlives the handler.
    pub fn shut_down_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.clone();
        async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let counters = &self.server.shared.counters;
        counters.session_closed();
        if let Some(k) = &self.key {
            counters.keys.closed(k);
        }
    }
}
