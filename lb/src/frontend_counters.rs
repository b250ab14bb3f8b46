//! What the stats page, the admin API and metrics show per frontend:
//! connections accepted, TLS handshakes completed, requests refused
//! because of the client (HAProxy's `ereq`), connections and requests
//! refused by a per-source limit (`dcon`/`dreq`, by limit) and connections
//! refused by the PROXY protocol check; apart from the servers' counters
//! so a client's bad request never shows as a server's error.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::proxy_protocol::ProxyRefusal;
use crate::source_limits::LimitKind;

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
    /// Connections and requests refused by a per-source limit, by
    /// [`LimitKind::index`].
    pub limited: [AtomicU64; LimitKind::ALL.len()],
    /// Connections closed by the PROXY protocol check, by [`ProxyRefusal`].
    pub proxy_refused: [AtomicU64; ProxyRefusal::ALL.len()],
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

    /// A connection or request refused by a per-source limit.
    pub fn limited(&self, kind: LimitKind) {
        self.limited[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed by the PROXY protocol check.
    pub fn proxy_refused(&self, reason: ProxyRefusal) {
        self.proxy_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals by a per-source limit, by kind.
    pub fn limited_by_kind(&self) -> impl Iterator<Item = (LimitKind, u64)> + '_ {
        LimitKind::ALL
            .iter()
            .map(|k| (*k, self.limited[k.index()].load(Ordering::Relaxed)))
    }

    /// PROXY protocol refusals, by reason.
    pub fn proxy_refused_by_reason(&self) -> impl Iterator<Item = (ProxyRefusal, u64)> + '_ {
        ProxyRefusal::ALL
            .iter()
            .map(|r| (*r, self.proxy_refused[*r as usize].load(Ordering::Relaxed)))
    }
}
