//! The drill's load: N `ResilientClient`s spread over rooms, each sending at
//! a steady rate (random phase, so the sends are spread over time, never a
//! burst) while a shared switch is on. One tokio task per client follows its
//! events (welcomes, acks, disconnects) into a `Live` record the drill reads
//! to tell when the cluster is quiet again; the chats themselves are logged
//! raw by the client (`ReceiptLog`) for the ledger.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use wsmesh_common::stream_id::StreamId;

use super::ledger::ClientLedger;
use crate::token::{Minter, TokenSpec};
use wsmesh_client::resilient::{
    ConnectionRecord, Event, ReceiptLog, ResilientClient, ResilientConfig, TokenSource,
};
use wsmesh_client::ConnectOptions;

/// How the clients behave (beyond where they connect).
#[derive(Debug, Clone)]
pub struct ClientTuning {
    /// Backoff: first ceiling.
    pub backoff_base: Duration,
    /// Backoff: largest ceiling.
    pub backoff_cap: Duration,
    /// Spread of reconnects after 1012/1013.
    pub restart_jitter: Duration,
    /// Unacked sends are re-sent after this long.
    pub resend_after: Duration,
    /// WebSocket ping period.
    pub ping_every: Duration,
    /// Nothing heard for this long: reconnect.
    pub idle_timeout: Duration,
    /// Failed connects in a row before a client gives up.
    pub max_attempts: u32,
}

impl Default for ClientTuning {
    /// Backoff 100 ms .. 2 s (a drill's faults heal within seconds), ping every
    /// second, dead after 5 s of silence (well above a loaded cluster's stalls,
    /// well below a user's patience), give up after 40 failed connects (minutes).
    fn default() -> Self {
        ClientTuning {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(2),
            restart_jitter: Duration::from_millis(250),
            resend_after: Duration::from_secs(2),
            ping_every: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            max_attempts: 40,
        }
    }
}

/// What the load looks like.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Resilient clients to start.
    pub clients: usize,
    /// Rooms; client `i` is in room `i % rooms`.
    pub rooms: usize,
    /// Messages per second over all clients.
    pub rate: f64,
    /// Where and how to connect (room filled in per client).
    pub connect: ConnectOptions,
    /// Backoff, re-send and ping timing of every client.
    pub tuning: ClientTuning,
    /// Prefix of room names, unique per drill.
    pub room_prefix: String,
    /// In jwt mode: what signs each client's tokens and how long they last.
    pub tokens: Option<(Minter, Duration)>,
}

/// One client as its task sees it, read by the drill.
#[derive(Debug, Default)]
pub struct Live {
    /// Whether it is connected (welcomed, not lost since).
    pub connected: bool,
    /// Cids acked so far; `sent - acked_cids.len()` sends are unacked. Counted
    /// here, in event order, not polled from the client, so a send queued a
    /// moment ago can never look acked.
    pub acked_cids: HashSet<String>,
    /// The client stopped after too many failed connects.
    pub gave_up: bool,
    /// Messages handed to the clients to send (each must be acked once).
    pub sent: u64,
    /// Acks: (cid, id).
    pub acks: Vec<(String, StreamId)>,
    /// Welcomed connections, in order.
    pub connections: Vec<ConnectionRecord>,
    /// When each of `connections` was welcomed.
    pub welcomed_at: Vec<Instant>,
    /// Times a client lost its connection and had to reconnect.
    pub disconnects: u64,
    /// Error frames from the server (e.g. `rate_limited`, `unavailable`).
    pub refused: u64,
    /// Frames the client could not read as protocol frames (must be 0).
    pub undecodable: u64,
    /// Per acked send, from handing it to the client to its first ack
    /// (re-sends through a fault included): the stall a sender sees.
    pub ack_after: Vec<Duration>,
}

impl Live {
    /// Sends not yet acked.
    pub fn unacked(&self) -> usize {
        (self.sent as usize).saturating_sub(self.acked_cids.len())
    }
}

