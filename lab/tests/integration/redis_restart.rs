//! Restarting Redis (same port, AOF) loses no acked message: sends during the
//! outage are refused with `unavailable` and succeed after, subscribers resume,
//! and clients see every message exactly once.

use std::collections::HashSet;
use std::time::Duration;

use wsmesh_client::http;
use wsmesh_client::Connection;
use wsmesh_common::protocol::{ErrorCode, ServerFrame};
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(15);

/// What a send got back.
#[derive(Debug, PartialEq)]
enum Outcome {
    Acked(String),
    Refused(ErrorCode),
}

async fn send(conn: &mut Connection, body: &str, cid: &str) -> Outcome {
    conn.send_chat(body, Some(cid)).await.unwrap();
    conn.wait_for(LIMIT, |f| match f {
        ServerFrame::Ack { cid: c, id } if c == cid => Some(Outcome::Acked(id.clone())),
        ServerFrame::Error { code, .. } => Some(Outcome::Refused(*code)),
        _ => None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn redis_restart_keeps_acked_history_and_delivers_each_message_once() {
    let opts = LocalOptions::default().app(|c| c.redis.command_timeout = Duration::from_millis(500));
    let mut c = LocalCluster::start(opts).await.unwrap();
    let mut sender = c.join(0, "rr").await.unwrap();
    // Readers never send, so every chat they got is still unread when checked.
    let mut on_app1 = c.join(0, "rr").await.unwrap();
    let mut on_app2 = c.join(1, "rr").await.unwrap();

    let mut acked = Vec::new();
    for i in 0..3 {
        match send(&mut sender, &format!("pre{i}"), &format!("pre{i}")).await {
            Outcome::Acked(id) => acked.push(id),
            other => panic!("send before the outage: {other:?}"),
        }
    }

    let redis = c.process("redis").unwrap();
    redis.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        send(&mut sender, "during", "during").await,
        Outcome::Refused(ErrorCode::Unavailable)
    );

    let redis = c.process("redis").unwrap();
    redis.start().unwrap();
    redis.wait_healthy(LIMIT).await.unwrap();
    for app in 0..2 {
        http::wait_status(&format!("{}/healthz", c.app(app).http_url()), 200, LIMIT)
            .await
            .unwrap();
    }

    // The same cid again until the app's Redis connection is back (bounded).
    let mut during = None;
    for _ in 0..20 {
        match send(&mut sender, "during", "during").await {
            Outcome::Acked(id) => {
                during = Some(id);
                break;
            }
            Outcome::Refused(ErrorCode::Unavailable) => tokio::time::sleep(Duration::from_millis(250)).await,
            Outcome::Refused(code) => panic!("unexpected refusal {code:?}"),
        }
    }
    acked.push(during.expect("send after the restart never acked"));

    let mut fresh = Connection::connect(&c.ws(1).room("rr")).await.unwrap();
    let (_, history) = fresh.join(LIMIT).await.unwrap();
    let in_history: HashSet<&str> = history.iter().map(|ch| ch.id.as_str()).collect();
    for id in &acked {
        assert!(
            in_history.contains(id.as_str()),
            "acked {id} lost; history {history:?}"
        );
    }

    sender.send_chat("marker", None).await.unwrap();
    for (who, conn) in [("app1", &mut on_app1), ("app2", &mut on_app2)] {
        let got = conn.chats_until(LIMIT, |ch| ch.body == "marker").await.unwrap();
        let ids: Vec<&str> = got.iter().map(|ch| ch.id.as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{who} got duplicates: {got:?}");
        for id in &acked {
            assert!(unique.contains(id.as_str()), "{who} never got {id}: {got:?}");
        }
    }
}
