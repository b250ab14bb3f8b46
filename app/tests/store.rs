//! The Redis store against a real redis-server: the append script's
//! idempotency and publish payload, history replay after `since` (paged),
//! truncation detection, sessions and presence sums.

mod support;

use std::time::Duration;

use app::store::{Outcome, Store, PAGE};
use futures_util::StreamExt;
use redis::AsyncCommands;
use support::{redis, redis_on, RedisExt};
use wsmesh_common::chat::Chat;
use wsmesh_common::stream_id::StreamId;

/// Every page of a replay after `since`: the chats, `truncated`, each page's size.
async fn replay_all(s: &Store, room: &str, since: StreamId) -> (Vec<Chat>, bool, Vec<usize>) {
    let mut replay = s.replay(room, since).await.expect("replay");
    let (mut chats, mut sizes) = (Vec::new(), Vec::new());
    while let Some(page) = s.next_page(&mut replay).await.expect("page") {
        sizes.push(page.len());
        chats.extend(page);
    }
    (chats, replay.truncated, sizes)
}

async fn next_published(ps: &mut redis::aio::PubSub) -> Chat {
    let msg = tokio::time::timeout(Duration::from_secs(5), ps.on_message().next())
        .await
        .expect("a publish within 5 s")
        .expect("pubsub open");
    let payload = msg.get_payload_bytes();
    wsmesh_redis_wire::decode_published(payload)
        .unwrap_or_else(|e| panic!("{} is not a Chat: {e}", String::from_utf8_lossy(payload)))
}

#[tokio::test]
async fn resend_with_same_cid_is_stored_and_published_once() {
    let redis = redis().await;
    let s = redis.store(1000);
    let mut ps = redis.subscribe().await;
    let first = s
        .append("lobby", "ana", "hi \"there\" / é", Some("c1"))
        .await
        .expect("append");
    let again = s
        .append("lobby", "ana", "hi \"there\" / é", Some("c1"))
        .await
        .expect("append");
    assert_eq!(first.outcome, Outcome::Stored);
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert_eq!(again.id, first.id);
    let mut conn = redis.conn().await;
    let len: u64 = conn.xlen("wsmesh:room:{lobby}").await.expect("xlen");
    assert_eq!(len, 1);
    let published = next_published(&mut ps).await;
    let id: StreamId = first.id.parse().expect("stream id");
    assert_eq!(
        published,
        Chat {
            id: first.id.clone(),
            room: "lobby".into(),
            nick: "ana".into(),
            body: "hi \"there\" / é".into(),
            ts: id.ms,
            cid: Some("c1".into()),
        }
    );
    // A later chat is the next publish: the duplicate published nothing.
    let other = s.append("lobby", "bo", "second", None).await.expect("append");
    let next = next_published(&mut ps).await;
    assert_eq!(next.id, other.id);
    assert_eq!(next.cid, None);
    let remembered: String = conn.get("wsmesh:cid:{lobby}:c1").await.expect("cid key");
    assert_eq!(remembered, first.id);
}

#[tokio::test]
async fn same_cid_in_another_room_is_a_new_message() {
    let redis = redis().await;
    let s = redis.store(1000);
    let a = s.append("a", "n", "x", Some("c")).await.expect("append");
    let b = s.append("b", "n", "x", Some("c")).await.expect("append");
    assert_eq!((a.outcome, b.outcome), (Outcome::Stored, Outcome::Stored));
    let mut conn = redis.conn().await;
    let len: u64 = conn.xlen("wsmesh:room:{b}").await.expect("xlen");
    assert_eq!(len, 1);
}

#[tokio::test]
async fn replay_after_since_is_exclusive_ordered_and_paged() {
    let redis = redis().await;
    let s = redis.store(100_000);
    let mut ids = Vec::new();
    for i in 0..1203 {
        ids.push(
            s.append("big", "n", &format!("m{i}"), None)
                .await
                .expect("append")
                .id,
        );
    }
    let since: StreamId = ids[100].parse().expect("id");
    let (chats, truncated, sizes) = replay_all(&s, "big", since).await;
    assert!(!truncated);
    let got: Vec<&str> = chats.iter().map(|c| c.id.as_str()).collect();
    let want: Vec<&str> = ids[101..].iter().map(String::as_str).collect();
    assert_eq!(got, want);
    assert_eq!(chats[0].body, "m101");
    assert_eq!(sizes, [PAGE, PAGE, 1102 - 2 * PAGE], "pages of at most {PAGE}");
    let last = s.last("big", 50).await.expect("last");
    assert_eq!(last.len(), 50);
    assert_eq!(last.last().map(|c| c.id.as_str()), ids.last().map(String::as_str));
    assert_eq!(last[0].id, ids[1203 - 50]);
}

