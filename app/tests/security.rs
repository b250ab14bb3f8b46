//! Who may chat, and what happens to a client that abuses it, checked from
//! outside against a real `app` process in jwt mode: 401/403 before the
//! upgrade, the nick from the token, 4001 at expiry and a lossless resume
//! with a fresh token, the seed formats under the same rules, an erring
//! client closed with 1008 while a bystander stays, `/metrics` only on the
//! internal listener. The test plays the subscriber, as in `chat.rs`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::auth::Claims;
use app::config::AuthMode;
use futures_util::SinkExt;
use serde_json::json;
use support::{
    close_code, connect_v1, expect_error, forward_next, http, next_frame, next_msg, redis, send_json, App,
    Client, RedisExt,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::{close, ErrorCode, ServerFrame};
use wsmesh_testkit::configs::AppConfig;

const SECRET: &str = "test-secret-test-secret-test-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `sub` named `name`, valid for `ttl` seconds (negative: expired).
fn claims(sub: &str, name: &str, rooms: Option<&[&str]>, ttl: i64) -> Claims {
    Claims {
        sub: sub.into(),
        exp: now().saturating_add_signed(ttl),
        nbf: None,
        name: Some(name.into()),
        rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
    }
}

fn mint(claims: &Claims) -> String {
    claims.mint_hs256(SECRET.as_bytes(), None, None).expect("mint")
}

/// jwt mode with `SECRET`, issuer `sso`, no clock leeway (so expiry is
/// exact to the second).
fn jwt_mode(c: &mut AppConfig) {
    c.auth.mode = AuthMode::Jwt;
    c.auth.jwt_hs256_secret = Some(SECRET.into());
    c.auth.issuer = Some("sso".into());
    c.auth.leeway = Duration::ZERO;
}

fn mint_sso(claims: &Claims) -> String {
    claims
        .mint_hs256(SECRET.as_bytes(), Some("sso"), None)
        .expect("mint")
}

/// Opens a WebSocket with `headers`; the socket, or the HTTP status that
/// refused the upgrade.
async fn open(url: &str, protocol: Option<&str>, headers: &[(&str, &str)]) -> Result<Client, u16> {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).expect("ascii"));
    }
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).expect("header name");
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).expect("ascii"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// A v1 socket to `room` with `token` in the query.
async fn v1(app: &App, room: &str, token: &str, since: Option<&str>) -> Result<Client, u16> {
    let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
    let url = app.ws_url(&format!("/ws?room={room}&token={token}{since}"));
    open(&url, Some("wsmesh.v1"), &[]).await
}

/// Welcome and history of a fresh v1 socket: (nick, chats).
async fn settle(ws: &mut Client) -> (String, Vec<Chat>) {
    let ServerFrame::Welcome { nick, .. } = next_frame(ws).await else {
        panic!("welcome first")
    };
    let ServerFrame::History { chats, .. } = next_frame(ws).await else {
        panic!("history second")
    };
    (nick, chats)
}

/// A counter's value on the app's internal `/metrics`.
fn counter(app: &App, series: &str) -> String {
    let (status, text) = http(app.internal, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

#[tokio::test]
async fn missing_bad_expired_or_foreign_tokens_get_401_before_the_upgrade() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", jwt_mode).await;
    let ana = claims("ana", "Ana", None, 60);
    assert_eq!(v1(&app, "lobby", "", None).await.err(), Some(401), "no token");
    let forged = ana
        .mint_hs256(b"not-the-secret-not-the-secret-xxxx", Some("sso"), None)
        .expect("mint");
    assert_eq!(
        v1(&app, "lobby", &forged, None).await.err(),
        Some(401),
        "bad signature"
    );
    let expired = mint_sso(&claims("ana", "Ana", None, -5));
    assert_eq!(
        v1(&app, "lobby", &expired, None).await.err(),
        Some(401),
        "expired"
    );
    let foreign = ana
        .mint_hs256(SECRET.as_bytes(), Some("evil"), None)
        .expect("mint");
    assert_eq!(
        v1(&app, "lobby", &foreign, None).await.err(),
        Some(401),
        "wrong issuer"
    );
    assert_eq!(
        v1(&app, "lobby", &mint(&ana), None).await.err(),
        Some(401),
        "no issuer"
    );
    assert_eq!(
        v1(&app, "lobby", "garbage", None).await.err(),
        Some(401),
        "not a JWT"
    );
    // The seed endpoints too.
    assert_eq!(open(&app.ws_url("/chatsocket"), None, &[]).await.err(), Some(401));
    assert_eq!(open(&app.ws_url("/ws"), None, &[]).await.err(), Some(401));
    // The 401 carries a Bearer challenge.
    let (status, text) = http(
        app.public,
        "GET",
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    );
    assert_eq!(status, 401);
    assert!(
        text.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{text}"
    );
    assert_eq!(
        counter(&app, "wsmesh_app_auth_refusals_total{reason=\"unauthenticated\"}"),
        "9"
    );

    // A good token is accepted from the query, the header and the cookie.
    let token = mint_sso(&ana);
    assert!(v1(&app, "lobby", &token, None).await.is_ok());
    let bearer = format!("Bearer {token}");
    assert!(open(
        &app.ws_url("/ws?room=lobby"),
        Some("wsmesh.v1"),
        &[("Authorization", &bearer)]
    )
    .await
    .is_ok());
    let cookie = format!("theme=dark; wsmesh_token={token}");
    assert!(open(
        &app.ws_url("/ws?room=lobby"),
        Some("wsmesh.v1"),
        &[("Cookie", &cookie)]
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn rooms_outside_the_token_get_403_and_patterns_allow() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", jwt_mode).await;
    let token = mint_sso(&claims("ana", "Ana", Some(&["lobby", "team-*"]), 60));
    assert_eq!(v1(&app, "ops", &token, None).await.err(), Some(403));
    assert_eq!(v1(&app, "teamx", &token, None).await.err(), Some(403));
    let mut ws = v1(&app, "team-blue", &token, None)
        .await
        .expect("pattern allows team-blue");
    settle(&mut ws).await;
    assert!(v1(&app, "lobby", &token, None).await.is_ok());
    // The seed formats chat in the lobby: a token without it gets 403.
    let team_only = mint_sso(&claims("bob", "Bob", Some(&["team-*"]), 60));
    let url = app.ws_url(&format!("/chatsocket?token={team_only}"));
    assert_eq!(open(&url, None, &[]).await.err(), Some(403));
    assert_eq!(
        counter(&app, "wsmesh_app_auth_refusals_total{reason=\"room\"}"),
        "3"
    );
}

#[tokio::test]
async fn the_nick_is_the_token_name_and_a_nick_frame_changes_nothing() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", jwt_mode).await;
    let mut ps = redis.subscribe().await;
    let token = mint_sso(&claims("ana", "Ana", None, 60));
    let mut ws = v1(&app, "dev", &token, None).await.expect("connects");
    assert_eq!(settle(&mut ws).await.0, "Ana");
    send_json(&mut ws, json!({"type":"nick","nick":"Mallory"})).await;
    expect_error(next_frame(&mut ws).await, ErrorCode::Forbidden);
    send_json(&mut ws, json!({"type":"send","body":"hi","cid":"c1"})).await;
    assert!(matches!(next_frame(&mut ws).await, ServerFrame::Ack { .. }));
    let chat: Chat = serde_json::from_str(&forward_next(&mut ps, &[&app]).await).expect("chat");
    assert_eq!(chat.nick, "Ana");

    // simple-chat's own `name` is ignored in jwt mode; CloudChat uses the token's too.
    let bob = mint_sso(&claims("bob", "Bob", None, 60));
    let mut simple = open(&app.ws_url(&format!("/ws?token={bob}")), None, &[])
        .await
        .expect("simple-chat connects");
    simple
        .send(Message::text(r#"{"name":"Mallory","content":"from simple"}"#))
        .await
        .expect("send");
    let chat: Chat = serde_json::from_str(&forward_next(&mut ps, &[&app]).await).expect("chat");
    assert_eq!((chat.nick.as_str(), chat.body.as_str()), ("Bob", "from simple"));
    let mut cloud = open(&app.ws_url(&format!("/chatsocket?token={bob}")), None, &[])
        .await
        .expect("CloudChat connects");
    cloud
        .send(Message::text(r#"{"body":"from cloud"}"#))
        .await
        .expect("send");
    let chat: Chat = serde_json::from_str(&forward_next(&mut ps, &[&app]).await).expect("chat");
    assert_eq!((chat.nick.as_str(), chat.body.as_str()), ("Bob", "from cloud"));
}

#[tokio::test]
async fn an_expired_socket_closes_with_4001_and_resumes_with_a_fresh_token_losing_nothing() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", jwt_mode).await;
    let mut ps = redis.subscribe().await;
    let mut ana = v1(&app, "dev", &mint_sso(&claims("ana", "Ana", None, 3)), None)
        .await
        .expect("ana connects");
    settle(&mut ana).await;
    let mut bob = v1(&app, "dev", &mint_sso(&claims("bob", "Bob", None, 600)), None)
        .await
        .expect("bob connects");
    settle(&mut bob).await;
    send_json(&mut bob, json!({"type":"send","body":"before","cid":"b0"})).await;
    forward_next(&mut ps, &[&app]).await;
    let ServerFrame::Chat { chats } = next_frame(&mut ana).await else {
        panic!("ana gets the chat live")
    };
    let seen = chats.last().expect("one chat").id.clone();
    // The token's exp passes within 3 s: the server closes with 4001.
    assert_eq!(close_code(&mut ana).await, close::TOKEN_EXPIRED);
    // While ana is away, bob goes on.
    let mut sent = Vec::new();
    for i in 1..=3 {
        send_json(
            &mut bob,
            json!({"type":"send","body":format!("away {i}"),"cid":format!("b{i}")}),
        )
        .await;
        let chat: Chat = serde_json::from_str(&forward_next(&mut ps, &[&app]).await).expect("chat");
        sent.push(chat);
    }
    // The old token no longer opens a socket; a fresh one resumes after `seen`.
    let stale = mint_sso(&claims("ana", "Ana", None, -1));
    assert_eq!(v1(&app, "dev", &stale, Some(&seen)).await.err(), Some(401));
    let fresh = mint_sso(&claims("ana", "Ana", None, 600));
    let mut back = v1(&app, "dev", &fresh, Some(&seen))
        .await
        .expect("fresh token connects");
    let (nick, missed) = settle(&mut back).await;
    assert_eq!(nick, "Ana");
    assert_eq!(
        missed, sent,
        "every message sent while away, exactly once, in order"
    );
    assert_eq!(counter(&app, "wsmesh_app_token_expiries_total"), "1");
}

#[tokio::test]
async fn a_flooding_client_is_closed_with_1008_and_a_bystander_stays() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |c| {
        c.limits.rate_burst = 5;
        c.limits.max_errors = 20;
    })
    .await;
    let mut ps = redis.subscribe().await;
    let (mut bystander, _) = connect_v1(&app.ws_url("/ws?room=dev")).await;
    settle(&mut bystander).await;
    let (mut flooder, _) = connect_v1(&app.ws_url("/ws?room=dev")).await;
    settle(&mut flooder).await;
    // 200 sends at once: 5 pass the bucket, the rest are over the rate.
    for i in 0..200 {
        flooder
            .feed(Message::text(
                json!({"type":"send","body":format!("f{i}")}).to_string(),
            ))
            .await
            .expect("feed");
    }
    let _ = flooder.flush().await;
    let mut errors = 0;
    let code = loop {
        match next_msg(&mut flooder).await {
            Message::Text(t) => {
                if let Ok(ServerFrame::Error { code, .. }) = serde_json::from_str(t.as_str()) {
                    assert_eq!(code, ErrorCode::RateLimited);
                    errors += 1;
                }
            }
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    assert_eq!(code, Some(close::POLICY));
    assert_eq!(errors, 21, "20 refusals are allowed, the 21st closes the socket");
    assert_eq!(counter(&app, "wsmesh_app_error_closes_total"), "1");
    // The bystander is still served.
    for _ in 0..5 {
        forward_next(&mut ps, &[&app]).await;
    }
    send_json(
        &mut bystander,
        json!({"type":"send","body":"still here","cid":"s1"}),
    )
    .await;
    loop {
        match next_frame(&mut bystander).await {
            ServerFrame::Ack { cid, .. } => break assert_eq!(cid, "s1"),
            ServerFrame::Chat { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn metrics_are_on_the_internal_listener_unless_configured_public() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |_| {}).await;
    assert_eq!(http(app.public, "GET", "/metrics", &[], "").0, 404);
    let (status, text) = http(app.internal, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(text.contains("wsmesh_app_connections"), "{text}");
    let open = App::start(&redis, "t2", |c| c.listen.public_metrics = true).await;
    assert_eq!(http(open.public, "GET", "/metrics", &[], "").0, 200);
}
