//! The subscriber on Redis Sentinel: after the master is killed it
//! subscribes on the promoted replica and forwards, filling the gap from the
//! new master's streams; and `/healthz` fails while the Redis it listens to
//! is frozen (connected, but deaf), and recovers when it thaws.

mod support;

use std::time::{Duration, Instant};

use support::{FakeApp, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use wsmesh_redis_wire::master::{Master, MasterOptions};
use wsmesh_redis_wire::{Append, Keys};
use wsmesh_testkit::sentinel::{Node, SentinelCluster, MASTER_NAME};

/// A subscriber run in-process from a config whose `[redis]` table is `redis`.
struct Running {
    health: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(redis: &str, app: &FakeApp) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("subscriber.toml");
    let text = format!(
        "[redis]\n{redis}reconnect_base = \"50ms\"\nreconnect_cap = \"500ms\"\npubsub_stall = \"2s\"\n\
         [app]\ninternal_url = \"{}\"\ntoken = \"{TOKEN}\"\nheartbeat = \"200ms\"\n\
         [listen]\nhealth = \"127.0.0.1:0\"\n",
        app.url()
    );
    std::fs::write(&path, text).expect("config");
    let config = subscriber::Config::load(&path).expect("config loads");
    let sub = subscriber::Subscriber::bind(config).await.expect("binds");
    let health = sub.health_addr().expect("health addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sub.run(async move {
        let _ = stopped.await;
        Ok(())
    }));
    Running {
        health,
        _stop: stop,
        _dir: dir,
    }
}

/// `/healthz` as (status code, JSON body).
async fn healthz(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("health listener");
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("response");
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("null");
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

async fn wait_health(addr: std::net::SocketAddr, code: u16, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = healthz(addr).await;
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz stayed {got}, not {code}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stores a chat through the following master connection, re-sending under
/// the same cid until it is acked; returns its id.
async fn store(conn: &mut Master, body: &str) -> String {
    let keys = Keys::new("wsmesh:");
    let channel = keys.channel("lobby");
    let chat = Append {
        room: "lobby",
        nick: "ana",
        body,
        cid: Some(body),
        stream_maxlen: 1000,
        cid_ttl: Duration::from_secs(60),
        channel: &channel,
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            wsmesh_redis_wire::append(conn, &keys, &chat),
        );
        if let Ok(Ok(done)) = sent.await {
            return done.id;
        }
        assert!(Instant::now() < deadline, "{body} was never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn after_the_master_is_killed_the_subscriber_forwards_from_the_promoted_replica() {
    let mut cluster = SentinelCluster::start().await;
    let app = FakeApp::start(&["lobby"]).await;
    let list: Vec<String> = cluster
        .sentinel_addrs()
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    let redis = format!(
        "sentinels = [{}]\nmaster_name = \"{MASTER_NAME}\"\n",
        list.join(", ")
    );
    let sub = start(&redis, &app).await;
    let body = wait_health(sub.health, 200, Duration::from_secs(15)).await;
    assert_eq!(body["master"], cluster.master.addr());

    let mut conn = Master::new(
        wsmesh_redis_wire::keys::TargetKeys {
            url: "redis://127.0.0.1:1/",
            url_given: false,
            sentinels: &cluster.sentinel_addrs(),
            cluster: &[],
            master_name: Some(MASTER_NAME),
            password: None,
            password_file: None,
            sentinel_password: None,
            sentinel_password_file: None,
        }
        .target()
        .expect("target"),
        MasterOptions {
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(500),
        },
    );
    let mut ids = vec![store(&mut conn, "before").await];
    let old = cluster.master.addr();
    cluster.master.kill();
    for i in 0..5 {
        ids.push(store(&mut conn, &format!("after-{i}")).await);
    }
    let new = cluster.wait_failover(&old, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.delivered_ids("lobby") != ids {
        assert!(
            Instant::now() < deadline,
            "delivered {:?}, stored {ids:?}",
            app.delivered_ids("lobby")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = wait_health(sub.health, 200, Duration::from_secs(15)).await;
    assert_eq!(body["master"], new);
    app.assert_posts_in_order_with_token();
}

#[tokio::test]
async fn healthz_fails_while_the_redis_it_listens_to_is_frozen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = Node::server(dir.path(), &[]);
    let app = FakeApp::start(&["lobby"]).await;
    let sub = start(&format!("url = \"{}\"\n", redis.url()), &app).await;
    let body = wait_health(sub.health, 200, Duration::from_secs(15)).await;
    assert_eq!(body["master"], redis.addr());

    redis.freeze();
    let body = wait_health(sub.health, 503, Duration::from_secs(10)).await;
    eprintln!("frozen: {body}");
    redis.thaw();
    let body = wait_health(sub.health, 200, Duration::from_secs(20)).await;
    assert_eq!(body["feed"], "live", "{body}");
}
