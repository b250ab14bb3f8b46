//! Replicated durability against real redis-server and redis-sentinel
//! processes: a send is acked, published and readable only once a replica
//! holds it; acked sends survive a `kill -9` of the master with their cids;
//! a `since` lost with the master still resumes into the new master's
//! messages. The ack latency of both modes is measured by an ignored test.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::config::{Durability, RedisConfig};
use app::metrics::Metrics;
use app::store::{Outcome, Store, StoreError};
use futures_util::StreamExt;
use wsmesh_common::chat::Chat;
use wsmesh_common::stream_id::StreamId;
use wsmesh_testkit::sentinel::{Node, SentinelCluster, MASTER_NAME, MIN_REPLICAS};

fn config(cluster: &SentinelCluster, durability: Durability) -> RedisConfig {
    RedisConfig {
        sentinels: cluster.sentinel_addrs(),
        master_name: Some(MASTER_NAME.into()),
        command_timeout: Duration::from_secs(1),
        replica_ack_timeout: Duration::from_millis(500),
        durability: Some(durability),
        ..RedisConfig::default()
    }
}

fn store(cfg: &RedisConfig) -> Store {
    Store::new(cfg, Arc::new(Metrics::default())).expect("store")
}

/// Appends until acked, re-sending under the same cid as a client does
/// after `unavailable`.
async fn append_until_acked(store: &Store, room: &str, cid: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.append(room, "ana", cid, Some(cid)).await {
            Ok(done) => return done.id,
            Err(e) => assert!(Instant::now() < deadline, "{cid} never acked: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every entry of `room`'s stream on `node`: id and cid.
async fn entries(node: &Node, room: &str) -> Vec<(String, String)> {
    let mut c = node.conn().await;
    let raw: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(format!("wsmesh:room:{{{room}}}"))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .expect("XRANGE");
    raw.into_iter()
        .map(|(id, f)| (id, f.get("cid").cloned().unwrap_or_default()))
        .collect()
}

async fn subscribe(node: &Node) -> redis::aio::PubSub {
    let client = redis::Client::open(node.url()).expect("url");
    let mut ps = client.get_async_pubsub().await.expect("pubsub");
    let every_room = format!("{}*", wsmesh_redis_wire::Keys::new("wsmesh:").channel_prefix());
    ps.psubscribe(every_room).await.expect("psubscribe");
    ps
}

/// What arrives on the chat channel within `wait`.
async fn published(ps: &mut redis::aio::PubSub, wait: Duration) -> Vec<Chat> {
    let mut chats = Vec::new();
    let mut stream = ps.on_message();
    while let Ok(Some(msg)) = tokio::time::timeout(wait, stream.next()).await {
        chats.push(wsmesh_redis_wire::decode_published(msg.get_payload_bytes()).expect("a chat"));
    }
    chats
}

#[tokio::test]
async fn a_replicated_send_is_acked_published_and_read_only_once_a_replica_holds_it() {
    let mut cluster = SentinelCluster::start_with(1, MIN_REPLICAS).await;
    let cfg = config(&cluster, Durability::Replicated);
    let store = store(&cfg);
    let mut ps = subscribe(&cluster.master).await;
    let first = append_until_acked(&store, "lobby", "first").await;
    let heard = published(&mut ps, Duration::from_millis(300)).await;
    assert_eq!(
        heard.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [first.as_str()]
    );

    cluster.replica.freeze();
    let start = Instant::now();
    let e = store
        .append("lobby", "ana", "held", Some("held"))
        .await
        .expect_err("no replica acknowledges while it is frozen");
    let took = start.elapsed();
    assert!(matches!(e, StoreError::NotReplicated(_)), "{e}");
    assert!(
        took >= cfg.replica_ack_timeout && took < cfg.replica_ack_timeout + cfg.command_timeout,
        "answered after {took:?}"
    );
    // Stored on the master, but nobody hears of it or reads it.
    assert_eq!(entries(&cluster.master, "lobby").await.len(), 2);
    assert!(published(&mut ps, Duration::from_millis(300)).await.is_empty());
    let history: Vec<String> = store
        .last("lobby", 10)
        .await
        .expect("history")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(history, [first.as_str()]);
    let mut replay = store.replay("lobby", StreamId::ZERO).await.expect("replay");
    let page = store
        .next_page(&mut replay)
        .await
        .expect("page")
        .unwrap_or_default();
    assert_eq!(page.len(), 1, "the replay stops at the commit mark");

    cluster.replica.thaw();
    let again = store
        .append("lobby", "ana", "held", Some("held"))
        .await
        .expect("acked once the replica is back");
    assert_eq!(
        again.outcome,
        Outcome::Duplicate,
        "the re-send finds the stored entry"
    );
    let heard = published(&mut ps, Duration::from_millis(300)).await;
    assert_eq!(
        heard.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [again.id.as_str()]
    );
    let stored = entries(&cluster.replica, "lobby").await;
    assert_eq!(stored.iter().filter(|(_, cid)| cid == "held").count(), 1);
    assert_eq!(store.last("lobby", 10).await.expect("history").len(), 2);
}

#[tokio::test]
async fn a_commit_publishes_every_older_uncommitted_entry_in_id_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::server(dir.path(), &[]);
    let keys = wsmesh_redis_wire::Keys::new("wsmesh:");
    let mut c = node.conn().await;
    let mut ps = subscribe(&node).await;
    let channel = keys.channel("lobby");
    let chat = |cid: &'static str| wsmesh_redis_wire::Append {
        room: "lobby",
        nick: "ana",
        body: cid,
        cid: Some(cid),
        stream_maxlen: 100,
        cid_ttl: Duration::from_secs(60),
        channel: &channel,
    };
    let a = wsmesh_redis_wire::stage(&mut c, &keys, &chat("a"))
        .await
        .expect("stage");
    let b = wsmesh_redis_wire::stage(&mut c, &keys, &chat("b"))
        .await
        .expect("stage");
    // b's commit arrives first (its WAIT returned first): a went before it
    // in the replication stream, so both are published, a first.
    let n = wsmesh_redis_wire::commit(&mut c, &keys, "lobby", &b.id, &channel)
        .await
        .expect("commit");
    assert_eq!(n, Some(2));
    let n = wsmesh_redis_wire::commit(&mut c, &keys, "lobby", &a.id, &channel)
        .await
        .expect("commit");
    assert_eq!(n, Some(0), "already published");
    let heard = published(&mut ps, Duration::from_millis(300)).await;
    let ids: Vec<&str> = heard.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [a.id.as_str(), b.id.as_str()]);
    assert_eq!(heard[0].cid.as_deref(), Some("a"));
    let missing = wsmesh_redis_wire::commit(&mut c, &keys, "lobby", "99999999999999-0", &channel)
        .await
        .expect("commit");
    assert_eq!(missing, None, "an id this node does not hold is not committed");
    // Below the mark too: a send stored on another node (an old master that
    // resumed) must not read as "already committed" here and be acked.
    let a_ms: u64 = a.id.split('-').next().and_then(|ms| ms.parse().ok()).expect("ms");
    let below = format!("{}-0", a_ms - 1);
    let missing = wsmesh_redis_wire::commit(&mut c, &keys, "lobby", &below, &channel)
        .await
        .expect("commit");
    assert_eq!(
        missing, None,
        "an id below the mark this node does not hold is not committed"
    );
}

