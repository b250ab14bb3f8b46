//! The chat through the TLS lb with the shipped `balance = "hash"` on the
//! room: two `wss://` clients of one room land on the same app, clients of
//! different rooms spread over both apps, and each message arrives exactly
//! once on both members, with the ack's id.

use std::time::Duration;

use lab::drill::cluster::{DrillCluster, RedisLayout};
use wsmesh_client::Connection;
use wsmesh_common::protocol::{ServerFrame, SUBPROTOCOL};
use wsmesh_testkit::cluster::LocalOptions;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_meets_on_one_app_rooms_spread_and_chat_arrives_once() {
    let cluster = DrillCluster::start(&LocalOptions::default(), false, RedisLayout::Single)
        .await
        .unwrap();
    let opts = cluster.connect_options().room("through-lb");

    let mut ana = Connection::connect(&opts).await.unwrap();
    assert_eq!(
        ana.subprotocol(),
        Some(SUBPROTOCOL),
        "subprotocol must pass the lb untouched"
    );
    let (ana_welcome, _) = ana.join(LIMIT).await.unwrap();
    let mut bob = Connection::connect(&opts).await.unwrap();
    let (bob_welcome, _) = bob.join(LIMIT).await.unwrap();
    assert_eq!(
        ana_welcome.instance, bob_welcome.instance,
        "hash balance on the room must send both members to one app"
    );
    // One member in each of ten other rooms: the rooms' hashes spread them
    // over both apps.
    let mut others = Vec::new();
    let mut instances = std::collections::HashSet::new();
    for i in 0..10 {
        let mut c = Connection::connect(&cluster.connect_options().room(format!("spread-{i}")))
            .await
            .unwrap();
        let (welcome, _) = c.join(LIMIT).await.unwrap();
        instances.insert(welcome.instance);
        others.push(c);
    }
    assert_eq!(instances.len(), 2, "ten rooms all on one app: {instances:?}");

    ana.send_chat("hello through the lb", Some("lb-cid-1"))
        .await
        .unwrap();
    let ack = ana
        .wait_for(LIMIT, |f| match f {
            ServerFrame::Ack { cid, id } if cid == "lb-cid-1" => Some(id.clone()),
            _ => None,
        })
        .await
        .unwrap();
    ana.send_chat("marker", None).await.unwrap();
    for (who, conn) in [("ana", &mut ana), ("bob", &mut bob)] {
        let got = conn.chats_until(LIMIT, |c| c.body == "marker").await.unwrap();
        let hellos: Vec<_> = got.iter().filter(|c| c.body == "hello through the lb").collect();
        assert_eq!(hellos.len(), 1, "{who} got {got:?}");
        assert_eq!(hellos[0].id, ack, "{who}: broadcast id differs from the ack");
    }
}
