//! `ResilientClient`: a chat client that behaves the way ARCHITECTURE.md asks
//! real clients to behave, so drills can check the service's guarantees from
//! the outside. It reconnects with full-jitter backoff (at once, jittered, on
//! 1012/1013), resumes with `since` and `session`, re-sends its outbox under the
//! same `cid` until acked, and never yields a chat twice. Each client is one
//! tokio task, so a drill can run a thousand of them in one process.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wsmesh_common::backoff::Backoff;
use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::{close, ClientFrame, ErrorCode, ServerFrame};
use wsmesh_common::stream_id::StreamId;

use crate::client::{ConnectOptions, Connection, Endpoint, Incoming};

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
        }
    }
}

/// One chat as it arrived, before dedup.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// Stream id.
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
    /// Chats yielded.
    pub delivered: u64,
    /// Chats received again with an id already yielded (dropped).
    pub duplicates: u64,
    /// Chats received with an id below the last yielded that was never yielded (dropped).
    pub out_of_order: u64,
    /// Sends not yet acked.
    pub pending: usize,
    /// Sends acked.
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
    /// Commands to the task.
    commands: mpsc::UnboundedSender<Command>,
    /// Events from the task.
    events: mpsc::UnboundedReceiver<Event>,
    /// Counters shared with the task.
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

/// Whether a chat is new, seen, or behind what was yielded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Newer than everything yielded: yield it.
    New,
    /// Already yielded.
    Duplicate,
    /// Older than the last yielded but never yielded: a gap in ordering.
    OutOfOrder,
}

/// Delivery dedup by stream id: yields only increasing ids and remembers a
/// bounded window of recent ones to tell duplicates from reordering.
#[derive(Debug, Default)]
struct Dedup {
    /// Highest id yielded.
    last: Option<StreamId>,
    /// Recently yielded ids, for classification.
    recent: HashSet<StreamId>,
    /// Insertion order of `recent`, to bound it.
    order: VecDeque<StreamId>,
}

impl Dedup {
    /// Ids remembered for telling duplicates from reordering.
    const WINDOW: usize = 4096;

    fn judge(&mut self, id: StreamId) -> Verdict {
        if self.last.is_some_and(|last| id <= last) {
            return if self.recent.contains(&id) || self.order.len() == Self::WINDOW {
                Verdict::Duplicate
            } else {
                Verdict::OutOfOrder
            };
        }
        self.last = Some(id);
        self.recent.insert(id);
        self.order.push_back(id);
        if self.order.len() > Self::WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
        Verdict::New
    }
}

/// One queued send.
#[derive(Debug)]
struct Pending {
    /// Idempotency key.
    cid: String,
    /// Text.
    body: String,
    /// Last time it went out, if it did on this connection.
    sent_at: Option<Instant>,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Closed by the server or the network, with its close code if any.
    Lost(Option<u16>),
    /// The handle dropped: stop.
    Stop,
}

/// The task's state across connections.
struct Runner {
    /// Configuration.
    config: ResilientConfig,
    /// Events to the handle.
    events: mpsc::UnboundedSender<Event>,
    /// Shared counters.
    stats: Arc<Mutex<Stats>>,
    /// Delivery dedup.
    dedup: Dedup,
    /// Unacked sends, oldest first.
    outbox: Vec<Pending>,
    /// Session token from the last welcome.
    session: Option<String>,
    /// When the last connection was lost, for reconnect durations.
    lost_at: Option<Instant>,
}

impl Runner {
    fn new(
        config: ResilientConfig,
        events: mpsc::UnboundedSender<Event>,
        stats: Arc<Mutex<Stats>>,
    ) -> Runner {
        Runner {
            config,
            events,
            stats,
            dedup: Dedup::default(),
            outbox: Vec::new(),
            session: None,
            lost_at: None,
        }
    }

