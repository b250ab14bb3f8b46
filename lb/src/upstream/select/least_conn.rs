//! `leastconn`: the server with the fewest sessions per weight first; ties
//! are broken in rotation so idle servers share new sessions evenly.

use std::cmp::Ordering;
use std::sync::Arc;

use super::rotated;
use crate::upstream::Server;

/// Order for one request; `turn` rotates the tie-break.
pub fn order(pool: Vec<(Arc<Server>, u32)>, turn: usize) -> Vec<Arc<Server>> {
    let mut scored: Vec<(Arc<Server>, u64, u64)> = pool
        .into_iter()
        .map(|(s, w)| {
            let load = s.sessions() as u64 + 1;
            (s, load, u64::from(w.max(1)))
        })
        .collect();
    scored = rotated(scored, turn);
    // load_a / w_a < load_b / w_b, compared without division; stable, so
    // the rotation decides among equals.
    scored.sort_by(|a, b| (a.1 * b.2).cmp(&(b.1 * a.2)).then(Ordering::Equal));
    scored.into_iter().map(|(s, _, _)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::super::candidates;
    use super::super::tests::{backend, names};
    use crate::config::Balance;

    #[test]
    fn busiest_server_comes_last() {
        let b = backend(Balance::LeastConn, &[1, 1, 1]);
        let _held = [
            crate::upstream::SessionGuard::open(&b.servers[0], None),
            crate::upstream::SessionGuard::open(&b.servers[0], None),
            crate::upstream::SessionGuard::open(&b.servers[1], None),
        ];
        for _ in 0..5 {
            assert_eq!(
                names(candidates(&b, std::net::Ipv4Addr::LOCALHOST.into(), None)),
                ["s2", "s1", "s0"]
            );
        }
    }

    #[test]
    fn idle_servers_share_in_turn() {
        let b = backend(Balance::LeastConn, &[1, 1]);
        let firsts: Vec<String> = (0..4)
            .map(|_| names(candidates(&b, std::net::Ipv4Addr::LOCALHOST.into(), None)).remove(0))
            .collect();
        assert_eq!(firsts, ["s0", "s1", "s0", "s1"]);
    }
}
