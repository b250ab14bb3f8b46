//! A message sent on one instance reaches every client of its room on every
//! instance exactly once, and no other room.

use std::time::Duration;

use wsmesh_client::Connection;
use wsmesh_common::protocol::ServerFrame;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn message_sent_on_app1_arrives_once_on_both_instances_and_not_in_other_rooms() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut sender = c.join(0, "lobby").await.unwrap();
    let mut on_app1 = c.join(0, "lobby").await.unwrap();
    let mut on_app2 = c.join(1, "lobby").await.unwrap();
    let mut elsewhere = c.join(1, "other").await.unwrap();

    sender.send_chat("hello", Some("cid-hello")).await.unwrap();
    let (cid, ack_id) = sender
        .wait_for(LIMIT, |f| match f {
            ServerFrame::Ack { cid, id } => Some((cid.clone(), id.clone())),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(cid, "cid-hello");
    sender.send_chat("marker", None).await.unwrap();

    for (who, conn) in [
        ("sender", &mut sender),
        ("app1 peer", &mut on_app1),
        ("app2 peer", &mut on_app2),
    ] {
        let got = conn.chats_until(LIMIT, |ch| ch.body == "marker").await.unwrap();
        let hellos: Vec<_> = got.iter().filter(|ch| ch.body == "hello").collect();
        assert_eq!(hellos.len(), 1, "{who} got {got:?}");
        assert_eq!(hellos[0].id, ack_id, "{who}: ack and broadcast ids differ");
        assert_eq!(hellos[0].room, "lobby");
        assert_eq!(hellos[0].cid.as_deref(), Some("cid-hello"));
    }

    elsewhere.send_chat("other-marker", None).await.unwrap();
    let got = elsewhere
        .chats_until(LIMIT, |ch| ch.body == "other-marker")
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "room 'other' saw lobby traffic: {got:?}");
    assert_eq!(got[0].room, "other");
}

#[tokio::test]
async fn welcome_names_the_instance_and_the_subprotocol_is_selected() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    for (i, name) in [(0, "app1"), (1, "app2")] {
        let mut conn = Connection::connect(&c.ws(i)).await.unwrap();
        assert_eq!(conn.subprotocol(), Some(wsmesh_common::protocol::SUBPROTOCOL));
        let welcome = conn.welcome(LIMIT).await.unwrap();
        assert_eq!(welcome.instance, name);
        assert_eq!(welcome.room, "lobby", "room defaults to lobby");
        assert!(!welcome.session.is_empty());
    }
}
