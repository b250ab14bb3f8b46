//! What one accepted client connection carries: the limit slots it holds
//! and the context its request handlers and tunnels see. The listener
//! builds both; the proxy and tunnels only consume them, so neither needs
//! to know how connections are accepted.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use crate::client_io::Switched;
use crate::drain::{ActiveGuard, Drain};
use crate::runtime::{Frontend, Runtime};
use crate::source_limits::SourceConn;

/// Slots a client connection holds; released when the connection and any
/// tunnel made from it are gone.
#[derive(Debug)]
pub struct Permits {
    /// The connection's share of the global `maxconn`.
    _global: OwnedSemaphorePermit,
    /// Its share of the frontend's `maxconn`, when the frontend has one.
    _frontend: Option<OwnedSemaphorePermit>,
    /// Keeps a graceful stop waiting for this connection.
    _active: ActiveGuard,
    /// Its slot in its source's `max_conns`, when the frontend has one.
    _source: Option<SourceConn>,
}

impl Permits {
    pub fn new(
        global: OwnedSemaphorePermit,
        frontend: Option<OwnedSemaphorePermit>,
        active: ActiveGuard,
    ) -> Permits {
        Permits {
            _global: global,
            _frontend: frontend,
            _active: active,
            _source: None,
        }
    }

    /// The same slots and the source's.
    pub fn with_source(self, source: Option<SourceConn>) -> Permits {
        Permits {
            _source: source,
            ..self
        }
    }
}

/// What a request handler knows about its client connection.
#[derive(Debug)]
pub struct ConnCtx {
    /// Client address (from the PROXY header when the frontend takes one),
    /// for forwarding headers, `source` balancing, limits and logs.
    pub peer: SocketAddr,
    /// The frontend that accepted the connection.
    pub frontend: Arc<Frontend>,
    /// The configuration in force when the connection was accepted.
    pub runtime: Arc<Runtime>,
    /// TLS handshake time (zero for plain HTTP), logged as `Th`.
    pub th: Duration,
    /// Requests in flight on this connection: an idle timeout only closes
    /// a connection with none.
    pub in_flight: Arc<AtomicUsize>,
    /// Connection limit slots, handed on to tunnels.
    pub permits: Arc<Permits>,
    /// Stop signal, handed on to tunnels.
    pub drain: Drain,
    /// Set when an HTTP/1 connection becomes a tunnel, so its head watcher
    /// stops.
    pub switched: Switched,
}
