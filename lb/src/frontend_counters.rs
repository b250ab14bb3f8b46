//! What the stats page, the admin API and metrics show per frontend:
//! connections accepted, TLS handshakes completed, and requests refused
//! because of the client (HAProxy's `ereq`), apart from the servers'
//! counters so a client's bad request never shows as a server's error.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one frontend; kept across reloads while its name stays.
#[derive(Debug, Default)]
pub struct FrontendCounters {
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// TLS handshakes completed: one per client connection on a TLS
    /// frontend, so a page and its WebSocket sharing one HTTP/2
    /// connection count one.
    pub tls_handshakes: AtomicU64,
    /// Requests refused because of the client: unreadable or ambiguous
    /// framing, a head over the limits or not complete in time, a
    /// malformed body.
    pub request_errors: AtomicU64,
}

impl FrontendCounters {
    pub fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_handshake_done(&self) {
        self.tls_handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused because of the client.
    pub fn request_refused(&self) {
        self.request_errors.fetch_add(1, Ordering::Relaxed);
    }
}
