//! Bad input gets the documented answer (an error frame, a close code or an
//! HTTP status), recoverable errors leave the socket usable, and another client
//! in the same room is never disturbed.

use std::time::Duration;

use wsmesh_client::http;
use wsmesh_client::{ClientError, CloseInfo, Connection};
use wsmesh_common::protocol::{close, ErrorCode, ServerFrame};
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);
const ROOM: &str = "bad";

/// A cluster and a client in `ROOM` on the other instance that must stay served.
async fn scene() -> (LocalCluster, Connection) {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let bystander = c.join(1, ROOM).await.unwrap();
    (c, bystander)
}

/// A fresh client sends a message; the bystander gets it.
async fn bystander_still_served(c: &LocalCluster, bystander: &mut Connection) {
    let mut fresh = c.join(0, ROOM).await.unwrap();
    fresh.send_chat("still here", None).await.unwrap();
    let got = bystander
        .chats_until(LIMIT, |ch| ch.body == "still here")
        .await
        .unwrap();
    assert_eq!(got.last().map(|ch| ch.body.as_str()), Some("still here"));
}

async fn error_code(conn: &mut Connection) -> ErrorCode {
    conn.wait_for(LIMIT, |f| match f {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await
    .unwrap()
}

/// The socket still works: a send with a cid is acked.
async fn still_usable(conn: &mut Connection) {
    conn.send_chat("ok", Some("usable")).await.unwrap();
    conn.wait_for(LIMIT, |f| match f {
        ServerFrame::Ack { cid, .. } if cid == "usable" => Some(()),
        _ => None,
    })
    .await
    .unwrap();
}

async fn close_code(conn: &mut Connection) -> Option<u16> {
    conn.wait_close(LIMIT)
        .await
        .unwrap()
        .map(|CloseInfo { code, .. }| code)
}

#[tokio::test]
async fn bad_json_gets_bad_json_and_the_socket_stays() {
    let (c, mut bystander) = scene().await;
    let mut bad = c.join(0, ROOM).await.unwrap();
    bad.send_text("{not json").await.unwrap();
    assert_eq!(error_code(&mut bad).await, ErrorCode::BadJson);
    still_usable(&mut bad).await;
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn unknown_type_gets_unknown_type_and_the_socket_stays() {
    let (c, mut bystander) = scene().await;
    let mut bad = c.join(0, ROOM).await.unwrap();
    bad.send_text(r#"{"type":"dance","body":"x"}"#).await.unwrap();
    assert_eq!(error_code(&mut bad).await, ErrorCode::UnknownType);
    still_usable(&mut bad).await;
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn body_over_4k_gets_too_large_and_the_socket_stays() {
    let (c, mut bystander) = scene().await;
    let mut bad = c.join(0, ROOM).await.unwrap();
    bad.send_chat(&"x".repeat(4097), None).await.unwrap();
    assert_eq!(error_code(&mut bad).await, ErrorCode::TooLarge);
    still_usable(&mut bad).await;
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn frame_over_64k_closes_with_1009() {
    let (c, mut bystander) = scene().await;
    let mut bad = c.join(0, ROOM).await.unwrap();
    bad.send_chat(&"x".repeat(70 * 1024), None).await.unwrap();
    assert_eq!(close_code(&mut bad).await, Some(close::TOO_BIG));
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn binary_frame_gets_bad_json_and_the_socket_stays() {
    let (c, mut bystander) = scene().await;
    let mut bad = c.join(0, ROOM).await.unwrap();
    bad.send_binary(br#"{"type":"send","body":"bin"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(error_code(&mut bad).await, ErrorCode::BadJson);
    still_usable(&mut bad).await;
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_with_1007() {
    let (c, mut bystander) = scene().await;
    let mut bad = c.join(0, ROOM).await.unwrap();
    bad.send_raw_text(vec![b'{', 0xff, 0xfe, b'}']).await.unwrap();
    assert_eq!(close_code(&mut bad).await, Some(1007));
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn bad_room_gets_bad_room_and_close_1008() {
    let (c, mut bystander) = scene().await;
    for room in ["no spaces", "../etc", &"x".repeat(65)] {
        let mut bad = Connection::connect(&c.ws(0).room(room)).await.unwrap();
        assert_eq!(error_code(&mut bad).await, ErrorCode::BadRoom, "room {room:?}");
        assert_eq!(close_code(&mut bad).await, Some(close::POLICY), "room {room:?}");
    }
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn bad_since_gets_bad_since_and_close_1008() {
    let (c, mut bystander) = scene().await;
    for since in ["yesterday", "1-2-3", "-1"] {
        let mut bad = Connection::connect(&c.ws(0).room(ROOM).since(since))
            .await
            .unwrap();
        assert_eq!(error_code(&mut bad).await, ErrorCode::BadSince, "since {since:?}");
        assert_eq!(close_code(&mut bad).await, Some(close::POLICY), "since {since:?}");
    }
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn flood_over_the_rate_limit_gets_rate_limited() {
    let (c, mut bystander) = scene().await;
    let mut bad = c.join(0, ROOM).await.unwrap();
    // Burst 50 by default: 80 at once must overflow it.
    for i in 0..80 {
        bad.send_chat(&format!("flood{i}"), None).await.unwrap();
    }
    assert_eq!(error_code(&mut bad).await, ErrorCode::RateLimited);
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn foreign_origin_is_refused_and_own_origin_accepted() {
    let (c, mut bystander) = scene().await;
    let foreign = c.ws(0).room(ROOM).header("Origin", "http://evil.example");
    match Connection::connect(&foreign).await {
        Err(ClientError::Refused { status }) => assert_eq!(status, 403),
        Ok(mut conn) => {
            let code = conn.wait_close(LIMIT).await.unwrap().map(|i| i.code);
            assert_eq!(code, Some(close::POLICY));
        }
        Err(other) => panic!("foreign origin: {other}"),
    }
    let own = c
        .ws(0)
        .room(ROOM)
        .header("Origin", format!("http://{}", c.app(0).public));
    let mut conn = Connection::connect(&own).await.unwrap();
    conn.join(LIMIT).await.unwrap();
    bystander_still_served(&c, &mut bystander).await;
}

#[tokio::test]
async fn internal_events_without_or_with_a_wrong_token_get_401() {
    let (c, mut bystander) = scene().await;
    let url = format!(
        "{}{}",
        c.app(0).internal_url(),
        wsmesh_common::events::EVENTS_PATH
    );
    let forged = r#"[{"id":"99999999999999-0","room":"bad","nick":"x","body":"forged","ts":1}]"#;
    let no_token = http::request("POST", &url, &[], forged.into(), LIMIT)
        .await
        .unwrap();
    assert_eq!(no_token.status, 401);
    let wrong = [("authorization", "Bearer not-the-token")];
    let wrong_token = http::request("POST", &url, &wrong, forged.into(), LIMIT)
        .await
        .unwrap();
    assert_eq!(wrong_token.status, 401);
    // Nothing forged reached the room: the next thing the bystander gets is real.
    let mut fresh = c.join(0, ROOM).await.unwrap();
    fresh.send_chat("real", None).await.unwrap();
    let got = bystander
        .chats_until(LIMIT, |ch| ch.body == "real")
        .await
        .unwrap();
    assert!(got.iter().all(|ch| ch.body != "forged"), "{got:?}");
}
