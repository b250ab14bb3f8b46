//! A dead subscriber makes its app unhealthy; once restarted it fills the gap
//! from the Redis streams, so the app's clients get what was sent meanwhile,
//! exactly once.

use std::time::Duration;

use wsmesh_client::http;
use wsmesh_common::protocol::ServerFrame;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn killed_subscriber_turns_app_unhealthy_and_restart_delivers_the_gap_once() {
    let opts = LocalOptions::default().app(|c| c.health.subscriber_max_age = Duration::from_secs(1));
    let mut c = LocalCluster::start(opts).await.unwrap();
    let health = format!("{}/healthz", c.app(0).http_url());
    let mut on_app1 = c.join(0, "fo").await.unwrap();
    let mut on_app2 = c.join(1, "fo").await.unwrap();
    on_app2.send_chat("warmup", None).await.unwrap();
    on_app1
        .chats_until(LIMIT, |ch| ch.body == "warmup")
        .await
        .unwrap();

    c.process("subscriber1").unwrap().kill9().unwrap();
    let unhealthy = http::wait_status(&health, 503, LIMIT).await.unwrap();
    assert!(!unhealthy.body.is_empty(), "503 says why");

    let mut acked = Vec::new();
    for i in 0..5 {
        let cid = format!("gap{i}");
        on_app2.send_chat(&format!("gap{i}"), Some(&cid)).await.unwrap();
        let id = on_app2
            .wait_for(LIMIT, |f| match f {
                ServerFrame::Ack { cid: c, id } if *c == cid => Some(id.clone()),
                _ => None,
            })
            .await
            .unwrap();
        acked.push(id);
    }

    let sub = c.process("subscriber1").unwrap();
    sub.start().unwrap();
    sub.wait_healthy(LIMIT).await.unwrap();
    http::wait_status(&health, 200, LIMIT).await.unwrap();

    on_app2.send_chat("after", None).await.unwrap();
    let got = on_app1.chats_until(LIMIT, |ch| ch.body == "after").await.unwrap();
    let ids: Vec<String> = got
        .iter()
        .filter(|ch| ch.body.starts_with("gap"))
        .map(|ch| ch.id.clone())
        .collect();
    assert_eq!(ids, acked, "app1's client got {got:?}");
    assert_eq!(got.len(), 6, "duplicates or strays: {got:?}");
}

#[tokio::test]
async fn frozen_subscriber_is_noticed_and_catches_up_when_resumed() {
    let opts = LocalOptions::default().app(|c| c.health.subscriber_max_age = Duration::from_secs(1));
    let mut c = LocalCluster::start(opts).await.unwrap();
    let health = format!("{}/healthz", c.app(0).http_url());
    let mut on_app1 = c.join(0, "frozen").await.unwrap();
    let mut on_app2 = c.join(1, "frozen").await.unwrap();

    // SIGSTOP: the process keeps its sockets but sends no heartbeat.
    c.process("subscriber1").unwrap().stop().unwrap();
    http::wait_status(&health, 503, LIMIT).await.unwrap();
    for i in 0..3 {
        on_app2
            .send_chat(&format!("while-frozen{i}"), None)
            .await
            .unwrap();
    }
    on_app2
        .chats_until(LIMIT, |ch| ch.body == "while-frozen2")
        .await
        .unwrap();

    c.process("subscriber1").unwrap().cont().unwrap();
    http::wait_status(&health, 200, LIMIT).await.unwrap();
    on_app2.send_chat("thawed", None).await.unwrap();
    let got = on_app1
        .chats_until(LIMIT, |ch| ch.body == "thawed")
        .await
        .unwrap();
    let bodies: Vec<&str> = got.iter().map(|ch| ch.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["while-frozen0", "while-frozen1", "while-frozen2", "thawed"]
    );
}
