//! The Redis side: SUBSCRIBE to the chat channel, reconnect with jittered
//! backoff when the connection is lost, and after every confirmed subscribe
//! (and whenever queued chats were dropped) fill the gap: ask the app how far
//! it is (`GET /internal/cursors`) and read each room's stream after that id.
//! Pub/sub is fire-and-forget, so whatever was published while we were not
//! subscribed exists only in the streams; the fill is what makes the
//! subscriber lossless. Live chats that arrive during a fill are held and
//! queued after it, minus those the fill already read, so per-room order holds.
//!
//! The master is found anew at every subscribe (`redis.url`, or the node the
//! Sentinels name), and a failover the Sentinels announce ends the
//! subscription at once: the next one is on the new master, and its gap fill
//! reads what was published meanwhile from the new master's streams. The
//! subscription is pinged, and every message or answer is noted, so
//! `/healthz` can tell a wedged subscription from a quiet one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::streams::StreamRangeReply;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::time::{timeout, Interval, MissedTickBehavior};
use tracing::{debug, info, warn};
use wsmesh_common::backoff::Backoff;
use wsmesh_common::chat::{is_valid_room, Chat};
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::target::{ResolveError, Switches, Target};
use wsmesh_redis_wire::{entry_to_chat, BadPayload, Keys};

use crate::app_client::AppClient;
use crate::metrics::Metrics;
use crate::queue::{Admission, FillInterrupted, Queue};
use crate::status::{FeedState, Status};

/// Longest wait for a Redis connection or a SUBSCRIBE confirmation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one XRANGE page.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle subscription is pinged, so a silently dead one is
/// noticed (more often when `redis.pubsub_stall` is short).
const PING_EVERY: Duration = Duration::from_secs(5);

