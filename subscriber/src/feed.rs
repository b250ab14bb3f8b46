//! The Redis side: SUBSCRIBE to the channel of every room the app has
//! sockets in (`interest`), reconnect with jittered backoff when the
//! connection is lost, and fill gaps from the streams (`fill`): of every
//! room after each connect and whenever queued chats were dropped, of the
//! new rooms after their SUBSCRIBE. Only then is the app's room set
//! confirmed, so a socket that waited for the confirmation reads history
//! that joins up with what arrives live. A room the app no longer names is
//! unsubscribed after `redis.unsubscribe_grace` (`rooms`).
//!
//! The master is found anew at every connect (`redis.url`, or the node the
//! Sentinels name), and a failover the Sentinels announce ends the
//! subscription at once: the next one is on the new master, subscribes
//! every room again, and its gap fill reads what was published meanwhile
//! from the new master's streams. On a Redis Cluster the rooms are
//! subscribed by sharded pub/sub, each on its slot's master (`pubsub`); a
//! room whose slot moved is subscribed again and filled on its own. The subscription is pinged, and every
//! message or answer is noted, so `/healthz` can tell a wedged
//! subscription from a quiet one.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisError;
use tokio::time::{timeout, Instant, Interval, MissedTickBehavior};
use tracing::{debug, info, warn};
use wsmesh_common::backoff::Backoff;
use wsmesh_common::chat::Chat;
use wsmesh_common::events::InterestVersion;
use wsmesh_redis_wire::target::{Switches, Target};
use wsmesh_redis_wire::{BadPayload, Keys};

use crate::fill::{FillError, GapFill, Held, Scope};
use crate::interest::FeedSide;
use crate::metrics::Metrics;
use crate::pubsub::{self, ConnectError, Event, Events, Reads, Sink};
use crate::queue::{Admission, Queue, QueueState};
use crate::rooms::Rooms;
use crate::status::{FeedState, Status};

/// Longest wait for a Redis connection or a (UN)SUBSCRIBE confirmation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one XRANGE page.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle subscription is pinged, so a silently dead one is
/// noticed (more often when `redis.pubsub_stall` is short).
const PING_EVERY: Duration = Duration::from_secs(5);
/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE.
const CHANNELS_PER_COMMAND: usize = 500;

/// Why the subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer {0} in time")]
    Timeout(&'static str),
    #[error("the subscription connection closed")]
    Closed,
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("a sentinel announced a new master")]
    MasterSwitched,
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

