//! The Redis contract between the app, which writes chats, and the
//! subscriber, which reads them: the key and channel names, the scripts
//! that store and commit (publish) a chat, the reads that stop at the commit
//! mark, and how a
//! stream entry or a published payload becomes a `Chat`. Both binaries and
//! every test that writes or reads chats go through here, so the two sides
//! cannot drift apart. `target` and `master` know where the master is
//! (one URL, or whatever node the Sentinels name) and follow a failover;
//! `connection` is the app's connection in any mode, a Redis Cluster
//! included.
//!
//! A crate of its own rather than a module of `wsmesh-common` so that the
//! `redis` client stays out of crates that never talk to Redis (the lb).

pub mod connection;
pub mod fence;
pub mod keys;
pub mod master;
pub mod target;

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::streams::{StreamId as StreamEntry, StreamRangeReply};
use redis::{RedisResult, Script};
use wsmesh_common::chat::{is_valid_room, Chat};
use wsmesh_common::stream_id::StreamId;

/// Redis key and channel names, all under one prefix so a shared Redis stays tidy.
///
/// Every name that belongs to a room carries the room as a hash tag
/// (`wsmesh:room:{lobby}`, `wsmesh:cid:{lobby}:c1`, ...): on a Redis Cluster
/// they all map to the slot of the tag, so the store script touches one slot
/// and the channel is published from that slot's master. The same names are
/// used on one Redis and behind Sentinels, so moving to a cluster
/// (`redis-cli --cluster import`) changes no name.
///
/// There is no set of every room: a send would have had to write a key
/// outside the room's slot. A room exists while its stream does; to list
/// the rooms, `SCAN` each master for `<prefix>room:{*}`.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Put in front of every key and channel (`wsmesh:` by default); the app
    /// and its subscriber must use the same one.
    pub prefix: String,
    /// How the store script publishes on the room channels, and so how the
    /// subscriber must subscribe.
    pub pubsub: PubSub,
}

/// Which pub/sub a room channel is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSub {
    /// `PUBLISH` / `SUBSCRIBE`: one Redis, or a master behind Sentinels.
    Plain,
    /// `SPUBLISH` / `SSUBSCRIBE` (Redis 7+): a Redis Cluster, where a
    /// channel lives on the master of its slot only, instead of being
    /// broadcast over the cluster bus to every node.
    Sharded,
}

impl PubSub {
    /// The command the store script publishes with.
    fn publish_command(self) -> &'static str {
        match self {
            PubSub::Plain => "PUBLISH",
            PubSub::Sharded => "SPUBLISH",
        }
    }
}

impl Keys {
    /// Names for one Redis or a Sentinel-watched master (plain pub/sub).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
            pubsub: PubSub::Plain,
        }
    }
    /// Names for wherever `target` points: sharded pub/sub on a cluster.
    pub fn for_target(prefix: impl Into<String>, target: &target::Target) -> Self {
        let pubsub = match target {
            target::Target::Cluster(_) => PubSub::Sharded,
            target::Target::Url(_) | target::Target::Sentinel(_) => PubSub::Plain,
        };
        Keys {
            prefix: prefix.into(),
            pubsub,
        }
    }
    /// Stream holding a room's messages.
    pub fn stream(&self, room: &str) -> String {
        format!("{}room:{}", self.prefix, hash_tag(room))
    }
    /// Remembered `cid` → id, with a TTL.
    pub fn cid(&self, room: &str, cid: &str) -> String {
        format!("{}cid:{}:{}", self.prefix, hash_tag(room), cid)
    }
    /// Hash with a session's nick and connected_since, with a TTL.
    pub fn session(&self, token: &str) -> String {
        format!("{}session:{}", self.prefix, token)
    }
    /// The room's commit mark: the newest id known to be on a replica (or,
    /// with local durability, stored). Published chats and reads stop there.
    pub fn committed(&self, room: &str) -> String {
        format!("{}committed:{}", self.prefix, hash_tag(room))
    }
    /// Hash of a room's online count per instance (field = instance name,
    /// value = `count:expiry_unix_ms`), summed for the cluster-wide presence.
    pub fn presence(&self, room: &str) -> String {
        format!("{}presence:{}", self.prefix, hash_tag(room))
    }
    /// Pub/sub channel a room's committed chats are published on (JSON
    /// `Chat`), one per room so a subscriber hears only the rooms its app
    /// serves. Tagged like the room's keys, so the store script can publish
    /// it (`SPUBLISH` on a cluster) from the room's slot.
    pub fn channel(&self, room: &str) -> String {
        format!("{}chat:{}", self.prefix, hash_tag(room))
    }

    /// The prefix of every room channel: `channel(room)` is this, the
    /// tagged room and nothing else. For a pattern subscription over all
    /// rooms (`PSUBSCRIBE <prefix>*`) in tools and tests.
    pub fn channel_prefix(&self) -> String {
        format!("{}chat:", self.prefix)
    }

    /// The room a channel name from `channel` is for; `None` for any other name.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let tagged = channel.strip_prefix(&self.prefix)?.strip_prefix("chat:")?;
        tagged.strip_prefix('{')?.strip_suffix('}')
    }

    /// The names a room's keys had before they carried the room as a hash
    /// tag (`wsmesh:room:lobby`), stream and commit mark: see `migrate_room`.
    fn untagged(&self, room: &str) -> [String; 2] {
        [
            format!("{}room:{}", self.prefix, room),
            format!("{}committed:{}", self.prefix, room),
        ]
    }
}

