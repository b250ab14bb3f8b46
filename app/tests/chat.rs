//! The `app` binary end to end with a real redis-server and real WebSocket
//! clients. The test plays the subscriber: it listens on the Redis channel
//! and posts what was published to `/internal/events`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use app::store::PAGE;
use futures_util::SinkExt;
use serde_json::json;
use support::{
    close_code, connect_v1, expect_error, forward_next, http, next_frame, next_msg, redis, redis_on,
    send_json, App, RedisExt, TOKEN,
};
use tokio_tungstenite::tungstenite::Message;
use wsmesh_common::protocol::{ErrorCode, ServerFrame};

#[tokio::test]
async fn v1_client_gets_welcome_history_ack_and_live_chat_then_resumes() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |_| {}).await;
    let mut ps = redis.subscribe().await;
    let (mut ws, proto) = connect_v1(&app.ws_url("/ws?room=dev")).await;
    assert_eq!(proto.as_deref(), Some("wsmesh.v1"));
    let ServerFrame::Welcome {
        session,
        nick,
        room,
        instance,
        ..
    } = next_frame(&mut ws).await
    else {
        panic!("first frame is welcome");
    };
    assert_eq!((room.as_str(), instance.as_str()), ("dev", "t1"));
    assert!(nick.starts_with("guest-"));
    assert_eq!(
        next_frame(&mut ws).await,
        ServerFrame::History {
            room: "dev".into(),
            chats: vec![],
            truncated: false
        }
    );
    send_json(&mut ws, json!({"type":"nick","nick":"ana"})).await;
    send_json(&mut ws, json!({"type":"send","body":"hello","cid":"c1"})).await;
    let ServerFrame::Ack { cid, id } = next_frame(&mut ws).await else {
        panic!("ack")
    };
    assert_eq!(cid, "c1");
    forward_next(&mut ps, &[&app]).await;
    let ServerFrame::Chat { chats } = next_frame(&mut ws).await else {
        panic!("chat")
    };
    assert_eq!(chats.len(), 1);
    assert_eq!(
        (chats[0].id.as_str(), chats[0].nick.as_str()),
        (id.as_str(), "ana")
    );
    assert_eq!(chats[0].cid.as_deref(), Some("c1"));

    // Same cid again: same id, nothing new.
    send_json(&mut ws, json!({"type":"send","body":"hello","cid":"c1"})).await;
    assert_eq!(
        next_frame(&mut ws).await,
        ServerFrame::Ack {
            cid: "c1".into(),
            id: id.clone()
        }
    );

    // A second message, then resume from the first with the same session.
    send_json(&mut ws, json!({"type":"send","body":"again"})).await;
    let second: wsmesh_common::chat::Chat =
        serde_json::from_str(&forward_next(&mut ps, &[&app]).await).expect("chat json");
    let (mut back, _) = connect_v1(&app.ws_url(&format!("/ws?room=dev&since={id}&session={session}"))).await;
    let ServerFrame::Welcome {
        nick, session: same, ..
    } = next_frame(&mut back).await
    else {
        panic!("welcome")
    };
    assert_eq!((nick.as_str(), same.as_str()), ("ana", session.as_str()));
    let ServerFrame::History { chats, truncated, .. } = next_frame(&mut back).await else {
        panic!("history")
    };
    assert!(!truncated);
    assert_eq!(chats, vec![second.clone()]);
    // Re-delivery of an old id (subscriber gap fill) reaches nobody twice.
    assert_eq!(
        app.post_events(&serde_json::to_string(&vec![second]).expect("json")),
        204
    );
    send_json(&mut back, json!({"type":"send","body":"third","cid":"c3"})).await;
    let ServerFrame::Ack { id: third, .. } = next_frame(&mut back).await else {
        panic!("ack")
    };
    forward_next(&mut ps, &[&app]).await;
    let ServerFrame::Chat { chats } = next_frame(&mut back).await else {
        panic!("chat")
    };
    assert_eq!(chats[0].id, third, "the re-delivered old chat was dropped");
}