/// The subscription loop.
pub struct Feed {
    /// Where the master is; looked up again at every reconnect.
    target: Target,
    /// Failovers announced by the Sentinels; one ends the subscription.
    switches: Switches,
    /// `redis.pubsub_stall`: the subscription must answer a PING within it.
    stall: Duration,
    /// Where the room channels are (`Keys::channel`).
    keys: Keys,
    /// Run after every subscribe and whenever queued chats were dropped.
    gap: GapFill,
    /// Where live chats go.
    queue: Arc<Queue>,
    /// Where `/healthz` reads whether we are connecting, filling or live.
    status: Arc<Status>,
    /// Where reconnects, rooms and malformed payloads are counted for `/metrics`.
    metrics: Arc<Metrics>,
    /// Delays between reconnect attempts.
    reconnect: Backoff,
    /// Whether a subscription existed before (so the next one is a reconnect).
    subscribed_before: bool,
    /// The app's room set in, the confirmations out.
    interest: FeedSide,
    /// The room channels subscribed on the current connection.
    rooms: Rooms,
    /// The newest room set whose rooms are all subscribed now; confirmed
    /// to the app once a fill that started after those SUBSCRIBEs is done.
    in_force: Option<InterestVersion>,
    /// The poller stopped (the process is stopping): the room set stays as it is.
    poller_gone: bool,
    /// Rooms whose subscription the server ended while a fill ran (their
    /// slot moved): subscribed again and filled once it is over.
    dropped: Vec<String>,
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
        interest: FeedSide,
        grace: Duration,
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
            interest,
            rooms: Rooms::new(grace),
            in_force: None,
            poller_gone: false,
            dropped: Vec::new(),
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
            Ok(connected) => {
                self.serve(connected.sink, connected.events, connected.reads)
                    .await
            }
            Err(error) => error,
        }
    }

    /// Connects and SUBSCRIBEs every room of the app's newest set.
    async fn subscribed(&mut self) -> Result<pubsub::Connected, FeedError> {
        self.switches.mark_seen();
        self.rooms.clear();
        self.dropped.clear();
        self.in_force = None;
        self.metrics.subscribed_rooms.set(0);
        let mut connected = pubsub::connect(&self.target, CONNECT_TIMEOUT, COMMAND_TIMEOUT).await?;
        let wanted = self.interest.interest.borrow_and_update().clone();
        if let Some(wanted) = wanted {
            let new = self.rooms.want(&wanted.rooms, Instant::now());
            // Resolves once Redis confirmed: from here on nothing published is missed.
            self.subscribe(&mut connected.sink, &new).await?;
            self.in_force = Some(wanted.at);
        }
        self.reconnect.reset();
        if self.subscribed_before {
            self.metrics.redis_reconnects.inc();
        }
        self.subscribed_before = true;
        info!(rooms = self.rooms.len(), master = %connected.addr, "subscribed");
        self.status.set_master(connected.addr.clone());
        Ok(connected)
    }

    /// SUBSCRIBEs the channels of `rooms` and waits for Redis to acknowledge each.
    async fn subscribe(&mut self, sink: &mut Sink, rooms: &[String]) -> Result<(), FeedError> {
        for part in rooms.chunks(CHANNELS_PER_COMMAND) {
            let channels: Vec<String> = part.iter().map(|room| self.keys.channel(room)).collect();
            timeout(CONNECT_TIMEOUT, sink.subscribe(&channels))
                .await
                .map_err(|_| FeedError::Timeout("SUBSCRIBE"))??;
            self.rooms.subscribed(part);
            self.metrics.room_subscribes.inc_by(part.len() as u64);
        }
        self.metrics.subscribed_rooms.set(self.rooms.len() as i64);
        Ok(())
    }

    /// UNSUBSCRIBEs the rooms whose grace is over.
    async fn unsubscribe_due(&mut self, sink: &mut Sink) -> Result<(), FeedError> {
        let due = self.rooms.due(Instant::now());
        for part in due.chunks(CHANNELS_PER_COMMAND) {
            let channels: Vec<String> = part.iter().map(|room| self.keys.channel(room)).collect();
            timeout(CONNECT_TIMEOUT, sink.unsubscribe(&channels))
                .await
                .map_err(|_| FeedError::Timeout("UNSUBSCRIBE"))??;
            self.metrics.room_unsubscribes.inc_by(part.len() as u64);
            debug!(rooms = ?part, "unsubscribed after the grace");
        }
        self.metrics.subscribed_rooms.set(self.rooms.len() as i64);
        Ok(())
    }

    /// Takes in the app's newest room set: SUBSCRIBEs its new rooms (to be
    /// filled before the set is confirmed) and starts the grace of the
    /// rooms it left out. The new rooms to fill, if any.
    async fn follow_interest(&mut self, sink: &mut Sink) -> Result<Option<Scope>, FeedError> {
        let Some(wanted) = self.interest.interest.borrow_and_update().clone() else {
            return Ok(None);
        };
        let new = self.rooms.want(&wanted.rooms, Instant::now());
        self.subscribe(sink, &new).await?;
        self.in_force = Some(wanted.at);
        if new.is_empty() {
            self.confirm();
            return Ok(None);
        }
        Ok(Some(Scope::Rooms(new)))
    }

    /// Notes a channel whose subscription the server ended: when it is a
    /// room still held (not one this feed unsubscribed), its slot moved.
    fn note_dropped(&mut self, channel: &str) {
        let Some(room) = self.keys.room_of_channel(channel) else {
            return;
        };
        if self.rooms.holds(room) && !self.dropped.iter().any(|r| r == room) {
            info!(room, "the room's slot moved; subscribing it again");
            self.dropped.push(room.to_string());
        }
    }

    /// SUBSCRIBEs the dropped rooms again (the cluster client sends each to
    /// its slot's master now); the rooms to fill, if any.
    async fn resubscribe_dropped(&mut self, sink: &mut Sink) -> Result<Option<Scope>, FeedError> {
        if self.dropped.is_empty() {
            return Ok(None);
        }
        let rooms = std::mem::take(&mut self.dropped);
        self.subscribe(sink, &rooms).await?;
        Ok(Some(Scope::Rooms(rooms)))
    }

    /// Tells the app (through the poller) which room set is in force.
    fn confirm(&self) {
        self.interest.confirmed.send_replace(self.in_force);
    }

    async fn serve(&mut self, mut sink: Sink, mut stream: Events, mut conn: Reads) -> FeedError {
        let mut ping = tokio::time::interval(PING_EVERY.min(self.stall / 3).max(Duration::from_millis(100)));
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut scope = Scope::All;
        loop {
            if scope == Scope::All {
                self.status.set_feed(FeedState::Filling);
            }
            if let Err(error) = self.fill(&mut conn, &mut stream, scope).await {
                return error;
            }
            self.confirm();
            if self.status.feed() != FeedState::Live {
                self.status.set_feed(FeedState::Live);
                info!("live");
            }
            scope = match self.live(&mut sink, &mut stream, &mut ping).await {
                Ok(scope) => scope,
                Err(error) => return error,
            };
        }
    }

    /// Queues live chats and follows the app's room set until a fill is
    /// needed (`Ok`, of what) or the subscription is lost.
    async fn live(
        &mut self,
        sink: &mut Sink,
        stream: &mut Events,
        ping: &mut Interval,
    ) -> Result<Scope, FeedError> {
        ping.reset();
        self.status.pubsub_heard();
        if let Some(scope) = self.resubscribe_dropped(sink).await? {
            return Ok(scope);
        }
        loop {
            let due = self.rooms.next_due();
            tokio::select! {
                event = stream.next() => {
                    self.status.pubsub_heard();
                    let payload = match event.ok_or(FeedError::Closed)? {
                        Event::Message(payload) => payload,
                        Event::Dropped(channel) => {
                            self.note_dropped(&channel);
                            match self.resubscribe_dropped(sink).await? {
                                Some(scope) => return Ok(scope),
                                None => continue,
                            }
                        }
                        Event::Broken => return Err(FeedError::Closed),
                    };
                    let Some(chat) = decode(&payload, &self.metrics) else { continue };
                    if self.queue.push_live(chat) == Admission::FillNeeded {
                        return Ok(Scope::All);
                    }
                }
                _ = self.queue.fill_wanted() => return Ok(Scope::All),
                _ = self.switches.changed() => return Err(FeedError::MasterSwitched),
                changed = self.interest.interest.changed(), if !self.poller_gone => {
                    if changed.is_err() {
                        self.poller_gone = true;
                        continue;
                    }
                    if let Some(scope) = self.follow_interest(sink).await? {
                        return Ok(scope);
                    }
                }
                _ = until(due) => self.unsubscribe_due(sink).await?,
                _ = ping.tick() => {
                    tokio::select! {
                        pong = timeout(self.stall, sink.ping()) => {
                            pong.map_err(|_| FeedError::Timeout("PING"))??;
                            self.status.pubsub_heard();
                        }
                        _ = self.switches.changed() => return Err(FeedError::MasterSwitched),
                    }
                }
            }
        }
    }

    /// Runs gap fills of `scope` until one completes without losing held
    /// chats; a fill that has to start over covers every room.
    async fn fill(
        &mut self,
        conn: &mut Reads,
        stream: &mut Events,
        mut scope: Scope,
    ) -> Result<(), FeedError> {
        loop {
            // Chats were dropped from the queue (a refused post, an
            // overflow) and a fill of every room was asked for: a fill of
            // only new rooms, started first because the room set changed,
            // must not reopen the queue without it.
            if self.queue.state() == QueueState::AwaitingFill {
                scope = Scope::All;
            }
            self.metrics.gap_fills.inc();
            self.queue.reopen();
            let mut held = Held::new(self.queue.capacity());
            let mut dropped = Vec::new();
            let outcome = {
                let work = self.gap.run(conn, &scope);
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        outcome = &mut work => break outcome,
                        _ = self.switches.changed() => return Err(FeedError::MasterSwitched),
                        event = stream.next() => match event.ok_or(FeedError::Closed)? {
                            Event::Message(payload) => {
                                if let Some(chat) = decode(&payload, &self.metrics) {
                                    held.push(chat);
                                }
                            }
                            Event::Dropped(channel) => dropped.push(channel),
                            Event::Broken => return Err(FeedError::Closed),
                        }
                    }
                }
            };
            for channel in dropped {
                self.note_dropped(&channel);
            }
            scope = Scope::All;
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

/// Resolves at `due`; never without one.
async fn until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
