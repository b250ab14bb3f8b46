//! Room fan-out on one instance: which local sockets are in which room, and
//! the ordering rules that make "reconnect with `since`" exact.
//!
//! - The rooms with local sockets are what the subscriber subscribes to
//!   (`interest`): a room enters the set with its first socket and leaves
//!   it with its last, each change a new version.
//! - A socket joins its room *before* its history is read, and the read
//!   waits until the subscriber confirmed the room's subscription; live
//!   chats that arrive meanwhile are buffered for it, and when the replay
//!   is sent only buffered chats newer than the replay's last id go out.
//!   No gap, no duplicate.
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
pub use interest::{Interest, Subscription, MAX_POLL_WAIT};

mod interest;

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

/// How far a socket's own read of its room's stream goes, which is what a
/// subscriber's gap fill must start from for it (see `Hub::cursors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// No read at all (the seed formats): only live chats are its.
    Nothing,
    /// Its read waits for the room's subscription, so it reads everything
    /// a fill could bring; a fill owes it nothing.
    Awaiting,
    /// Its replay covers up to this id: `0-0` from the end of the wait
    /// until the replay places itself, then its `since` and each page's
    /// last id.
    Replay(StreamId),
}

impl Coverage {
    fn replayed(self) -> Option<StreamId> {
        match self {
            Coverage::Replay(id) => Some(id),
            Coverage::Nothing | Coverage::Awaiting => None,
        }
    }
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
    /// How far its own read covers it.
    coverage: Coverage,
}

/// A room as this instance sees it: it exists from its first socket's join
/// to its last socket's leave, so its cursor never outlives the sockets
/// (and the subscription) it was made for.
#[derive(Debug)]
struct Room {
    /// Local sockets.
    members: HashMap<ConnId, Member>,
    /// Newest id delivered here; older or equal ones are duplicates.
    last_delivered: Option<StreamId>,
    /// The online count last announced to the room.
    presence_sent: Option<u64>,
    /// The interest version that added the room: once the subscriber
    /// confirmed it, the room's chats reach this instance live.
    since: u64,
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
    /// The room set's versions and the subscriber's confirmations.
    interest: Interest,
}