#[tokio::test]
async fn a_long_gap_is_replayed_in_bounded_frames_in_order_before_live_chats() {
    let redis = redis().await;
    let store = redis.store(100_000);
    let mut ids = Vec::new();
    for i in 0..2 * PAGE + 20 {
        let appended = store
            .append("long", "n", &format!("m{i}"), None)
            .await
            .expect("append");
        ids.push(appended.id);
    }
    let app = App::start(&redis, "t1", |_| {}).await;
    let mut ps = redis.subscribe().await;
    let (mut ws, _) = connect_v1(&app.ws_url(&format!("/ws?room=long&since={}", ids[9]))).await;
    assert!(matches!(next_frame(&mut ws).await, ServerFrame::Welcome { .. }));
    let ServerFrame::History { chats, truncated, .. } = next_frame(&mut ws).await else {
        panic!("history")
    };
    assert!(!truncated);
    assert_eq!(chats.len(), PAGE, "the history frame holds one page");
    let mut got: Vec<String> = chats.into_iter().map(|c| c.id).collect();
    while got.len() < ids.len() - 10 {
        match next_frame(&mut ws).await {
            ServerFrame::Chat { chats } => {
                assert!(chats.len() <= PAGE, "a replay frame of {} chats", chats.len());
                got.extend(chats.into_iter().map(|c| c.id));
            }
            other => panic!("replay interrupted by {other:?}"),
        }
    }
    assert_eq!(got, ids[10..], "every chat after since, once, in order");

    send_json(&mut ws, json!({"type":"send","body":"live","cid":"c-live"})).await;
    forward_next(&mut ps, &[&app]).await;
    loop {
        match next_frame(&mut ws).await {
            ServerFrame::Chat { chats } => {
                assert_eq!(chats.len(), 1);
                assert_eq!(chats[0].body, "live", "nothing replayed again");
                break;
            }
            ServerFrame::Presence { .. } | ServerFrame::Ack { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn refused_frames_get_error_codes_and_the_socket_stays() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |c| {
        c.limits.max_body_bytes = 10;
        c.limits.rate_burst = 2;
        c.limits.rate_per_sec = 0.001;
    })
    .await;
    let (mut ws, _) = connect_v1(&app.ws_url("/ws")).await;
    next_frame(&mut ws).await;
    next_frame(&mut ws).await;
    ws.send(Message::text("{nope")).await.expect("send");
    expect_error(next_frame(&mut ws).await, ErrorCode::BadJson);
    send_json(&mut ws, json!({"type":"dance"})).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::UnknownType);
    send_json(&mut ws, json!({"type":"send","body":"01234567890"})).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::TooLarge);
    send_json(&mut ws, json!({"type":"send","body":"x","cid":"c".repeat(65)})).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::BadJson);
    send_json(&mut ws, json!({"type":"nick","nick":"a\u{7}b"})).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::BadJson);
    ws.send(Message::binary(vec![1u8, 2, 3])).await.expect("send");
    expect_error(next_frame(&mut ws).await, ErrorCode::BadJson);
    for cid in ["a", "b"] {
        send_json(&mut ws, json!({"type":"send","body":"ok","cid":cid})).await;
        assert!(matches!(next_frame(&mut ws).await, ServerFrame::Ack { .. }));
    }
    send_json(&mut ws, json!({"type":"send","body":"ok","cid":"c"})).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::RateLimited);
}

#[tokio::test]
async fn bad_query_and_foreign_origin_close_with_1008() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |_| {}).await;
    let (mut ws, _) = connect_v1(&app.ws_url("/ws?room=no%20spaces")).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::BadRoom);
    assert_eq!(close_code(&mut ws).await, 1008);
    let (mut ws, _) = connect_v1(&app.ws_url("/ws?since=yesterday")).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::BadSince);
    assert_eq!(close_code(&mut ws).await, 1008);

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = app.ws_url("/ws").into_client_request().expect("request");
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade happens");
    assert_eq!(close_code(&mut ws).await, 1008);
    let mut req = app.ws_url("/ws").into_client_request().expect("request");
    let own = format!("http://{}", app.public);
    req.headers_mut().insert("Origin", own.parse().expect("header"));
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "wsmesh.v1".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("same-origin upgrade");
    assert!(matches!(next_frame(&mut ws).await, ServerFrame::Welcome { .. }));
}

