//! The chat through the TLS lb: two `wss://` clients of one room land on
//! different apps (leastconn over two idle servers) and each message arrives
//! exactly once on both, with the ack's id.

use std::time::Duration;

use lab::drill::cluster::{DrillCluster, RedisLayout};
use wsmesh_client::Connection;
use wsmesh_common::protocol::{ServerFrame, SUBPROTOCOL};
use wsmesh_testkit::cluster::LocalOptions;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wss_clients_through_the_lb_land_on_different_apps_and_chat_once() {
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
    assert_ne!(
        ana_welcome.instance, bob_welcome.instance,
        "leastconn must send the second session to the other app"
    );

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