/// A client slot: its room, its live record, its raw receipts and its task.
#[derive(Debug)]
struct Slot {
    /// Room this client is in; its chats are reconciled per room.
    room: String,
    /// Live record.
    live: Arc<Mutex<Live>>,
    /// Raw receipts.
    receipts: ReceiptLog,
    /// The task (owns the client).
    task: tokio::task::JoinHandle<()>,
}

/// Locks, taking over a poisoned lock (the data is plain counters).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything one client did, for the ledger and the report.
#[derive(Debug, Clone)]
pub struct ClientOutcome {
    /// The ledger's view.
    pub ledger: ClientLedger,
    /// When each of `ledger.receipts` arrived, for the gaps a fault leaves.
    pub received_at: Vec<Instant>,
    /// Every connection the server welcomed, with its reconnect time.
    pub connections: Vec<ConnectionRecord>,
    /// When each connection was welcomed.
    pub welcomed_at: Vec<Instant>,
    /// Per reconnect: from losing the connection to the end of the new
    /// connection's history replay (the welcome when it replayed nothing).
    pub caught_up: Vec<Duration>,
    /// Connections lost.
    pub disconnects: u64,
    /// Error frames.
    pub refused: u64,
    /// Per connection, what arrived on it: for explaining a loss.
    pub arrived: Vec<Arrived>,
    /// Per acked send, the time to its first ack.
    pub ack_after: Vec<Duration>,
}

/// Chats that arrived on one connection (before dedup).
#[derive(Debug, Clone, Copy, Default)]
pub struct Arrived {
    /// In the replay (`history` frame).
    pub replayed: u64,
    /// In live `chat` frames.
    pub live: u64,
    /// Newest id replayed.
    pub replayed_last: StreamId,
    /// Newest id that came live.
    pub live_last: StreamId,
}

impl Arrived {
    /// Summaries per connection, `connections` long at least.
    fn of(receipts: &[wsmesh_client::resilient::Receipt], connections: usize) -> Vec<Arrived> {
        let n = receipts
            .iter()
            .map(|r| r.connection + 1)
            .max()
            .unwrap_or(0)
            .max(connections);
        let mut out = vec![Arrived::default(); n];
        for r in receipts {
            let a = &mut out[r.connection];
            if r.history {
                a.replayed += 1;
                a.replayed_last = a.replayed_last.max(r.id);
            } else {
                a.live += 1;
                a.live_last = a.live_last.max(r.id);
            }
        }
        out
    }
}

/// The running load.
#[derive(Debug)]
pub struct Load {
    /// One per client, in start order.
    slots: Vec<Slot>,
    /// Sending on/off.
    sending: Arc<AtomicBool>,
    /// Tells the tasks to end.
    stop: watch::Sender<bool>,
}

/// Ramp: clients started per millisecond step, so a thousand TLS handshakes do
/// not all hit the lb in the same instant.
const RAMP_STEP: usize = 10;

/// How a drill's load ended (see [`Load::end`]).
pub struct Ended {
    /// What each client did, in start order.
    pub outcomes: Vec<ClientOutcome>,
    /// Seconds from the start of sending until it was turned off.
    pub sending_s: f64,
    /// Whether every client got quiet within the limit.
    pub quiesced: bool,
    /// Seconds spent waiting for quiet.
    pub quiesce_s: f64,
}

