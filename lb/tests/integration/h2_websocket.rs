//! WebSocket over HTTP/2 (RFC 8441) through the lb, in front of the real
//! apps (Redis, two apps and their subscribers from the testkit): several
//! WebSockets and ordinary requests share one TLS connection, chat frames
//! and close codes pass, and an app that drains moves its sockets to the
//! other app as HTTP/1 tunnels do.

use std::time::Duration;

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{protocol::Role, Message};
use tokio_tungstenite::WebSocketStream;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

type Chat = WebSocketStream<TokioIo<Upgraded>>;

/// Opens `path` as a WebSocket with an extended CONNECT on `send`'s
/// connection; the socket, or the status it was refused with.
async fn connect(send: &mut SendRequest<Body>, port: u16, path: &str) -> Result<Chat, StatusCode> {
    let mut req = Request::connect(format!("https://localhost:{port}{path}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "wsmesh.v1")
        .body(empty())
        .expect("request");
    req.extensions_mut().insert(Protocol::from_static("websocket"));
    let mut resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("an answer within 10 s")
        .expect("an answer");
    if resp.status() != StatusCode::OK {
        return Err(resp.status());
    }
    assert_eq!(resp.headers()["sec-websocket-protocol"], "wsmesh.v1");
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(&mut resp).await.expect("stream upgraded");
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}

/// The next frame of the chat protocol, within 10 s.
async fn next_frame(ws: &mut Chat) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON frame");
        }
    }
}

