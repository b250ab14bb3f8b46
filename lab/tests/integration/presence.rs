//! Presence: clients of a room hear when the number online changes.

use std::time::Duration;

use wsmesh_client::Connection;
use wsmesh_common::protocol::ServerFrame;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);

async fn online(conn: &mut Connection, want: u64) {
    conn.wait_for(LIMIT, |f| match f {
        ServerFrame::Presence { room, online } if room == "pres" && *online == want => Some(()),
        _ => None,
    })
    .await
    .unwrap_or_else(|e| panic!("never saw online={want}: {e}"));
}

#[tokio::test]
async fn joining_and_leaving_changes_the_online_count() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut first = Connection::connect(&c.ws(0).room("pres")).await.unwrap();
    first.welcome(LIMIT).await.unwrap();
    online(&mut first, 1).await;
    let mut second = Connection::connect(&c.ws(0).room("pres")).await.unwrap();
    second.welcome(LIMIT).await.unwrap();
    online(&mut first, 2).await;
    second.close().await;
    online(&mut first, 1).await;
}