/// Why the subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer {0} in time")]
    Timeout(&'static str),
    #[error("the subscription connection closed")]
    Closed,
    #[error("no redis master: {0}")]
    NoMaster(#[from] ResolveError),
    #[error("a sentinel announced a new master")]
    MasterSwitched,
}

/// Why a gap fill did not complete.
#[derive(Debug, thiserror::Error)]
enum FillError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Interrupted(#[from] FillInterrupted),
}

/// Reads what the app missed from the streams into the queue.
pub struct GapFill {
    /// Own connection to the app, for `GET /internal/cursors`.
    app: AppClient,
    /// Where each room's stream is (`Keys::stream`).
    keys: Keys,
    /// Entries per XRANGE page.
    page: usize,
    /// Delays between cursor requests while the app is down.
    retry: Backoff,
    /// Where the chats read go, to be forwarded like live ones.
    queue: Arc<Queue>,
    /// Where fills and refilled chats are counted for `/metrics`.
    metrics: Arc<Metrics>,
}

/// Per room, the newest id a gap fill has queued (or found the app already has).
#[derive(Debug, Default)]
struct Filled {
    /// Room → newest id covered.
    newest: HashMap<String, StreamId>,
}

impl Filled {
    /// Whether `chat` was already queued (or is already covered) by the fill.
    fn covers(&self, chat: &Chat) -> bool {
        match (self.newest.get(&chat.room), chat.stream_id()) {
            (Some(newest), Some(id)) => id <= *newest,
            _ => false,
        }
    }
}

impl GapFill {
    pub fn new(
        app: AppClient,
        keys: Keys,
        page: usize,
        retry: Backoff,
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
    ) -> Self {
        GapFill {
            app,
            keys,
            page: page.max(1),
            retry,
            queue,
            metrics,
        }
    }

    /// One fill: the app's cursors (retried while the app is down), then every
    /// room's stream after its cursor, page by page, into the queue.
    async fn run(&mut self, conn: &mut MultiplexedConnection) -> Result<Filled, FillError> {
        let cursors = loop {
            match self.app.cursors().await {
                Ok(cursors) => break cursors,
                Err(error) => {
                    let delay = self.retry.next_delay();
                    warn!(%error, retry_in = ?delay, "cannot get the app's cursors; gap fill waits");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        self.retry.reset();
        let mut filled = Filled::default();
        let mut total = 0u64;
        for (room, cursor) in &cursors {
            if !is_valid_room(room) {
                warn!(room, "app reported a cursor for an invalid room; skipped");
                continue;
            }
            let Ok(cursor) = cursor.parse::<StreamId>() else {
                warn!(room, cursor, "app reported a malformed cursor; room skipped");
                continue;
            };
            filled.newest.insert(room.clone(), cursor);
            total += self.fill_room(conn, room, cursor, &mut filled).await?;
        }
        self.metrics.chats_refilled.inc_by(total);
        info!(rooms = cursors.len(), chats = total, "gap fill done");
        Ok(filled)
    }

    async fn fill_room(
        &mut self,
        conn: &mut MultiplexedConnection,
        room: &str,
        mut after: StreamId,
        filled: &mut Filled,
    ) -> Result<u64, FillError> {
        let mut count = 0u64;
        loop {
            let page: StreamRangeReply =
                wsmesh_redis_wire::range_after(conn, &self.keys, room, after, self.page).await?;
            let read = page.ids.len();
            for entry in &page.ids {
                let Ok(id) = entry.id.parse::<StreamId>() else {
                    warn!(
                        room,
                        id = entry.id,
                        "stream entry with a malformed id; stopping this room"
                    );
                    return Ok(count);
                };
                after = id;
                match entry_to_chat(room, entry) {
                    Ok(chat) => {
                        self.queue.push_fill(chat).await?;
                        filled.newest.insert(room.to_string(), id);
                        count += 1;
                    }
                    Err(error) => warn!(room, %error, "stream entry skipped"),
                }
            }
            if read < self.page {
                return Ok(count);
            }
        }
    }
}

/// A pub/sub payload as a `Chat`; malformed ones are logged, counted and skipped
/// (a later gap fill recovers them from the stream).
fn decode(payload: &[u8], metrics: &Metrics) -> Option<Chat> {
    let error = match wsmesh_redis_wire::decode_published(payload) {
        Ok(chat) => return Some(chat),
        Err(error) => error,
    };
    metrics.malformed_payloads.inc();
    match error {
        BadPayload::Json(error) => {
            warn!(%error, bytes = payload.len(), "malformed chat on the channel; skipped")
        }
        BadPayload::Fields { id, room } => {
            warn!(%id, %room, "chat with a bad id or room on the channel; skipped")
        }
    }
    None
}

/// Live chats received during a fill, bounded like the queue.
#[derive(Debug)]
struct Held {
    /// Chats in arrival order, queued after the fill.
    chats: Vec<Chat>,
    /// Most chats held: more than the queue could take would overflow it anyway.
    capacity: usize,
    /// Chats were discarded; another fill must follow (the streams have them).
    overflowed: bool,
}

impl Held {
    fn push(&mut self, chat: Chat) {
        if self.chats.len() >= self.capacity {
            self.chats.clear();
            self.overflowed = true;
        }
        if !self.overflowed {
            self.chats.push(chat);
        }
    }
}

/// The subscription loop.
pub struct Feed {
    /// Where the master is; looked up again at every reconnect.
    target: Target,
    /// Failovers announced by the Sentinels; one ends the subscription.
    switches: Switches,
    /// `redis.pubsub_stall`: the subscription must answer a PING within it.
    stall: Duration,
    /// Where the chat channel is (`Keys::channel`).
    keys: Keys,
    /// Run after every subscribe and whenever queued chats were dropped.
    gap: GapFill,
    /// Where live chats go.
    queue: Arc<Queue>,
    /// Where `/healthz` reads whether we are connecting, filling or live.
    status: Arc<Status>,
    /// Where reconnects and malformed payloads are counted for `/metrics`.
    metrics: Arc<Metrics>,
    /// Delays between reconnect attempts.
    reconnect: Backoff,
    /// Whether a subscription existed before (so the next one is a reconnect).
    subscribed_before: bool,
}

impl Feed {
    #[allow(clippy::too_many_arguments)] // each part is distinct; a builder would add nothing
    pub fn new(
        target: Target,
        stall: Duration,
        keys: Keys,
        gap: GapFill,
        queue: Arc<Queue>,
        status: Arc<Status>,
        metrics: Arc<Metrics>,
        reconnect: Backoff,
    ) -> Feed {
        let switches = target.switches(reconnect.clone());
        Feed {
            target,
            switches,
            stall,
            keys,
            gap,
            queue,
            status,
            metrics,
            reconnect,
            subscribed_before: false,
        }
    }

    /// Subscribes, fills, forwards; reconnects forever. Ends only when aborted.
    pub async fn run(mut self) {
        loop {
            let error = self.session().await;
            self.status.set_feed(FeedState::Connecting);
            let delay = self.reconnect.next_delay();
            warn!(%error, retry_in = ?delay, "redis subscription lost; reconnecting");
            tokio::time::sleep(delay).await;
        }
    }

    /// One subscription, from connect to loss.
    async fn session(&mut self) -> FeedError {
        match self.subscribed().await {
            Ok((sink, stream, conn)) => self.serve(sink, stream, conn).await,
            Err(error) => error,
        }
    }

    async fn subscribed(&mut self) -> Result<(PubSubSink, PubSubStream, MultiplexedConnection), FeedError> {
        self.switches.mark_seen();
        let master = self.target.resolve(CONNECT_TIMEOUT).await?;
        let client = master.client;
        let pubsub = timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| FeedError::Timeout("the connection"))??;
        let (mut sink, stream) = pubsub.split();
        let channel = self.keys.channel();
        // Resolves once Redis confirmed: from here on nothing published is missed.
        timeout(CONNECT_TIMEOUT, sink.subscribe(&channel))
            .await
            .map_err(|_| FeedError::Timeout("SUBSCRIBE"))??;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.reconnect.reset();
        if self.subscribed_before {
            self.metrics.redis_reconnects.inc();
        }
        self.subscribed_before = true;
        info!(channel, master = %master.addr, "subscribed");
        self.status.set_master(master.addr);
        Ok((sink, stream, conn))
    }

    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        mut conn: MultiplexedConnection,
    ) -> FeedError {
        let mut ping = tokio::time::interval(PING_EVERY.min(self.stall / 3).max(Duration::from_millis(100)));
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.status.set_feed(FeedState::Filling);
            if let Err(error) = self.fill(&mut conn, &mut stream).await {
                return error;
            }
            self.status.set_feed(FeedState::Live);
            info!("live");
            if let Err(error) = self.live(&mut sink, &mut stream, &mut ping).await {
                return error;
            }
        }
    }

    /// Queues live chats until a fill is needed (`Ok`) or the subscription is lost.
    async fn live(
        &mut self,
        sink: &mut PubSubSink,
        stream: &mut PubSubStream,
        ping: &mut Interval,
    ) -> Result<(), FeedError> {
        ping.reset();
        self.status.pubsub_heard();
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let msg = msg.ok_or(FeedError::Closed)?;
                    self.status.pubsub_heard();
                    let Some(chat) = decode(msg.get_payload_bytes(), &self.metrics) else { continue };
                    if self.queue.push_live(chat) == Admission::FillNeeded {
                        return Ok(());
                    }
                }
                _ = self.queue.fill_wanted() => return Ok(()),
                _ = self.switches.changed() => return Err(FeedError::MasterSwitched),
                _ = ping.tick() => {
                    tokio::select! {
                        pong = timeout(self.stall, sink.ping::<redis::Value>()) => {
                            pong.map_err(|_| FeedError::Timeout("PING"))??;
                            self.status.pubsub_heard();
                        }
                        _ = self.switches.changed() => return Err(FeedError::MasterSwitched),
                    }
                }
            }
        }
    }

    /// Runs gap fills until one completes without losing held chats.
    async fn fill(
        &mut self,
        conn: &mut MultiplexedConnection,
        stream: &mut PubSubStream,
    ) -> Result<(), FeedError> {
        loop {
            self.metrics.gap_fills.inc();
            self.queue.reopen();
            let mut held = Held {
                chats: Vec::new(),
                capacity: self.queue.capacity(),
                overflowed: false,
            };
            let outcome = {
                let work = self.gap.run(conn);
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        outcome = &mut work => break outcome,
                        _ = self.switches.changed() => return Err(FeedError::MasterSwitched),
                        msg = stream.next() => {
                            let msg = msg.ok_or(FeedError::Closed)?;
                            if let Some(chat) = decode(msg.get_payload_bytes(), &self.metrics) {
                                held.push(chat);
                            }
                        }
                    }
                }
            };
            let filled = match outcome {
                Ok(filled) => filled,
                Err(FillError::Redis(error)) => return Err(error.into()),
                Err(FillError::Interrupted(_)) => {
                    debug!("chats dropped during the gap fill; starting over");
                    continue;
                }
            };
            let mut again = held.overflowed;
            for chat in held.chats {
                if filled.covers(&chat) {
                    continue;
                }
                if self.queue.push_live(chat) == Admission::FillNeeded {
                    again = true;
                    break;
                }
            }
            if !again {
                return Ok(());
            }
            debug!("live chats were dropped during the gap fill; filling again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::chat;

    #[test]
    fn decode_skips_malformed_payloads_and_counts_them() {
        let m = Metrics::default();
        assert!(decode(b"not json", &m).is_none());
        assert!(decode(br#"{"id":"x","room":"r","nick":"n","body":"b","ts":1}"#, &m).is_none());
        assert!(decode(br#"{"id":"1-0","room":"a b","nick":"n","body":"b","ts":1}"#, &m).is_none());
        assert_eq!(m.malformed_payloads.get(), 3);
        let ok = decode(
            br#"{"id":"1-0","room":"r","nick":"n","body":"b","ts":1,"cid":"c"}"#,
            &m,
        )
        .unwrap();
        assert_eq!(ok.cid.as_deref(), Some("c"));
    }

    #[test]
    fn filled_covers_only_ids_up_to_the_newest_read() {
        let mut f = Filled::default();
        f.newest.insert("a".into(), "5-0".parse().unwrap());
        assert!(f.covers(&chat("a", "5-0")));
        assert!(f.covers(&chat("a", "4-9")));
        assert!(!f.covers(&chat("a", "5-1")));
        assert!(!f.covers(&chat("b", "1-0")));
    }

    #[test]
    fn held_overflow_discards_and_marks_another_fill() {
        let mut h = Held {
            chats: Vec::new(),
            capacity: 2,
            overflowed: false,
        };
        h.push(chat("a", "1-0"));
        h.push(chat("a", "2-0"));
        assert!(!h.overflowed);
        h.push(chat("a", "3-0"));
        h.push(chat("a", "4-0"));
        assert!(h.overflowed);
        assert!(h.chats.is_empty());
    }
}
