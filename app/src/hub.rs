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
use wsmesh_common::events::{Cursors, Interest};
use wsmesh_common::stream_id::StreamId;

use crate::metrics::Metrics;
pub use interest::{RoomSetVersions, Subscription, MAX_POLL_WAIT};

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
    interest: RoomSetVersions,
}

impl Hub {
    pub fn new(queue: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            metrics,
            interest: RoomSetVersions::new(),
        })
    }

    /// The room set's versions and the subscriber's confirmations.
    pub fn interest(&self) -> &RoomSetVersions {
        &self.interest
    }

    /// The rooms with local sockets, sorted, and the version that names them.
    pub fn rooms_of_interest(&self) -> Interest {
        let rooms = self.rooms();
        let mut names: Vec<String> = rooms.keys().cloned().collect();
        names.sort_unstable();
        Interest {
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
    /// `RoomSetVersions::wait_confirmed`); after it the socket may read the stream.
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
mod tests;