#[tokio::test]
async fn oversized_frame_closes_1009_and_invalid_utf8_closes_1007() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |c| {
        c.limits.max_frame_bytes = 1024;
        c.limits.max_body_bytes = 512;
    })
    .await;
    let (mut ws, _) = connect_v1(&app.ws_url("/ws")).await;
    next_frame(&mut ws).await;
    ws.send(Message::text("x".repeat(2000))).await.expect("send");
    assert_eq!(close_code(&mut ws).await, 1009);

    // tungstenite will not send invalid UTF-8, so speak raw RFC 6455.
    let mut s = TcpStream::connect(app.public).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: wsmesh.v1\r\n\r\n",
        app.public
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        s.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "accept key: {head}"
    );
    let payload = [0xffu8, 0xfe, 0x41];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).expect("write frame");
    // Skip text frames (welcome, history, presence) until the close frame.
    for _ in 0..10 {
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).expect("frame header");
        let mut len = u64::from(hdr[1] & 0x7f);
        if len == 126 {
            let mut ext = [0u8; 2];
            s.read_exact(&mut ext).expect("len");
            len = u64::from(u16::from_be_bytes(ext));
        }
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body).expect("payload");
        if hdr[0] & 0x0f == 0x8 {
            assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1007);
            return;
        }
    }
    panic!("no close frame");
}

#[tokio::test]
async fn http_routes_page_health_and_internal_auth() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |_| {}).await;
    let (status, text) = http(app.public, "GET", "/ws", &[], "");
    assert_eq!(status, 400, "{text}");
    assert_eq!(http(app.public, "GET", "/nope", &[], "").0, 404);
    let (status, text) = http(app.public, "GET", "/", &[], "");
    assert_eq!(status, 200);
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{text}");
    assert!(lower.contains("cache-control: no-cache"), "{text}");
    assert!(
        lower.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{text}"
    );
    for (path, ty) in [("/chat.js", "text/javascript"), ("/chat.css", "text/css")] {
        let (status, text) = http(app.public, "GET", path, &[], "");
        assert_eq!(status, 200);
        assert!(
            text.to_ascii_lowercase().contains(&format!("content-type: {ty}")),
            "{text}"
        );
    }

    let (status, text) = http(app.public, "GET", "/healthz", &[], "");
    assert_eq!(status, 503, "subscriber never heard: {text}");
    assert!(text.contains(r#""failing":["subscriber"]"#), "{text}");
    let (status, text) = http(app.internal, "GET", "/healthz", &[], "");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("subscriber never heard from"), "{text}");
    assert_eq!(http(app.internal, "POST", "/internal/events", &[], "[]").0, 401);
    let wrong = [("Authorization", "Bearer wrong")];
    assert_eq!(
        http(app.internal, "POST", "/internal/events", &wrong, "[]").0,
        401
    );
    assert_eq!(app.post_events("{\"not\":\"a batch\"}"), 400);
    assert_eq!(app.post_events("[]"), 204);
    // The public answer is the verdict only: no Redis address, no counts.
    let (status, text) = http(app.public, "GET", "/healthz", &[], "");
    assert_eq!(status, 200, "{text}");
    let public: serde_json::Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).expect("body")).expect("json body");
    assert_eq!(
        public,
        serde_json::json!({"status": "ok", "instance": "t1", "failing": []})
    );
    let (status, text) = http(app.internal, "GET", "/healthz", &[], "");
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).expect("body")).expect("json body");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["instance"], "t1");
    assert_eq!(body["redis"]["ok"], true);
    assert_eq!(body["connections"]["max"], 10000);
    assert_eq!(body["connections"]["threshold"], 8000);

    let auth = format!("Bearer {TOKEN}");
    // A room has a cursor while it has a socket here (a seed client in the lobby).
    let (_lobby, _) = tokio_tungstenite::connect_async(app.ws_url("/ws"))
        .await
        .expect("simple-chat connects");
    let chat = json!([
        {"id":"5-1","room":"lobby","nick":"n","body":"b","ts":5},
        {"id":"6-1","room":"nobody-here","nick":"n","body":"b","ts":6}
    ])
    .to_string();
    // The socket is in the hub once its task has joined (after the upgrade
    // the client saw): post until the lobby has its cursor (re-posting is
    // harmless, the hub drops what it delivered).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        assert_eq!(app.post_events(&chat), 204);
        let (status, text) = http(
            app.internal,
            "GET",
            "/internal/cursors",
            &[("Authorization", &auth)],
            "",
        );
        assert_eq!(status, 200);
        if text.ends_with("{\"lobby\":\"5-1\"}") || std::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.ends_with("{\"lobby\":\"5-1\"}"), "{text}");
    assert_eq!(http(app.internal, "GET", "/internal/cursors", &[], "").0, 401);
    let (status, text) = http(
        app.internal,
        "GET",
        "/internal/rooms?wait_ms=0",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 200);
    assert!(text.contains("\"rooms\":[\"lobby\"]"), "{text}");
    assert_eq!(http(app.internal, "GET", "/internal/rooms", &[], "").0, 401);
    let (status, _) = http(
        app.internal,
        "GET",
        "/internal/rooms?wait_ms=soon",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 400);

    // Counters are served on the internal listener, not on the public one.
    let (status, text) = http(app.internal, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(text.contains("wsmesh_app_internal_batches_total 2"), "{text}");
    assert_eq!(http(app.public, "GET", "/metrics", &[], "").0, 404);
}

