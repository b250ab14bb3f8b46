//! `ResilientClient`: a chat client that behaves the way the client protocol
//! (`docs/protocol.md`) asks real clients to behave, so drills can check the
//! service's guarantees from the outside. It reconnects with full-jitter
//! backoff (at once, jittered, on 1012/1013 and on 4001 with a fresh token),
//! resumes with `since` and `session`, re-sends its outbox under the same
//! `cid` until acked, and never yields a chat twice. Each client is one tokio task, so a drill can run a
//! thousand of them in one process.

mod dedup;
mod runner;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::ErrorCode;
use wsmesh_common::stream_id::StreamId;

use crate::{ConnectOptions, Endpoint};
use runner::Runner;

/// How a `ResilientClient` connects and retries.
#[derive(Debug, Clone)]
pub struct ResilientConfig {
    /// Options of every connection; `since` and `session` are filled in per attempt.
    pub connect: ConnectOptions,
    /// Further endpoints tried in turn after a failure (the first is `connect.endpoint`).
    pub fallbacks: Vec<Endpoint>,
    /// Nick to ask for after `welcome` when the server's differs.
    pub nick: Option<String>,
    /// First backoff ceiling.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// Window over which reconnects after 1012/1013 are spread.
    pub restart_jitter: Duration,
    /// An unacked send is re-sent after this long.
    pub resend_after: Duration,
    /// A WebSocket ping goes out this often, so a frozen server or a cut path
    /// (TCP stays open forever) is noticed even in a quiet room; `None`: no pings.
    pub ping_every: Option<Duration>,
    /// Nothing heard (any frame, pongs included) for this long while pinging:
    /// the connection counts as lost and the client reconnects.
    pub idle_timeout: Duration,
    /// Stop after this many failed connects in a row (`Stats::gave_up`); `None`: never.
    pub max_attempts: Option<u32>,
    /// Every chat as it arrived, before dedup, so a drill's ledger sees what
    /// the server really sent (duplicates included) and not what the client hid.
    pub receipts: Option<ReceiptLog>,
    /// Where each attempt gets its token (a server in jwt mode closes an
    /// expired one with 4001); `None`: `connect.token` as it is.
    pub tokens: Option<TokenSource>,
}

/// Hands out a fresh token per connection attempt.
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> String + Send + Sync>);

impl TokenSource {
    /// A source that calls `mint` for every attempt.
    pub fn new(mint: impl Fn() -> String + Send + Sync + 'static) -> TokenSource {
        TokenSource(Arc::new(mint))
    }

    /// A token for the next attempt.
    pub fn mint(&self) -> String {
        (self.0)()
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource")
    }
}

impl ResilientConfig {
    /// Defaults: backoff 250 ms .. 10 s, restart jitter 250 ms, re-send after 1 s.
    pub fn new(connect: ConnectOptions) -> ResilientConfig {
        ResilientConfig {
            connect,
            fallbacks: Vec::new(),
            nick: None,
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(10),
            restart_jitter: Duration::from_millis(250),
            resend_after: Duration::from_secs(1),
            ping_every: Some(Duration::from_secs(5)),
            idle_timeout: Duration::from_secs(15),
            max_attempts: None,
            receipts: None,
            tokens: None,
        }
    }
}

/// One chat as it arrived, before dedup.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// Stream id the server gave the chat; the ledger's key.
    pub id: StreamId,
    /// Room it was for.
    pub room: String,
    /// Whether it came in a `history` frame (replay) rather than live.
    pub history: bool,
    /// Index of the connection (in `Stats::connections`) it arrived on.
    pub connection: usize,
    /// When it arrived.
    pub at: Instant,
}

/// Where a client appends its `Receipt`s; shared with whoever reconciles them.
pub type ReceiptLog = Arc<Mutex<Vec<Receipt>>>;

/// What happened, in order, for callers that follow along.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A connection was welcomed.
    Connected(ConnectionRecord),
    /// A chat not yielded before, in id order.
    Chat(Chat),
    /// A send was stored under `id`.
    Acked {
        /// The send's idempotency key.
        cid: String,
        /// Stream id it was stored under.
        id: String,
    },
    /// The server refused something (e.g. `unavailable`, `rate_limited`).
    Refused(ErrorCode),
    /// The connection ended, with the close code when there was one.
    Disconnected(Option<u16>),
}

