// Long on purpose: the model world, its steps and the invariant it checks read as one unit.
//! Model test of the live path: Redis streams and per-room pub/sub, the
//! subscriber's algorithms (the app's room set polled and confirmed, room
//! channels subscribed, filled after their SUBSCRIBE and dropped after a
//! grace, queue with drop-all on overflow, forward filter, gap fill from the
//! app's cursors with held live chats) and the real `Hub` with sockets that
//! wait for their room's subscription (or give up waiting), replay (with
//! and without `since`, paged) and go live, all driven by randomized
//! interleavings, including the faults the subscriber recovers from
//! (pub/sub loss, queue overflow, a refused batch) and app restarts.
//!
//! The subscriber part mirrors `subscriber/src/{interest,rooms,feed,fill,
//! queue,forward}.rs` step for step (those are async and talk to Redis and
//! HTTP; the model keeps their decisions). The checked invariants: every
//! stored chat reaches every socket of its room exactly once, in id order,
//! from the socket's first history on (a client resumes with `since` = the
//! newest id it has); and once things settle the subscriber holds exactly
//! the channels of the rooms the app has sockets in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use wsmesh_common::chat::Chat;
use wsmesh_common::events::{Interest, InterestVersion};
use wsmesh_common::stream_id::StreamId;

use super::{Hub, Membership, Outbound, Start};
use crate::metrics::Metrics;

const ROOMS: [&str; 3] = ["a", "b", "c"];
/// A socket's queue and replay buffer in the hub.
const HUB_QUEUE: usize = 5;
/// The subscriber's `queue.capacity` (also the held chats' bound).
const SUB_QUEUE: usize = 4;
/// The subscriber's `queue.batch_max` (also its XRANGE page).
const BATCH_MAX: usize = 3;
/// A replay page after `since`.
const PAGE: usize = 3;
/// `history_limit`: what a socket without `since` is shown.
const HISTORY: usize = 3;
const CLIENTS: usize = 5;

fn sid(n: u64) -> StreamId {
    format!("{n}-0").parse().expect("stream id")
}

fn num(id: &StreamId) -> u64 {
    let text = id.to_string();
    let ms = text.split('-').next().unwrap_or_default();
    ms.parse().expect("model ids are n-0")
}

fn chat(room: &str, n: u64) -> Chat {
    Chat {
        id: format!("{n}-0"),
        room: room.into(),
        nick: "n".into(),
        body: format!("m{n}"),
        ts: 1,
        cid: None,
    }
}

fn chat_num(c: &Chat) -> u64 {
    num(&c.stream_id().expect("model chat id"))
}

/// One step of the schedule; each is skipped when it cannot happen now.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// A send is stored (XADD) and published in room `ROOMS[i % 3]`, heard
    /// only if the subscriber holds the room's channel.
    Store(usize),
    /// The subscriber's poll: it carries the feed's confirmation to the
    /// app and brings back the app's room set.
    Poll,
    /// The live feed takes in the newest room set: SUBSCRIBEs new rooms
    /// (then fills them), starts the grace of rooms left out.
    Follow,
    /// The grace of a room left out is over: UNSUBSCRIBE.
    Unsubscribe,
    /// The subscriber reads the next published chat.
    Receive,
    /// The subscriber's pub/sub connection breaks (what was in flight is lost).
    LoseRedis,
    /// The subscriber is subscribed again (and starts a gap fill).
    Resubscribe,
    /// The feed notices a requested fill, or the fill makes one step.
    Feed,
    /// The forwarder takes a batch from the queue.
    Take,
    /// The app takes the batch in flight.
    Post,
    /// The app takes the batch in flight but its answer is lost (the post
    /// timed out): the forwarder posts it again, and the first post may
    /// still reach the hub later (`Late`).
    TimeOut,
    /// A post that timed out reaches the hub now, after later ones.
    Late,
    /// The app refuses the batch in flight (400): dropped, refill requested.
    Refuse,
    /// The app restarts: a fresh hub, every socket closed.
    RestartApp,
    /// Socket step of client `i % CLIENTS`: connect, stop waiting once its
    /// room is confirmed, place, read, page, go live, or read what its
    /// queue holds (a kicked socket closes).
    Client(usize),
    /// Client `i % CLIENTS` gives up waiting for its room's subscription.
    GiveUp(usize),
    /// Client `i % CLIENTS` loses its connection.
    Drop(usize),
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3).prop_map(Step::Store),
        2 => Just(Step::Poll),
        2 => Just(Step::Follow),
        1 => Just(Step::Unsubscribe),
        4 => Just(Step::Receive),
        1 => Just(Step::LoseRedis),
        1 => Just(Step::Resubscribe),
        4 => Just(Step::Feed),
        3 => Just(Step::Take),
        3 => Just(Step::Post),
        1 => Just(Step::TimeOut),
        1 => Just(Step::Late),
        1 => Just(Step::Refuse),
        1 => Just(Step::RestartApp),
        8 => (0usize..CLIENTS).prop_map(Step::Client),
        1 => (0usize..CLIENTS).prop_map(Step::Drop),
        1 => (0usize..CLIENTS).prop_map(Step::GiveUp),
    ]
}

