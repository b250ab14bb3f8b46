//! A session token keeps the nick and `connected_since` across reconnects to
//! any instance (session state lives in Redis, not in an instance).

use std::time::Duration;

use wsmesh_client::Connection;
use wsmesh_common::protocol::ClientFrame;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn session_token_keeps_nick_and_connected_since_across_instances() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut first = Connection::connect(&c.ws(0).room("sess")).await.unwrap();
    let (welcome, _) = first.join(LIMIT).await.unwrap();
    first
        .send_frame(&ClientFrame::Nick { nick: "ana".into() })
        .await
        .unwrap();
    // The nick is applied once a message carries it.
    first.send_chat("hi", None).await.unwrap();
    let mine = first.chats_until(LIMIT, |ch| ch.body == "hi").await.unwrap();
    assert_eq!(mine.last().unwrap().nick, "ana");
    first.close().await;

    let mut second = Connection::connect(&c.ws(1).room("sess").session(&welcome.session))
        .await
        .unwrap();
    let (resumed, _) = second.join(LIMIT).await.unwrap();
    assert_eq!(resumed.instance, "app2");
    assert_eq!(resumed.nick, "ana");
    assert_eq!(resumed.connected_since, welcome.connected_since);
    assert_eq!(resumed.session, welcome.session);
}

#[tokio::test]
async fn unknown_session_token_gets_a_fresh_session() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut conn = Connection::connect(&c.ws(0).session("no-such-session"))
        .await
        .unwrap();
    let (welcome, _) = conn.join(LIMIT).await.unwrap();
    assert!(!welcome.session.is_empty());
    let mut other = Connection::connect(&c.ws(0)).await.unwrap();
    let (fresh, _) = other.join(LIMIT).await.unwrap();
    assert_ne!(fresh.session, welcome.session, "two new sessions share a token");
}
