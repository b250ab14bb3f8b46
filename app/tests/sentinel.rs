//! The app's store on Redis Sentinel: an append after the master is killed
//! lands on the promoted replica, and `/healthz`'s source names it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use app::config::{Durability, RedisConfig};
use app::metrics::Metrics;
use app::store::{Outcome, Store};
use wsmesh_testkit::sentinel::{SentinelCluster, MASTER_NAME};

/// Appends until acked, re-sending under the same cid as a client does
/// after `unavailable`.
async fn append(store: &Store, body: &str) -> (String, Outcome) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match store.append("lobby", "ana", body, Some(body)).await {
            Ok(done) => return (done.id, done.outcome),
            Err(e) => assert!(Instant::now() < deadline, "{body} never stored: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_append_after_the_master_is_killed_lands_on_the_promoted_replica() {
    let mut cluster = SentinelCluster::start().await;
    // The promoted replica has no replica of its own here, so only local
    // durability can take writes after the kill (tests/durability.rs covers
    // replicated durability with two replicas).
    let cfg = RedisConfig {
        sentinels: cluster.sentinel_addrs(),
        master_name: Some(MASTER_NAME.into()),
        command_timeout: Duration::from_secs(1),
        durability: Some(Durability::Local),
        ..RedisConfig::default()
    };
    let store = Store::new(&cfg, Arc::new(Metrics::default())).expect("store");
    let (before, _) = append(&store, "before").await;
    assert_eq!(store.master(), Some(cluster.master.addr()));

    let old = cluster.master.addr();
    cluster.master.kill();
    let (after, outcome) = append(&store, "after").await;
    assert_eq!(outcome, Outcome::Stored);
    let new = cluster.wait_failover(&old, Duration::from_secs(30)).await;
    assert_eq!(store.master(), Some(new.clone()));
    assert_eq!(new, cluster.replica.addr());

    let mut c = cluster.replica.conn().await;
    let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("wsmesh:room:{lobby}")
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .expect("XRANGE on the new master");
    let ids: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [before.as_str(), after.as_str()]);
    let (again, outcome) = append(&store, "after").await;
    assert_eq!(
        (again, outcome),
        (after, Outcome::Duplicate),
        "the cid is remembered on the new master"
    );
}
