//! Room fan-out on one instance: which local sockets are in which room, and
//! the ordering rules that make "reconnect with `since`" exact.
//!
//! - A socket joins its room *before* its history is read; live chats that
//!   arrive meanwhile are buffered for it, and when the replay is sent only
//!   buffered chats newer than the replay's last id go out. No gap, no
//!   duplicate.
//! - Per room the hub remembers the last id it delivered and drops anything not
//!   newer (the subscriber re-sends after a gap fill); per socket it remembers
//!   the last id sent, so a refill below a fresh replay never repeats it.
//! - Every socket has a bounded queue; when it is full the socket is kicked
//!   (closed 1013 by its task) and nobody else waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsmesh_common::chat::Chat;
use wsmesh_common::events::Cursors;
use wsmesh_common::stream_id::StreamId;

use crate::metrics::Metrics;

/// Identifies one socket in the hub.
pub type ConnId = u64;

/// Live chats of one room, in id order, shared by every socket that gets
/// all of them, so the fan-out serializes a frame once per room, not once
/// per socket.
#[derive(Debug)]
pub struct Batch {
    /// The chats.
    chats: Vec<Arc<Chat>>,
    /// The v1 `chat` frame, rendered by the first socket that needs it
    /// (shared bytes: every socket writes the same buffer).
    v1_frame: OnceLock<Option<Utf8Bytes>>,
}

impl Batch {
    fn new(chats: Vec<Arc<Chat>>) -> Arc<Batch> {
        Arc::new(Batch {
            chats,
            v1_frame: OnceLock::new(),
        })
    }

    /// The chats, oldest first.
    pub fn chats(&self) -> &[Arc<Chat>] {
        &self.chats
    }

    /// The frame text, rendered once with `render` (`None` if it failed).
    pub fn v1_frame(&self, render: impl FnOnce(&[Arc<Chat>]) -> Option<String>) -> Option<Utf8Bytes> {
        self.v1_frame
            .get_or_init(|| render(&self.chats).map(Utf8Bytes::from))
            .clone()
    }
}

/// What the hub hands a socket's task to write.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Live chats of the socket's room, in id order.
    Chats(Arc<Batch>),
    /// The room's cluster-wide online count changed.
    Presence(u64),
}

/// Why the hub dropped a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Its queue was full: close with 1013 so it resumes with `since`.
    SlowConsumer,
}

/// How a socket starts in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Buffer live chats until `go_live` (the v1 protocol replays history).
    Replaying,
    /// Receive live chats at once (the seed formats have no replay).
    Live,
}

/// Where a member is in its life.
#[derive(Debug)]
enum Phase {
    /// History is being read; live chats wait here.
    Replaying(Vec<Arc<Chat>>),
    /// Live chats go straight to the queue.
    Live,
}

/// One local socket in a room.
#[derive(Debug)]
struct Member {
    /// The socket's bounded queue.
    tx: mpsc::Sender<Outbound>,
    /// Fires once when the hub gives up on the socket.
    kick: Option<oneshot::Sender<Kick>>,
    /// Buffering or live.
    phase: Phase,
    /// Newest id this socket has been given (replay or live).
    last_sent: StreamId,
    /// Newest id the replay covered: `0-0` from the join until the replay
    /// places itself, then its `since` and each page's last id. `None` for
    /// a socket that starts live (it has no replay).
    covered: Option<StreamId>,
}

/// A room as this instance sees it.
#[derive(Debug, Default)]
struct Room {
    /// Local sockets.
    members: HashMap<ConnId, Member>,
    /// Newest id delivered here; older or equal ones are duplicates.
    last_delivered: Option<StreamId>,
    /// The online count last announced to the room.
    presence_sent: Option<u64>,
}