/// The subscriber's gap fill in progress (`GapFill::run` and `Feed::fill`).
#[derive(Debug, Default)]
struct Fill {
    /// The rooms to read (`Scope::Rooms`); `None` for every room with a cursor.
    only: Option<Vec<String>>,
    /// The app's cursors, once asked; rooms still to read are popped.
    cursors: Option<VecDeque<(String, u64)>>,
    /// The room being read and the id read after.
    room: Option<(String, u64)>,
    /// The page read and not yet queued.
    page: VecDeque<Chat>,
    /// Whether the last page read was full (more may follow).
    page_full: bool,
    /// Room → newest id the fill covered (`Filled`).
    filled: HashMap<String, u64>,
    /// Live chats received meanwhile (`Held`).
    held: Vec<Chat>,
    held_overflowed: bool,
}

#[derive(Debug)]
enum Feed {
    Down,
    Live,
    Filling(Fill),
}

#[derive(Debug)]
enum Conn {
    Off,
    /// Joined, waiting for its room's subscription (`Hub::subscribed`).
    Waiting(Membership),
    /// Joined; with `since`, its replay is not placed yet.
    Joined(Membership, Option<u64>),
    /// Placed at `since`, not read yet.
    Placed(Membership, u64),
    /// A page (or the history) was read from Redis; the hub does not know
    /// yet: the ids read, the newest id covered, whether the page was full.
    Read(Membership, Vec<u64>, u64, bool),
    /// Reading pages; `covered` so far, `more` while pages were full.
    Replaying(Membership, u64, bool),
    Live(Membership),
}

#[derive(Debug)]
struct Client {
    room: &'static str,
    conn: Conn,
    /// Every chat id received, in order.
    got: Vec<u64>,
    /// The newest id of the first history: what it expects starts after it.
    start: Option<u64>,
}

pub struct World {
    streams: HashMap<&'static str, Vec<u64>>,
    next_id: u64,
    hub: Arc<Hub>,
    // The subscriber.
    /// The app's room set as last polled (`interest::Poller`).
    known: Option<Interest>,
    /// Room channel → whether its grace runs (`rooms::Rooms`).
    channels: BTreeMap<String, bool>,
    /// The set whose rooms are all subscribed (`Feed::in_force`).
    in_force: Option<InterestVersion>,
    /// What the feed confirmed, for the next poll to carry.
    confirmed: Option<InterestVersion>,
    feed: Feed,
    pubsub: VecDeque<Chat>,
    queue: VecDeque<Chat>,
    awaiting_fill: bool,
    in_flight: Option<Vec<Chat>>,
    /// Posts that timed out and have not reached the hub yet.
    late: VecDeque<Vec<Chat>>,
    delivered: HashMap<String, u64>,
    clients: Vec<Client>,
    /// What went wrong, if anything.
    pub violation: Option<String>,
}

/// XRANGE after `after` (exclusive), at most `max` ids.
fn range_after(streams: &HashMap<&'static str, Vec<u64>>, room: &str, after: u64, max: usize) -> Vec<u64> {
    streams[room]
        .iter()
        .copied()
        .filter(|n| *n > after)
        .take(max)
        .collect()
}