    fn emit(&self, event: Event) {
        // A handle that stopped reading events is fine; the stats still count.
        let _ = self.events.send(event);
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_cap);
        let endpoints: Vec<Endpoint> = std::iter::once(self.config.connect.endpoint.clone())
            .chain(self.config.fallbacks.iter().cloned())
            .collect();
        let mut next = 0usize;
        loop {
            let mut opts = self.config.connect.clone();
            opts.endpoint = endpoints[next % endpoints.len()].clone();
            opts.since = self.dedup.last.map(|id| id.to_string());
            opts.session = self.session.clone();
            let delay = match Connection::connect(&opts).await {
                Ok(conn) => match self.serve(conn, &mut commands, &mut backoff).await {
                    Ended::Stop => return,
                    Ended::Lost(code) => {
                        self.lost_at = Some(Instant::now());
                        self.emit(Event::Disconnected(code));
                        // The instance is going away or was lost: the next endpoint first.
                        next += 1;
                        if matches!(code, Some(close::SERVICE_RESTART | close::TRY_AGAIN_LATER)) {
                            jitter(self.config.restart_jitter)
                        } else {
                            backoff.next_delay()
                        }
                    }
                },
                Err(e) => {
                    tracing::debug!(endpoint = %opts.endpoint, error = %e, "connect failed");
                    self.lost_at.get_or_insert_with(Instant::now);
                    if self
                        .config
                        .max_attempts
                        .is_some_and(|m| backoff.attempts() + 1 >= m)
                    {
                        lock(&self.stats).gave_up = true;
                        return;
                    }
                    next += 1;
                    backoff.next_delay()
                }
            };
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    cmd = commands.recv() => match cmd {
                        Some(cmd) => self.accept(cmd),
                        None => return,
                    },
                }
            }
        }
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Send { cid, body } => {
                self.outbox.push(Pending {
                    cid,
                    body,
                    sent_at: None,
                });
                lock(&self.stats).pending = self.outbox.len();
            }
        }
    }

    /// Runs one connection until it ends.
    async fn serve(
        &mut self,
        mut conn: Connection,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        backoff: &mut Backoff,
    ) -> Ended {
        for pending in &mut self.outbox {
            pending.sent_at = None;
        }
        let mut welcomed = false;
        let mut tick = tokio::time::interval(self.config.resend_after.max(Duration::from_millis(10)));
        let pinging = self.config.ping_every.is_some();
        let ping_period = self
            .config
            .ping_every
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(10));
        // The first ping one period in: a fresh connection was just heard from.
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_period, ping_period);
        loop {
            tokio::select! {
                incoming = conn.recv() => {
                    let incoming = match incoming {
                        Ok(i) => i,
                        Err(_) => return Ended::Lost(None),
                    };
                    match incoming {
                        Incoming::Frame(frame) => {
                            if let Err(lost) = self.on_frame(frame, &mut conn, &mut welcomed, backoff).await {
                                return lost;
                            }
                        }
                        Incoming::Closed(info) => return Ended::Lost(info.map(|i| i.code)),
                        Incoming::Text(_) | Incoming::Binary(_) => {}
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        self.accept(cmd);
                        if welcomed && self.flush(&mut conn, false).await.is_err() {
                            return Ended::Lost(None);
                        }
                    }
                    None => {
                        conn.close().await;
                        return Ended::Stop;
                    }
                },
                _ = tick.tick() => {
                    if welcomed && self.flush(&mut conn, true).await.is_err() {
                        return Ended::Lost(None);
                    }
                }
                _ = ping.tick(), if pinging => {
                    if conn.last_heard().elapsed() >= self.config.idle_timeout {
                        tracing::debug!("nothing heard for {:?}; reconnecting", self.config.idle_timeout);
                        return Ended::Lost(None);
                    }
                    if conn.ping().await.is_err() {
                        return Ended::Lost(None);
                    }
                }
            }
        }
    }

    async fn on_frame(
        &mut self,
        frame: ServerFrame,
        conn: &mut Connection,
        welcomed: &mut bool,
        backoff: &mut Backoff,
    ) -> Result<(), Ended> {
        let lost = |_| Ended::Lost(None);
        match frame {
            ServerFrame::Welcome {
                session,
                nick,
                instance,
                connected_since,
                ..
            } => {
                *welcomed = true;
                backoff.reset();
                self.session = Some(session);
                if let Some(want) = self.config.nick.clone().filter(|w| *w != nick) {
                    conn.send_frame(&ClientFrame::Nick { nick: want })
                        .await
                        .map_err(lost)?;
                }
                let record = ConnectionRecord {
                    instance,
                    nick,
                    connected_since,
                    reconnect_took: self.lost_at.take().map(|t| t.elapsed()),
                    truncated: false,
                };
                lock(&self.stats).connections.push(record.clone());
                self.emit(Event::Connected(record));
                self.flush(conn, false).await.map_err(lost)?;
            }
            ServerFrame::History { chats, truncated, .. } => {
                if truncated {
                    if let Some(last) = lock(&self.stats).connections.last_mut() {
                        last.truncated = true;
                    }
                }
                self.deliver(chats, true);
            }
            ServerFrame::Chat { chats } => self.deliver(chats, false),
            ServerFrame::Ack { cid, id } => {
                let before = self.outbox.len();
                self.outbox.retain(|p| p.cid != cid);
                {
                    let mut stats = lock(&self.stats);
                    stats.pending = self.outbox.len();
                    if self.outbox.len() < before {
                        stats.acked += 1;
                    }
                }
                self.emit(Event::Acked { cid, id });
            }
            ServerFrame::Error { code, .. } => {
                lock(&self.stats).refused.push(code);
                self.emit(Event::Refused(code));
            }
            ServerFrame::Presence { .. } => {}
        }
        Ok(())
    }

    fn deliver(&mut self, chats: Vec<Chat>, history: bool) {
        let room = self.config.connect.room.clone();
        let connection = lock(&self.stats).connections.len().saturating_sub(1);
        for chat in chats {
            if room.as_ref().is_some_and(|r| *r != chat.room) {
                continue;
            }
            let Some(id) = chat.stream_id() else {
                continue;
            };
            if let Some(log) = &self.config.receipts {
                log.lock().unwrap_or_else(|p| p.into_inner()).push(Receipt {
                    id,
                    room: chat.room.clone(),
                    history,
                    connection,
                    at: Instant::now(),
                });
            }
            let verdict = self.dedup.judge(id);
            let mut stats = lock(&self.stats);
            match verdict {
                Verdict::New => {
                    stats.delivered += 1;
                    stats.last_id = Some(chat.id.clone());
                    drop(stats);
                    self.emit(Event::Chat(chat));
                }
                Verdict::Duplicate => stats.duplicates += 1,
                Verdict::OutOfOrder => stats.out_of_order += 1,
            }
        }
    }

    /// Sends outbox entries not yet sent on this connection, and with `stale`
    /// also those unacked for `resend_after` (lost, refused or unavailable).
    async fn flush(&mut self, conn: &mut Connection, stale: bool) -> Result<(), crate::client::ClientError> {
        let now = Instant::now();
        let resend_after = self.config.resend_after;
        for pending in &mut self.outbox {
            let due = match pending.sent_at {
                None => true,
                Some(at) => stale && now.duration_since(at) >= resend_after,
            };
            if due {
                conn.send_chat(&pending.body, Some(&pending.cid)).await?;
                pending.sent_at = Some(now);
            }
        }
        Ok(())
    }
}