impl Hub {
    pub fn new(queue: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            metrics,
            interest: Interest::new(),
        })
    }

    /// The room set's versions and the subscriber's confirmations.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// The rooms with local sockets, sorted, and the version that names them.
    pub fn rooms_of_interest(&self) -> wsmesh_common::events::Interest {
        let rooms = self.rooms();
        let mut names: Vec<String> = rooms.keys().cloned().collect();
        names.sort_unstable();
        wsmesh_common::events::Interest {
            at: self.interest.current(),
            rooms: names,
        }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // Nothing that runs under this lock can leave a room half-updated.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a socket to `room` (the room's first one adds the room to the
    /// set the subscriber follows). A replaying socket must then wait for
    /// `subscribed` before it reads the stream.
    pub fn join(self: &Arc<Self>, room: &str, start: Start) -> Membership {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue);
        let (kick_tx, kicked) = oneshot::channel();
        let (phase, coverage) = match start {
            Start::Replaying => (Phase::Replaying(Vec::new()), Coverage::Awaiting),
            Start::Live => (Phase::Live, Coverage::Nothing),
        };
        let member = Member {
            tx,
            kick: Some(kick_tx),
            phase,
            last_sent: StreamId::ZERO,
            coverage,
        };
        self.rooms()
            .entry(room.to_string())
            .or_insert_with(|| Room {
                members: HashMap::new(),
                last_delivered: None,
                presence_sent: None,
                since: self.interest.bump(),
            })
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

    /// Waits until the subscriber confirmed `room`'s subscription (see
    /// `Interest::wait_confirmed`); after it the socket may read the stream.
    ///
    /// The socket's replay then covers nothing yet: until `replayed_to`
    /// places it (at its `since`, or after a read without one), the room's
    /// cursor stays at 0-0, so a gap fill meanwhile re-sends whatever this
    /// socket may still need. Without it the room had no cursor, or another
    /// replay's higher one, and a chat the subscriber missed before the
    /// fill was never read again: this socket went live without it.
    pub async fn subscribed(&self, room: &str, id: ConnId) -> Subscription {
        let outcome = match self.since(room) {
            Some(since) => self.interest.wait_confirmed(since).await,
            None => Subscription::Unconfirmed,
        };
        self.reading(room, id);
        outcome
    }

    /// The interest version that added `room`, while it has sockets.
    fn since(&self, room: &str) -> Option<u64> {
        self.rooms().get(room).map(|r| r.since)
    }

    /// The socket stops waiting and reads the stream from now on.
    fn reading(&self, room: &str, id: ConnId) {
        if let Some(m) = self.rooms().get_mut(room).and_then(|r| r.members.get_mut(&id)) {
            if m.coverage == Coverage::Awaiting {
                m.coverage = Coverage::Replay(StreamId::ZERO);
            }
        }
    }

    /// Records how far a socket's replay has got (the `since` it starts
    /// from, then each page's last id), so its room has a cursor during a
    /// long replay too: a subscriber gap fill meanwhile includes the room,
    /// and what it re-sends is buffered and deduplicated at `go_live`.
    pub fn replayed_to(&self, room: &str, id: ConnId, covered: StreamId) {
        if let Some(m) = self.rooms().get_mut(room).and_then(|r| r.members.get_mut(&id)) {
            m.coverage = Coverage::Replay(covered);
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
        m.coverage = Coverage::Replay(covered);
        m.last_sent = m.last_sent.max(covered);
        let fresh = newer_than(&buffered, m.last_sent);
        if !fresh.is_empty() {
            push(m, Batch::new(fresh), &self.metrics);
        }
        if m.kick.is_none() {
            r.members.remove(&id);
        }
    }

    /// Removes a socket (idempotent); the room's last one takes the room
    /// out of the set the subscriber follows.
    pub fn leave(&self, room: &str, id: ConnId) {
        let mut rooms = self.rooms();
        let Some(r) = rooms.get_mut(room) else { return };
        r.members.remove(&id);
        if r.members.is_empty() {
            rooms.remove(room);
            self.interest.bump();
        }
    }

    /// Fans out a batch from the subscriber; returns how many chats were new.
    /// Chats of rooms without local sockets (a subscriber keeps a room for
    /// a grace period after its last socket left) reach nobody.
    pub fn deliver(&self, batch: Vec<Chat>) -> usize {
        let mut by_room: Vec<(String, Vec<Arc<Chat>>)> = Vec::new();
        let mut rooms = self.rooms();
        let mut fresh_count = 0;
        for chat in batch {
            let Some(id) = chat.stream_id() else {
                tracing::warn!(id = %chat.id, room = %chat.room, "dropping chat with a malformed id");
                continue;
            };
            let Some(room) = rooms.get_mut(&chat.room) else {
                continue;
            };
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
    /// Sockets still waiting for their room's subscription read afterwards
    /// and need nothing from a fill, so a room of only those has no cursor.
    /// `only`: just these rooms.
    pub fn cursors(&self, only: Option<&[String]>) -> Cursors {
        let cursor = |name: &String, r: &Room| {
            let covered = r.members.values().filter_map(|m| m.coverage.replayed()).min();
            r.last_delivered
                .or(covered)
                .map(|id| (name.clone(), id.to_string()))
        };
        let rooms = self.rooms();
        match only {
            Some(names) => names
                .iter()
                .filter_map(|name| rooms.get_key_value(name))
                .filter_map(|(name, r)| cursor(name, r))
                .collect(),
            None => rooms.iter().filter_map(|(name, r)| cursor(name, r)).collect(),
        }
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
            2,
            "a room without local sockets is nobody's"
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
        assert_eq!(h.cursors(None).get("r").map(String::as_str), Some("9-0"));
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
        let live = h.join("a", Start::Live);
        h.deliver(vec![chat("a", "3-1")]);
        let m = h.join("b", Start::Replaying);
        let reading = h.join("c", Start::Replaying);
        let resuming = h.join("d", Start::Replaying);
        let awaiting = h.join("e", Start::Replaying);
        h.go_live("b", m.id, StreamId::ZERO);
        h.reading("c", reading.id);
        h.replayed_to("d", resuming.id, "5-0".parse().unwrap());
        let c = h.cursors(None);
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
        assert_eq!(
            c.get("e"),
            None,
            "a socket waiting for the subscription reads after it"
        );
        h.replayed_to("d", resuming.id, "7-0".parse().unwrap());
        assert_eq!(h.cursors(None).get("d").map(String::as_str), Some("7-0"));
        let only = h.cursors(Some(&["d".to_string(), "zz".to_string()]));
        assert_eq!(only.keys().collect::<Vec<_>>(), ["d"]);
        drop(live);
        assert_eq!(
            h.cursors(None).get("a"),
            None,
            "a room's cursor goes with its last socket"
        );
        drop((awaiting, reading));
    }

    #[test]
    fn the_room_set_changes_with_first_joins_and_last_leaves() {
        let h = hub(4);
        let v0 = h.rooms_of_interest().at;
        let a1 = h.join("a", Start::Replaying);
        let a2 = h.join("a", Start::Live);
        let b = h.join("b", Start::Live);
        let set = h.rooms_of_interest();
        assert_eq!(set.rooms, ["a", "b"]);
        assert_eq!(set.at.version, v0.version + 2, "one version per room added");
        drop(a1);
        assert_eq!(h.rooms_of_interest().at, set.at, "a still has a socket");
        drop(a2);
        let after = h.rooms_of_interest();
        assert_eq!(
            (after.rooms.as_slice(), after.at.version),
            (&["b".to_string()][..], set.at.version + 1)
        );
        drop(b);
    }

    #[tokio::test]
    async fn a_socket_reads_at_once_when_its_room_is_confirmed_or_no_subscriber_polls() {
        let h = hub(4);
        let first = h.join("r", Start::Replaying);
        // Nobody polls: no wait, and the room's cursor now holds the socket.
        assert_eq!(h.subscribed("r", first.id).await, Subscription::Unconfirmed);
        assert_eq!(h.cursors(None).get("r").map(String::as_str), Some("0-0"));
        let at = h.rooms_of_interest().at;
        h.interest().confirm(at.epoch, at.version);
        let second = h.join("r", Start::Replaying);
        assert_eq!(h.subscribed("r", second.id).await, Subscription::Confirmed);
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
        h.reading("r", z.id);
        h.replayed_to("r", y.id, "4-0".parse().expect("id"));
        let cursor = h.cursors(None).get("r").cloned();
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