/// `{room}`: a Redis Cluster hash tag, so every name that carries it maps to
/// the same slot. Room names cannot contain braces (`is_valid_room`), so the
/// tag is always exactly the room.
fn hash_tag(room: &str) -> String {
    format!("{{{room}}}")
}

/// The commit step, shared by the store and commit scripts: publishes, in id
/// order, every entry of the room's stream after its commit mark up to `id`,
/// then moves the mark to `id`. Each chat is published once (the mark only
/// grows) and never before the caller knows a replica holds it, so a wake-up
/// on the channel only ever names something a failover cannot take back.
/// A missing mark publishes just `id` (a stream from before marks existed).
/// An `id` this node does not hold (the master that stored it died before a
/// replica had it, or the send was stored on another node than this one) is
/// refused with -1, checked before anything else: a mark already above `id`
/// on this node says nothing about `id` itself, and answering "already
/// committed" there would ack an entry that is not in the store. The mark
/// never passes an entry that is not there, so it never sorts above ids
/// this master hands out.
/// `publish` is `PUBLISH`, or `SPUBLISH` on a cluster ([`PubSub`]).
/// The chat JSON gets `ts` spliced in as an integer, since cjson would print
/// a float.
const COMMIT_LUA: &str = r#"
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function id_after(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am > bm or (am == bm and as > bs)
end
local function commit(stream, mark, id, channel, room, publish)
  if #redis.call('XRANGE', stream, id, id) == 0 then return -1 end
  local top = redis.call('GET', mark)
  if top and not id_after(id, top) then return 0 end
  local from = id
  if top then from = '(' .. top end
  local entries = redis.call('XRANGE', stream, from, id)
  for _, entry in ipairs(entries) do
    local chat = {id = entry[1], room = room}
    local f = entry[2]
    for i = 1, #f, 2 do
      if f[i] == 'nick' or f[i] == 'body' or (f[i] == 'cid' and f[i + 1] ~= '') then
        chat[f[i]] = f[i + 1]
      end
    end
    local ms = string.match(entry[1], '^(%d+)-')
    redis.call(publish, channel, '{"ts":' .. ms .. ',' .. string.sub(cjson.encode(chat), 2))
  end
  redis.call('SET', mark, id)
  return #entries
end
"#;

/// Store, atomically: a known cid returns its first id and does nothing
/// else; otherwise XADD (Redis makes the id sort above every id the stream
/// ever had) and remember the cid. Every key is the room's (one slot on a
/// cluster). With ARGV[8] = `1` the chat is
/// committed (published) in the same script; with `0` it stays behind the
/// commit mark, unseen by readers and unpublished, until `commit` runs for
/// it. The entry and its cid key are written by one script, so they reach a
/// replica together or not at all. An empty cid (ARGV[4]) means none: no
/// `cid` field is written and nothing is remembered. A new stream starts
/// with its mark at `0-0`; one written before commit marks existed gets its
/// mark set to its newest entry first.
const STORE_LUA: &str = r#"
local has_cid = ARGV[4] ~= ''
if has_cid then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {existing, 0} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[3], '0-0')
elseif redis.call('EXISTS', KEYS[3]) == 0 then
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  redis.call('SET', KEYS[3], newest[1] and newest[1][1] or '0-0')
end
local fields = {'nick', ARGV[2], 'body', ARGV[3]}
if has_cid then
  table.insert(fields, 'cid')
  table.insert(fields, ARGV[4])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
if has_cid then
  redis.call('SET', KEYS[2], id, 'EX', ARGV[5], 'NX')
end
if ARGV[8] == '1' then commit(KEYS[1], KEYS[3], id, ARGV[7], ARGV[6], ARGV[9]) end
return {id, 1}
"#;

