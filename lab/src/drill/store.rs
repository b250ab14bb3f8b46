//! What the store holds when a drill ends, read from the master the way a
//! replay reads it (committed entries only). Two ledger columns come from
//! it: a chat a client received that the store no longer holds (a failover
//! took back something already broadcast), and a cid stored twice (a re-send
//! after a failover that the idempotency check missed).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use redis::streams::StreamRangeReply;
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::{self as wire, Keys};

/// Entries read per round trip.
const PAGE: usize = 1000;

/// How long the whole read may take.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// Each room's stored ids, and how many cids were stored more than once.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Room → every id its stream holds (committed).
    pub ids: HashMap<String, HashSet<StreamId>>,
    /// Entries whose cid an earlier entry of the same room already carries.
    pub cids_twice: u64,
}

impl Stored {
    /// Entries read, over all rooms.
    pub fn entries(&self) -> u64 {
        self.ids.values().map(|ids| ids.len() as u64).sum()
    }

    /// Whether `room`'s stream holds `id`.
    pub fn holds(&self, room: &str, id: &StreamId) -> bool {
        self.ids.get(room).is_some_and(|ids| ids.contains(id))
    }
}

/// Why the store could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreReadError {
    /// Redis refused or failed.
    #[error("reading the streams from {master}: {source}")]
    Redis {
        /// The master asked.
        master: SocketAddr,
        /// What went wrong.
        source: redis::RedisError,
    },
    /// The read took longer than `READ_LIMIT`.
    #[error("reading the streams from {0} took over {READ_LIMIT:?}")]
    Timeout(SocketAddr),
}

/// Reads every committed entry of `rooms` from the master at `master`
/// (with `password`, when the nodes want one).
pub async fn read(
    master: SocketAddr,
    password: Option<&str>,
    prefix: &str,
    rooms: &[String],
) -> Result<Stored, StoreReadError> {
    // A password is random hex (the lab's), nothing to escape in a URL.
    let url = match password {
        Some(p) => format!("redis://:{p}@{master}/"),
        None => format!("redis://{master}/"),
    };
    within_limit(master, async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        read_rooms(&mut conn, prefix, rooms).await
    })
    .await
}

/// Reads every committed entry of `rooms` from a Redis Cluster that
/// `nodes` belong to: each room from the master of its slot now.
pub async fn read_cluster(
    nodes: &[SocketAddr],
    prefix: &str,
    rooms: &[String],
) -> Result<Stored, StoreReadError> {
    let first = nodes
        .first()
        .copied()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    let urls: Vec<String> = nodes.iter().map(|a| format!("redis://{a}/")).collect();
    within_limit(first, async {
        let client = redis::cluster::ClusterClient::new(urls)?;
        let mut conn = client.get_async_connection().await?;
        read_rooms(&mut conn, prefix, rooms).await
    })
    .await
}

/// `read` within `READ_LIMIT`, its errors naming `node`.
async fn within_limit(
    node: SocketAddr,
    read: impl std::future::Future<Output = redis::RedisResult<Stored>>,
) -> Result<Stored, StoreReadError> {
    tokio::time::timeout(READ_LIMIT, read)
        .await
        .map_err(|_| StoreReadError::Timeout(node))?
        .map_err(|source| StoreReadError::Redis { master: node, source })
}

/// Every committed entry of `rooms` over `conn`.
async fn read_rooms(
    conn: &mut impl redis::aio::ConnectionLike,
    prefix: &str,
    rooms: &[String],
) -> redis::RedisResult<Stored> {
    let keys = Keys::new(prefix);
    let mut stored = Stored::default();
    for room in rooms {
        let ids = stored.ids.entry(room.clone()).or_default();
        let mut cids = HashSet::new();
        let mut after = StreamId::ZERO;
        loop {
            let page: StreamRangeReply = wire::range_after(conn, &keys, room, after, PAGE).await?;
            for entry in &page.ids {
                let Ok(id) = entry.id.parse::<StreamId>() else {
                    continue;
                };
                after = after.max(id);
                ids.insert(id);
                let Ok(chat) = wire::entry_to_chat(room, entry) else {
                    continue;
                };
                if let Some(cid) = chat.cid {
                    if !cids.insert(cid) {
                        stored.cids_twice += 1;
                    }
                }
            }
            if page.ids.len() < PAGE {
                break;
            }
        }
    }
    Ok(stored)
}
