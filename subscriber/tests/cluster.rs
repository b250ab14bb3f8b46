//! Apps and subscribers on a Redis Cluster (three masters, three replicas,
//! real processes): chats are stored and acked with a replica's `WAIT` on
//! the room's master, published by `SPUBLISH` and heard by sharded pub/sub,
//! each room channel by exactly one subscriber on the master of its slot;
//! joins replay and resume; a room whose slot is moved to another master
//! while it chats is subscribed again there and loses nothing.
//!
//! One cluster for the whole file (the tests use rooms of their own).
//! Needs the `app` and `subscriber` binaries of this build.

use std::net::SocketAddr;
use std::time::Duration;

use wsmesh_client::Connection;
use wsmesh_redis_wire::keys::DEFAULT_URL;
use wsmesh_redis_wire::Keys;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};
use wsmesh_testkit::redis_cluster::RedisCluster;

const LIMIT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(30);

/// The Redis Cluster of this test binary, started once.
async fn redis_cluster() -> &'static RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .expect("the shared cluster")
}

/// app1, app2 and their subscribers on the Redis Cluster.
async fn wsmesh(nodes: Vec<String>) -> LocalCluster {
    let sub_nodes = nodes.clone();
    let opts = LocalOptions::default()
        .app(move |c| {
            c.redis.url = DEFAULT_URL.into();
            c.redis.cluster = nodes.clone();
            c.limits.rate_burst = 10_000;
            c.limits.rate_per_sec = 10_000.0;
        })
        .subscriber(move |c| {
            c.redis.url = DEFAULT_URL.into();
            c.redis.cluster = sub_nodes.clone();
        });
    LocalCluster::start(opts)
        .await
        .expect("the wsmesh cluster starts")
}

/// A series' value from a subscriber's `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    wsmesh_testkit::metrics::scrape(addr, name, LIMIT).await
}

/// Where subscriber `i` (1-based) serves `/metrics`.
fn health(c: &LocalCluster, i: usize) -> SocketAddr {
    c.cluster
        .get(&format!("subscriber{i}"))
        .expect("subscriber")
        .spec()
        .listens[0]
        .0
}

/// `PUBSUB SHARDNUMSUB` of `room`'s channel on the master of its slot.
async fn shard_subscribers(redis: &RedisCluster, room: &str) -> u64 {
    let channel = Keys::new("wsmesh:").channel(room);
    let master = redis.master_of(&channel).await;
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(&channel)
        .query_async(&mut redis.conn(master).await)
        .await
        .expect("PUBSUB SHARDNUMSUB");
    n
}

/// Waits until `room`'s channel has exactly one shard subscriber.
async fn one_subscriber(redis: &RedisCluster, room: &str) {
    wsmesh_testkit::eventually(WAIT, &format!("{room} is heard by a subscriber"), || async {
        shard_subscribers(redis, room).await >= 1
    })
    .await;
    assert_eq!(shard_subscribers(redis, room).await, 1, "{room}: one subscriber");
}

async fn send_all(member: &mut Connection, room: &str, range: std::ops::Range<usize>) {
    for n in range {
        member
            .send_chat(&format!("{room} {n}"), Some(&format!("{room}-{n}")))
            .await
            .expect("send");
    }
}