/// `Queue::push_live`.
enum Admission {
    Queued,
    FillNeeded,
}

impl World {
    pub fn new() -> World {
        World {
            streams: ROOMS.iter().map(|r| (*r, Vec::new())).collect(),
            next_id: 1,
            hub: Hub::new(HUB_QUEUE, Arc::new(Metrics::new())),
            known: None,
            channels: BTreeMap::new(),
            in_force: None,
            confirmed: None,
            feed: Feed::Down,
            pubsub: VecDeque::new(),
            queue: VecDeque::new(),
            awaiting_fill: false,
            in_flight: None,
            late: VecDeque::new(),
            delivered: HashMap::new(),
            clients: (0..CLIENTS)
                .map(|i| Client {
                    room: ROOMS[i % ROOMS.len()],
                    conn: Conn::Off,
                    got: Vec::new(),
                    start: None,
                })
                .collect(),
            violation: None,
        }
    }

    fn stream_after(&self, room: &str, after: u64, max: usize) -> Vec<u64> {
        range_after(&self.streams, room, after, max)
    }

    fn push_live(&mut self, chat: Chat) -> Admission {
        if self.awaiting_fill {
            return Admission::FillNeeded;
        }
        if self.queue.len() >= SUB_QUEUE {
            self.request_fill();
            return Admission::FillNeeded;
        }
        self.queue.push_back(chat);
        Admission::Queued
    }

    fn request_fill(&mut self) {
        self.queue.clear();
        self.awaiting_fill = true;
    }

    fn start_fill(&mut self) {
        self.awaiting_fill = false;
        self.feed = Feed::Filling(Fill::default());
    }

    /// `Feed::follow_interest`.
    fn follow(&mut self) {
        let Some(known) = self.known.clone() else { return };
        if !matches!(self.feed, Feed::Live) || self.in_force == Some(known.at) {
            return;
        }
        for (room, leaving) in self.channels.iter_mut() {
            *leaving = !known.rooms.contains(room);
        }
        let new: Vec<String> = known
            .rooms
            .iter()
            .filter(|room| !self.channels.contains_key(*room))
            .cloned()
            .collect();
        for room in &new {
            self.channels.insert(room.clone(), false);
        }
        self.in_force = Some(known.at);
        if new.is_empty() {
            self.confirmed = self.in_force;
        } else {
            // `Feed::fill`: a fill of every room asked for meanwhile wins.
            let only = (!self.awaiting_fill).then_some(new);
            self.awaiting_fill = false;
            self.feed = Feed::Filling(Fill {
                only,
                ..Fill::default()
            });
        }
    }

