//! History on connect and `since` resume: a client that comes back with the
//! last id it saw gets exactly what it missed, in order, and nothing twice.

use std::time::Duration;

use wsmesh_client::Connection;
use wsmesh_common::stream_id::StreamId;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);

fn ids_increase(ids: &[String]) -> bool {
    let parsed: Vec<StreamId> = ids.iter().map(|i| i.parse().unwrap()).collect();
    parsed.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn history_on_connect_is_the_last_50_in_order() {
    // A generous send budget, so one connection can post 60 messages quickly.
    let opts = LocalOptions::default()
        .app(|c| c.limits.rate_burst = 1000)
        .app(|c| c.limits.rate_per_sec = 1000.0);
    let c = LocalCluster::start(opts).await.unwrap();
    let mut sender = c.join(0, "hist").await.unwrap();
    for i in 0..60 {
        sender.send_chat(&format!("m{i}"), None).await.unwrap();
    }
    sender.chats_until(LIMIT, |ch| ch.body == "m59").await.unwrap();

    let mut late = Connection::connect(&c.ws(1).room("hist")).await.unwrap();
    let (_, history) = late.join(LIMIT).await.unwrap();
    let bodies: Vec<String> = history.iter().map(|ch| ch.body.clone()).collect();
    let expected: Vec<String> = (10..60).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected);
    let ids: Vec<String> = history.iter().map(|ch| ch.id.clone()).collect();
    assert!(ids_increase(&ids), "{ids:?}");
}

#[tokio::test]
async fn since_resume_delivers_exactly_the_missed_messages_in_order() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut sender = c.join(1, "resume").await.unwrap();
    let mut reader = c.join(0, "resume").await.unwrap();
    sender.send_chat("before", None).await.unwrap();
    let seen = reader.chats_until(LIMIT, |ch| ch.body == "before").await.unwrap();
    let last = seen.last().unwrap().id.clone();
    reader.close().await;

    for i in 0..5 {
        sender.send_chat(&format!("missed{i}"), None).await.unwrap();
    }
    sender
        .chats_until(LIMIT, |ch| ch.body == "missed4")
        .await
        .unwrap();

    // Back on the other instance, resuming from the last id seen.
    let mut back = Connection::connect(&c.ws(1).room("resume").since(&last))
        .await
        .unwrap();
    let (_, history) = back.join(LIMIT).await.unwrap();
    let bodies: Vec<&str> = history.iter().map(|ch| ch.body.as_str()).collect();
    assert_eq!(bodies, ["missed0", "missed1", "missed2", "missed3", "missed4"]);
    let ids: Vec<String> = history.iter().map(|ch| ch.id.clone()).collect();
    assert!(ids_increase(&ids), "{ids:?}");

    sender.send_chat("after", None).await.unwrap();
    let live = back.chats_until(LIMIT, |ch| ch.body == "after").await.unwrap();
    assert_eq!(live.len(), 1, "replayed messages came again live: {live:?}");
}
