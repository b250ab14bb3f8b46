//! `hash`: consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam; HAProxy's `hash-type consistent` with
//! `hash-balance-factor`). Each server owns points on a ring, as many as
//! its weight asks; a key goes to the first server clockwise from its hash
//! that is usable and below its bound, so sessions with one key meet on
//! one server, and when that server leaves (down, drained, full) its keys
//! move to their next servers on the ring while every other key stays.
//!
//! With `hash_stick = "open-sessions"` (the default) the bound places keys,
//! not sessions: a key that has open sessions goes where most of them are,
//! whatever that server's load, as long as it is usable (up, ready, below
//! maxconn). A room's members thus stay together (one app fans its chats
//! out, not two), also while the lb fills up from nothing, when every bound
//! is tiny; a server past its bound takes no new keys. An app that is full
//! says so itself (its capacity threshold) and stops being usable.

use std::sync::Arc;

use crate::config::{HashKey, HashStick};
use crate::upstream::Server;

/// Ring points per unit of weight: enough that servers of equal weight get
/// shares within a few percent of each other.
pub const POINTS_PER_WEIGHT: u32 = 40;

/// A hash-balanced backend's key, bound and ring.
#[derive(Debug)]
pub struct Hashing {
    /// What is hashed.
    pub key: HashKey,
    /// `hash_balance_factor`: percent of a server's weighted share of the
    /// sessions it may hold; 0: no bound.
    pub factor: u32,
    /// Whether a key's open sessions hold it on their server.
    pub stick: HashStick,
    /// Ring points, sorted: (position, index into the backend's servers).
    ring: Vec<(u64, usize)>,
}

impl Hashing {
    /// The ring of `servers` (configuration order), each with
    /// `weight × POINTS_PER_WEIGHT` points placed by its name, so a server
    /// keeps its points across reloads and other servers' changes.
    pub fn new(key: HashKey, factor: u32, stick: HashStick, servers: &[Arc<Server>]) -> Hashing {
        let mut ring = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            for p in 0..s.weight * POINTS_PER_WEIGHT {
                ring.push((hash(format!("{}#{p}", s.name).as_bytes()), i));
            }
        }
        ring.sort_unstable();
        Hashing {
            key,
            factor,
            stick,
            ring,
        }
    }

    /// Indices of the servers on the ring, each once, clockwise from the
    /// point of `key`.
    fn walk(&self, key: &str) -> Vec<usize> {
        let h = hash(key.as_bytes());
        let start = self.ring.partition_point(|(p, _)| *p < h);
        let mut seen = Vec::new();
        for (_, i) in self.ring[start..].iter().chain(&self.ring[..start]) {
            if !seen.contains(i) {
                seen.push(*i);
            }
        }
        seen
    }
}

/// Order for a request with `key` over `pool` (the usable servers with
/// their weights), given the backend's `servers` the ring indexes: the
/// server holding most of the key's open sessions, if any and the backend
/// sticks to them, then ring order from the key, servers below their bound
/// first.
pub fn order(
    hashing: &Hashing,
    servers: &[Arc<Server>],
    pool: Vec<(Arc<Server>, u32)>,
    key: &str,
) -> Vec<Arc<Server>> {
    let total_load: u64 = pool.iter().map(|(s, _)| s.sessions() as u64).sum();
    let total_weight: u64 = pool.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut below = Vec::new();
    let mut above = Vec::new();
    // (open sessions of the key, index in `below`/`above`, which of them)
    let mut home: Option<(usize, usize, bool)> = None;
    for i in hashing.walk(key) {
        let Some((s, w)) = pool.iter().find(|(s, _)| Arc::ptr_eq(s, &servers[i])) else {
            continue;
        };
        let open = match hashing.stick {
            HashStick::OpenSessions => s.shared.counters.keys.count(key),
            HashStick::Off => 0,
        };
        let under = hashing.factor == 0
            || (s.sessions() as u64) < bound(hashing.factor, total_load, u64::from(*w), total_weight);
        let list = if under { &mut below } else { &mut above };
        if open > home.map_or(0, |h| h.0) {
            home = Some((open, list.len(), under));
        }
        list.push(s.clone());
    }
    let first = home.map(|(_, at, under)| if under { below.remove(at) } else { above.remove(at) });
    first.into_iter().chain(below).chain(above).collect()
}

/// Sessions a server of `weight` may hold before a new one (counted in
/// `total_load + 1`) goes on: `factor`% of its weighted share, rounded
/// up, at least 1. The bounds add up to at least every session, so some
/// server is always below its own.
fn bound(factor: u32, total_load: u64, weight: u64, total_weight: u64) -> u64 {
    let denominator = 100 * total_weight.max(1);
    ((u64::from(factor) * (total_load + 1) * weight).div_ceil(denominator)).max(1)
}