/// What a socket's task keeps from joining: its queue, its kick signal, and a
/// guard that leaves the room when dropped.
#[derive(Debug)]
pub struct Membership {
    /// The socket's id in the hub.
    pub id: ConnId,
    /// The room joined.
    pub room: String,
    /// Frames to write.
    pub rx: mpsc::Receiver<Outbound>,
    /// Resolves when the hub kicks the socket.
    pub kicked: oneshot::Receiver<Kick>,
    /// The hub, to leave on drop.
    hub: Arc<Hub>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.room, self.id);
    }
}

/// All rooms of this instance.
#[derive(Debug)]
pub struct Hub {
    /// Rooms by name (also rooms without sockets, for their last id).
    rooms: Mutex<HashMap<String, Room>>,
    /// Next socket id.
    next_id: AtomicU64,
    /// Capacity of each socket's queue (and of its replay buffer).
    queue: usize,
    /// Drop and duplicate counters.
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(queue: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            metrics,
        })
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // Nothing that runs under this lock can leave a room half-updated.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a socket to `room`.
    pub fn join(self: &Arc<Self>, room: &str, start: Start) -> Membership {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue);
        let (kick_tx, kicked) = oneshot::channel();
        // A replay covers nothing yet: until `replayed_to` places it (at its
        // `since`, or after a read without one), the room's cursor stays at
        // 0-0, so a gap fill meanwhile re-sends whatever this socket may
        // still need. Without it the room had no cursor, or another
        // replay's higher one, and a chat the subscriber missed before the
        // fill was never read again: this socket went live without it.
        let (phase, covered) = match start {
            Start::Replaying => (Phase::Replaying(Vec::new()), Some(StreamId::ZERO)),
            Start::Live => (Phase::Live, None),
        };
        let member = Member {
            tx,
            kick: Some(kick_tx),
            phase,
            last_sent: StreamId::ZERO,
            covered,
        };
        self.rooms()
            .entry(room.to_string())
            .or_default()
            .members
            .insert(id, member);
        Membership {
            id,
            room: room.to_string(),
            rx,
            kicked,
            hub: self.clone(),
        }
    }

    /// Records how far a socket's replay has got (the `since` it starts
    /// from, then each page's last id), so its room has a cursor during a
    /// long replay too: a subscriber gap fill meanwhile includes the room,
    /// and what it re-sends is buffered and deduplicated at `go_live`.
    pub fn replayed_to(&self, room: &str, id: ConnId, covered: StreamId) {
        if let Some(m) = self.rooms().get_mut(room).and_then(|r| r.members.get_mut(&id)) {
            m.covered = Some(covered);
        }
    }

    /// Ends a socket's replay: queues the buffered chats newer than
    /// `covered` (the replay's newest id, or the `since`/`0-0` it started from)
    /// and switches it to live.
    pub fn go_live(&self, room: &str, id: ConnId, covered: StreamId) {
        let mut rooms = self.rooms();
        let Some(r) = rooms.get_mut(room) else { return };
        let Some(m) = r.members.get_mut(&id) else { return };
        let buffered = match std::mem::replace(&mut m.phase, Phase::Live) {
            Phase::Replaying(b) => b,
            Phase::Live => Vec::new(),
        };
        m.covered = Some(covered);
        m.last_sent = m.last_sent.max(covered);
        let fresh = newer_than(&buffered, m.last_sent);
        if !fresh.is_empty() {
            push(m, Batch::new(fresh), &self.metrics);
        }
        if m.kick.is_none() {
            r.members.remove(&id);
        }
    }

    /// Removes a socket (idempotent).
    pub fn leave(&self, room: &str, id: ConnId) {
        if let Some(r) = self.rooms().get_mut(room) {
            r.members.remove(&id);
        }
    }

    /// Fans out a batch from the subscriber; returns how many chats were new.
    pub fn deliver(&self, batch: Vec<Chat>) -> usize {
        let mut by_room: Vec<(String, Vec<Arc<Chat>>)> = Vec::new();
        let mut rooms = self.rooms();
        let mut fresh_count = 0;
        for chat in batch {
            let Some(id) = chat.stream_id() else {
                tracing::warn!(id = %chat.id, room = %chat.room, "dropping chat with a malformed id");
                continue;
            };
            let room = rooms.entry(chat.room.clone()).or_default();
            if room.last_delivered.is_some_and(|last| id <= last) {
                self.metrics.duplicates_dropped.inc();
                continue;
            }
            room.last_delivered = Some(id);
            fresh_count += 1;
            match by_room.iter_mut().find(|(name, _)| *name == chat.room) {
                Some((_, chats)) => chats.push(Arc::new(chat)),
                None => by_room.push((chat.room.clone(), vec![Arc::new(chat)])),
            }
        }
        for (name, chats) in by_room {
            let Some(room) = rooms.get_mut(&name) else {
                continue;
            };
            let first = chats
                .first()
                .and_then(|c| c.stream_id())
                .unwrap_or(StreamId::ZERO);
            let shared = Batch::new(chats);
            let queue = self.queue;
            room.members.retain(|_, m| {
                match &mut m.phase {
                    Phase::Replaying(buffer) => {
                        buffer.extend(shared.chats().iter().cloned());
                        if buffer.len() > queue {
                            kick(m, &self.metrics);
                        }
                    }
                    // The usual case: the socket has none of these yet.
                    Phase::Live if m.last_sent < first => push(m, shared.clone(), &self.metrics),
                    Phase::Live => {
                        let fresh = newer_than(shared.chats(), m.last_sent);
                        if !fresh.is_empty() {
                            push(m, Batch::new(fresh), &self.metrics);
                        }
                    }
                }
                m.kick.is_some()
            });
        }
        fresh_count
    }

    /// Announces a room's online count to its live sockets if it changed.
    pub fn announce_presence(&self, room: &str, online: u64) {
        let mut rooms = self.rooms();
        let Some(r) = rooms.get_mut(room) else { return };
        if r.presence_sent == Some(online) {
            return;
        }
        r.presence_sent = Some(online);
        r.members.retain(|_, m| {
            if matches!(m.phase, Phase::Live) && m.tx.try_send(Outbound::Presence(online)).is_err() {
                kick(m, &self.metrics);
            }
            m.kick.is_some()
        });
    }

    /// Local sockets per room, for rooms that have any.
    pub fn local_counts(&self) -> Vec<(String, u64)> {
        self.rooms()
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(name, r)| (name.clone(), r.members.len() as u64))
            .collect()
    }

    /// Local sockets in one room.
    pub fn local_count(&self, room: &str) -> u64 {
        self.rooms().get(room).map_or(0, |r| r.members.len() as u64)
    }

    /// Room → the id the subscriber should refill after: the last delivered
    /// id, or for a room that only has freshly joined sockets, the oldest id
    /// their replays covered (0-0 while one has not placed itself yet).
    pub fn cursors(&self) -> Cursors {
        self.rooms()
            .iter()
            .filter_map(|(name, r)| {
                let covered = r.members.values().filter_map(|m| m.covered).min();
                r.last_delivered
                    .or(covered)
                    .map(|id| (name.clone(), id.to_string()))
            })
            .collect()
    }
}

