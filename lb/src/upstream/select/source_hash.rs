//! `source`: a hash of the client IP picks the server, so a client keeps
//! landing on the same one while the set of usable servers stays the same
//! (HAProxy's default map-based hashing).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use super::{by_weight, rotated};
use crate::upstream::Server;

/// Order for a request from `client`.
pub fn order(pool: Vec<(Arc<Server>, u32)>, client: IpAddr) -> Vec<Arc<Server>> {
    let total: u64 = pool.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    // DefaultHasher::new() has fixed keys: the same IP hashes the same in
    // every process and after every reload.
    let mut h = DefaultHasher::new();
    client.hash(&mut h);
    let first = by_weight(pool.iter().map(|(_, w)| *w), h.finish() % total);
    rotated(pool.into_iter().map(|(s, _)| s).collect(), first)
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::super::tests::{backend, names};
    use crate::config::Balance;
    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn same_client_same_server_and_clients_spread() {
        let b = backend(Balance::Source, &[1, 1]);
        let mut firsts = HashSet::new();
        for i in 1..=50u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i));
            let first = names(candidates(&b, ip, None)).remove(0);
            assert_eq!(names(candidates(&b, ip, None)).remove(0), first);
            firsts.insert(first);
        }
        assert_eq!(firsts.len(), 2);
    }
}