#[tokio::test]
async fn each_room_is_heard_once_on_its_master_and_chats_flow_replay_and_resume() {
    const ROOMS: usize = 8;
    const CHATS: usize = 5;
    let redis = redis_cluster().await;
    let c = wsmesh(redis.nodes()).await;
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("sharded-{i}")).collect();
    let mut members = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        members.push(c.join(i % 2, room).await.expect("join"));
    }
    let mut masters = std::collections::BTreeSet::new();
    for room in &rooms {
        one_subscriber(redis, room).await;
        masters.insert(redis.master_of(&Keys::new("wsmesh:").stream(room)).await);
    }
    assert!(masters.len() > 1, "the rooms are spread over the masters");
    for (member, room) in members.iter_mut().zip(&rooms) {
        send_all(member, room, 0..CHATS).await;
    }
    for (member, room) in members.iter_mut().zip(&rooms) {
        let last = format!("{room} {}", CHATS - 1);
        let got = member
            .chats_until(LIMIT, |ch| ch.body == last)
            .await
            .expect("own chats, live");
        let bodies: Vec<&str> = got.iter().map(|ch| ch.body.as_str()).collect();
        let want: Vec<String> = (0..CHATS).map(|n| format!("{room} {n}")).collect();
        assert_eq!(bodies, want, "{room}: every chat once, in order");
    }
    let per_app = (ROOMS / 2 * CHATS) as f64;
    for i in 1..=2 {
        let addr = health(&c, i);
        wsmesh_testkit::eventually(WAIT, "each subscriber forwarded its app's chats", || async {
            metric(addr, "wsmesh_subscriber_forwarded_chats_total").await >= Some(per_app)
        })
        .await;
        assert_eq!(
            metric(addr, "wsmesh_subscriber_forwarded_chats_total").await,
            Some(per_app),
            "subscriber{i} forwarded only its app's rooms"
        );
    }
    // A late joiner on the other app gets the history; one resuming after
    // the second chat gets the rest, exactly.
    let room = &rooms[0];
    let mut late = Connection::connect(&c.ws(1).room(room)).await.expect("connect");
    let (_, history) = late.join(LIMIT).await.expect("history");
    assert_eq!(history.len(), CHATS);
    let since = history[1].id.clone();
    let mut resumed = Connection::connect(&c.ws(1).room(room).since(&since))
        .await
        .expect("connect");
    let (_, replay) = resumed.join(LIMIT).await.expect("replay");
    let ids: Vec<&str> = replay.iter().map(|ch| ch.id.as_str()).collect();
    let want: Vec<&str> = history[2..].iter().map(|ch| ch.id.as_str()).collect();
    assert_eq!(ids, want);
    // Both apps now serve the room: it is heard on both, once each.
    members[0].send_chat("both", None).await.expect("send");
    for conn in [&mut late, &mut resumed] {
        conn.chats_until(LIMIT, |ch| ch.body == "both")
            .await
            .expect("live on app2");
    }
}

#[tokio::test]
async fn a_room_whose_slot_moves_is_subscribed_on_its_new_master_and_loses_nothing() {
    const CHATS: usize = 10;
    let redis = redis_cluster().await;
    let c = wsmesh(redis.nodes()).await;
    let room = "moving";
    let mut sender = c.join(0, room).await.expect("join");
    let mut reader = c.join(0, room).await.expect("join");
    one_subscriber(redis, room).await;
    let stream = Keys::new("wsmesh:").stream(room);
    let from = redis.master_of(&stream).await;
    let to = {
        let mut other = None;
        for probe in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            let m = redis.master_of(&format!("x:{{{probe}}}")).await;
            if m != from {
                other = Some(m);
                break;
            }
        }
        other.expect("another master")
    };
    send_all(&mut sender, room, 0..CHATS / 2).await;
    redis.move_slot(&stream, to).await;
    assert_eq!(redis.master_of(&stream).await, to);
    send_all(&mut sender, room, CHATS / 2..CHATS).await;
    let last = format!("{room} {}", CHATS - 1);
    let got = reader
        .chats_until(WAIT, |ch| ch.body == last)
        .await
        .expect("every chat, across the move");
    let bodies: Vec<&str> = got.iter().map(|ch| ch.body.as_str()).collect();
    let want: Vec<String> = (0..CHATS).map(|n| format!("{room} {n}")).collect();
    assert_eq!(bodies, want, "no chat lost, doubled or reordered");
    one_subscriber(redis, room).await;
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(Keys::new("wsmesh:").channel(room))
        .query_async(&mut redis.conn(to).await)
        .await
        .expect("SHARDNUMSUB");
    assert_eq!(n, 1, "subscribed on the new master");
}