/// FNV-1a with a 64-bit finalizer (MurmurHash3's `fmix64`): the same in
/// every build and on every lb, so two lbs in front of the same servers
/// place a key alike; the finalizer spreads near-equal inputs such as
/// `app1#0`, `app1#1` over the whole ring.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::candidates;
    use super::super::tests::{backend, hash_backend, names};
    use super::*;
    use crate::upstream::{AdminState, SessionGuard};

    const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn first(b: &crate::upstream::Backend, key: &str) -> String {
        names(candidates(b, CLIENT, Some(key))).remove(0)
    }

    #[test]
    fn a_key_always_lands_on_one_server_and_keys_spread_by_weight() {
        let b = hash_backend(&[1, 2, 1], 0);
        let mut per: HashMap<String, usize> = HashMap::new();
        for room in 0..4000 {
            let key = format!("room-{room}");
            let s = first(&b, &key);
            assert_eq!(first(&b, &key), s);
            *per.entry(s).or_default() += 1;
        }
        // Shares of 1/4, 1/2, 1/4, within a tenth of the whole.
        for (name, want) in [("s0", 1000), ("s1", 2000), ("s2", 1000)] {
            let got = per[name] as i64;
            assert!((got - want).abs() < 400, "{per:?}");
        }
    }

    #[test]
    fn a_leaving_server_s_keys_go_to_their_next_server_and_only_those_move() {
        let b = hash_backend(&[1, 1, 1], 0);
        let before: Vec<Vec<String>> = (0..300)
            .map(|r| names(candidates(&b, CLIENT, Some(&format!("r{r}")))))
            .collect();
        b.servers[1].set_admin(AdminState::Drain);
        for (r, order) in before.iter().enumerate() {
            let now = first(&b, &format!("r{r}"));
            let expected = order.iter().find(|s| *s != "s1").unwrap();
            assert_eq!(&now, expected, "r{r}: {order:?}");
        }
        b.servers[1].set_admin(AdminState::Ready);
        for (r, order) in before.iter().enumerate() {
            assert_eq!(first(&b, &format!("r{r}")), order[0]);
        }
    }

    /// Places one session of `key` as the proxy does: the first
    /// candidate, with the key listed on it while the guard lives.
    fn place(b: &crate::upstream::Backend, key: &str) -> SessionGuard {
        let s = candidates(b, CLIENT, Some(key)).next().unwrap();
        SessionGuard::open(&s, Some(key.into()))
    }

    #[test]
    fn without_stickiness_a_hot_key_spills_at_the_bound() {
        let mut b = hash_backend(&[1, 1], 125);
        if let Some(h) = b.hashing.as_mut() {
            h.stick = HashStick::Off;
        }
        let order = names(candidates(&b, CLIENT, Some("hot")));
        let placed: Vec<_> = (0..8).map(|_| place(&b, "hot")).collect();
        let names: Vec<&str> = placed.iter().map(|g| g.server.name.as_str()).collect();
        // Bound for the n-th session: ceil(1.25 × n / 2); the home server
        // takes 1, 2, 2, 3, 4, 4, 5, 5 of the first 1..8.
        assert_eq!(names.iter().filter(|n| **n == order[0]).count(), 5, "{names:?}");
        assert_eq!(names[2], order[1], "third session spills: {names:?}");
    }

    #[test]
    fn a_server_past_its_bound_takes_no_new_keys() {
        let b = hash_backend(&[1, 1], 125);
        let order = names(candidates(&b, CLIENT, Some("hot")));
        // Sessions without a key load the home server past its bound.
        let home = b.servers.iter().find(|s| s.name == order[0]).unwrap().clone();
        let _load: Vec<_> = (0..4).map(|_| SessionGuard::open(&home, None)).collect();
        let placed = place(&b, "hot");
        assert_eq!(placed.server.name, order[1], "a new key goes to its next server");
    }

    #[test]
    fn a_key_with_open_sessions_stays_together_past_the_bound() {
        let b = hash_backend(&[1, 1, 1, 1], 125);
        let home = first(&b, "room");
        // While the lb fills up from nothing every bound is 1 or 2: without
        // the key's own sessions counting, the second member would spill.
        let held: Vec<_> = (0..8).map(|_| place(&b, "room")).collect();
        let servers: Vec<&str> = held.iter().map(|g| g.server.name.as_str()).collect();
        assert!(servers.iter().all(|s| *s == home), "{servers:?}");
    }

    #[test]
    fn a_key_split_by_a_failover_goes_where_most_of_its_sessions_are() {
        let b = hash_backend(&[1, 1, 1], 0);
        let order = names(candidates(&b, CLIENT, Some("room")));
        let at = |name: &str| b.servers.iter().find(|s| s.name == name).unwrap().clone();
        // Two sessions on the next server (placed there while home was
        // away), one back home.
        let next: Vec<_> = (0..2)
            .map(|_| SessionGuard::open(&at(&order[1]), Some("room".into())))
            .collect();
        let _home = SessionGuard::open(&at(&order[0]), Some("room".into()));
        assert_eq!(first(&b, "room"), order[1]);
        // Once they are gone the key goes home again.
        drop(next);
        assert_eq!(first(&b, "room"), order[0]);
    }

    #[test]
    fn no_bound_keeps_a_hot_key_home() {
        let b = hash_backend(&[1, 1], 0);
        let home = first(&b, "hot");
        let _held: Vec<_> = (0..6)
            .map(|_| SessionGuard::open(&candidates(&b, CLIENT, Some("hot")).next().unwrap(), None))
            .collect();
        assert_eq!(first(&b, "hot"), home);
    }

    #[test]
    fn without_a_key_leastconn_places_the_session() {
        let b = hash_backend(&[1, 1], 125);
        let _held = SessionGuard::open(&b.servers[0], None);
        assert_eq!(names(candidates(&b, CLIENT, None)), ["s1", "s0"]);
        let plain = backend(crate::config::Balance::LeastConn, &[1, 1]);
        let _held = SessionGuard::open(&plain.servers[0], None);
        assert_eq!(names(candidates(&plain, CLIENT, Some("ignored"))), ["s1", "s0"]);
    }

    #[test]
    fn bounds_hold_every_session() {
        for (factor, load, w, tw) in [(100u32, 0u64, 1u64, 3u64), (125, 7, 1, 2), (100, 9, 2, 3)] {
            assert!(bound(factor, load, w, tw) >= 1);
        }
        // Three equal servers at factor 100 after 8 sessions: 3 each.
        assert_eq!(bound(100, 8, 1, 3), 3);
        assert_eq!(bound(125, 3, 1, 2), 3);
    }
}