#[tokio::test]
async fn trimmed_gap_is_reported_as_truncated() {
    let redis = redis().await;
    let s = redis.store(10);
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            s.append("small", "n", &format!("m{i}"), None)
                .await
                .expect("append")
                .id,
        );
    }
    let old: StreamId = ids[0].parse().expect("id");
    let (chats, truncated, _) = replay_all(&s, "small", old).await;
    assert!(truncated, "the gap after {old} was trimmed");
    assert!(chats.len() < 59);
    let recent: StreamId = ids[57].parse().expect("id");
    let (chats, truncated, _) = replay_all(&s, "small", recent).await;
    assert!(!truncated);
    assert_eq!(chats.len(), 2);
    let (chats, truncated, sizes) = replay_all(&s, "nothing-here", old).await;
    assert!(!truncated && chats.is_empty() && sizes.is_empty());
}

#[tokio::test]
async fn known_session_keeps_nick_and_connected_since() {
    let redis = redis().await;
    let s = redis.store(100);
    let fresh = s.session(None).await.expect("session");
    assert_eq!(fresh.token.len(), 32);
    assert!(fresh.nick.starts_with("guest-"));
    s.set_nick(&fresh.token, "ana").await.expect("nick");
    let back = s.session(Some(&fresh.token)).await.expect("session");
    assert_eq!(back.token, fresh.token);
    assert_eq!(back.nick, "ana");
    assert_eq!(back.connected_since, fresh.connected_since);
    let unknown = s.session(Some(&"0".repeat(32))).await.expect("session");
    assert_ne!(unknown.token, "0".repeat(32), "an unknown token is not adopted");
    let mut conn = redis.conn().await;
    let ttl: i64 = conn
        .ttl(format!("wsmesh:session:{}", fresh.token))
        .await
        .expect("ttl");
    assert!(ttl > 0, "sessions expire");
}

#[tokio::test]
async fn presence_sums_instances_and_forgets_a_leaver() {
    let redis = redis().await;
    let s = redis.store(100);
    let ttl = Duration::from_secs(30);
    assert_eq!(s.presence("r", "app1", 2, ttl).await.expect("presence"), 2);
    assert_eq!(s.presence("r", "app2", 3, ttl).await.expect("presence"), 5);
    assert_eq!(s.presence("r", "app1", 0, ttl).await.expect("presence"), 3);
}

#[tokio::test]
async fn ping_answers_and_a_dead_redis_is_an_error_not_a_hang() {
    let redis = redis().await;
    let s = redis.store(100);
    s.ping().await.expect("ping");
    drop(redis);
    assert!(s.append("lobby", "n", "x", None).await.is_err());
    assert!(s.ping().await.is_err());
}

#[tokio::test]
async fn store_recovers_after_a_redis_restart() {
    let redis = redis().await;
    let port = redis.port();
    let s = redis.store(100);
    s.append("lobby", "n", "before", None).await.expect("append");
    drop(redis);
    assert!(s.append("lobby", "n", "during", None).await.is_err());
    let _again = redis_on(port).await;
    let mut recovered = false;
    for _ in 0..50 {
        if s.append("lobby", "n", "after", None).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "store never reconnected");
    assert_eq!(
        s.last("lobby", 10).await.expect("last").len(),
        1,
        "fresh redis holds only the new chat"
    );
}

#[tokio::test]
async fn history_under_the_names_before_hash_tags_is_moved_at_the_first_touch() {
    let redis = redis().await;
    let mut conn = redis.conn().await;
    // A room as an older release left it: stream and mark without the tag.
    let old_id: String = redis::cmd("XADD")
        .arg("wsmesh:room:old")
        .arg("*")
        .arg("nick")
        .arg("ana")
        .arg("body")
        .arg("from before")
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let _: () = conn.set("wsmesh:committed:old", &old_id).await.expect("set");
    let s = redis.store(1000);
    let history = s.last("old", 10).await.expect("last");
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].id.as_str(), history[0].body.as_str()),
        (old_id.as_str(), "from before")
    );
    let old_left: u64 = conn.exists("wsmesh:room:old").await.expect("exists");
    assert_eq!(old_left, 0, "the untagged stream was renamed");
    let mark: String = conn.get("wsmesh:committed:{old}").await.expect("mark moved");
    assert_eq!(mark, old_id);
    // New chats go after the old ones, in the same (tagged) stream.
    let new = s.append("old", "bo", "after", None).await.expect("append");
    let since: StreamId = "0-0".parse().expect("id");
    let (chats, _, _) = replay_all(&s, "old", since).await;
    let ids: Vec<&str> = chats.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec![old_id.as_str(), new.id.as_str()]);
    // A room that has both (a stale untagged copy) keeps the tagged one.
    let _: String = redis::cmd("XADD")
        .arg("wsmesh:room:old")
        .arg("*")
        .arg("nick")
        .arg("x")
        .arg("body")
        .arg("stale")
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let fresh = redis.store(1000);
    assert_eq!(fresh.last("old", 10).await.expect("last").len(), 2);
}