/// One welcomed connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    /// Instance named in `welcome`.
    pub instance: String,
    /// Nick from `welcome`.
    pub nick: String,
    /// `connected_since` from `welcome`.
    pub connected_since: u64,
    /// Time from losing the previous connection (or the first failed attempt) to this welcome;
    /// `None` for a first connection that succeeded at once.
    pub reconnect_took: Option<Duration>,
    /// Whether the history frame said the gap was older than retained history.
    pub truncated: bool,
}

/// Counters a drill asserts on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every welcomed connection, in order.
    pub connections: Vec<ConnectionRecord>,
    /// Chats yielded to the caller (each id once).
    pub delivered: u64,
    /// Chats received again with an id already yielded (dropped).
    pub duplicates: u64,
    /// Chats received with an id below the last yielded that was never yielded (dropped).
    pub out_of_order: u64,
    /// Frames that were not protocol frames (not JSON, unknown type, a
    /// binary frame): skipped, but a chat inside one would be lost silently,
    /// so they are counted.
    pub undecodable: u64,
    /// Sends not yet acked.
    pub pending: usize,
    /// Sends the server confirmed as stored.
    pub acked: u64,
    /// Error frames by code, in arrival order.
    pub refused: Vec<ErrorCode>,
    /// Last id yielded.
    pub last_id: Option<String>,
    /// The client stopped after `max_attempts` failed connects in a row.
    pub gave_up: bool,
}

/// Commands from the handle to the task.
#[derive(Debug)]
enum Command {
    /// Queue a message under `cid`.
    Send { cid: String, body: String },
}

/// Handle to a running client; dropping it stops the client.
#[derive(Debug)]
pub struct ResilientClient {
    /// Sends queued by the caller, for the task to deliver.
    commands: mpsc::UnboundedSender<Command>,
    /// What the task saw, in order, for `next_event` and friends.
    events: mpsc::UnboundedReceiver<Event>,
    /// Written by the task, read by `stats()` at any time.
    stats: Arc<Mutex<Stats>>,
    /// The task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
    /// Prefix of generated cids, unique per client.
    cid_prefix: String,
    /// Sends so far, for the next cid.
    sent: u64,
}

impl Drop for ResilientClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ResilientClient {
    /// Starts the client task (needs a tokio runtime).
    pub fn spawn(config: ResilientConfig) -> ResilientClient {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let runner = Runner::new(config, event_tx, stats.clone());
        let task = tokio::spawn(runner.run(command_rx));
        let cid_prefix = format!("c{:016x}", rand::rng().random::<u64>());
        ResilientClient {
            commands,
            events,
            stats,
            task,
            cid_prefix,
            sent: 0,
        }
    }

    /// Queues `body`; returns its `cid`. It is (re-)sent until acked.
    pub fn send(&mut self, body: impl Into<String>) -> String {
        self.sent += 1;
        let cid = format!("{}-{}", self.cid_prefix, self.sent);
        // The task only ends when this handle drops, so the send cannot fail here.
        let _ = self.commands.send(Command::Send {
            cid: cid.clone(),
            body: body.into(),
        });
        cid
    }

    /// The next event; `None` if the task ended.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Waits for events until `pick` accepts one, within `limit`.
    pub async fn wait_for<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()??;
            if let Some(found) = pick(&event) {
                return Some(found);
            }
        }
    }

    /// The next chat within `limit`, skipping other events.
    pub async fn next_chat(&mut self, limit: Duration) -> Option<Chat> {
        self.wait_for(limit, |e| match e {
            Event::Chat(c) => Some(c.clone()),
            _ => None,
        })
        .await
    }

    /// Chats until `n` were collected or `limit` passed.
    pub async fn chats(&mut self, n: usize, limit: Duration) -> Vec<Chat> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n {
            match self
                .next_chat(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Some(c) => out.push(c),
                None => break,
            }
        }
        out
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }
}

/// Locks the stats; a poisoned lock (a panicking reader) still holds valid counters.
fn lock(stats: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}
