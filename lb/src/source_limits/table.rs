//! The table of sources one frontend tracks (a stick table keyed by
//! `src`): per address its open connections, its rates and what it was
//! refused. Bounded: an entry with no open connection is dropped `expire`
//! after its last event, and a full table forgets its least recently seen
//! eighth at once (idle entries before ones with open connections). A
//! forgotten source starts again from nothing; connections it still has
//! open keep their slot in the forgotten entry and no longer count
//! against it. Sharded by address so sources seldom wait on each other.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::window::Window;
use super::LimitKind;

/// Connections, requests and upgrades of one source: since it was first
/// seen (totals), or within their rates' periods (rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: u64,
    pub requests: u64,
    pub upgrades: u64,
}

/// One source's counters.
#[derive(Debug)]
pub struct Entry {
    /// Connections open now; shared with their guards.
    pub conns: Arc<AtomicU32>,
    /// New connections.
    pub conn_rate: Window,
    /// HTTP requests (upgrades included).
    pub request_rate: Window,
    /// WebSocket upgrades.
    pub upgrade_rate: Window,
    /// Since it was first seen.
    pub totals: Counts,
    /// Refusals by [`LimitKind`].
    pub refused: [u64; LimitKind::ALL.len()],
    /// Last event, in the table's milliseconds.
    pub last_seen: u64,
    /// When a refused connection was last logged, and how many were not
    /// logged since (one line a second per source at most).
    pub last_logged: u64,
    pub unlogged: u64,
}

impl Entry {
    fn new(now: u64) -> Entry {
        Entry {
            conns: Arc::default(),
            conn_rate: Window::default(),
            request_rate: Window::default(),
            upgrade_rate: Window::default(),
            totals: Counts::default(),
            refused: [0; LimitKind::ALL.len()],
            last_seen: now,
            last_logged: 0,
            unlogged: 0,
        }
    }

    /// Whether a refused connection should be logged now; if so, with the
    /// number of refusals not logged before it.
    pub fn log_refusal(&mut self, now: u64) -> Option<u64> {
        if self.last_logged == 0 || now.saturating_sub(self.last_logged) >= 1000 {
            self.last_logged = now;
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        }
    }
}

/// Entries of one shard.
#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<IpAddr, Entry>,
    /// When expired entries were last dropped.
    last_sweep: u64,
}

/// How often a shard looks for expired entries, at most.
const SWEEP_EVERY_MS: u64 = 1000;

impl Shard {
    fn sweep(&mut self, now: u64, expire: u64) {
        self.last_sweep = now;
        self.entries
            .retain(|_, e| e.conns.load(Ordering::Relaxed) > 0 || now.saturating_sub(e.last_seen) < expire);
    }

    /// Forgets the least recently seen eighth (at least one), idle ones first.
    fn evict(&mut self, capacity: usize) -> usize {
        let n = (capacity / 8).clamp(1, self.entries.len());
        let mut order: Vec<(bool, u64, IpAddr)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.conns.load(Ordering::Relaxed) > 0, e.last_seen, *k))
            .collect();
        if n < order.len() {
            order.select_nth_unstable(n - 1);
        }
        for (_, _, key) in &order[..n] {
            self.entries.remove(key);
        }
        n
    }
}

/// A source as the admin API shows it.
#[derive(Debug, Clone)]
pub struct SourceView {
    pub key: IpAddr,
    pub conns: u32,
    /// Current rates over their periods.
    pub rates: Counts,
    pub totals: Counts,
    pub refused: [u64; LimitKind::ALL.len()],
    pub idle: Duration,
}

impl SourceView {
    /// Refusals of every kind.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }
}

/// The sources of one frontend.
#[derive(Debug)]
pub struct SourceTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Entries per shard before eviction.
    shard_capacity: usize,
    /// Size asked for (`max_sources`).
    pub max_sources: usize,
    /// IPv6 sources are keyed by this prefix.
    pub ipv6_prefix: u8,
    /// Entries forgotten because the table was full.
    pub evicted: AtomicU64,
    epoch: Instant,
}