/// A uniform delay in `[0, window]`.
fn jitter(window: Duration) -> Duration {
    let ms = window.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StreamId {
        s.parse().unwrap()
    }

    #[test]
    fn dedup_yields_increasing_ids_once_and_classifies_the_rest() {
        let mut d = Dedup::default();
        assert_eq!(d.judge(id("5-0")), Verdict::New);
        assert_eq!(d.judge(id("10-0")), Verdict::New);
        assert_eq!(d.judge(id("5-0")), Verdict::Duplicate);
        assert_eq!(d.judge(id("10-0")), Verdict::Duplicate);
        assert_eq!(d.judge(id("7-0")), Verdict::OutOfOrder);
        assert_eq!(d.judge(id("10-1")), Verdict::New);
    }

    #[test]
    fn dedup_memory_stays_bounded() {
        let mut d = Dedup::default();
        for ms in 1..=(Dedup::WINDOW as u64 * 2) {
            assert_eq!(d.judge(StreamId { ms, seq: 0 }), Verdict::New);
        }
        assert_eq!(d.recent.len(), Dedup::WINDOW);
        assert_eq!(d.judge(StreamId { ms: 1, seq: 0 }), Verdict::Duplicate);
    }

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;

    fn chat(id: &str, body: &str) -> serde_json::Value {
        serde_json::json!({"id": id, "room": "r", "nick": "n", "body": body, "ts": 1})
    }

    /// Serves two connections: the first welcomes with session `s1`, replays
    /// `1-0`, and closes with 1013 once it has seen the client's send; the second
    /// replays `1-0` again plus `2-0`, acks the re-sent cid and stays open.
    /// Returns each connection's request URI and the client frames it got.
    async fn scripted_server(listener: TcpListener) -> Vec<(String, Vec<String>)> {
        let mut seen = Vec::new();
        for round in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut uri = String::new();
            #[allow(clippy::result_large_err)] // tungstenite's callback signature
            let callback = |req: &Request, mut resp: Response| {
                uri = req.uri().to_string();
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wsmesh.v1"));
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
            let welcome = serde_json::json!({"type": "welcome", "session": "s1", "nick": "n",
                "room": "r", "instance": format!("i{round}"), "connected_since": 7});
            ws.send(Message::text(welcome.to_string())).await.unwrap();
            let chats = if round == 0 {
                vec![chat("1-0", "a")]
            } else {
                vec![chat("1-0", "a"), chat("2-0", "b")]
            };
            let history = serde_json::json!({"type": "history", "room": "r", "chats": chats});
            ws.send(Message::text(history.to_string())).await.unwrap();
            let mut got = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                // The client's pings (and the close) are not part of the script.
                let Message::Text(t) = message else { continue };
                got.push(t.to_string());
                let frame: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if frame["type"] != "send" {
                    continue;
                }
                if round == 0 {
                    let close = CloseFrame {
                        code: 1013.into(),
                        reason: "slow".into(),
                    };
                    ws.close(Some(close)).await.unwrap();
                    while ws.next().await.is_some() {}
                    break;
                }
                let ack = serde_json::json!({"type": "ack", "cid": frame["cid"], "id": "3-0"});
                ws.send(Message::text(ack.to_string())).await.unwrap();
                let live = serde_json::json!({"type": "chat", "chats": [chat("3-0", "mine")]});
                ws.send(Message::text(live.to_string())).await.unwrap();
                seen.push((uri.clone(), got.clone()));
                return seen;
            }
            seen.push((uri.clone(), got));
        }
        seen
    }

    #[tokio::test]
    async fn reconnects_after_1013_resuming_with_since_and_session_and_resends_the_outbox() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(scripted_server(listener));
        let connect = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws"))
            .unwrap()
            .room("r");
        let mut config = ResilientConfig::new(connect);
        config.nick = Some("ana".into());
        config.restart_jitter = Duration::from_millis(20);
        let mut client = ResilientClient::spawn(config);
        let limit = Duration::from_secs(10);
        assert_eq!(client.next_chat(limit).await.map(|c| c.body), Some("a".into()));
        let cid = client.send("mine");
        let bodies: Vec<String> = client.chats(2, limit).await.into_iter().map(|c| c.body).collect();
        assert_eq!(
            bodies,
            ["b", "mine"],
            "1-0 replayed again must not be yielded twice"
        );

        let rounds = server.await.unwrap();
        assert_eq!(rounds.len(), 2);
        assert_eq!(rounds[0].0, "/ws?room=r");
        assert_eq!(rounds[1].0, "/ws?room=r&since=1-0&session=s1");
        let nick = r#"{"type":"nick","nick":"ana"}"#;
        let send = format!(r#"{{"type":"send","body":"mine","cid":"{cid}"}}"#);
        assert_eq!(rounds[0].1, [nick.to_string(), send.clone()]);
        assert_eq!(
            rounds[1].1,
            [nick.to_string(), send],
            "same cid re-sent after reconnect"
        );

        let stats = client.stats();
        assert_eq!((stats.duplicates, stats.acked, stats.pending), (1, 1, 0));
        let instances: Vec<&str> = stats.connections.iter().map(|c| c.instance.as_str()).collect();
        assert_eq!(instances, ["i0", "i1"]);
        assert!(stats.connections[1].reconnect_took.is_some());
    }

    #[test]
    fn restart_jitter_stays_in_its_window() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
