//! The drill's ledger: every acked message against every chat each client
//! received, raw (before the client's own dedup), so a duplicate or a
//! reordering by the service is counted instead of hidden.
//!
//! Rules, per client (one room each):
//! - **expected**: every acked message of its room whose id is above the
//!   client's starting point, the highest id of its first `history` (nothing
//!   before it was promised; an empty first history starts at `0-0`).
//! - **made**: expected messages received at least once; **lost** = expected − made.
//! - **duplicated**: receipts of an id this client had already received (any id,
//!   acked or not).
//! - **out of order**: a receipt of a new id lower than the highest id received
//!   before it. Why replay after a reconnect is not reordering: the client
//!   resumes with `since` = the highest id it yielded, which is also the highest
//!   it received raw (a receipt above it is always yielded), and a correct
//!   server replays only ids above `since`. So correct replay continues the
//!   increasing sequence; a server replaying ids at or below `since` shows up as
//!   duplicates, and one that skips ahead and comes back as out of order.
//! - **unacked**: sends still without an ack when the drill ended (the outbox
//!   must empty); **ack conflicts**: one cid acked under two ids, or two cids
//!   under one id (each send must be stored exactly once).
//! - **acked but not stored**: an acked message the store does not hold when
//!   the drill ends (a promoted replica lacked it).
//! - **seen then lost**: a receipt of an id the store does not hold when the
//!   drill ends (read from the master then, committed entries only): a
//!   failover took back something already broadcast. **cids stored twice**:
//!   stream entries repeating a cid of their room (a re-send stored again).
//! - **undecodable**: frames a client could not read as protocol frames (a
//!   chat inside one would vanish without any other column noticing).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use wsmesh_common::stream_id::StreamId;

use super::store::Stored;

/// What one client saw and did.
#[derive(Debug, Clone, Default)]
pub struct ClientLedger {
    /// Room the client was in; only that room's chats are expected.
    pub room: String,
    /// Highest id of its first history (`0-0` when empty): expectations start above it.
    pub start: StreamId,
    /// Ids received in its room, in arrival order, before dedup.
    pub receipts: Vec<StreamId>,
    /// Acks received: (cid, id); a cid may be acked more than once (re-sends).
    pub acks: Vec<(String, StreamId)>,
    /// Messages the client was asked to send.
    pub sent: u64,
    /// Sends still unacked at the end.
    pub pending: usize,
    /// Whether the client gave up (too many failed connects, or not connected
    /// and caught up at the quiescence deadline).
    pub gave_up: bool,
    /// Frames it could not read as protocol frames (a chat in one is lost).
    pub undecodable: u64,
}

/// The ledger's totals over all clients of one drill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Sends queued by all clients.
    pub sent: u64,
    /// Distinct messages acked.
    pub acked: u64,
    /// Deliveries owed: per client, acked messages of its room after its start.
    pub expected: u64,
    /// Owed deliveries that arrived.
    pub made: u64,
    /// Owed deliveries that never arrived (must be 0).
    pub lost: u64,
    /// Receipts of an id the client already had (must be 0).
    pub duplicated: u64,
    /// Receipts of a new id below one already received (must be 0).
    pub out_of_order: u64,
    /// Sends never acked (must be 0).
    pub unacked: u64,
    /// A cid acked under two ids or an id acked for two cids (must be 0).
    pub ack_conflicts: u64,
    /// Clients that gave up (must be 0).
    pub gave_up: u64,
    /// Frames clients could not read as protocol frames (must be 0).
    pub undecodable: u64,
    /// Entries the store holds at the end, in the drill's rooms.
    pub stored: u64,
    /// Distinct acked messages the store does not hold at the end (must be 0).
    pub acked_not_stored: u64,
    /// Receipts of an id the store does not hold at the end (must be 0).
    pub seen_then_lost: u64,
    /// Stored entries repeating a cid of their room (must be 0).
    pub cids_twice: u64,
}