    pub fn apply(&mut self, step: Step) {
        match step {
            Step::Store(i) => {
                let room = ROOMS[i % ROOMS.len()];
                let n = self.next_id;
                self.next_id += 1;
                self.streams.get_mut(room).expect("room").push(n);
                if !matches!(self.feed, Feed::Down) && self.channels.contains_key(room) {
                    self.pubsub.push_back(chat(room, n));
                }
            }
            Step::Poll => {
                if let Some(c) = self.confirmed {
                    self.hub.interest().confirm(c.epoch, c.version);
                }
                self.known = Some(self.hub.rooms_of_interest());
            }
            Step::Follow => self.follow(),
            Step::Unsubscribe => {
                let leaving = self.channels.iter().find(|(_, leaving)| **leaving);
                if let (Feed::Live, Some((room, _))) = (&self.feed, leaving) {
                    let room = room.clone();
                    self.channels.remove(&room);
                }
            }
            Step::Receive => {
                let Some(chat) = self.pubsub.pop_front() else {
                    return;
                };
                match &mut self.feed {
                    Feed::Down => unreachable!("nothing is received while down"),
                    Feed::Filling(fill) => {
                        if fill.held.len() >= SUB_QUEUE {
                            fill.held.clear();
                            fill.held_overflowed = true;
                        }
                        if !fill.held_overflowed {
                            fill.held.push(chat);
                        }
                    }
                    Feed::Live => {
                        if let Admission::FillNeeded = self.push_live(chat) {
                            self.start_fill();
                        }
                    }
                }
            }
            Step::LoseRedis => {
                self.pubsub.clear();
                self.feed = Feed::Down;
                self.channels.clear();
                self.in_force = None;
            }
            Step::Resubscribe => {
                if matches!(self.feed, Feed::Down) {
                    // `Feed::subscribed`: every room of the newest set.
                    if let Some(known) = &self.known {
                        self.channels = known.rooms.iter().map(|r| (r.clone(), false)).collect();
                        self.in_force = Some(known.at);
                    }
                    self.start_fill();
                }
            }
            Step::Feed => self.feed_step(),
            Step::Take => {
                if self.in_flight.is_some() || self.queue.is_empty() {
                    return;
                }
                let n = self.queue.len().min(BATCH_MAX);
                let taken: Vec<Chat> = self.queue.drain(..n).collect();
                let batch = self.admit(taken);
                if !batch.is_empty() {
                    self.in_flight = Some(batch);
                }
            }
            Step::Post => {
                let Some(batch) = self.in_flight.take() else {
                    return;
                };
                for c in &batch {
                    self.delivered.insert(c.room.clone(), chat_num(c));
                }
                self.hub.deliver(batch);
            }
            Step::TimeOut => {
                if let Some(batch) = &self.in_flight {
                    self.late.push_back(batch.clone());
                }
            }
            Step::Late => {
                if let Some(batch) = self.late.pop_front() {
                    self.hub.deliver(batch);
                }
            }
            Step::Refuse => {
                if self.in_flight.take().is_some() {
                    self.request_fill();
                }
            }
            Step::RestartApp => {
                // Posts still on their way die with the old process.
                self.late.clear();
                for c in &mut self.clients {
                    c.conn = Conn::Off;
                }
                self.hub = Hub::new(HUB_QUEUE, Arc::new(Metrics::new()));
            }
            Step::Client(i) => self.client_step(i % CLIENTS),
            Step::GiveUp(i) => {
                let i = i % CLIENTS;
                if matches!(self.clients[i].conn, Conn::Waiting(_)) {
                    let Conn::Waiting(m) = std::mem::replace(&mut self.clients[i].conn, Conn::Off) else {
                        unreachable!("waiting")
                    };
                    self.clients[i].conn = self.stop_waiting(i, m);
                }
            }
            Step::Drop(i) => self.clients[i % CLIENTS].conn = Conn::Off,
        }
    }

    /// `Delivered::admit`.
    fn admit(&self, taken: Vec<Chat>) -> Vec<Chat> {
        let mut newest: HashMap<String, u64> = HashMap::new();
        taken
            .into_iter()
            .filter(|c| {
                let n = chat_num(c);
                let floor = newest.get(&c.room).or_else(|| self.delivered.get(&c.room));
                let keep = floor.is_none_or(|f| n > *f);
                if keep {
                    newest.insert(c.room.clone(), n);
                }
                keep
            })
            .collect()
    }

