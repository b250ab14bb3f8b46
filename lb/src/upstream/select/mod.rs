//! Server selection, Pingora style: a backend yields its candidates for one
//! request in order — first choice first, then the fallbacks — so a retry
//! or redispatch after a failed connect is just "take the next one".
//!
//! Only usable servers (ready, up, weight > 0, below maxconn) are
//! candidates; backup servers only when no regular server is usable.

mod consistent;
mod least_conn;
mod round_robin;
mod source_hash;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Backend, Server};
use crate::config::Balance;
pub use consistent::Hashing;

/// Candidates for one request, best first.
#[derive(Debug)]
pub struct Candidates {
    /// Remaining servers, in order.
    order: std::vec::IntoIter<Arc<Server>>,
}

impl Iterator for Candidates {
    type Item = Arc<Server>;

    fn next(&mut self) -> Option<Arc<Server>> {
        // A server may have gone down or filled up since the list was made.
        self.order.by_ref().find(|s| s.usable())
    }
}

/// The policy that places one request: the backend's, except that a
/// hash-balanced request without its key is placed by leastconn.
#[derive(Debug, Clone, Copy)]
enum Policy<'a> {
    RoundRobin,
    LeastConn,
    Source,
    Hash(&'a Hashing, &'a str),
}

/// Candidates for a request from `client`; `key` is the request's hash
/// key, used when the backend balances by hash.
pub fn candidates(backend: &Backend, client: IpAddr, key: Option<&str>) -> Candidates {
    let policy = match (backend.balance, &backend.hashing, key) {
        (Balance::RoundRobin, _, _) => Policy::RoundRobin,
        (Balance::Source, _, _) => Policy::Source,
        (Balance::Hash, Some(hashing), Some(key)) => Policy::Hash(hashing, key),
        (Balance::LeastConn | Balance::Hash, _, _) => Policy::LeastConn,
    };
    // leastconn compares loads per weight, where finer steps let a server
    // of weight 1 ramp through slowstart; the slot-based algorithms take
    // whole weights, so their turns stay short.
    let weight = |s: &Server| match policy {
        Policy::LeastConn => s.scaled_weight(),
        Policy::RoundRobin | Policy::Source | Policy::Hash(..) => s.effective_weight(),
    };
    let usable = |backup: bool| -> Vec<(Arc<Server>, u32)> {
        backend
            .servers
            .iter()
            .filter(|s| s.backup == backup && s.usable())
            .map(|s| (s.clone(), weight(s)))
            .collect()
    };
    let mut pool = usable(false);
    if pool.is_empty() {
        pool = usable(true);
    }
    let order = match policy {
        Policy::RoundRobin => round_robin::order(pool, backend.rotation.fetch_add(1, Ordering::Relaxed)),
        Policy::LeastConn => least_conn::order(pool, backend.rotation.fetch_add(1, Ordering::Relaxed)),
        Policy::Source => source_hash::order(pool, client),
        Policy::Hash(hashing, key) => consistent::order(hashing, &backend.servers, pool, key),
    };
    Candidates {
        order: order.into_iter(),
    }
}

/// `servers` rotated so that the one at `start` comes first.
fn rotated<T>(mut servers: Vec<T>, start: usize) -> Vec<T> {
    if !servers.is_empty() {
        let len = servers.len();
        servers.rotate_left(start % len);
    }
    servers
}

/// Index of the server owning slot `pos` when each takes `weight` slots.
fn by_weight(weights: impl Iterator<Item = u32>, pos: u64) -> usize {
    let mut acc = 0u64;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        acc += u64::from(w);
        last = i;
        if pos < acc {
            return i;
        }
    }
    last
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config;
    use crate::upstream::{AdminState, ServerShared};
    use std::sync::atomic::AtomicUsize;

    pub fn backend(balance: Balance, weights: &[u32]) -> Backend {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let text = format!(
                    "name = \"s{i}\"\naddr = \"127.0.0.1:{}\"\nweight = {w}\n",
                    1000 + i
                );
                let cfg: config::Server = toml::from_str(&text).unwrap();
                Arc::new(Server::new(
                    &cfg,
                    cfg.addr.get_ref().parse().unwrap(),
                    None,
                    ServerShared::new(2, 1),
                ))
            })
            .collect();
        Backend {
            name: "b".into(),
            balance,
            retries: 3,
            retry_on: vec![config::RetryOn::ConnFailure],
            check: None,
            servers,
            rotation: AtomicUsize::new(0),
            hashing: None,
        }
    }

    /// A `balance = "hash"` backend on `url_param:room` with `factor`.
    pub fn hash_backend(weights: &[u32], factor: u32) -> Backend {
        let mut b = backend(Balance::Hash, weights);
        let key = config::HashKey::UrlParam("room".into());
        b.hashing = Some(Hashing::new(key, factor, config::HashStick::default(), &b.servers));
        b
    }

    pub fn names(c: Candidates) -> Vec<String> {
        c.map(|s| s.name.clone()).collect()
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn every_usable_server_is_a_fallback_exactly_once() {
        for balance in [
            Balance::RoundRobin,
            Balance::LeastConn,
            Balance::Source,
            Balance::Hash,
        ] {
            let mut b = backend(balance, &[1, 2, 3]);
            if balance == Balance::Hash {
                b = hash_backend(&[1, 2, 3], 125);
            }
            let mut n = names(candidates(&b, CLIENT, Some("room")));
            n.sort();
            assert_eq!(n, ["s0", "s1", "s2"], "{balance:?}");
        }
    }

    #[test]
    fn drained_and_zero_weight_servers_are_skipped() {
        let b = backend(Balance::RoundRobin, &[1, 0, 1]);
        b.servers[2].set_admin(AdminState::Drain);
        for _ in 0..5 {
            assert_eq!(names(candidates(&b, CLIENT, None)), ["s0"]);
        }
    }

    #[test]
    fn backup_only_when_no_regular_server_is_usable() {
        let mut b = backend(Balance::RoundRobin, &[1, 1]);
        let mut cfg: config::Server =
            toml::from_str("name = \"bk\"\naddr = \"127.0.0.1:2000\"\nbackup = true\n").unwrap();
        cfg.backup = true;
        b.servers.push(Arc::new(Server::new(
            &cfg,
            "127.0.0.1:2000".parse().unwrap(),
            None,
            ServerShared::new(2, 1),
        )));
        assert!(!names(candidates(&b, CLIENT, None)).contains(&"bk".to_string()));
        b.servers[0].set_admin(AdminState::Maint);
        b.servers[1].set_admin(AdminState::Maint);
        assert_eq!(names(candidates(&b, CLIENT, None)), ["bk"]);
    }

    #[test]
    fn by_weight_maps_slots_to_servers() {
        let w = [1u32, 2, 1];
        let picks: Vec<usize> = (0..4).map(|p| by_weight(w.iter().copied(), p)).collect();
        assert_eq!(picks, [0, 1, 1, 2]);
    }
}
