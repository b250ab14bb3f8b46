//! Everything the app keeps in Redis: room streams (append + publish in one
//! script, history reads), remembered cids, sessions and presence counts.
//! One connection to the master (`redis.url`, or whatever node the Sentinels
//! name, followed through failovers), or a Redis Cluster client that sends
//! each room's commands to the master of the room's slot (`redis.cluster`);
//! every command is bounded by `command_timeout`, so a dead Redis turns into
//! an `unavailable` error instead of a hung socket.
//!
//! A room's keys carry the room as a hash tag; a room whose history is
//! still under the names from before the tags is moved to the tagged names
//! the first time this process touches it (one Redis or Sentinels only).
//!
//! With `redis.durability = "replicated"` a send is stored uncommitted on a
//! second connection of its own, `WAIT`ed for until a replica holds it, and
//! only then committed (published, readable, acked); see docs/failover.md,
//! "Redis failover: what holds and why". WAIT blocks the connection it runs
//! on, hence the second one: reads never queue behind a slow replica.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use redis::streams::StreamRangeReply;
use redis::{RedisError, RedisResult};
use wsmesh_common::chat::Chat;
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::connection::{Connection, Unhealthy};
use wsmesh_redis_wire::fence::{Fence, Unconfirmed};
use wsmesh_redis_wire::keys::BadKey;
use wsmesh_redis_wire::master::MasterOptions;
use wsmesh_redis_wire::target::Target;
use wsmesh_redis_wire::{Append, Keys};
/// What an append answers, as the store script reports it.
pub use wsmesh_redis_wire::{Appended, Outcome};

use crate::config::{Durability, RedisConfig};
use crate::metrics::Metrics;

/// Entries read per XRANGE call when replaying after `since`, and the most
/// chats one replay frame holds.
pub const PAGE: usize = 500;

/// A Redis operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or the connection broke.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// Redis did not answer within `command_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered something this code does not understand.
    #[error("unexpected redis reply: {0}")]
    Reply(String),
    /// No replica acknowledged a replicated send within `replica_ack_timeout`.
    #[error("no replica acknowledged the message within {0:?}")]
    NotReplicated(Duration),
    /// The master that stored a replicated send is gone and the one now in
    /// use does not hold it; the client's re-send stores it again.
    #[error("the message {0} is not on the redis master in use")]
    NotOnMaster(String),
    /// The Sentinels do not vouch for the master a replicated send went to
    /// (it is being replaced): the send is not committed; the client's
    /// re-send goes to the master that follows.
    #[error("not committed: {0}")]
    Unconfirmed(#[from] Unconfirmed),
    /// The `[redis]` keys do not say where the master is.
    #[error("redis.{}", .0.reason)]
    Target(#[from] BadKey),
}

impl From<Unhealthy> for StoreError {
    fn from(e: Unhealthy) -> StoreError {
        match e {
            Unhealthy::Redis(e) => StoreError::Redis(e),
            Unhealthy::Reply(reply) => StoreError::Reply(reply),
        }
    }
}

/// A replay of a room's stream after `since`, read one page at a time
/// (`Store::next_page`): a client far behind gets its gap in frames of at
/// most `PAGE` chats, and the app never holds the whole retained stream
/// (up to `stream_maxlen` × 4 KiB bodies) for one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Put into each chat read: stream entries do not carry their room.
    room: String,
    /// The id the replay reads after: `since`, or `0-0` when `since` is not
    /// an id this room's stream ever reached (see `Store::replay`).
    pub from: StreamId,
    /// Read after this id (exclusive).
    next: StreamId,
    /// Pages still allowed; the stream holds about `stream_maxlen` entries.
    pages_left: usize,
    /// The last page read was not full: the replay reached the stream's end.
    done: bool,
    /// Some messages after `since` were already trimmed away.
    pub truncated: bool,
}

/// A client's session as kept in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What the client presents to resume the session: 128 random bits, hex.
    pub token: String,
    /// The nick the session's chats are sent under; kept across reconnects.
    pub nick: String,
    /// Unix ms of the session's first connect, sent in every `welcome`: the
    /// same value after a reconnect shows the session was resumed.
    pub connected_since: u64,
}

