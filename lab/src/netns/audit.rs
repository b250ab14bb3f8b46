//! The store's side of a host-loss drill's ledger: after a failover, what
//! the final master holds is what every later reader gets, so every room's
//! stream is read back from it (XRANGE, staged entries included) and checked
//! against what the clients were acked and shown. The drill's ledger
//! (`drill::ledger`) checks the clients against each other; this checks
//! them against the store.
//!
//! - **acked but not stored**: an acked message the master no longer has
//!   (a promoted replica that lacked it).
//! - **seen then lost**: a message a client received that the master no
//!   longer has (shown, then taken back by the failover).
//! - **cid stored twice**: an entry whose `cid` an earlier entry of the same
//!   room already carries (a re-send stored again instead of answered with
//!   its first id).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use redis::streams::StreamRangeReply;
use serde::Serialize;
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::{entry_to_chat, Keys};

use super::sentinels::connect;
use super::NetnsError;
use crate::drill::ledger::ClientLedger;

/// One entry of a room's stream: its id and the sender's `cid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Stream id.
    pub id: StreamId,
    /// The sender's message id, when it gave one.
    pub cid: Option<String>,
}

/// The rooms' streams as the final master holds them.
pub type Store = HashMap<String, Vec<Stored>>;

/// The store checked against the clients; every column but `stored` must be 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreAudit {
    /// Entries in the drill's rooms.
    pub stored: u64,
    /// Distinct acked messages the store does not hold.
    pub acked_not_stored: u64,
    /// Distinct (client, message) receipts the store does not hold.
    pub seen_then_lost: u64,
    /// Entries whose cid an earlier entry of the room already has.
    pub cid_stored_twice: u64,
}

impl StoreAudit {
    /// Whether every loss column is zero.
    pub fn clean(&self) -> bool {
        self.acked_not_stored == 0 && self.seen_then_lost == 0 && self.cid_stored_twice == 0
    }
}

/// Checks the clients' records against `store`.
pub fn audit(clients: &[ClientLedger], store: &Store) -> StoreAudit {
    let ids: HashMap<&str, HashSet<StreamId>> = store
        .iter()
        .map(|(room, entries)| (room.as_str(), entries.iter().map(|e| e.id).collect()))
        .collect();
    let none = HashSet::new();
    let held = |room: &str| ids.get(room).unwrap_or(&none);
    let mut a = StoreAudit {
        stored: store.values().map(|e| e.len() as u64).sum(),
        ..StoreAudit::default()
    };
    let mut acked: HashSet<(&str, StreamId)> = HashSet::new();
    for c in clients {
        for (_, id) in &c.acks {
            acked.insert((c.room.as_str(), *id));
        }
        let seen: HashSet<&StreamId> = c.receipts.iter().collect();
        a.seen_then_lost += seen.into_iter().filter(|id| !held(&c.room).contains(id)).count() as u64;
    }
    a.acked_not_stored = acked.iter().filter(|(room, id)| !held(room).contains(id)).count() as u64;
    for entries in store.values() {
        let mut cids = HashSet::new();
        a.cid_stored_twice += entries
            .iter()
            .filter_map(|e| e.cid.as_deref())
            .filter(|cid| !cids.insert(*cid))
            .count() as u64;
    }
    a
}

/// Every entry of each of `rooms`' streams on the master at `master`.
pub async fn read_store(
    master: SocketAddr,
    password: &str,
    prefix: &str,
    rooms: &[String],
) -> Result<Store, NetnsError> {
    let mut conn = connect(master, password)
        .await
        .ok_or_else(|| NetnsError::Check(format!("the master {master} does not answer")))?;
    let keys = Keys::new(prefix);
    let mut store = Store::new();
    for room in rooms {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys.stream(room))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(|e| NetnsError::Check(format!("XRANGE {room} on {master}: {e}")))?;
        let entries = reply
            .ids
            .iter()
            .map(|entry| {
                let chat = entry_to_chat(room, entry)
                    .map_err(|e| NetnsError::Check(format!("room {room} on {master}: {e}")))?;
                let id = chat
                    .stream_id()
                    .ok_or_else(|| NetnsError::Check(format!("room {room}: bad id {}", chat.id)))?;
                Ok(Stored { id, cid: chat.cid })
            })
            .collect::<Result<Vec<_>, NetnsError>>()?;
        store.insert(room.clone(), entries);
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    fn stored(entries: &[(u64, &str)]) -> Vec<Stored> {
        entries
            .iter()
            .map(|(ms, cid)| Stored {
                id: id(*ms),
                cid: Some(cid.to_string()),
            })
            .collect()
    }

    fn client(room: &str, receipts: &[u64], acks: &[(&str, u64)]) -> ClientLedger {
        ClientLedger {
            room: room.into(),
            receipts: receipts.iter().map(|&m| id(m)).collect(),
            acks: acks.iter().map(|(c, m)| (c.to_string(), id(*m))).collect(),
            ..ClientLedger::default()
        }
    }

    #[test]
    fn a_store_that_holds_everything_once_is_clean() {
        let store = Store::from([("r".to_string(), stored(&[(1, "a"), (2, "b")]))]);
        let clients = [
            client("r", &[1, 2, 2], &[("a", 1)]),
            client("r", &[1, 2], &[("b", 2)]),
        ];
        let a = audit(&clients, &store);
        assert_eq!(a.stored, 2);
        assert!(a.clean(), "{a:?}");
    }

    #[test]
    fn what_the_store_lost_or_doubled_is_counted() {
        // 3 was acked and shown to both clients, then lost; "b" is stored twice.
        let store = Store::from([
            ("r".to_string(), stored(&[(1, "a"), (2, "b"), (4, "b")])),
            ("s".to_string(), stored(&[(9, "z")])),
        ]);
        let clients = [
            client("r", &[1, 2, 3, 3], &[("a", 1), ("c", 3)]),
            client("r", &[3, 4], &[("b", 2), ("b", 4)]),
            client("s", &[9], &[("z", 9)]),
        ];
        let a = audit(&clients, &store);
        assert_eq!(
            (a.acked_not_stored, a.seen_then_lost, a.cid_stored_twice),
            (1, 2, 1),
            "{a:?}"
        );
        assert!(!a.clean());
    }

    #[test]
    fn a_room_the_store_lacks_loses_all_it_showed() {
        let a = audit(&[client("gone", &[1, 2], &[("a", 1)])], &Store::new());
        assert_eq!((a.acked_not_stored, a.seen_then_lost), (1, 2));
    }
}