#[tokio::test]
async fn every_acked_send_survives_a_killed_master_with_its_cid_once() {
    let mut cluster = SentinelCluster::start_with(2, MIN_REPLICAS).await;
    let cfg = config(&cluster, Durability::Replicated);
    let store = store(&cfg);
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (store, acked) = (store.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let cid = format!("s{sender}-{i}");
                    let id = append_until_acked(&store, "lobby", &cid).await;
                    acked.lock().expect("lock").push((cid, id));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    while acked.lock().expect("lock").len() < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let old = cluster.master.addr();
    cluster.master.kill();
    for s in senders {
        s.await.expect("sender");
    }
    let new = cluster.wait_failover(&old, Duration::from_secs(30)).await;
    let stored = entries(cluster.node(&new), "lobby").await;
    let by_cid: HashMap<&str, &str> = stored
        .iter()
        .map(|(id, cid)| (cid.as_str(), id.as_str()))
        .collect();
    assert_eq!(by_cid.len(), stored.len(), "a cid stored twice: {stored:?}");
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), 160);
    for (cid, id) in &acked {
        assert_eq!(
            by_cid.get(cid.as_str()),
            Some(&id.as_str()),
            "acked {cid} as {id}, lost"
        );
    }
    let ids: HashSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), stored.len());
}

