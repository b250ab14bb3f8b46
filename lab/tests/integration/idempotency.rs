//! A re-sent `cid` returns the first id and is not broadcast again, also when
//! it comes back on another connection and instance.

use std::time::Duration;

use wsmesh_client::Connection;
use wsmesh_common::protocol::ServerFrame;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);

async fn ack_for(conn: &mut Connection, want: &str) -> String {
    conn.wait_for(LIMIT, |f| match f {
        ServerFrame::Ack { cid, id } if cid == want => Some(id.clone()),
        _ => None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn resend_with_same_cid_returns_the_same_id_and_is_not_broadcast_twice() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut peer = c.join(1, "idem").await.unwrap();
    let mut sender = c.join(0, "idem").await.unwrap();

    sender.send_chat("once", Some("cid-1")).await.unwrap();
    let first = ack_for(&mut sender, "cid-1").await;
    sender.send_chat("once", Some("cid-1")).await.unwrap();
    let second = ack_for(&mut sender, "cid-1").await;
    assert_eq!(first, second);

    // The same cid from a new connection on the other instance (a client that
    // reconnected before it saw the ack).
    let mut again = c.join(1, "idem").await.unwrap();
    again.send_chat("once", Some("cid-1")).await.unwrap();
    assert_eq!(ack_for(&mut again, "cid-1").await, first);

    again.send_chat("marker", None).await.unwrap();
    let got = peer.chats_until(LIMIT, |ch| ch.body == "marker").await.unwrap();
    let onces: Vec<_> = got.iter().filter(|ch| ch.body == "once").collect();
    assert_eq!(onces.len(), 1, "{got:?}");
    assert_eq!(onces[0].id, first);
}

#[tokio::test]
async fn same_cid_in_another_room_is_a_different_message() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut a = c.join(0, "room-a").await.unwrap();
    let mut b = c.join(0, "room-b").await.unwrap();
    a.send_chat("x", Some("shared")).await.unwrap();
    b.send_chat("y", Some("shared")).await.unwrap();
    let in_a = a.chats_until(LIMIT, |ch| ch.body == "x").await.unwrap();
    let in_b = b.chats_until(LIMIT, |ch| ch.body == "y").await.unwrap();
    assert_eq!(in_a.len(), 1);
    assert_eq!(in_b.len(), 1);
}
