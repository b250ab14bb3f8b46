//! `hash`: consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam; HAProxy's `hash-type consistent` with
//! `hash-balance-factor`). Each server owns points on a ring, as many as
//! its weight asks; a key goes to the first server clockwise from its hash
//! that is usable and below its bound, so sessions with one key meet on
//! one server, and when that server leaves (down, drained, full) its keys
//! move to their next servers on the ring while every other key stays.

use std::sync::Arc;

use crate::config::HashKey;
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
    /// Ring points, sorted: (position, index into the backend's servers).
    ring: Vec<(u64, usize)>,
}

impl Hashing {
    /// The ring of `servers` (configuration order), each with
    /// `weight × POINTS_PER_WEIGHT` points placed by its name, so a server
    /// keeps its points across reloads and other servers' changes.
    pub fn new(key: HashKey, factor: u32, servers: &[Arc<Server>]) -> Hashing {
        let mut ring = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            for p in 0..s.weight * POINTS_PER_WEIGHT {
                ring.push((hash(format!("{}#{p}", s.name).as_bytes()), i));
            }
        }
        ring.sort_unstable();
        Hashing { key, factor, ring }
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
/// their weights), given the backend's `servers` the ring indexes: ring
/// order from the key, servers below their bound first.
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
    for i in hashing.walk(key) {
        let Some((s, w)) = pool.iter().find(|(s, _)| Arc::ptr_eq(s, &servers[i])) else {
            continue;
        };
        let under = hashing.factor == 0
            || (s.sessions() as u64) < bound(hashing.factor, total_load, u64::from(*w), total_weight);
        if under {
            below.push(s.clone());
        } else {
            above.push(s.clone());
        }
    }
    below.extend(above);
    below
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

    #[test]
    fn a_hot_key_spills_to_its_next_server_at_the_bound() {
        let b = hash_backend(&[1, 1], 125);
        let order = names(candidates(&b, CLIENT, Some("hot")));
        let home = b.servers.iter().find(|s| s.name == order[0]).unwrap().clone();
        let mut held = Vec::new();
        let mut placed = Vec::new();
        for _ in 0..8 {
            let s = candidates(&b, CLIENT, Some("hot")).next().unwrap();
            placed.push(s.name.clone());
            held.push(SessionGuard::open(&s, None));
        }
        // Bound for the n-th session: ceil(1.25 × n / 2); the home server
        // takes 1, 2, 2, 3, 4, 4, 5, 5 of the first 1..8.
        let at_home = placed.iter().filter(|n| **n == home.name).count();
        assert_eq!(at_home, 5, "{placed:?}");
        assert_eq!(placed[0], home.name);
        assert_eq!(placed[2], order[1], "third session spills: {placed:?}");
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