impl Totals {
    /// Whether every loss column is zero.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.unacked == 0
            && self.ack_conflicts == 0
            && self.gave_up == 0
            && self.undecodable == 0
            && self.acked_not_stored == 0
            && self.seen_then_lost == 0
            && self.cids_twice == 0
    }
}

/// The acked messages of each room (id → cid), and the number of conflicting acks.
fn acked_by_room(clients: &[ClientLedger]) -> (HashMap<&str, BTreeSet<StreamId>>, u64) {
    let mut by_cid: HashMap<&str, StreamId> = HashMap::new();
    let mut by_id: HashMap<(&str, StreamId), &str> = HashMap::new();
    let mut rooms: HashMap<&str, BTreeSet<StreamId>> = HashMap::new();
    let mut conflicts = 0;
    for c in clients {
        for (cid, id) in &c.acks {
            match by_cid.insert(cid, *id) {
                Some(before) if before != *id => conflicts += 1,
                _ => {}
            }
            match by_id.insert((c.room.as_str(), *id), cid) {
                Some(other) if other != cid => conflicts += 1,
                _ => {}
            }
            rooms.entry(&c.room).or_default().insert(*id);
        }
    }
    (rooms, conflicts)
}

/// Reconciles the clients' records with each other and with what the
/// store holds at the end.
pub fn reconcile(clients: &[ClientLedger], stored: &Stored) -> Totals {
    let (rooms, ack_conflicts) = acked_by_room(clients);
    let mut t = Totals {
        acked: rooms.values().map(|ids| ids.len() as u64).sum(),
        ack_conflicts,
        cids_twice: stored.cids_twice,
        stored: stored.entries(),
        acked_not_stored: rooms
            .iter()
            .map(|(room, ids)| ids.iter().filter(|id| !stored.holds(room, id)).count() as u64)
            .sum(),
        ..Totals::default()
    };
    let none = BTreeSet::new();
    for c in clients {
        t.sent += c.sent;
        t.unacked += c.pending as u64;
        t.gave_up += u64::from(c.gave_up);
        t.undecodable += c.undecodable;
        let mut seen: HashSet<StreamId> = HashSet::with_capacity(c.receipts.len());
        let mut highest: Option<StreamId> = None;
        for id in &c.receipts {
            if !stored.holds(&c.room, id) && !seen.contains(id) {
                t.seen_then_lost += 1;
            }
            if !seen.insert(*id) {
                t.duplicated += 1;
            } else if highest.is_some_and(|h| *id < h) {
                t.out_of_order += 1;
            }
            highest = highest.max(Some(*id));
        }
        let owed = rooms.get(c.room.as_str()).unwrap_or(&none);
        for id in owed.range((std::ops::Bound::Excluded(c.start), std::ops::Bound::Unbounded)) {
            t.expected += 1;
            if seen.contains(id) {
                t.made += 1;
            } else {
                t.lost += 1;
            }
        }
    }
    t
}

/// Up to `n` lost deliveries as `(client index, room, id)`, for the report:
/// which room and which ids tell a subscriber gap from a client's.
pub fn lost_sample(clients: &[ClientLedger], n: usize) -> Vec<(usize, String, StreamId)> {
    let (rooms, _) = acked_by_room(clients);
    let none = BTreeSet::new();
    let mut out = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let seen: HashSet<&StreamId> = c.receipts.iter().collect();
        let owed = rooms.get(c.room.as_str()).unwrap_or(&none);
        for id in owed.range((std::ops::Bound::Excluded(c.start), std::ops::Bound::Unbounded)) {
            if out.len() >= n {
                return out;
            }
            if !seen.contains(id) {
                out.push((i, c.room.clone(), *id));
            }
        }
    }
    out
}