#[tokio::test]
async fn a_since_lost_with_the_master_still_resumes_into_the_new_masters_messages() {
    let mut cluster = SentinelCluster::start_with(2, MIN_REPLICAS).await;
    let cfg = config(&cluster, Durability::Replicated);
    let store = store(&cfg);
    let before = append_until_acked(&store, "lobby", "before").await;

    // An entry only the old master holds, with an id from a clock an hour
    // ahead: the worst case of ids lost with a master. The replicas are cut
    // off first (frozen, their links closed, so no byte of it waits in
    // their sockets) and the master is let write without them.
    for r in cluster.replicas_mut() {
        r.freeze();
    }
    let lost: StreamId = {
        let mut c = cluster.master.conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(0)
            .query_async(&mut c)
            .await
            .expect("CONFIG SET");
        let _: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query_async(&mut c)
            .await
            .expect("CLIENT KILL");
        let ahead = before.parse::<StreamId>().expect("id").ms + 3_600_000;
        redis::cmd("XADD")
            .arg("wsmesh:room:{lobby}")
            .arg(format!("{ahead}-0"))
            .arg("nick")
            .arg("ghost")
            .arg("body")
            .arg("lost")
            .query_async::<String>(&mut c)
            .await
            .expect("XADD")
            .parse()
            .expect("id")
    };
    let old = cluster.master.addr();
    cluster.master.kill();
    for r in cluster.replicas_mut() {
        r.thaw();
    }
    cluster.wait_failover(&old, Duration::from_secs(30)).await;
    let after = append_until_acked(&store, "lobby", "after").await;
    assert!(
        after.parse::<StreamId>().expect("id") < lost,
        "the new master's ids sort below the lost one"
    );

    let mut replay = store.replay("lobby", lost).await.expect("replay");
    assert!(replay.truncated, "the client is told its position was not kept");
    assert_eq!(replay.from, StreamId::ZERO);
    let mut ids = Vec::new();
    while let Some(page) = store.next_page(&mut replay).await.expect("page") {
        ids.extend(page.into_iter().map(|c| c.id));
    }
    assert_eq!(ids, [before, after]);
}

/// Ack latency of `sends` sequential sends, sorted.
async fn ack_latencies(store: &Store, room: &str, sends: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(sends);
    for i in 0..sends {
        let cid = format!("{room}-{i}");
        let start = Instant::now();
        store
            .append(room, "ana", "a message of a typical size", Some(&cid))
            .await
            .expect("acked");
        took.push(start.elapsed());
    }
    took.sort();
    took
}

/// p50 / p99 / max of the ack latency, replicated against local, on
/// loopback, in one run. Measures; asserts nothing about time.
/// `cargo test -p app --test durability -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn ack_latency_replicated_vs_local() {
    let cluster = SentinelCluster::start_with(1, MIN_REPLICAS).await;
    let sends = 2000;
    let local = store(&config(&cluster, Durability::Local));
    let replicated = store(&config(&cluster, Durability::Replicated));
    ack_latencies(&local, "warm", 100).await;
    ack_latencies(&replicated, "warm2", 100).await;
    for round in 0..2 {
        for (name, store) in [("local", &local), ("replicated", &replicated)] {
            let t = ack_latencies(store, &format!("{name}{round}"), sends).await;
            let pct = |p: f64| t[((t.len() as f64 * p) as usize).min(t.len() - 1)];
            eprintln!(
                "round {round} {name:>10}: {sends} sends, p50 {:?}, p99 {:?}, max {:?}",
                pct(0.50),
                pct(0.99),
                t[t.len() - 1]
            );
        }
    }
}
