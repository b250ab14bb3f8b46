//! `roundrobin`: servers take turns, each for as many turns as its weight.

use std::sync::Arc;

use super::{by_weight, rotated};
use crate::upstream::Server;

/// Order for the request with sequence number `turn`.
pub fn order(pool: Vec<(Arc<Server>, u32)>, turn: usize) -> Vec<Arc<Server>> {
    let total: u64 = pool.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let first = by_weight(pool.iter().map(|(_, w)| *w), turn as u64 % total);
    rotated(pool.into_iter().map(|(s, _)| s).collect(), first)
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::super::tests::{backend, names};
    use crate::config::Balance;
    use std::collections::HashMap;

    #[test]
    fn turns_follow_weights() {
        let b = backend(Balance::RoundRobin, &[1, 3]);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..40 {
            let first = names(candidates(&b, std::net::Ipv4Addr::LOCALHOST.into(), None)).remove(0);
            *seen.entry(first).or_default() += 1;
        }
        assert_eq!(seen["s0"], 10);
        assert_eq!(seen["s1"], 30);
    }
}
