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
}

impl SessionGuard {
    /// Opens a session on `server`; it is counted until the guard drops.
    pub fn open(server: &Arc<Server>) -> SessionGuard {
        server.shared.counters.session_opened();
        SessionGuard {
            server: server.clone(),
            shutdown: server.shared.shutdown_signal(),
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
        self.server.shared.counters.session_closed();
    }
}