/// The app's Redis access; cheap to clone, clones share one connection.
#[derive(Clone)]
pub struct Store {
    /// The master's (or cluster's) connection, cloned per call (it multiplexes).
    conn: Connection,
    /// With replicated durability, the connection sends are stored and
    /// `WAIT`ed on (WAIT holds up everything behind it on its connection).
    writer: Option<Connection>,
    /// Rooms whose keys from before hash tags were moved (or found absent)
    /// by this process; `None` on a cluster, which never had them.
    migrated: Option<Arc<Mutex<HashSet<String>>>>,
    /// With replicated durability and Sentinels, asked after the `WAIT`
    /// whether the writer's master is still the master (see `Fence`).
    fence: Option<Fence>,
    /// Names of the keys and the channel, under the configured prefix.
    keys: Keys,
    /// `[redis]` settings: stream length, cid and session TTLs, command timeout.
    cfg: RedisConfig,
    /// Where every Redis call's latency is recorded for `/metrics`.
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.keys.prefix)
            .finish()
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn is_token(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How long the Sentinels get to vouch for the master after a replicated
/// send's `WAIT` (one round trip on a LAN; a silent Sentinel is then left
/// out for a while).
const FENCE_LIMIT: Duration = Duration::from_millis(500);

impl Store {
    /// Prepares the connection without connecting: the app starts (and says
    /// "unavailable") while Redis is down, and connects when it comes back.
    pub fn new(cfg: &RedisConfig, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        // The config was checked: `url` and `sentinels` are not both set.
        let target = cfg.target(false)?;
        let options = MasterOptions {
            connect_timeout: cfg.command_timeout,
            response_timeout: cfg.command_timeout,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
        };
        let writer = match cfg.durability() {
            Durability::Replicated => {
                let options = MasterOptions {
                    response_timeout: cfg.command_timeout + cfg.replica_ack_timeout,
                    ..options
                };
                Some(Connection::new(target.clone(), options)?)
            }
            Durability::Local => None,
        };
        let fence = writer.as_ref().and_then(|_| target.fence(FENCE_LIMIT));
        let migrated = match target {
            Target::Cluster(_) => None,
            Target::Url(_) | Target::Sentinel(_) => Some(Arc::default()),
        };
        let keys = Keys::for_target(cfg.prefix.clone(), &target);
        let conn = Connection::new(target, options)?;
        Ok(Store {
            conn,
            writer,
            fence,
            migrated,
            keys,
            cfg: cfg.clone(),
            metrics,
        })
    }

    /// Runs one Redis call under the command timeout and records its latency.
    async fn timed<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
        self.timed_within(self.cfg.command_timeout, call).await
    }

    /// `timed` with a bound of its own (a `WAIT` may take its timeout).
    async fn timed_within<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = tokio::time::timeout(limit, call).await;
        self.metrics.redis_latency.observe(start.elapsed().as_secs_f64());
        match result {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    }

    /// `host:port` of the Redis master in use; `None` before the Sentinels
    /// named one.
    pub fn master(&self) -> Option<String> {
        self.conn.addr()
    }

    /// Round trip of a PING (on a cluster, of `CLUSTER INFO`, which must
    /// say `cluster_state:ok`), for `/healthz` and the startup log.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let mut c = self.conn.clone();
        let start = Instant::now();
        let checked = tokio::time::timeout(self.cfg.command_timeout, c.check()).await;
        self.metrics.redis_latency.observe(start.elapsed().as_secs_f64());
        checked.map_err(|_| StoreError::Timeout(self.cfg.command_timeout))??;
        Ok(start.elapsed())
    }

    /// Moves `room`'s history from its names before hash tags, once per
    /// process and room (see `wsmesh_redis_wire::migrate_room`). A failed
    /// attempt is tried again at the next touch.
    async fn migrate(&self, room: &str) -> Result<(), StoreError> {
        let Some(migrated) = &self.migrated else {
            return Ok(());
        };
        if migrated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(room)
        {
            return Ok(());
        }
        let mut c = self.conn.clone();
        if self
            .timed(wsmesh_redis_wire::migrate_room(&mut c, &self.keys, room))
            .await?
        {
            tracing::info!(room, "moved the room's history to its hash-tagged keys");
        }
        migrated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(room.to_string());
        Ok(())
    }

    /// Stores and publishes a chat. `local`: by the store script alone
    /// (`wsmesh_redis_wire::append`). `replicated`: stored uncommitted, then
    /// `WAIT 1`, then committed; without a replica's acknowledgement within
    /// `replica_ack_timeout` it is an error (the client re-sends under the
    /// same cid, which commits the stored entry or stores it afresh on a new
    /// master).
    pub async fn append(
        &self,
        room: &str,
        nick: &str,
        body: &str,
        cid: Option<&str>,
    ) -> Result<Appended, StoreError> {
        self.migrate(room).await?;
        let channel = self.keys.channel(room);
        let chat = Append {
            room,
            nick,
            body,
            cid,
            stream_maxlen: self.cfg.stream_maxlen,
            cid_ttl: self.cfg.cid_ttl,
            channel: &channel,
        };
        let Some(writer) = &self.writer else {
            let mut c = self.conn.clone();
            return self
                .timed(wsmesh_redis_wire::append(&mut c, &self.keys, &chat))
                .await;
        };
        let mut w = writer.clone();
        let appended = self
            .timed(wsmesh_redis_wire::stage(&mut w, &self.keys, &chat))
            .await?;
        let ack_timeout = self.cfg.replica_ack_timeout;
        let replicas = self
            .timed_within(
                self.cfg.command_timeout + ack_timeout,
                w.wait_for_replica(&self.keys.stream(room), ack_timeout),
            )
            .await?;
        if replicas == 0 {
            return Err(StoreError::NotReplicated(ack_timeout));
        }
        if let Some(fence) = &self.fence {
            let addr = w.addr().unwrap_or_default();
            fence.confirm(&addr).await?;
        }
        let mut c = self.conn.clone();
        let committed = self
            .timed(wsmesh_redis_wire::commit(
                &mut c,
                &self.keys,
                room,
                &appended.id,
                &channel,
            ))
            .await?;
        match committed {
            Some(_) => Ok(appended),
            None => Err(StoreError::NotOnMaster(appended.id)),
        }
    }

    /// The last `limit` chats of a room, oldest first.
    pub async fn last(&self, room: &str, limit: usize) -> Result<Vec<Chat>, StoreError> {
        self.migrate(room).await?;
        let mut c = self.conn.clone();
        let reply: StreamRangeReply = self
            .timed(wsmesh_redis_wire::newest(&mut c, &self.keys, room, limit))
            .await?;
        let mut chats = to_chats(room, reply);
        chats.reverse();
        Ok(chats)
    }

    /// Starts a replay of every retained chat after `since` (exclusive);
    /// whether entries after `since` were trimmed away is known at once.
    ///
    /// A `since` beyond every id the room's stream ever had cannot have come
    /// from this store: its entry was lost with a master (or the client made
    /// it up). Ids handed out from now on could sort below it, so the replay
    /// starts at the oldest retained entry instead, marked `truncated`, and
    /// the client deduplicates by id.
    pub async fn replay(&self, room: &str, since: StreamId) -> Result<Replay, StoreError> {
        self.migrate(room).await?;
        let (from, truncated) = self.resume_point(&self.keys.stream(room), since).await?;
        Ok(Replay {
            room: room.to_string(),
            from,
            next: from,
            pages_left: self.cfg.stream_maxlen as usize / PAGE + 4,
            done: false,
            truncated,
        })
    }

    /// The replay's next page, oldest first, at most `PAGE` chats; `None`
    /// once it is complete.
    pub async fn next_page(&self, replay: &mut Replay) -> Result<Option<Vec<Chat>>, StoreError> {
        if replay.done || replay.pages_left == 0 {
            return Ok(None);
        }
        let mut c = self.conn.clone();
        let reply: StreamRangeReply = self
            .timed(wsmesh_redis_wire::range_after(
                &mut c,
                &self.keys,
                &replay.room,
                replay.next,
                PAGE,
            ))
            .await?;
        let page = to_chats(&replay.room, reply);
        replay.pages_left -= 1;
        replay.done = page.len() < PAGE;
        if let Some(last) = page.last().and_then(Chat::stream_id) {
            replay.next = last;
        }
        Ok((!page.is_empty()).then_some(page))
    }

    /// Where a replay after `since` starts, and whether it is `truncated`:
    /// entries after `since` may have been trimmed away (entries were removed
    /// and `since` is older than the first one retained, or older than the
    /// newest deleted one), or `since` lies beyond the stream's last
    /// generated id and the replay starts at `0-0`. XINFO STREAM fields of
    /// Redis 7+.
    async fn resume_point(&self, key: &str, since: StreamId) -> Result<(StreamId, bool), StoreError> {
        let mut c = self.conn.clone();
        let exists: bool = self
            .timed(redis::cmd("EXISTS").arg(key).query_async(&mut c))
            .await?;
        if !exists {
            return Ok((StreamId::ZERO, false));
        }
        let info: HashMap<String, redis::Value> = self
            .timed(redis::cmd("XINFO").arg("STREAM").arg(key).query_async(&mut c))
            .await?;
        let int = |name: &str| {
            info.get(name)
                .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
        };
        let id = |name: &str| {
            info.get(name)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .and_then(|s| s.parse::<StreamId>().ok())
        };
        if id("last-generated-id").is_some_and(|last| since > last) {
            return Ok((StreamId::ZERO, true));
        }
        let removed =
            matches!((int("entries-added"), int("length")), (Some(added), Some(len)) if added > len);
        let before_first = id("recorded-first-entry-id").is_some_and(|first| since < first);
        let before_deleted = id("max-deleted-entry-id").is_some_and(|deleted| since < deleted);
        Ok((since, removed && before_first || before_deleted))
    }

    /// The session for `token`, refreshed; a new one when the token is
    /// absent, malformed or unknown.
    pub async fn session(&self, token: Option<&str>) -> Result<Session, StoreError> {
        let ttl = self.cfg.session_ttl.as_secs().max(1);
        let mut c = self.conn.clone();
        if let Some(token) = token.filter(|t| is_token(t)) {
            let key = self.keys.session(token);
            let (fields, _): (HashMap<String, String>, i64) = self
                .timed(
                    redis::pipe()
                        .atomic()
                        .hgetall(&key)
                        .expire(&key, ttl as i64)
                        .query_async(&mut c),
                )
                .await?;
            let since = fields.get("connected_since").and_then(|s| s.parse().ok());
            if let (Some(nick), Some(connected_since)) = (fields.get("nick"), since) {
                return Ok(Session {
                    token: token.to_string(),
                    nick: nick.clone(),
                    connected_since,
                });
            }
        }
        let session = Session {
            token: format!("{:032x}", rand::random::<u128>()),
            nick: format!("guest-{:04}", rand::rng().random_range(0..10_000)),
            connected_since: now_ms(),
        };
        let key = self.keys.session(&session.token);
        let _: () = self
            .timed(
                redis::pipe()
                    .atomic()
                    .hset_multiple(
                        &key,
                        &[
                            ("nick", session.nick.clone()),
                            ("connected_since", session.connected_since.to_string()),
                        ],
                    )
                    .ignore()
                    .expire(&key, ttl as i64)
                    .ignore()
                    .query_async(&mut c),
            )
            .await?;
        Ok(session)
    }

    /// Changes a session's nick and refreshes its TTL.
    pub async fn set_nick(&self, token: &str, nick: &str) -> Result<(), StoreError> {
        let key = self.keys.session(token);
        let ttl = self.cfg.session_ttl.as_secs().max(1) as i64;
        let mut c = self.conn.clone();
        self.timed(
            redis::pipe()
                .atomic()
                .hset(&key, "nick", nick)
                .ignore()
                .expire(&key, ttl)
                .ignore()
                .query_async(&mut c),
        )
        .await
    }

    /// Records this instance's count for `room` (valid until `valid_for` from
    /// now) and returns the cluster-wide sum of unexpired counts.
    pub async fn presence(
        &self,
        room: &str,
        instance: &str,
        count: u64,
        valid_for: Duration,
    ) -> Result<u64, StoreError> {
        let key = self.keys.presence(room);
        let now = now_ms();
        let mut pipe = redis::pipe();
        if count == 0 {
            pipe.hdel(&key, instance).ignore();
        } else {
            let expiry = now + valid_for.as_millis() as u64;
            pipe.hset(&key, instance, format!("{count}:{expiry}")).ignore();
            pipe.pexpire(&key, valid_for.as_millis() as i64).ignore();
        }
        pipe.hgetall(&key);
        let mut c = self.conn.clone();
        let (fields,): (HashMap<String, String>,) = self.timed(pipe.query_async(&mut c)).await?;
        Ok(sum_presence(fields.values().map(String::as_str), now))
    }
}

/// Sums `count:expiry_ms` values that have not expired at `now`; malformed
/// values count as nothing.
fn sum_presence<'a>(values: impl Iterator<Item = &'a str>, now: u64) -> u64 {
    values
        .filter_map(|v| {
            let (count, expiry) = v.split_once(':')?;
            let (count, expiry) = (count.parse::<u64>().ok()?, expiry.parse::<u64>().ok()?);
            (expiry > now).then_some(count)
        })
        .sum()
}

/// Turns stream entries into chats; entries that are not chats are skipped
/// (they were not written by the store script).
fn to_chats(room: &str, reply: StreamRangeReply) -> Vec<Chat> {
    reply
        .ids
        .iter()
        .filter_map(|e| wsmesh_redis_wire::entry_to_chat(room, e).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_sums_only_unexpired_well_formed_counts() {
        let values = ["3:2000", "4:999", "x:5000", "2:3000", "7"];
        assert_eq!(sum_presence(values.into_iter(), 1000), 5);
    }

    #[test]
    fn tokens_are_32_hex_chars() {
        assert!(is_token(&format!("{:032x}", 7u128)));
        assert!(!is_token("abc"));
        assert!(!is_token(&"g".repeat(32)));
    }
}
