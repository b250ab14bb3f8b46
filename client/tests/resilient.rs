//! `ResilientClient` against a scripted in-process server: reconnect after
//! 1013, resume with `since` and `session`, re-send under the same cid, and
//! no chat yielded twice; after 4001 a fresh token from its source.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wsmesh_client::resilient::{ResilientClient, ResilientConfig, TokenSource};
use wsmesh_client::ConnectOptions;

fn chat(id: &str, body: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "room": "r", "nick": "n", "body": body, "ts": 1})
}

/// Serves two connections: the first welcomes with session `s1`, replays
/// `1-0`, and closes with 1013 once it has seen the client's send; the second
/// replays `1-0` again plus `2-0`, acks the re-sent cid and stays open.
/// Returns each connection's request URI and the client frames it got.
async fn scripted_server(listener: TcpListener) -> Vec<(String, Vec<String>)> {
    let mut seen = Vec::new();
    for round in 0..2 {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut uri = String::new();
        #[allow(clippy::result_large_err)] // tungstenite's callback signature
        let callback = |req: &Request, mut resp: Response| {
            uri = req.uri().to_string();
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wsmesh.v1"));
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
        let welcome = serde_json::json!({"type": "welcome", "session": "s1", "nick": "n",
            "room": "r", "instance": format!("i{round}"), "connected_since": 7});
        ws.send(Message::text(welcome.to_string())).await.unwrap();
        let chats = if round == 0 {
            vec![chat("1-0", "a")]
        } else {
            vec![chat("1-0", "a"), chat("2-0", "b")]
        };
        let history = serde_json::json!({"type": "history", "room": "r", "chats": chats});
        ws.send(Message::text(history.to_string())).await.unwrap();
        let mut got = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            // The client's pings (and the close) are not part of the script.
            let Message::Text(t) = message else { continue };
            got.push(t.to_string());
            let frame: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if frame["type"] != "send" {
                continue;
            }
            if round == 0 {
                let close = CloseFrame {
                    code: 1013.into(),
                    reason: "slow".into(),
                };
                ws.close(Some(close)).await.unwrap();
                while ws.next().await.is_some() {}
                break;
            }
            let ack = serde_json::json!({"type": "ack", "cid": frame["cid"], "id": "3-0"});
            ws.send(Message::text(ack.to_string())).await.unwrap();
            let live = serde_json::json!({"type": "chat", "chats": [chat("3-0", "mine")]});
            ws.send(Message::text(live.to_string())).await.unwrap();
            seen.push((uri.clone(), got.clone()));
            return seen;
        }
        seen.push((uri.clone(), got));
    }
    seen
}

#[tokio::test]
async fn reconnects_after_1013_resuming_with_since_and_session_and_resends_the_outbox() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(scripted_server(listener));
    let connect = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws"))
        .unwrap()
        .room("r");
    let mut config = ResilientConfig::new(connect);
    config.nick = Some("ana".into());
    config.restart_jitter = Duration::from_millis(20);
    let mut client = ResilientClient::spawn(config);
    let limit = Duration::from_secs(10);
    assert_eq!(client.next_chat(limit).await.map(|c| c.body), Some("a".into()));
    let cid = client.send("mine");
    let bodies: Vec<String> = client.chats(2, limit).await.into_iter().map(|c| c.body).collect();
    assert_eq!(
        bodies,
        ["b", "mine"],
        "1-0 replayed again must not be yielded twice"
    );

    let rounds = server.await.unwrap();
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0].0, "/ws?room=r");
    assert_eq!(rounds[1].0, "/ws?room=r&since=1-0&session=s1");
    let nick = r#"{"type":"nick","nick":"ana"}"#;
    let send = format!(r#"{{"type":"send","body":"mine","cid":"{cid}"}}"#);
    assert_eq!(rounds[0].1, [nick.to_string(), send.clone()]);
    assert_eq!(
        rounds[1].1,
        [nick.to_string(), send],
        "same cid re-sent after reconnect"
    );

    let stats = client.stats();
    assert_eq!((stats.duplicates, stats.acked, stats.pending), (1, 1, 0));
    let instances: Vec<&str> = stats.connections.iter().map(|c| c.instance.as_str()).collect();
    assert_eq!(instances, ["i0", "i1"]);
    assert!(stats.connections[1].reconnect_took.is_some());
}

/// Serves two connections and returns each one's `Authorization` header and
/// URI: the first replays `1-0` and closes with 4001 (token expired), the
/// second replays `2-0` and stays until the client goes.
async fn expiring_server(listener: TcpListener) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for round in 0..2 {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut heard = (String::new(), String::new());
        #[allow(clippy::result_large_err)] // tungstenite's callback signature
        let callback = |req: &Request, mut resp: Response| {
            let auth = req.headers().get("Authorization").and_then(|v| v.to_str().ok());
            heard = (auth.unwrap_or_default().to_string(), req.uri().to_string());
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wsmesh.v1"));
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
        seen.push(heard);
        let welcome = serde_json::json!({"type": "welcome", "session": "s1", "nick": "ana",
            "room": "r", "instance": "i0", "connected_since": 7});
        ws.send(Message::text(welcome.to_string())).await.unwrap();
        let chats = [chat(if round == 0 { "1-0" } else { "2-0" }, "x")];
        let history = serde_json::json!({"type": "history", "room": "r", "chats": chats});
        ws.send(Message::text(history.to_string())).await.unwrap();
        if round == 0 {
            let close = CloseFrame {
                code: 4001.into(),
                reason: "token expired".into(),
            };
            ws.send(Message::Close(Some(close))).await.unwrap();
        }
        while let Some(Ok(_)) = ws.next().await {}
    }
    seen
}

#[tokio::test]
async fn a_token_expiry_4001_reconnects_at_once_with_a_fresh_token_and_since() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(expiring_server(listener));
    let connect = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws"))
        .unwrap()
        .room("r");
    let mut config = ResilientConfig::new(connect);
    // After 4001 the client reconnects within the restart jitter; a backoff of
    // up to 30 s would usually miss the 10 s this test waits.
    config.backoff_base = Duration::from_secs(30);
    config.restart_jitter = Duration::from_millis(20);
    let minted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = minted.clone();
    config.tokens = Some(TokenSource::new(move || {
        format!("t{}", counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
    }));
    let mut client = ResilientClient::spawn(config);
    let ids: Vec<String> = client
        .chats(2, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["1-0", "2-0"]);
    drop(client);
    let rounds = server.await.unwrap();
    assert_eq!(rounds[0], ("Bearer t0".to_string(), "/ws?room=r".to_string()));
    assert_eq!(
        rounds[1],
        (
            "Bearer t1".to_string(),
            "/ws?room=r&since=1-0&session=s1".to_string()
        )
    );
}
