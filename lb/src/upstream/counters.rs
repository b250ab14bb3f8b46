//! What the stats page and metrics show per server: sessions now, at most
//! and ever, bytes each way, responses by status class, failed connects,
//! the hash keys of the open sessions.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::open_keys::OpenKeys;

/// Counters shown on the stats page and in metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions now (requests in flight + open tunnels).
    pub sessions: AtomicUsize,
    /// Highest `sessions` seen.
    pub max_sessions: AtomicUsize,
    /// Sessions since start, for rates on the stats page and in metrics.
    pub total_sessions: AtomicU64,
    /// Body bytes from clients to this server.
    pub bytes_in: AtomicU64,
    /// Body bytes from this server to clients.
    pub bytes_out: AtomicU64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub responses: [AtomicU64; 6],
    /// Connects that failed (refused or timed out).
    pub connect_errors: AtomicU64,
    /// Hash keys of the open sessions (`balance = "hash"`).
    pub keys: OpenKeys,
}

impl Counters {
    /// Counts a response's status class.
    pub fn count_response(&self, status: u16) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// One more session now and ever; returns how many are open.
    pub fn session_opened(&self) -> usize {
        let now = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_sessions.fetch_max(now, Ordering::Relaxed);
        self.total_sessions.fetch_add(1, Ordering::Relaxed);
        now
    }

    /// One session fewer now.
    pub fn session_closed(&self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