    fn feed_step(&mut self) {
        let Feed::Filling(fill) = &mut self.feed else {
            // `Feed::live` returns to a fill when the forwarder asked for one.
            if matches!(self.feed, Feed::Live) && self.awaiting_fill {
                self.start_fill();
            }
            return;
        };
        if fill.cursors.is_none() {
            let mut cursors: Vec<(String, u64)> = self
                .hub
                .cursors(fill.only.as_deref())
                .into_iter()
                .map(|(room, id)| (room, num(&id.parse().expect("cursor"))))
                .collect();
            cursors.sort();
            fill.cursors = Some(cursors.into());
            return;
        }
        if let Some(chat) = fill.page.front() {
            // `Queue::push_fill`: waits for room, fails once chats were
            // dropped; the fill starts over, of every room.
            if self.awaiting_fill {
                self.start_fill();
                return;
            }
            if self.queue.len() >= SUB_QUEUE {
                return;
            }
            let n = chat_num(chat);
            let room = chat.room.clone();
            let chat = fill.page.pop_front().expect("front");
            fill.filled.insert(room, n);
            self.queue.push_back(chat);
            return;
        }
        if let Some((room, after)) = fill.room.clone() {
            if fill.page_full {
                fill.page_full = false;
                let ids = range_after(&self.streams, &room, after, BATCH_MAX);
                fill.page_full = ids.len() == BATCH_MAX;
                if let Some(last) = ids.last() {
                    fill.room = Some((room.clone(), *last));
                }
                fill.page = ids.into_iter().map(|n| chat(&room, n)).collect();
                return;
            }
            fill.room = None;
        }
        let cursors = fill.cursors.as_mut().expect("asked");
        if let Some((room, cursor)) = cursors.pop_front() {
            fill.filled.insert(room.clone(), cursor);
            fill.room = Some((room, cursor));
            fill.page_full = true;
            return;
        }
        // The fill is complete: queue the held chats it did not cover.
        let Feed::Filling(fill) = std::mem::replace(&mut self.feed, Feed::Live) else {
            unreachable!("filling")
        };
        let mut again = fill.held_overflowed;
        for chat in fill.held {
            let covered = fill.filled.get(&chat.room).is_some_and(|f| chat_num(&chat) <= *f);
            if covered {
                continue;
            }
            if let Admission::FillNeeded = self.push_live(chat) {
                again = true;
                break;
            }
        }
        if again {
            self.start_fill();
        } else {
            self.confirmed = self.in_force;
        }
    }

    fn client_step(&mut self, i: usize) {
        let hub = self.hub.clone();
        let room = self.clients[i].room;
        let conn = std::mem::replace(&mut self.clients[i].conn, Conn::Off);
        let next = match conn {
            Conn::Off => Conn::Waiting(hub.join(room, Start::Replaying)),
            Conn::Waiting(m) => {
                let confirmed = hub.since(room).is_some_and(|v| hub.interest().is_confirmed(v));
                if confirmed {
                    self.stop_waiting(i, m)
                } else {
                    Conn::Waiting(m)
                }
            }
            Conn::Joined(m, Some(since)) => {
                hub.replayed_to(room, m.id, sid(since));
                Conn::Placed(m, since)
            }
            Conn::Joined(m, None) => {
                // `last(history_limit)`.
                let all = &self.streams[room];
                let ids = all[all.len().saturating_sub(HISTORY)..].to_vec();
                let covered = ids.last().copied().unwrap_or(0);
                self.clients[i].start = Some(covered);
                Conn::Read(m, ids, covered, false)
            }
            Conn::Placed(m, covered) | Conn::Replaying(m, covered, true) => {
                let ids = self.stream_after(room, covered, PAGE);
                let full = ids.len() == PAGE;
                let covered = ids.last().copied().unwrap_or(covered);
                Conn::Read(m, ids, covered, full)
            }
            Conn::Read(m, ids, covered, more) => {
                hub.replayed_to(room, m.id, sid(covered));
                self.receive(i, &ids);
                Conn::Replaying(m, covered, more)
            }
            Conn::Replaying(m, covered, false) => {
                hub.go_live(room, m.id, sid(covered));
                Conn::Live(m)
            }
            Conn::Live(mut m) => {
                let mut ids = Vec::new();
                while let Ok(out) = m.rx.try_recv() {
                    if let Outbound::Chats(batch) = out {
                        ids.extend(batch.chats().iter().map(|c| chat_num(c)));
                    }
                }
                self.receive(i, &ids);
                if m.kicked.try_recv().is_ok() {
                    Conn::Off
                } else {
                    Conn::Live(m)
                }
            }
        };
        self.clients[i].conn = next;
    }

    /// `Hub::subscribed` returns: the socket reads from now on.
    fn stop_waiting(&mut self, i: usize, m: Membership) -> Conn {
        self.hub.reading(self.clients[i].room, m.id);
        let since = self.clients[i].got.last().copied().or(self.clients[i].start);
        Conn::Joined(m, since)
    }

    fn receive(&mut self, i: usize, ids: &[u64]) {
        let client = &mut self.clients[i];
        for n in ids {
            if client.got.last().is_some_and(|last| n <= last) && self.violation.is_none() {
                self.violation = Some(format!(
                    "client {i} got {n} after {:?}: a duplicate or out of order",
                    client.got.last()
                ));
            }
            client.got.push(*n);
        }
    }

