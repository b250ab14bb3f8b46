//! The Redis Cluster faults: a master that holds busy rooms dies and its
//! replica takes its slots over; busy rooms' slots move to another master
//! while they chat. Both find the rooms by what the lb shows (each
//! session's hash key is its room) and the rooms' masters by `CLUSTER
//! KEYSLOT` and `CLUSTER SLOTS` (see `redis_cluster::master_of`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use wsmesh_testkit::redis_cluster;

use super::cluster::{DrillCluster, DrillClusterError};
use super::faults::{Evidence, Timeline};

/// How long a promotion, a rejoin or a resubscription may take.
const CLUSTER_LIMIT: Duration = Duration::from_secs(60);

/// How many of the busiest rooms have their slots moved.
const MOVED_ROOMS: usize = 5;

/// A room the lb has sessions of, and the master of its slot.
#[derive(Debug, Clone)]
struct BusyRoom {
    room: String,
    /// Open sessions over all apps.
    sessions: u64,
    /// Apps holding its sessions.
    apps: usize,
    /// The master of its slot now.
    master: SocketAddr,
}

/// The rooms with open sessions, busiest first.
async fn busy_rooms(c: &DrillCluster) -> Result<Vec<BusyRoom>, DrillClusterError> {
    let mut rooms = Vec::new();
    for (room, servers) in c.room_servers().await? {
        let master = c.slot_master(&c.channel(&room)).await?;
        rooms.push(BusyRoom {
            sessions: servers.values().sum(),
            apps: servers.len(),
            room,
            master,
        });
    }
    rooms.sort_by(|a, b| b.sessions.cmp(&a.sessions).then(a.room.cmp(&b.room)));
    Ok(rooms)
}