impl SourceTable {
    pub fn new(max_sources: usize, ipv6_prefix: u8) -> SourceTable {
        // Small tables keep one shard so their bound is exact.
        let shards = if max_sources >= 1024 { 16 } else { 1 };
        SourceTable {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            shard_capacity: max_sources.div_ceil(shards).max(1),
            max_sources,
            ipv6_prefix,
            evicted: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the table was made, from 1.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The key `ip` is tracked under.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            v6 => crate::config::mask(v6, self.ipv6_prefix),
        }
    }

    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic while holding the lock leaves counters only: keep going.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the entry of `ip` (made if new) at `now`.
    pub fn with<R>(&self, ip: IpAddr, now: u64, expire: Duration, f: impl FnOnce(&mut Entry) -> R) -> R {
        let key = self.key(ip);
        let mut shard = self.shard(&key);
        let expire = expire.as_millis() as u64;
        if now.saturating_sub(shard.last_sweep) >= SWEEP_EVERY_MS {
            shard.sweep(now, expire);
        }
        if !shard.entries.contains_key(&key) && shard.entries.len() >= self.shard_capacity {
            shard.sweep(now, expire);
            if shard.entries.len() >= self.shard_capacity {
                let n = shard.evict(self.shard_capacity);
                self.evicted.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        let entry = shard.entries.entry(key).or_insert_with(|| Entry::new(now));
        entry.last_seen = now;
        f(entry)
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).entries.len())
            .sum()
    }

    /// Every source, its rates read over `periods` (connections, requests,
    /// upgrades) at `now`.
    pub fn snapshot(&self, periods: [Duration; 3]) -> Vec<SourceView> {
        let now = self.now();
        let ms = periods.map(|p| p.as_millis() as u64);
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(shard.entries.iter().map(|(key, e)| SourceView {
                key: *key,
                conns: e.conns.load(Ordering::Relaxed),
                rates: Counts {
                    connections: e.conn_rate.count(now, ms[0]),
                    requests: e.request_rate.count(now, ms[1]),
                    upgrades: e.upgrade_rate.count(now, ms[2]),
                },
                totals: e.totals,
                refused: e.refused,
                idle: Duration::from_millis(now.saturating_sub(e.last_seen)),
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4((0x0a00_0000 + i).into())
    }

    #[test]
    fn a_full_table_forgets_its_least_recently_seen_sources_first() {
        let t = SourceTable::new(16, 64);
        let expire = Duration::from_secs(60);
        // One source with an open connection, seen first of all.
        let held = t.with(ip(0), 10, expire, |e| {
            e.conns.fetch_add(1, Ordering::Relaxed);
            e.conns.clone()
        });
        for i in 1..16 {
            t.with(ip(i), 10 + u64::from(i), expire, |_| ());
        }
        assert_eq!(t.len(), 16);
        t.with(ip(100), 100, expire, |_| ());
        assert_eq!(t.len(), 15, "two forgotten (an eighth), one added");
        assert_eq!(t.evicted.load(Ordering::Relaxed), 2);
        let keys: Vec<IpAddr> = t
            .snapshot([Duration::from_secs(1); 3])
            .iter()
            .map(|v| v.key)
            .collect();
        assert!(keys.contains(&ip(0)), "the source with a connection stays");
        assert!(!keys.contains(&ip(1)) && !keys.contains(&ip(2)), "{keys:?}");
        drop(held);
    }

    #[test]
    fn idle_sources_expire_and_ipv6_is_keyed_by_prefix() {
        let t = SourceTable::new(100, 64);
        let expire = Duration::from_millis(500);
        t.with(ip(1), 10, expire, |_| ());
        t.with("2001:db8::1".parse().unwrap(), 10, expire, |_| ());
        t.with("2001:db8::2".parse().unwrap(), 20, expire, |_| ());
        assert_eq!(t.len(), 2);
        // The next sweep, over a second later, drops both.
        t.with(ip(2), 2_000, expire, |_| ());
        assert_eq!(t.len(), 1);
    }
}