/// Chats with an id above `after`, in order.
fn newer_than(chats: &[Arc<Chat>], after: StreamId) -> Vec<Arc<Chat>> {
    chats
        .iter()
        .filter(|c| c.stream_id().is_some_and(|id| id > after))
        .cloned()
        .collect()
}

/// Queues chats for a live member, or kicks it when its queue is full.
fn push(m: &mut Member, batch: Arc<Batch>, metrics: &Metrics) {
    let newest = batch.chats().last().and_then(|c| c.stream_id());
    match m.tx.try_send(Outbound::Chats(batch)) {
        Ok(()) => {
            if let Some(id) = newest {
                m.last_sent = m.last_sent.max(id);
            }
        }
        Err(mpsc::error::TrySendError::Full(_)) => kick(m, metrics),
        // The socket's task is gone; its guard removes it shortly.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

fn kick(m: &mut Member, metrics: &Metrics) {
    if let Some(tx) = m.kick.take() {
        metrics.queue_drops.inc();
        // The task may already be gone; then there is nobody to tell.
        let _ = tx.send(Kick::SlowConsumer);
    }
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(room: &str, id: &str) -> Chat {
        Chat {
            id: id.into(),
            room: room.into(),
            nick: "n".into(),
            body: format!("m{id}"),
            ts: 1,
            cid: None,
        }
    }

    fn hub(queue: usize) -> Arc<Hub> {
        Hub::new(queue, Arc::new(Metrics::new()))
    }

    fn drain_ids(m: &mut Membership) -> Vec<String> {
        let mut ids = vec![];
        while let Ok(out) = m.rx.try_recv() {
            if let Outbound::Chats(b) = out {
                ids.extend(b.chats().iter().map(|c| c.id.clone()));
            }
        }
        ids
    }

    #[test]
    fn live_member_gets_chats_in_order() {
        let h = hub(8);
        let mut m = h.join("r", Start::Live);
        assert_eq!(
            h.deliver(vec![chat("r", "1-0"), chat("r", "2-0"), chat("x", "1-0")]),
            3
        );
        assert_eq!(drain_ids(&mut m), vec!["1-0", "2-0"]);
    }

    #[test]
    fn members_share_one_batch_so_it_is_rendered_once() {
        let h = hub(8);
        let mut a = h.join("r", Start::Live);
        let mut b = h.join("r", Start::Live);
        h.deliver(vec![chat("r", "1-0")]);
        let (Ok(Outbound::Chats(x)), Ok(Outbound::Chats(y))) = (a.rx.try_recv(), b.rx.try_recv()) else {
            panic!("both members get the batch");
        };
        assert!(Arc::ptr_eq(&x, &y));
        let mut renders = 0;
        for batch in [&x, &y] {
            batch.v1_frame(|_| {
                renders += 1;
                Some("frame".into())
            });
        }
        assert_eq!(renders, 1);
    }

    #[test]
    fn duplicates_and_older_ids_are_dropped_per_room() {
        let h = hub(8);
        let mut m = h.join("r", Start::Live);
        h.deliver(vec![chat("r", "5-0")]);
        assert_eq!(
            h.deliver(vec![chat("r", "5-0"), chat("r", "4-9"), chat("r", "6-0")]),
            1
        );
        assert_eq!(drain_ids(&mut m), vec!["5-0", "6-0"]);
        assert_eq!(h.metrics.duplicates_dropped.get(), 2);
    }

    #[test]
    fn replay_merge_sends_only_buffered_chats_after_the_replay() {
        let h = hub(8);
        let mut m = h.join("r", Start::Replaying);
        // Arrive while history is being read; 2-0 is also in the replay.
        h.deliver(vec![chat("r", "2-0"), chat("r", "3-0")]);
        assert!(drain_ids(&mut m).is_empty(), "nothing before the replay");
        h.go_live("r", m.id, "2-0".parse().expect("id"));
        h.deliver(vec![chat("r", "4-0")]);
        assert_eq!(drain_ids(&mut m), vec!["3-0", "4-0"]);
    }

    #[test]
    fn refill_below_a_fresh_replay_is_not_repeated() {
        let h = hub(8);
        let mut m = h.join("r", Start::Replaying);
        h.go_live("r", m.id, "9-0".parse().expect("id"));
        // The subscriber refills from the cursor; the socket already has up to 9-0.
        assert_eq!(h.cursors().get("r").map(String::as_str), Some("9-0"));
        h.deliver(vec![chat("r", "8-0"), chat("r", "9-0"), chat("r", "10-0")]);
        assert_eq!(drain_ids(&mut m), vec!["10-0"]);
    }

    #[test]
    fn full_queue_kicks_only_the_slow_member() {
        let h = hub(2);
        let mut slow = h.join("r", Start::Live);
        let mut fast = h.join("r", Start::Live);
        for i in 1..=3 {
            h.deliver(vec![chat("r", &format!("{i}-0"))]);
            drain_ids(&mut fast);
        }
        assert_eq!(slow.kicked.try_recv(), Ok(Kick::SlowConsumer));
        assert!(fast.kicked.try_recv().is_err(), "fast member not kicked");
        assert_eq!(h.local_count("r"), 1);
        h.deliver(vec![chat("r", "4-0")]);
        assert_eq!(drain_ids(&mut fast), vec!["4-0"]);
        assert_eq!(h.metrics.queue_drops.get(), 1);
    }

    #[test]
    fn overflowing_replay_buffer_kicks() {
        let h = hub(1);
        let mut m = h.join("r", Start::Replaying);
        h.deliver(vec![chat("r", "1-0"), chat("r", "2-0")]);
        assert_eq!(m.kicked.try_recv(), Ok(Kick::SlowConsumer));
    }

    #[test]
    fn cursors_cover_delivered_rooms_and_fresh_empty_rooms() {
        let h = hub(4);
        h.deliver(vec![chat("a", "3-1")]);
        let m = h.join("b", Start::Replaying);
        let waiting = h.join("c", Start::Replaying);
        let resuming = h.join("d", Start::Replaying);
        h.go_live("b", m.id, StreamId::ZERO);
        h.replayed_to("d", resuming.id, "5-0".parse().unwrap());
        let c = h.cursors();
        assert_eq!(c.get("a").map(String::as_str), Some("3-1"));
        assert_eq!(c.get("b").map(String::as_str), Some("0-0"));
        assert_eq!(
            c.get("c").map(String::as_str),
            Some("0-0"),
            "before the replay knows where it starts, it may need everything"
        );
        assert_eq!(
            c.get("d").map(String::as_str),
            Some("5-0"),
            "a replay in progress has one"
        );
        h.replayed_to("d", resuming.id, "7-0".parse().unwrap());
        assert_eq!(h.cursors().get("d").map(String::as_str), Some("7-0"));
        drop(waiting);
    }

    /// A socket without `since` learns where its replay starts only from
    /// the read (`last`); until then its room's cursor must not pass over
    /// anything it may still need. Here a fill runs while `z` is reading and
    /// `y` has placed itself at 4-0; 4-0 had been missed by the subscriber.
    #[test]
    fn a_replay_not_yet_placed_holds_its_rooms_cursor_at_the_start() {
        let h = hub(8);
        let mut z = h.join("r", Start::Replaying);
        let mut y = h.join("r", Start::Replaying);
        h.replayed_to("r", y.id, "4-0".parse().expect("id"));
        let cursor = h.cursors().get("r").cloned();
        assert_eq!(cursor.as_deref(), Some("0-0"), "z may need anything");
        // The fill re-sends the room from the cursor: everything after 0-0.
        let refill: Vec<Chat> = (1..=5).map(|i| chat("r", &format!("{i}-0"))).collect();
        h.deliver(refill);
        // z's `last()` read ended at 3-0; y's replay at 4-0.
        h.go_live("r", z.id, "3-0".parse().expect("id"));
        h.go_live("r", y.id, "4-0".parse().expect("id"));
        assert_eq!(drain_ids(&mut z), vec!["4-0", "5-0"]);
        assert_eq!(drain_ids(&mut y), vec!["5-0"]);
    }

    #[test]
    fn dropping_membership_leaves_the_room() {
        let h = hub(4);
        let m = h.join("r", Start::Live);
        assert_eq!(h.local_counts(), vec![("r".to_string(), 1)]);
        drop(m);
        assert_eq!(h.local_count("r"), 0);
        assert!(h.local_counts().is_empty());
    }

    #[test]
    fn presence_is_announced_only_on_change() {
        let h = hub(4);
        let mut m = h.join("r", Start::Live);
        h.announce_presence("r", 2);
        h.announce_presence("r", 2);
        h.announce_presence("r", 3);
        let mut seen = vec![];
        while let Ok(Outbound::Presence(n)) = m.rx.try_recv() {
            seen.push(n);
        }
        assert_eq!(seen, vec![2, 3]);
    }
}