/// `kill -9` the master whose rooms have the most sessions; wait until a
/// replica owns its slots and every live node says `cluster_state:ok`;
/// start it again and wait until it is a replica of the cluster.
pub async fn kill_master(
    c: &mut DrillCluster,
    tl: &mut Timeline,
    t0: Instant,
) -> Result<(), DrillClusterError> {
    let rooms = busy_rooms(c).await?;
    let mut load: BTreeMap<SocketAddr, (u64, Vec<&BusyRoom>)> = BTreeMap::new();
    for room in &rooms {
        let entry = load.entry(room.master).or_default();
        entry.0 += room.sessions;
        entry.1.push(room);
    }
    let (old, (sessions, held)) = load
        .into_iter()
        .max_by_key(|(_, (sessions, _))| *sessions)
        .ok_or(DrillClusterError::NoMaster)?;
    let name = c.node_name(old).ok_or(DrillClusterError::NoMaster)?;
    let key = c.channel(&held[0].room);
    let held = held.len();
    c.cluster.get_mut(&name)?.kill9()?;
    tl.note(
        t0,
        format!("{name} (master of {held} rooms, {sessions} sessions) killed (SIGKILL)"),
    );
    let new = promoted(c, &key, old).await?;
    let new_name = c.node_name(new).unwrap_or_else(|| new.to_string());
    tl.note(t0, format!("{new_name} promoted (owns the slots of {name})"));
    tl.evidence.push(Evidence::Promoted {
        old: name.clone(),
        new: new_name,
        rooms: held,
    });
    cluster_ok(c, Some(old)).await?;
    tl.note(t0, "cluster_state:ok on every live node");
    c.cluster.get_mut(&name)?.start()?;
    c.wait_healthy(&name, CLUSTER_LIMIT).await?;
    tl.note(t0, format!("{name} started again"));
    let deadline = Instant::now() + CLUSTER_LIMIT;
    while c.role(old).await.as_deref() != Some("slave") {
        if Instant::now() >= deadline {
            return Err(DrillClusterError::NotDemoted(name, CLUSTER_LIMIT));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster_ok(c, None).await?;
    tl.note(t0, format!("{name} rejoined as a replica"));
    Ok(())
}

/// Moves the slots of the busiest rooms (up to `MOVED_ROOMS`), one after
/// the other, each to the next master, while they chat; then waits until
/// each room's channel has on its new master as many subscribers as apps
/// hold the room (`PUBSUB SHARDNUMSUB`).
pub async fn reshard(c: &mut DrillCluster, tl: &mut Timeline, t0: Instant) -> Result<(), DrillClusterError> {
    let masters = masters(c).await;
    let rooms = busy_rooms(c).await?;
    let mut moved = Vec::new();
    for room in rooms.iter().take(MOVED_ROOMS) {
        let key = c.channel(&room.room);
        // Asked again: an earlier room may have shared the slot.
        let from = c.slot_master(&key).await?;
        let Some(at) = masters.iter().position(|m| *m == from) else {
            continue;
        };
        let to = masters[(at + 1) % masters.len()];
        redis_cluster::move_slot(from, &key, to).await?;
        let (from_name, to_name) = (name(c, from), name(c, to));
        tl.note(
            t0,
            format!(
                "slot of room {} ({} sessions) moved from {from_name} to {to_name}",
                room.room, room.sessions
            ),
        );
        moved.push((room, from_name, to, to_name));
    }
    for (room, from, to, to_name) in moved {
        let channel = c.channel(&room.room);
        let deadline = Instant::now() + CLUSTER_LIMIT;
        let subscribers = loop {
            let n = shard_subscribers(to, &channel).await.unwrap_or(0);
            if n >= room.apps as u64 {
                break n;
            }
            if Instant::now() >= deadline {
                return Err(DrillClusterError::NotResubscribed(
                    room.room.clone(),
                    to,
                    CLUSTER_LIMIT,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tl.note(
            t0,
            format!("room {} has {subscribers} subscriber(s) on {to_name}", room.room),
        );
        tl.evidence.push(Evidence::SlotMoved {
            room: room.room.clone(),
            from,
            to: to_name,
            subscribers,
        });
    }
    Ok(())
}

/// A node's process name, or its address.
fn name(c: &DrillCluster, addr: SocketAddr) -> String {
    c.node_name(addr).unwrap_or_else(|| addr.to_string())
}

/// The nodes that answer `ROLE` as master, in address order.
async fn masters(c: &DrillCluster) -> Vec<SocketAddr> {
    let mut masters = Vec::new();
    for addr in c.redis_nodes() {
        if c.role(addr).await.as_deref() == Some("master") {
            masters.push(addr);
        }
    }
    masters.sort();
    masters
}

/// Waits until the live nodes name a master other than `old` for `key`'s slot.
async fn promoted(c: &DrillCluster, key: &str, old: SocketAddr) -> Result<SocketAddr, DrillClusterError> {
    let deadline = Instant::now() + CLUSTER_LIMIT;
    loop {
        for addr in c.redis_nodes().into_iter().filter(|a| *a != old) {
            if let Ok(master) = redis_cluster::master_of(addr, key).await {
                if master != old {
                    return Ok(master);
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(DrillClusterError::NoPromotion(old, CLUSTER_LIMIT));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node but `except` says `cluster_state:ok`.
async fn cluster_ok(c: &DrillCluster, except: Option<SocketAddr>) -> Result<(), DrillClusterError> {
    let deadline = Instant::now() + CLUSTER_LIMIT;
    loop {
        let mut last = String::new();
        for addr in c.redis_nodes().into_iter().filter(|a| Some(*a) != except) {
            let state = redis_cluster::cluster_info(addr)
                .await
                .map(|info| redis_cluster::field(&info, "cluster_state").map(str::to_string));
            match state {
                Ok(Some(s)) if s == "ok" => {}
                other => {
                    last = format!("{addr}: {other:?}");
                    break;
                }
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DrillClusterError::ClusterNotOk(CLUSTER_LIMIT, last));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `PUBSUB SHARDNUMSUB channel` on the node at `addr`.
pub async fn shard_subscribers(addr: SocketAddr, channel: &str) -> redis::RedisResult<u64> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let ask = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await?;
        Ok(n)
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer within 2 s",
            )))
        })
}