impl Load {
    /// Starts the clients (ramped: `RAMP_STEP` every 10 ms); sending is off.
    pub async fn start(plan: &LoadPlan) -> Load {
        let sending = Arc::new(AtomicBool::new(false));
        let (stop, _) = watch::channel(false);
        let rooms = plan.rooms.max(1);
        let period = Duration::from_secs_f64((plan.clients as f64 / plan.rate.max(0.001)).max(0.001));
        let mut slots = Vec::with_capacity(plan.clients);
        for i in 0..plan.clients {
            if i > 0 && i % RAMP_STEP == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let room = format!("{}{}", plan.room_prefix, i % rooms);
            let receipts: ReceiptLog = Arc::default();
            let mut config = ResilientConfig::new(plan.connect.clone().room(room.clone()));
            let t = &plan.tuning;
            config.nick = Some(format!("d{i}"));
            config.backoff_base = t.backoff_base;
            config.backoff_cap = t.backoff_cap;
            config.restart_jitter = t.restart_jitter;
            config.resend_after = t.resend_after;
            config.ping_every = Some(t.ping_every);
            config.idle_timeout = t.idle_timeout;
            config.max_attempts = Some(t.max_attempts);
            config.receipts = Some(receipts.clone());
            if let Some((minter, ttl)) = &plan.tokens {
                let minter = minter.clone();
                let spec = TokenSpec {
                    sub: format!("d{i}"),
                    name: Some(format!("d{i}")),
                    rooms: Some(vec![room.clone()]),
                    ttl: *ttl,
                };
                // A failed mint (a clock before 1970) leaves no token: a 401, retried.
                config.tokens = Some(TokenSource::new(move || minter.mint(&spec).unwrap_or_default()));
            }
            let live = Arc::new(Mutex::new(Live::default()));
            let phase = Duration::from_secs_f64(period.as_secs_f64() * rand::rng().random::<f64>());
            let task = tokio::spawn(drive(
                ResilientClient::spawn(config),
                live.clone(),
                Pace { period, phase },
                sending.clone(),
                stop.subscribe(),
                i,
            ));
            slots.push(Slot {
                room,
                live,
                receipts,
                task,
            });
        }
        Load { slots, sending, stop }
    }

    /// Sending on or off. Turning it off returns only once no client is
    /// between deciding to send and counting the send (see `take_send`), so
    /// the quiet check that follows sees every send that was made.
    pub fn set_sending(&self, on: bool) {
        let lives: Vec<&Mutex<Live>> = self.slots.iter().map(|s| &*s.live).collect();
        switch_sending(&self.sending, on, &lives);
    }

