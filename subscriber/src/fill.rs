//! The gap fill: ask the app how far it is (`GET /internal/cursors`) and
//! read each room's stream after that id into the queue. Pub/sub is
//! fire-and-forget, so whatever was published while a room's channel was
//! not subscribed exists only in the streams; the fill, run right after a
//! SUBSCRIBE (of every room after a connect, of the new rooms when the
//! app's set grows) and whenever queued chats were dropped, is what makes
//! the subscriber lossless. Live chats that arrive during a fill are held
//! (`Held`) and queued after it, minus those the fill already read
//! (`Filled`), so per-room order holds.

use std::collections::HashMap;
use std::sync::Arc;

use redis::streams::StreamRangeReply;
use redis::RedisError;
use tracing::{info, warn};
use wsmesh_common::backoff::Backoff;
use wsmesh_common::chat::{is_valid_room, Chat};
use wsmesh_common::events::CursorsQuery;
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::{entry_to_chat, Keys};

use crate::app_client::AppClient;
use crate::metrics::Metrics;
use crate::pubsub::Reads;
use crate::queue::{FillInterrupted, Queue};

/// Why a gap fill did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Interrupted(#[from] FillInterrupted),
}

/// Which rooms a fill reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every room the app has a cursor for: after a (re)connect, and after
    /// chats were dropped (which may have been of any room).
    All,
    /// Only these rooms, just subscribed.
    Rooms(Vec<String>),
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
pub struct Filled {
    /// Room → newest id covered.
    newest: HashMap<String, StreamId>,
}

impl Filled {
    /// Whether `chat` was already queued (or is already covered) by the fill.
    pub fn covers(&self, chat: &Chat) -> bool {
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

    /// One fill: the app's cursors for `scope` (retried while the app is
    /// down), then each of those rooms' stream after its cursor, page by
    /// page, into the queue.
    pub async fn run(&mut self, conn: &mut Reads, scope: &Scope) -> Result<Filled, FillError> {
        let query = CursorsQuery {
            rooms: match scope {
                Scope::All => None,
                Scope::Rooms(rooms) => Some(rooms.clone()),
            },
        };
        let cursors = loop {
            match self.app.cursors(&query).await {
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
        match scope {
            Scope::All => info!(rooms = cursors.len(), chats = total, "gap fill done"),
            Scope::Rooms(new) => {
                tracing::debug!(
                    subscribed = new.len(),
                    rooms = cursors.len(),
                    chats = total,
                    "new rooms filled"
                )
            }
        }
        Ok(filled)
    }

    async fn fill_room(
        &mut self,
        conn: &mut Reads,
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

/// Live chats received during a fill, bounded like the queue.
#[derive(Debug)]
pub struct Held {
    /// Chats in arrival order, queued after the fill.
    pub chats: Vec<Chat>,
    /// Most chats held: more than the queue could take would overflow it anyway.
    capacity: usize,
    /// Chats were discarded; another fill must follow (the streams have them).
    pub overflowed: bool,
}

impl Held {
    pub fn new(capacity: usize) -> Held {
        Held {
            chats: Vec::new(),
            capacity,
            overflowed: false,
        }
    }

    pub fn push(&mut self, chat: Chat) {
        if self.chats.len() >= self.capacity {
            self.chats.clear();
            self.overflowed = true;
        }
        if !self.overflowed {
            self.chats.push(chat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::chat;

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
        let mut h = Held::new(2);
        h.push(chat("a", "1-0"));
        h.push(chat("a", "2-0"));
        assert!(!h.overflowed);
        h.push(chat("a", "3-0"));
        h.push(chat("a", "4-0"));
        assert!(h.overflowed);
        assert!(h.chats.is_empty());
    }
}