    /// No more sends and no more faults: runs every step until nothing
    /// moves, then checks that every client has every chat of its room
    /// after its first history.
    pub fn settle_and_check(&mut self) -> Result<(), String> {
        self.apply(Step::Resubscribe);
        let mut quiet_rounds = 0;
        for _ in 0..10_000 {
            let before = self.fingerprint();
            for step in [
                Step::Poll,
                Step::Follow,
                Step::Unsubscribe,
                Step::Receive,
                Step::Feed,
                Step::Take,
                Step::Post,
                Step::Late,
            ] {
                self.apply(step);
            }
            for i in 0..CLIENTS {
                self.apply(Step::Client(i));
            }
            if self.fingerprint() == before && self.pubsub.is_empty() && self.late.is_empty() {
                quiet_rounds += 1;
                if quiet_rounds > 2 {
                    break;
                }
            } else {
                quiet_rounds = 0;
            }
        }
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        if !matches!(self.feed, Feed::Live) || !self.queue.is_empty() || self.in_flight.is_some() {
            return Err(format!("the subscriber did not settle: {:?}", self.feed));
        }
        let held: Vec<&String> = self.channels.keys().collect();
        let wanted = self.hub.rooms_of_interest().rooms;
        if held.iter().copied().ne(wanted.iter()) {
            return Err(format!(
                "the subscriber holds {held:?}, the app has sockets in {wanted:?}"
            ));
        }
        for (i, c) in self.clients.iter().enumerate() {
            if !matches!(c.conn, Conn::Live(_)) {
                return Err(format!("client {i} did not settle: {:?}", c.conn));
            }
            let start = c.start.unwrap_or(0);
            let expected: Vec<u64> = self.streams[c.room]
                .iter()
                .copied()
                .filter(|n| *n > start)
                .collect();
            let got: Vec<u64> = c.got.iter().copied().filter(|n| *n > start).collect();
            if got != expected {
                return Err(format!(
                    "client {i} in {}: expected {expected:?}, got {got:?}",
                    c.room
                ));
            }
        }
        Ok(())
    }

    fn fingerprint(&self) -> (usize, usize, bool, Vec<usize>, String) {
        let feed = match &self.feed {
            Feed::Down => "down".to_string(),
            Feed::Live => "live".to_string(),
            Feed::Filling(f) => format!("{:?} {:?} {}", f.cursors, f.room, f.page.len()),
        };
        let state = format!(
            "{feed} {:?} {:?} {:?} {:?}",
            self.known.as_ref().map(|k| k.at),
            self.in_force,
            self.confirmed,
            self.channels
        );
        let conns = self
            .clients
            .iter()
            .map(|c| {
                c.got.len() * 8
                    + match c.conn {
                        Conn::Off => 0,
                        Conn::Joined(..) => 1,
                        Conn::Placed(..) => 2,
                        Conn::Read(..) => 3,
                        Conn::Replaying(..) => 4,
                        Conn::Live(_) => 5,
                        Conn::Waiting(_) => 6,
                    }
            })
            .collect();
        (
            self.queue.len(),
            self.pubsub.len(),
            self.in_flight.is_some(),
            conns,
            state,
        )
    }
}

/// Runs a schedule from scratch; `Err` names the first broken promise.
pub fn run(steps: &[Step]) -> Result<(), String> {
    let mut world = World::new();
    for step in steps {
        world.apply(*step);
        if let Some(v) = world.violation.take() {
            return Err(v);
        }
    }
    world.settle_and_check()
}

proptest! {
    // About 5 s in a debug build; `MODEL_CASES=N` runs a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MODEL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(800),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_stored_chat_reaches_every_socket_once_in_order(
        steps in prop::collection::vec(step(), 0..120)
    ) {
        if let Err(why) = run(&steps) {
            prop_assert!(false, "{}", why);
        }
    }
}