/// Up to `n` receipts of ids the store does not hold, as `(client index,
/// room, id)`: which ids a failover took back after they were broadcast.
pub fn seen_then_lost_sample(
    clients: &[ClientLedger],
    stored: &Stored,
    n: usize,
) -> Vec<(usize, String, StreamId)> {
    let mut out = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        for id in &c.receipts {
            if out.len() >= n {
                return out;
            }
            if !stored.holds(&c.room, id) {
                out.push((i, c.room.clone(), *id));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    /// Reconciles against a store that holds every id anyone received.
    fn run(clients: &[ClientLedger]) -> Totals {
        let mut stored = Stored::default();
        for c in clients {
            stored
                .ids
                .entry(c.room.clone())
                .or_default()
                .extend(c.receipts.iter().copied());
        }
        reconcile(clients, &stored)
    }

    #[test]
    fn a_receipt_the_store_lost_and_a_cid_stored_twice_are_counted() {
        let a = client("r", &[1, 2, 3], &[("a1", 1), ("a2", 2), ("a3", 3)]);
        let b = client("r", &[1, 2, 3, 3], &[]);
        let mut stored = Stored {
            cids_twice: 1,
            ..Stored::default()
        };
        stored
            .ids
            .insert("r".into(), [id(1), id(3)].into_iter().collect());
        let t = reconcile(&[a, b], &stored);
        assert_eq!((t.seen_then_lost, t.cids_twice, t.duplicated), (2, 1, 1), "{t:?}");
        assert_eq!((t.acked_not_stored, t.stored), (1, 2), "{t:?}");
        assert!(!t.clean());
    }

    fn client(room: &str, receipts: &[u64], acks: &[(&str, u64)]) -> ClientLedger {
        ClientLedger {
            room: room.into(),
            receipts: receipts.iter().map(|&m| id(m)).collect(),
            acks: acks.iter().map(|(c, m)| (c.to_string(), id(*m))).collect(),
            sent: acks.len() as u64,
            ..ClientLedger::default()
        }
    }

    #[test]
    fn a_clean_run_with_resume_replay_counts_nothing() {
        // b's connection broke after 2; it resumed with since=2 and got 3, 4 replayed.
        let a = client("r", &[1, 2, 3, 4], &[("a1", 1), ("a2", 3)]);
        let b = client("r", &[1, 2, 3, 4], &[("b1", 2), ("b2", 4), ("b2", 4)]);
        let t = run(&[a, b]);
        assert_eq!((t.acked, t.expected, t.made), (4, 8, 8));
        assert!(t.clean(), "{t:?}");
    }

    #[test]
    fn loss_duplicate_and_reorder_are_each_counted() {
        let acks = [("a1", 1), ("a2", 2), ("a3", 3), ("a4", 4)];
        let lost = client("r", &[1, 2, 4], &acks);
        let dup = client("r", &[1, 2, 2, 3, 4], &[]);
        let reordered = client("r", &[1, 3, 2, 4], &[]);
        let t = run(&[lost, dup, reordered]);
        assert_eq!((t.lost, t.duplicated, t.out_of_order), (1, 1, 1), "{t:?}");
        let lost = run(&[client("r", &[1, 2, 4], &acks)]);
        assert_eq!(lost.lost, 1);
        assert_eq!(
            lost_sample(&[client("r", &[1, 2, 4], &acks)], 5),
            [(0, "r".to_string(), id(3))]
        );
    }

    #[test]
    fn nothing_before_the_start_is_owed_and_rooms_are_separate() {
        let mut late = client("r", &[5], &[]);
        late.start = id(4);
        let other = client("s", &[9], &[("s1", 9)]);
        let sender = client("r", &[4, 5], &[("a4", 4), ("a5", 5)]);
        let t = run(&[late, other, sender]);
        assert_eq!((t.expected, t.lost), (1 + 1 + 2, 0), "{t:?}");
    }

    #[test]
    fn conflicting_acks_unacked_sends_and_give_ups_count() {
        let mut a = client("r", &[1, 2], &[("x", 1), ("x", 2)]);
        a.pending = 2;
        a.gave_up = true;
        let t = run(&[a]);
        assert_eq!((t.ack_conflicts, t.unacked, t.gave_up), (1, 2, 1), "{t:?}");
        assert!(!t.clean());
    }
}