/// Joins `room`: the instance from the welcome, past the history.
async fn join(send: &mut SendRequest<Body>, port: u16, room: &str) -> (Chat, String) {
    let mut ws = connect(send, port, &format!("/ws?room={room}"))
        .await
        .expect("upgraded");
    let welcome = next_frame(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let history = next_frame(&mut ws).await;
    assert_eq!(history["type"], "history", "{history}");
    (ws, welcome["instance"].as_str().expect("instance").to_string())
}

/// Reads until a chat with `body` arrives.
async fn wait_chat(ws: &mut Chat, body: &str) {
    loop {
        let f = next_frame(ws).await;
        if f["type"] == "chat"
            && f["chats"]
                .as_array()
                .expect("chats")
                .iter()
                .any(|c| c["body"] == body)
        {
            return;
        }
    }
}

/// The https frontend's counters.
async fn https_frontend(admin: u16) -> Value {
    let v = admin_get(admin, "/api/frontends").await.expect("frontends");
    v["frontends"]
        .as_array()
        .expect("list")
        .iter()
        .find(|f| f["name"] == "https")
        .expect("https frontend")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_requests_share_one_http2_connection() {
    let mut cluster = LocalCluster::start(LocalOptions::default())
        .await
        .expect("cluster");
    let certs = Certs::new();
    let mut opts = LbOpts::new(&[], &certs);
    opts.servers = cluster.apps.iter().map(|a| (a.name.clone(), a.public)).collect();
    opts.balance = Balance::LeastConn;
    opts.check = true;
    opts.edit(|c| c.backends[0].retry_on = vec![RetryOn::ConnFailure, RetryOn::Status503]);
    let lb = Lb::start(&opts).await;
    for app in ["app1", "app2"] {
        lb.wait_state(app, "up").await;
    }
    let mut send = h2_connection(&certs, lb.https).await;

    // Two WebSockets on two apps, and the page, on the one connection.
    let (mut ana, ana_on) = join(&mut send, lb.https, "over-h2").await;
    let (mut bob, bob_on) = join(&mut send, lb.https, "over-h2").await;
    assert_ne!(
        ana_on, bob_on,
        "leastconn puts the second socket on the other app"
    );
    let page = send
        .send_request(
            Request::get(format!("https://localhost:{}/", lb.https))
                .body(empty())
                .unwrap(),
        )
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.into_body().collect().await.expect("page body").to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("<html"), "the chat page");

    // Chat frames both ways.
    ana.send(Message::text(
        json!({"type": "send", "body": "over h2", "cid": "h2-1"}).to_string(),
    ))
    .await
    .expect("send");
    wait_chat(&mut ana, "over h2").await;
    wait_chat(&mut bob, "over h2").await;
    bob.send(Message::text(
        json!({"type": "send", "body": "and back"}).to_string(),
    ))
    .await
    .expect("send");
    wait_chat(&mut ana, "and back").await;

    // Non-101 answers keep their status on the stream.
    assert_eq!(
        connect(&mut send, lb.https, "/no-such-socket").await.err(),
        Some(StatusCode::NOT_FOUND)
    );

    // A close code from the app passes: a frame over its 64 KiB limit.
    let _ = bob.send(Message::text("x".repeat(70_000))).await;
    assert_eq!(close_code(&mut bob, Duration::from_secs(15)).await, Some(1009));

    // Draining ana's app closes her socket with 1012; she comes back on
    // the same connection and lands on the other app.
    cluster
        .process(&ana_on)
        .expect("ana's app")
        .term()
        .expect("SIGTERM");
    assert_eq!(close_code(&mut ana, Duration::from_secs(15)).await, Some(1012));
    let (mut back, back_on) = join(&mut send, lb.https, "over-h2").await;
    assert_ne!(back_on, ana_on, "a draining app takes no new socket");
    back.send(Message::text(
        json!({"type": "send", "body": "after drain"}).to_string(),
    ))
    .await
    .expect("send");
    wait_chat(&mut back, "after drain").await;

    let fe = https_frontend(lb.admin).await;
    assert_eq!(fe["tls_handshakes"], 1, "one TLS connection for all: {fe}");
    assert_eq!(fe["connections"], 1, "{fe}");
}

/// The next text message on `ws`, within 5 s.
async fn next_text_h2(ws: &mut Chat) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("message within 5 s")
            .expect("socket open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn http2_tunnels_follow_their_servers_state_as_http1_tunnels_do() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.balance = Balance::LeastConn;
    opts.check = true;
    opts.edit(|c| c.backends[0].on_marked_down = OnMarkedDown::ShutdownUnreachable);
    let lb = Lb::start(&opts).await;
    for name in ["app1", "app2"] {
        eventually(10, "first checks passed", || async {
            lb.servers().await[name]["check"]["status"] == "L7OK"
        })
        .await;
    }
    let mut send = h2_connection(&certs, lb.https).await;
    let mut first = connect(&mut send, lb.https, "/ws").await.expect("upgraded");
    let mut second = connect(&mut send, lb.https, "/ws").await.expect("upgraded");
    let (g1, g2) = (next_text_h2(&mut first).await, next_text_h2(&mut second).await);
    assert_ne!(g1, g2, "leastconn puts the second tunnel on the other server");
    let (mut on_app1, mut on_app2) = if g1 == "hello from app1" {
        (first, second)
    } else {
        (second, first)
    };
    let echo = |text: &'static str| Message::text(text);
    // Drained: established tunnels stay.
    assert_eq!(admin_set_state(lb.admin, "app1", "drain").await, StatusCode::OK);
    on_app1.send(echo("drained, still served")).await.expect("send");
    assert_eq!(next_text_h2(&mut on_app1).await, "drained, still served");
    assert_eq!(admin_set_state(lb.admin, "app1", "ready").await, StatusCode::OK);
    // Frozen (as after SIGSTOP): marked down by its checks timing out, and
    // its tunnel closed by the lb; the rest of the connection goes on.
    a.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    lb.wait_state("app1", "down").await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = on_app1.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "tunnel to the frozen server still open");
    on_app2
        .send(echo("the other tunnel is untouched"))
        .await
        .expect("send");
    assert_eq!(next_text_h2(&mut on_app2).await, "the other tunnel is untouched");
    let page = send
        .send_request(
            Request::get(format!("https://localhost:{}/", lb.https))
                .body(empty())
                .unwrap(),
        )
        .await
        .expect("a request on the same connection");
    assert_eq!(page.status(), StatusCode::OK);
}