/// Commit one stored chat (and any older uncommitted ones): see `COMMIT_LUA`.
const COMMIT_ONE_LUA: &str = r#"
return commit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"#;

/// A read that stops at the commit mark, so it never serves an entry a
/// failover could still take back: ARGV[1] `after` is `XRANGE (ARGV[2]
/// mark COUNT ARGV[3]`, `last` is `XREVRANGE mark - COUNT ARGV[3]`. Without
/// a mark (a stream from before marks existed) the read is unbounded.
const READ_LUA: &str = r#"#!lua flags=no-writes
local top = redis.call('GET', KEYS[2]) or '+'
if ARGV[1] == 'after' then
  return redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], top, 'COUNT', ARGV[3])
end
return redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', ARGV[3])
"#;

/// Renames a room's stream and commit mark from their names before hash
/// tags (KEYS[1], KEYS[2]) to the tagged ones (KEYS[3], KEYS[4]), unless
/// the tagged stream exists already: the history of a deployment that
/// predates the tags stays readable. Returns 1 when it renamed the stream.
const MIGRATE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[4]) end
return 1
"#;

/// A Lua script sent by EVALSHA. A node that does not know it (`NOSCRIPT`:
/// a master promoted after a failover, a node that took over a slot, a
/// restarted Redis) gets the source by EVAL with the same keys, so on a
/// cluster the retry is routed to the same slot's master, the one that
/// refused. (`SCRIPT LOAD` has no key: on a cluster it goes to every node
/// and fails while any node is down.)
struct LuaScript {
    source: String,
    sha: String,
}

impl LuaScript {
    fn new(source: String) -> LuaScript {
        let sha = Script::new(&source).get_hash().to_string();
        LuaScript { source, sha }
    }

    /// An invocation to which keys and arguments are added.
    fn call(&self) -> Call<'_> {
        Call {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One invocation of a `LuaScript`.
struct Call<'a> {
    script: &'a LuaScript,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    fn key(mut self, key: String) -> Self {
        self.keys.push(key);
        self
    }

    fn arg(mut self, arg: impl redis::ToRedisArgs) -> Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn command(&self, verb: &str, body: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(body).arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }

    async fn invoke<T: redis::FromRedisValue>(&self, conn: &mut impl ConnectionLike) -> RedisResult<T> {
        match self.command("EVALSHA", &self.script.sha).query_async(conn).await {
            Err(e) if is_noscript(&e) => self.command("EVAL", &self.script.source).query_async(conn).await,
            other => other,
        }
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) || e.code() == Some("NOSCRIPT")
}

/// The scripts, hashed once.
static STORE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(format!("{COMMIT_LUA}{STORE_LUA}")));
static COMMIT: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(format!("{COMMIT_LUA}{COMMIT_ONE_LUA}")));
static READ: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(READ_LUA.to_string()));
static MIGRATE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(MIGRATE_LUA.to_string()));

/// Moves a room's history from its names before hash tags to the tagged
/// ones (see `MIGRATE_LUA`); `true` when there was something to move. The
/// app runs it the first time it touches a room, on one Redis or behind
/// Sentinels only: a cluster never had untagged names (and the two names of
/// a key are in different slots there). Remembered cids and presence
/// counts are not moved: they expire within minutes anyway.
pub async fn migrate_room(conn: &mut impl ConnectionLike, keys: &Keys, room: &str) -> RedisResult<bool> {
    let [old_stream, old_mark] = keys.untagged(room);
    let moved: i64 = MIGRATE
        .call()
        .key(old_stream)
        .key(old_mark)
        .key(keys.stream(room))
        .key(keys.committed(room))
        .invoke(conn)
        .await?;
    Ok(moved == 1)
}

/// One chat to store and publish (see `append`).
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Room whose stream gets the chat.
    pub room: &'a str,
    /// Sender's nick, stored with the chat.
    pub nick: &'a str,
    /// Message text, stored in the entry's `body` field.
    pub body: &'a str,
    /// The sender's idempotency key: a cid seen within `cid_ttl` stores nothing again.
    pub cid: Option<&'a str>,
    /// The stream is trimmed to about this many entries (`MAXLEN ~`).
    pub stream_maxlen: u64,
    /// How long a cid is remembered (whole seconds, at least one).
    pub cid_ttl: Duration,
    /// Channel the stored chat is published on: `Keys::channel(room)` for
    /// the room's subscribers to hear; a name nobody subscribes to stores a
    /// chat that pub/sub lost.
    pub channel: &'a str,
}

/// Whether an append stored something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now.
    Stored,
    /// The cid was already known; nothing was stored.
    Duplicate,
}