    /// Clients welcomed at least once.
    pub fn connected_once(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !lock(&s.live).connections.is_empty())
            .count()
    }

    /// Waits until every client was welcomed once, within `limit`; returns how many were.
    pub async fn wait_connected(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.connected_once();
            if n == self.slots.len() || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Highest acked id per room.
    fn room_heads(&self) -> HashMap<&str, StreamId> {
        let mut heads: HashMap<&str, StreamId> = HashMap::new();
        for s in &self.slots {
            for (_, id) in &lock(&s.live).acks {
                let head = heads.entry(s.room.as_str()).or_default();
                *head = (*head).max(*id);
            }
        }
        heads
    }

    /// Clients not yet quiet: not connected, sends unacked, or behind their room's last acked id.
    ///
    /// Acks are checked first and the rooms' heads read after: a send acked
    /// between the two is then in its room's head, so every member must
    /// have its chat. Heads read first could miss an ack that arrives before
    /// its sender's check, and the drill would stop the clients while the
    /// app was writing that chat to them.
    pub fn unsettled(&self) -> usize {
        let acked: Vec<bool> = self
            .slots
            .iter()
            .map(|s| {
                let live = lock(&s.live);
                live.gave_up || (live.connected && live.unacked() == 0)
            })
            .collect();
        let heads = self.room_heads();
        self.slots
            .iter()
            .zip(acked)
            .filter(|(s, acked)| {
                let live = lock(&s.live);
                if live.gave_up {
                    return false;
                }
                let head = heads.get(s.room.as_str()).copied().unwrap_or_default();
                let got = lock(&s.receipts).iter().map(|r| r.id).max().unwrap_or_default();
                !(*acked && live.connected && got >= head)
            })
            .count()
    }

    /// Waits until every client is quiet (every send acked, connected, caught up
    /// to its room's last acked id), within `limit`. Returns whether it got there.
    pub async fn wait_quiet(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.unsettled() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Ends a drill's sending: keeps sending until `until` (at least a second
    /// from now, so the time after a healing is never empty), turns sending
    /// off, waits for quiet within `quiesce`, then stops every client.
    pub async fn end(self, started: Instant, until: Instant, quiesce: Duration) -> Ended {
        tokio::time::sleep_until(until.max(Instant::now() + Duration::from_secs(1))).await;
        self.set_sending(false);
        let sending_s = started.elapsed().as_secs_f64();
        let quiet_from = Instant::now();
        let quiesced = self.wait_quiet(quiesce).await;
        let quiesce_s = quiet_from.elapsed().as_secs_f64();
        Ended {
            outcomes: self.finish().await,
            sending_s,
            quiesced,
            quiesce_s,
        }
    }

    /// Stops every client and returns what each did.
    pub async fn finish(self) -> Vec<ClientOutcome> {
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.slots.len());
        for slot in self.slots {
            // A task that panicked still left its record; the ledger shows the damage.
            let _ = slot.task.await;
            let live = std::mem::take(&mut *lock(&slot.live));
            let pending = live.unacked();
            let receipts = std::mem::take(&mut *lock(&slot.receipts));
            let caught_up = caught_up(&live, &receipts);
            let start = receipts
                .iter()
                .filter(|r| r.connection == 0 && r.history)
                .map(|r| r.id)
                .max()
                .unwrap_or_default();
            out.push(ClientOutcome {
                received_at: receipts.iter().map(|r| r.at).collect(),
                ledger: ClientLedger {
                    room: slot.room,
                    start,
                    receipts: receipts.iter().map(|r| r.id).collect(),
                    acks: live.acks,
                    sent: live.sent,
                    pending,
                    gave_up: live.gave_up || !live.connected,
                    undecodable: live.undecodable,
                },
                arrived: Arrived::of(&receipts, live.connections.len()),
                ack_after: live.ack_after,
                connections: live.connections,
                welcomed_at: live.welcomed_at,
                caught_up,
                disconnects: live.disconnects,
                refused: live.refused,
            });
        }
        out
    }
}

/// Per reconnect, the time from losing the connection to the end of the
/// replay on the new one: the welcome's `reconnect_took` plus the time from
/// the welcome to the last history receipt of that connection. The two
/// instants come from different tasks (the client logs receipts, ours sees the
/// welcome event), so the replay part is never taken as negative.
fn caught_up(live: &Live, receipts: &[wsmesh_client::resilient::Receipt]) -> Vec<Duration> {
    let mut out = Vec::new();
    for (k, record) in live.connections.iter().enumerate().skip(1) {
        let (Some(took), Some(welcomed)) = (record.reconnect_took, live.welcomed_at.get(k)) else {
            continue;
        };
        let replay_end = receipts
            .iter()
            .filter(|r| r.connection == k && r.history)
            .map(|r| r.at)
            .max()
            .unwrap_or(*welcomed);
        out.push(took + replay_end.saturating_duration_since(*welcomed));
    }
    out
}

/// When a client sends.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Time between two sends.
    period: Duration,
    /// Offset of the first send.
    phase: Duration,
}

/// Sets `sending`; when it goes off, waits for each client's record to be
/// free once: a client that saw sending on holds its record until it has
/// counted the send (`take_send`), so after this nobody sends uncounted.
///
/// Without it a drill could stop its clients before the last message reached
/// them: a client read "sending on", the drill turned sending off and found
/// every send acked and every client caught up (the new send not counted
/// yet), stopped the clients, and the chat the app had just written to them
/// was counted lost.
fn switch_sending(sending: &AtomicBool, on: bool, lives: &[&Mutex<Live>]) {
    sending.store(on, Ordering::SeqCst);
    if !on {
        for live in lives {
            drop(lock(live));
        }
    }
}

