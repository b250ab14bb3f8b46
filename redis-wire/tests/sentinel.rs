//! The master connection against real Redis Sentinels: it finds the master,
//! and it follows a failover after the master is killed or frozen.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use wsmesh_redis_wire::keys::TargetKeys;
use wsmesh_redis_wire::master::{Master, MasterOptions};
use wsmesh_redis_wire::target::{ResolveError, Target};
use wsmesh_testkit::sentinel::{SentinelCluster, MASTER_NAME};

fn target(cluster: &SentinelCluster, name: &str) -> Target {
    let sentinels = cluster.sentinel_addrs();
    TargetKeys {
        url: "redis://127.0.0.1:1/",
        url_given: false,
        sentinels: &sentinels,
        cluster: &[],
        master_name: Some(name),
        password: None,
        password_file: None,
        sentinel_password: None,
        sentinel_password_file: None,
    }
    .target()
    .expect("sentinel target")
}

fn master(cluster: &SentinelCluster) -> Master {
    Master::new(
        target(cluster, MASTER_NAME),
        MasterOptions {
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(500),
        },
    )
}

/// `SET key value` through `conn`, retried (as a client would re-send)
/// until it succeeds; returns how long that took.
async fn set_until_ok(conn: &mut impl ConnectionLike, key: &str, value: u64) -> Duration {
    let start = Instant::now();
    loop {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        match tokio::time::timeout(Duration::from_secs(2), cmd.query_async::<()>(conn)).await {
            Ok(Ok(())) => return start.elapsed(),
            _ => assert!(
                start.elapsed() < Duration::from_secs(40),
                "no write succeeded for 40 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(node: &wsmesh_testkit::sentinel::Node, key: &str) -> Option<u64> {
    let mut c = node.conn().await;
    redis::cmd("GET").arg(key).query_async(&mut c).await.expect("GET")
}

#[tokio::test]
async fn the_sentinels_name_the_master_and_an_unknown_name_is_an_error() {
    let cluster = SentinelCluster::start().await;
    let found = target(&cluster, MASTER_NAME)
        .resolve(Duration::from_secs(1))
        .await
        .expect("resolves");
    assert_eq!(found.addr, cluster.master.addr());
    let e = target(&cluster, "nobody")
        .resolve(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(e, ResolveError::UnknownMaster { .. }), "{e}");
}

#[tokio::test]
async fn a_killed_master_is_followed_to_the_promoted_replica() {
    let mut cluster = SentinelCluster::start().await;
    let mut conn = master(&cluster);
    set_until_ok(&mut conn, "before", 1).await;
    assert_eq!(conn.addr(), Some(cluster.master.addr()));

    let old = cluster.master.addr();
    cluster.master.kill();
    let took = set_until_ok(&mut conn, "after", 2).await;
    let new = cluster.wait_failover(&old, Duration::from_secs(30)).await;
    assert_eq!(new, cluster.replica.addr());
    assert_eq!(
        conn.addr(),
        Some(new),
        "the connection names the promoted replica"
    );
    assert_eq!(get(&cluster.replica, "after").await, Some(2));
    assert_eq!(
        get(&cluster.replica, "before").await,
        Some(1),
        "replicated before the kill"
    );
    eprintln!("first write after the kill succeeded after {took:?}");
}

#[tokio::test]
async fn a_frozen_master_is_left_and_not_written_after_it_returns() {
    let mut cluster = SentinelCluster::start().await;
    let mut conn = master(&cluster);
    set_until_ok(&mut conn, "before", 1).await;
    let old = cluster.master.addr();

    cluster.master.freeze();
    let new = cluster.wait_failover(&old, Duration::from_secs(30)).await;
    set_until_ok(&mut conn, "during", 2).await;
    assert_eq!(conn.addr(), Some(new.clone()));

    cluster.master.thaw();
    // The old master comes back believing it is a master until a Sentinel
    // turns it into a replica; no write of ours may land on it meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        set_until_ok(&mut conn, "after", i).await;
        assert_eq!(
            conn.addr(),
            Some(new.clone()),
            "write {i} went to {:?}",
            conn.addr()
        );
        let mut old_conn = cluster.master.conn().await;
        let role: redis::Role = redis::cmd("ROLE").query_async(&mut old_conn).await.expect("ROLE");
        if matches!(role, redis::Role::Replica { .. }) {
            break;
        }
        assert!(Instant::now() < deadline, "the old master was never demoted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&cluster.replica, "during").await, Some(2));
}