/// What `append` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The message's stream id (the first one, for a repeated cid).
    pub id: String,
    /// Whether this call stored it or an earlier one with the same cid did.
    pub outcome: Outcome,
}

/// Stores a chat in its room's stream and commits (publishes) it at once,
/// by the one store script (see `STORE_LUA`): visible as soon as the master
/// has it (`redis.durability = "local"`).
pub async fn append(conn: &mut impl ConnectionLike, keys: &Keys, chat: &Append<'_>) -> RedisResult<Appended> {
    store(conn, keys, chat, Commit::Now).await
}

/// Stores a chat without committing it: nobody reads or hears of it until
/// `commit` runs for its id, which the caller does once a replica holds it
/// (`redis.durability = "replicated"`).
pub async fn stage(conn: &mut impl ConnectionLike, keys: &Keys, chat: &Append<'_>) -> RedisResult<Appended> {
    store(conn, keys, chat, Commit::Later).await
}

/// When the store script makes a chat visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// In the store script itself.
    Now,
    /// Only when `commit` runs for it.
    Later,
}

async fn store(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    chat: &Append<'_>,
    commit: Commit,
) -> RedisResult<Appended> {
    let cid = chat.cid.unwrap_or("");
    let (id, new): (String, i64) = STORE
        .call()
        .key(keys.stream(chat.room))
        .key(keys.cid(chat.room, cid))
        .key(keys.committed(chat.room))
        .arg(chat.stream_maxlen)
        .arg(chat.nick)
        .arg(chat.body)
        .arg(cid)
        .arg(chat.cid_ttl.as_secs().max(1))
        .arg(chat.room)
        .arg(chat.channel)
        .arg(u8::from(commit == Commit::Now))
        .arg(keys.pubsub.publish_command())
        .invoke(conn)
        .await?;
    let outcome = if new == 1 {
        Outcome::Stored
    } else {
        Outcome::Duplicate
    };
    Ok(Appended { id, outcome })
}

/// Commits `id` in `room` (see `COMMIT_LUA`): publishes on `channel` every
/// chat up to `id` not yet published, in id order, and returns how many;
/// `None` when this master does not hold `id`. Call it only once a replica
/// holds `id`.
pub async fn commit(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    room: &str,
    id: &str,
    channel: &str,
) -> RedisResult<Option<u64>> {
    let published: i64 = COMMIT
        .call()
        .key(keys.stream(room))
        .key(keys.committed(room))
        .arg(id)
        .arg(channel)
        .arg(room)
        .arg(keys.pubsub.publish_command())
        .invoke(conn)
        .await?;
    Ok(u64::try_from(published).ok())
}

/// The committed entries of `room`'s stream after `after` (exclusive), at
/// most `count`: one page of a replay or a gap fill.
pub async fn range_after(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    room: &str,
    after: StreamId,
    count: usize,
) -> RedisResult<StreamRangeReply> {
    READ.call()
        .key(keys.stream(room))
        .key(keys.committed(room))
        .arg("after")
        .arg(after.to_string())
        .arg(count)
        .invoke(conn)
        .await
}

/// The newest `count` committed entries of `room`'s stream, newest first.
pub async fn newest(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    room: &str,
    count: usize,
) -> RedisResult<StreamRangeReply> {
    READ.call()
        .key(keys.stream(room))
        .key(keys.committed(room))
        .arg("last")
        .arg("")
        .arg(count)
        .invoke(conn)
        .await
}

/// Why a stream entry is not a chat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEntry {
    /// The entry id is not `<ms>-<seq>`.
    #[error("stream entry with a malformed id {0:?}")]
    Id(String),
    /// The entry lacks `nick` or `body`: the store script did not write it.
    #[error("stream entry {0} without nick or body")]
    Fields(String),
}

/// A room's stream entry (`nick`, `body`, optional `cid`) as a `Chat`; `ts`
/// is the id's milliseconds. An empty `cid` field is no cid: the store script
/// treats an empty cid as none, and so does every reader.
pub fn entry_to_chat(room: &str, entry: &StreamEntry) -> Result<Chat, BadEntry> {
    let id: StreamId = entry.id.parse().map_err(|_| BadEntry::Id(entry.id.clone()))?;
    let field = |name: &str| entry.get::<String>(name);
    let (Some(nick), Some(body)) = (field("nick"), field("body")) else {
        return Err(BadEntry::Fields(entry.id.clone()));
    };
    Ok(Chat {
        id: id.to_string(),
        room: room.to_string(),
        nick,
        body,
        ts: id.ms,
        cid: field("cid").filter(|cid| !cid.is_empty()),
    })
}