/// Whether to send now; counts the send at once, under the record's lock
/// (see `switch_sending`).
fn take_send(live: &Mutex<Live>, sending: &AtomicBool) -> bool {
    let mut l = lock(live);
    let on = sending.load(Ordering::SeqCst);
    if on {
        l.sent += 1;
    }
    on
}

/// One client's task: sends on its pace while sending is on, follows events.
async fn drive(
    mut client: ResilientClient,
    live: Arc<Mutex<Live>>,
    pace: Pace,
    sending: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
    index: usize,
) {
    let mut next_send = Instant::now() + pace.phase;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    let mut ended = false;
    let mut n = 0u64;
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_send) => {
                if take_send(&live, &sending) {
                    n += 1;
                    let cid = client.send(format!("d{index} #{n}"));
                    sent_at.insert(cid, Instant::now());
                }
                // Steady pace; after a stall, carry on from now instead of catching up in a burst.
                next_send = (next_send + pace.period).max(Instant::now());
            }
            event = client.next_event(), if !ended => {
                let mut l = lock(&live);
                match event {
                    Some(Event::Connected(record)) => {
                        l.connected = true;
                        l.connections.push(record);
                        l.welcomed_at.push(Instant::now());
                    }
                    Some(Event::Disconnected(_)) => {
                        l.connected = false;
                        l.disconnects += 1;
                    }
                    Some(Event::Acked { cid, id }) => {
                        if let Some(at) = sent_at.remove(&cid) {
                            l.ack_after.push(at.elapsed());
                        }
                        if let Ok(id) = id.parse() {
                            l.acks.push((cid.clone(), id));
                        }
                        l.acked_cids.insert(cid);
                    }
                    Some(Event::Refused(_)) => l.refused += 1,
                    Some(Event::Chat(_)) => {}
                    None => {
                        ended = true;
                        l.connected = false;
                    }
                }
            }
            _ = poll.tick() => {
                let stats = client.stats();
                let mut l = lock(&live);
                l.gave_up = stats.gave_up;
                l.undecodable = stats.undecodable;
            }
            _ = stop.changed() => break,
        }
    }
    let stats = client.stats();
    let mut l = lock(&live);
    l.gave_up = stats.gave_up;
    l.undecodable = stats.undecodable;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// The race that made a drill count a delivered chat as lost: a client
    /// decided to send just as sending was turned off. Turning it off must
    /// wait until that send is counted, so the quiet check sees it unacked
    /// and waits for it (and for its delivery) before stopping the clients.
    #[test]
    fn turning_sending_off_waits_for_a_send_being_decided() {
        let live = Arc::new(Mutex::new(Live::default()));
        let sending = Arc::new(AtomicBool::new(true));
        // The client task is inside `take_send`: it holds its record and
        // has seen sending on.
        let deciding = lock(&live);
        assert!(sending.load(Ordering::SeqCst));
        let (done_tx, done) = mpsc::channel();
        let stopper = {
            let (live, sending) = (live.clone(), sending.clone());
            std::thread::spawn(move || {
                switch_sending(&sending, false, &[&*live]);
                let _ = done_tx.send(());
            })
        };
        assert!(
            done.recv_timeout(Duration::from_millis(200)).is_err(),
            "turning sending off returned while a send was being decided"
        );
        let mut deciding = deciding;
        deciding.sent += 1;
        drop(deciding);
        done.recv().expect("stopper returns once the send is counted");
        stopper.join().expect("stopper");
        // What the quiet check sees right after: the send, still unacked.
        assert_eq!(lock(&live).unacked(), 1, "the last send is counted");
        assert!(!take_send(&live, &sending), "nothing is sent once sending is off");
        assert_eq!(lock(&live).sent, 1);
    }

    #[test]
    fn a_send_taken_while_sending_is_on_is_counted_at_once() {
        let live = Mutex::new(Live::default());
        let sending = AtomicBool::new(true);
        assert!(take_send(&live, &sending));
        assert_eq!(lock(&live).unacked(), 1);
    }
}