/// A refused post drops its chats and asks for a fill of every room; the
/// room set changes before the feed starts it. The fill that follows the
/// change must cover every room, not only the new one, or the refused
/// chat of room c never reaches its socket.
#[test]
fn a_fill_asked_for_after_a_refused_post_survives_a_change_of_rooms() {
    let steps = [
        Step::Client(2), // joins room c
        Step::GiveUp(2), // reads without a confirmed subscription
        Step::Poll,
        Step::Resubscribe,
        Step::Client(2), // its history: empty
        Step::Feed,
        Step::Feed,
        Step::Feed,     // live
        Step::Store(2), // chat 1 in c, published
        Step::Feed,
        Step::Client(3), // joins room a: the room set changes
        Step::Receive,
        Step::Take,
        Step::Refuse, // chat 1 dropped, a fill of every room asked for
    ];
    assert_eq!(run(&steps), Ok(()));
}

/// The gap in the cursors, step by step: the first socket of a room on a
/// fresh app connects without `since` and reads its history (empty); then
/// chat 1 is stored while the subscriber's pub/sub is lost; it resubscribes
/// and its fill asks the cursors before the socket's replay is placed. The
/// room must be among them, or 1 is never read again and the socket goes
/// live without it.
#[test]
fn a_fill_before_a_first_history_is_placed_refills_that_room() {
    let steps = [
        Step::Resubscribe,
        Step::Feed,      // cursors: none yet
        Step::Feed,      // the fill is complete
        Step::Client(0), // joins room a without since
        Step::GiveUp(0), // no subscriber confirms: it reads anyway
        Step::Client(0), // reads its history: empty
        Step::LoseRedis,
        Step::Store(0), // 1 in room a, published while unsubscribed
        Step::Resubscribe,
        Step::Feed, // the fill asks the cursors
    ];
    run(&steps).expect("no loss");
}

/// The join the subscription makes gap-free, step by step: a socket joins
/// a room nobody on this app was in; a chat is stored before the
/// subscriber has the room's channel (nobody hears it); the subscriber
/// polls, SUBSCRIBEs, fills (the waiting socket has no cursor: nothing to
/// read) and confirms; only then does the socket read its history, which
/// holds the chat; the next chat arrives live.
#[test]
fn a_socket_reads_after_its_rooms_subscription_is_confirmed() {
    let steps = [
        Step::Resubscribe,
        Step::Feed,      // cursors: none
        Step::Feed,      // the fill is complete; live
        Step::Client(0), // joins room a: waits
        Step::Store(0),  // 1 in room a, before the SUBSCRIBE: unheard
        Step::Client(0), // still waiting
        Step::Poll,      // the room set now has a
        Step::Follow,    // SUBSCRIBE a, then fill it
        Step::Feed,      // cursors of a: none (the socket waits)
        Step::Feed,      // the fill is complete: confirmed in force
        Step::Client(0), // still waiting: the app has not heard yet
        Step::Poll,      // the confirmation reaches the app
        Step::Client(0), // stops waiting
        Step::Client(0), // reads its history: 1
        Step::Store(0),  // 2, heard live
    ];
    let mut world = World::new();
    for step in steps {
        world.apply(step);
    }
    assert!(
        matches!(world.clients[0].conn, Conn::Read(..)),
        "{:?}",
        world.clients[0].conn
    );
    assert_eq!(world.pubsub.len(), 1, "2 is heard live");
    world.settle_and_check().expect("no loss");
}

/// A socket that gave up waiting read its history before the room's
/// SUBSCRIBE; the fill after the SUBSCRIBE starts at its cursor and brings
/// what was stored in between.
#[test]
fn the_fill_after_a_subscribe_covers_a_socket_that_gave_up_waiting() {
    let steps = [
        Step::Resubscribe,
        Step::Feed,
        Step::Feed,      // live, no rooms
        Step::Client(0), // joins room a: waits
        Step::GiveUp(0), // reads anyway
        Step::Client(0), // history: empty
        Step::Client(0), // placed at 0-0
        Step::Client(0), // live
        Step::Store(0),  // 1: stored after its read, before the SUBSCRIBE
        Step::Poll,
        Step::Follow, // SUBSCRIBE a, fill a from the socket's cursor 0-0
    ];
    run(&steps).expect("no loss");
}
