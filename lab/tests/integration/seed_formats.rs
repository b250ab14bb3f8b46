//! The seed clients' formats keep working on the same rooms and history:
//! `/ws` without a subprotocol speaks simple-chat, `/chatsocket` speaks
//! CloudChat, and both interoperate with `wsmesh.v1` clients in `lobby`.

use std::time::Duration;

use serde_json::{json, Value};
use wsmesh_client::{Connection, Incoming, Protocol};
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);

/// The next seed text frame as JSON.
async fn next_json(conn: &mut Connection) -> Value {
    match conn.recv_timeout(LIMIT).await.unwrap() {
        Incoming::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a seed text frame, got {other:?}"),
    }
}

/// `YYYY/MM/DD HH:MM:SS`.
fn is_seed_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'/',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test]
async fn simple_chat_format_on_ws_without_subprotocol_interoperates_with_v1() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut v1 = c.join(1, "lobby").await.unwrap();
    // "earlier" must have reached app1 too before the seed client connects
    // there, or it would (rightly) arrive live.
    let mut on_app1 = c.join(0, "lobby").await.unwrap();
    v1.send_chat("earlier", None).await.unwrap();
    v1.chats_until(LIMIT, |ch| ch.body == "earlier").await.unwrap();
    on_app1
        .chats_until(LIMIT, |ch| ch.body == "earlier")
        .await
        .unwrap();

    let mut seed = Connection::connect(&c.ws(0).protocol(Protocol::Seed))
        .await
        .unwrap();
    assert_eq!(seed.subprotocol(), None);
    seed.send_text(json!({"name": "old", "content": "hi"}).to_string())
        .await
        .unwrap();
    // No history on connect: the first frame is our own message coming back.
    let own = next_json(&mut seed).await;
    assert_eq!(own["name"], "old");
    assert_eq!(own["content"], "hi");
    assert!(is_seed_time(own["time"].as_str().unwrap()), "{own}");

    let got = v1.chats_until(LIMIT, |ch| ch.body == "hi").await.unwrap();
    assert_eq!(got.last().map(|ch| ch.nick.as_str()), Some("old"));

    v1.send_chat("from v1", None).await.unwrap();
    let from_v1 = next_json(&mut seed).await;
    assert_eq!(from_v1["content"], "from v1");
    assert!(from_v1["name"].is_string(), "{from_v1}");
    assert!(is_seed_time(from_v1["time"].as_str().unwrap()), "{from_v1}");
}

#[tokio::test]
async fn cloudchat_format_on_chatsocket_interoperates_with_v1_and_serves_history() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut v1 = c.join(1, "lobby").await.unwrap();
    // "earlier" must have reached app1 too before the seed client connects
    // there, or it would (rightly) arrive live.
    let mut on_app1 = c.join(0, "lobby").await.unwrap();
    v1.send_chat("earlier", None).await.unwrap();
    v1.chats_until(LIMIT, |ch| ch.body == "earlier").await.unwrap();
    on_app1
        .chats_until(LIMIT, |ch| ch.body == "earlier")
        .await
        .unwrap();

    let opts = c.ws(0).protocol(Protocol::Seed);
    let opts = wsmesh_client::ConnectOptions {
        endpoint: opts.endpoint.with_path("/chatsocket"),
        ..opts
    };
    let mut seed = Connection::connect(&opts).await.unwrap();
    seed.send_text(json!({"body": "cc"}).to_string()).await.unwrap();
    assert_eq!(next_json(&mut seed).await, json!({"chats": [{"body": "cc"}]}));
    let got = v1.chats_until(LIMIT, |ch| ch.body == "cc").await.unwrap();
    assert_eq!(got.len(), 1);

    v1.send_chat("from v1", None).await.unwrap();
    assert_eq!(
        next_json(&mut seed).await,
        json!({"chats": [{"body": "from v1"}]})
    );

    seed.send_text(json!({"type": "command", "command": "requestFirstChat"}).to_string())
        .await
        .unwrap();
    let history = next_json(&mut seed).await;
    let bodies: Vec<&str> = history["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["earlier", "cc", "from v1"], "{history}");
}