/// Why a payload on the chat channel is not a chat.
#[derive(Debug, thiserror::Error)]
pub enum BadPayload {
    /// Not the JSON of a `Chat`.
    #[error("not a chat: {0}")]
    Json(#[from] serde_json::Error),
    /// A chat whose id is not a stream id or whose room is not a valid name.
    #[error("chat with a bad id {id:?} or room {room:?}")]
    Fields {
        /// The published id, possibly malformed, for the log line.
        id: String,
        /// The published room, possibly invalid, for the log line.
        room: String,
    },
}

/// A payload published on a room's channel (`Keys::channel`) as a `Chat`, checked as far as a
/// reader relies on it (a stream id, a valid room).
pub fn decode_published(payload: &[u8]) -> Result<Chat, BadPayload> {
    let chat: Chat = serde_json::from_slice(payload)?;
    if chat.stream_id().is_none() || !is_valid_room(&chat.room) {
        return Err(BadPayload::Fields {
            id: chat.id,
            room: chat.room,
        });
    }
    Ok(chat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_the_prefix() {
        let k = Keys::new("wsmesh:");
        for key in [
            k.stream("lobby"),
            k.cid("lobby", "c"),
            k.committed("lobby"),
            k.session("t"),
            k.presence("lobby"),
            k.channel("lobby"),
        ] {
            assert!(key.starts_with("wsmesh:"), "{key}");
        }
    }

    #[test]
    fn each_room_has_its_own_channel_with_the_room_as_hash_tag() {
        let k = Keys::new("wsmesh:");
        assert_eq!(k.channel("lobby"), "wsmesh:chat:{lobby}");
        assert_ne!(k.channel("a"), k.channel("b"));
        assert!(k.channel("a").starts_with(&k.channel_prefix()));
        assert_eq!(k.room_of_channel(&k.channel("dev-1")), Some("dev-1"));
        for other in [
            "wsmesh:chat",
            "wsmesh:chat:lobby",
            "other:chat:{lobby}",
            "wsmesh:room:{x}",
        ] {
            assert_eq!(k.room_of_channel(other), None, "{other}");
        }
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> StreamEntry {
        let mut entry = StreamEntry {
            id: id.into(),
            ..StreamEntry::default()
        };
        for (k, v) in fields {
            entry
                .map
                .insert((*k).into(), redis::Value::BulkString(v.as_bytes().to_vec()));
        }
        entry
    }

    #[test]
    fn stream_entries_become_chats_with_ts_from_the_id() {
        let mut e = entry(
            "1700000000123-4",
            &[("nick", "ana"), ("body", "hi"), ("cid", "c1")],
        );
        let c = entry_to_chat("lobby", &e).unwrap();
        assert_eq!(
            c,
            Chat {
                id: "1700000000123-4".into(),
                room: "lobby".into(),
                nick: "ana".into(),
                body: "hi".into(),
                ts: 1_700_000_000_123,
                cid: Some("c1".into()),
            }
        );
        e.map.remove("body");
        assert_eq!(
            entry_to_chat("lobby", &e),
            Err(BadEntry::Fields("1700000000123-4".into()))
        );
    }

    #[test]
    fn an_empty_or_missing_cid_is_no_cid() {
        let empty = entry("1-0", &[("nick", "ana"), ("body", "hi"), ("cid", "")]);
        assert_eq!(entry_to_chat("lobby", &empty).unwrap().cid, None);
        let missing = entry("1-0", &[("nick", "ana"), ("body", "hi")]);
        assert_eq!(entry_to_chat("lobby", &missing).unwrap().cid, None);
    }

    #[test]
    fn an_entry_with_a_malformed_id_is_refused() {
        let e = entry("x-1", &[("nick", "ana"), ("body", "hi")]);
        assert_eq!(entry_to_chat("lobby", &e), Err(BadEntry::Id("x-1".into())));
    }

    #[test]
    fn published_payloads_need_a_stream_id_and_a_valid_room() {
        assert!(matches!(decode_published(b"not json"), Err(BadPayload::Json(_))));
        for bad in [
            &br#"{"id":"x","room":"r","nick":"n","body":"b","ts":1}"#[..],
            br#"{"id":"1-0","room":"a b","nick":"n","body":"b","ts":1}"#,
        ] {
            assert!(matches!(decode_published(bad), Err(BadPayload::Fields { .. })));
        }
        let ok =
            decode_published(br#"{"id":"1-0","room":"r","nick":"n","body":"b","ts":1,"cid":"c"}"#).unwrap();
        assert_eq!(ok.cid.as_deref(), Some("c"));
    }
}