#[tokio::test]
async fn seed_formats_share_the_lobby() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |_| {}).await;
    let mut ps = redis.subscribe().await;
    let (mut simple, resp) = tokio_tungstenite::connect_async(app.ws_url("/ws"))
        .await
        .expect("connect");
    assert!(resp.headers().get("Sec-WebSocket-Protocol").is_none());
    let (mut cloud, _) = tokio_tungstenite::connect_async(app.ws_url("/chatsocket"))
        .await
        .expect("connect");
    simple
        .send(Message::text(json!({"name":"ana","content":"hi"}).to_string()))
        .await
        .expect("send");
    forward_next(&mut ps, &[&app]).await;
    let Message::Text(t) = next_msg(&mut simple).await else {
        panic!("text")
    };
    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
    assert_eq!(
        (v["name"].as_str(), v["content"].as_str()),
        (Some("ana"), Some("hi"))
    );
    let time = v["time"].as_str().expect("time");
    assert_eq!((time.len(), &time[4..5], &time[13..14]), (19, "/", ":"), "{time}");
    let Message::Text(t) = next_msg(&mut cloud).await else {
        panic!("text")
    };
    assert_eq!(t.as_str(), r#"{"chats":[{"body":"hi"}]}"#);
    cloud
        .send(Message::text(
            json!({"type":"command","command":"requestFirstChat"}).to_string(),
        ))
        .await
        .expect("send");
    let Message::Text(t) = next_msg(&mut cloud).await else {
        panic!("text")
    };
    assert_eq!(t.as_str(), r#"{"chats":[{"body":"hi"}]}"#);
    cloud
        .send(Message::text(r#"{"body":"from cloud"}"#))
        .await
        .expect("send");
    forward_next(&mut ps, &[&app]).await;
    let (mut v1, _) = connect_v1(&app.ws_url("/ws?room=lobby")).await;
    next_frame(&mut v1).await;
    let ServerFrame::History { chats, .. } = next_frame(&mut v1).await else {
        panic!("history")
    };
    let bodies: Vec<&str> = chats.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(bodies, vec!["hi", "from cloud"]);
}

/// Reads until a presence frame says `want` are online.
async fn wait_online(ws: &mut support::Client, want: u64) -> u64 {
    for _ in 0..20 {
        if let Message::Text(t) = next_msg(ws).await {
            if let Ok(ServerFrame::Presence { online, .. }) = serde_json::from_str(t.as_str()) {
                if online == want {
                    return online;
                }
            }
        }
    }
    panic!("never saw {want} online");
}

#[tokio::test]
async fn presence_counts_clients_on_both_instances() {
    let redis = redis().await;
    let app1 = App::start(&redis, "a1", |_| {}).await;
    let app2 = App::start(&redis, "a2", |_| {}).await;
    let (mut one, _) = connect_v1(&app1.ws_url("/ws?room=p")).await;
    let (mut two, _) = connect_v1(&app2.ws_url("/ws?room=p")).await;
    assert_eq!(wait_online(&mut two, 2).await, 2);
    assert_eq!(wait_online(&mut one, 2).await, 2);
}

#[tokio::test]
async fn over_max_connections_is_refused_with_503() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |c| c.limits.max_connections = 1).await;
    let (_first, _) = connect_v1(&app.ws_url("/ws")).await;
    match tokio_tungstenite::connect_async(app.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
}

#[tokio::test]
async fn sigterm_drains_with_1012_and_exits_zero() {
    let redis = redis().await;
    let mut app = App::start(&redis, "t1", |c| {
        c.drain.grace = Duration::from_secs(1);
        c.drain.window = Duration::from_millis(500);
    })
    .await;
    let (mut ws, _) = connect_v1(&app.ws_url("/ws")).await;
    next_frame(&mut ws).await;
    let pid = app.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    // Health is 503 at once, while sockets are still served.
    let mut saw_503 = false;
    for _ in 0..100 {
        let (status, _) = http(app.public, "GET", "/healthz", &[], "");
        if status == 503 {
            saw_503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_503);
    assert_eq!(close_code(&mut ws).await, 1012);
    assert!(app.terminate().await.success());
}

#[tokio::test]
async fn redis_outage_gives_unavailable_and_the_app_recovers() {
    let redis = redis().await;
    let port = redis.port();
    let app = App::start(&redis, "t1", |c| {
        c.redis.command_timeout = Duration::from_millis(500)
    })
    .await;
    let (mut ws, _) = connect_v1(&app.ws_url("/ws")).await;
    next_frame(&mut ws).await;
    next_frame(&mut ws).await;
    drop(redis);
    send_json(&mut ws, json!({"type":"send","body":"lost?","cid":"k1"})).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::Unavailable);
    let (mut fresh, _) = connect_v1(&app.ws_url("/ws")).await;
    expect_error(next_frame(&mut fresh).await, ErrorCode::Unavailable);
    assert_eq!(close_code(&mut fresh).await, 1011);

    let _redis = redis_on(port).await;
    let mut welcomed = false;
    for _ in 0..50 {
        let (mut c, _) = connect_v1(&app.ws_url("/ws")).await;
        if matches!(next_frame(&mut c).await, ServerFrame::Welcome { .. }) {
            welcomed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(welcomed, "app never recovered");
    send_json(&mut ws, json!({"type":"send","body":"back","cid":"k1"})).await;
    assert!(
        matches!(next_frame(&mut ws).await, ServerFrame::Ack { .. }),
        "old socket still works"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013_and_others_are_not() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |c| c.limits.send_queue = 2).await;
    let mut slow = support::connect_v1_tiny_buffer(app.public, "/ws?room=big").await;
    next_frame(&mut slow).await;
    next_frame(&mut slow).await;
    // Post ~1 MiB batches until the hub gives up on the socket: its kernel
    // buffers fill, its writer blocks, its queue of 2 overflows. Bounded: at
    // most 80 posts. The test reads nothing from the slow socket meanwhile.
    let internal = app.internal;
    let kicked = tokio::task::spawn_blocking(move || {
        let body = "x".repeat(64 * 1024);
        let auth = format!("Bearer {TOKEN}");
        for post in 0..80u64 {
            let batch: Vec<serde_json::Value> = (0..16u64)
                .map(|i| json!({"id": format!("{}-{i}", 100 + post), "room":"big","nick":"n","body":body,"ts":1}))
                .collect();
            let text = serde_json::to_string(&batch).expect("json");
            let (status, _) = http(internal, "POST", "/internal/events", &[("Authorization", &auth)], &text);
            assert_eq!(status, 204);
            let (_, metrics) = http(internal, "GET", "/metrics", &[], "");
            if metrics.contains("wsmesh_app_queue_drops_total 1") {
                return true;
            }
        }
        false
    })
    .await
    .expect("poster");
    assert!(kicked, "slow socket was never kicked");
    // Reading again, the slow socket finds what was in flight, then 1013.
    let mut code = None;
    for _ in 0..100 {
        match next_msg(&mut slow).await {
            Message::Close(Some(f)) => {
                code = Some(u16::from(f.code));
                break;
            }
            Message::Close(None) => break,
            _ => {}
        }
    }
    assert_eq!(code, Some(1013));
    // A socket that joins now is unaffected.
    let (mut fresh, _) = connect_v1(&app.ws_url("/ws?room=big")).await;
    assert!(matches!(
        next_frame(&mut fresh).await,
        ServerFrame::Welcome { .. }
    ));
}
