//! Fan-out under load: many sockets in one room, batches posted while some
//! sockets are still joining; every socket gets every chat after its replay
//! exactly once and in id order.

mod support;

use support::{connect_v1, next_frame, redis, App};
use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::ServerFrame;

const CLIENTS: usize = 200;
const CHATS: u64 = 300;

fn chat(i: u64) -> Chat {
    Chat {
        id: format!("{}-0", 1_000 + i),
        room: "crowd".into(),
        nick: "n".into(),
        body: format!("m{i}"),
        ts: 1_000 + i,
        cid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_gets_every_later_chat_once_in_order() {
    let redis = redis().await;
    let app = App::start(&redis, "t1", |_| {}).await;
    let url = app.ws_url("/ws?room=crowd");
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (mut ws, _) = connect_v1(&url).await;
        assert!(matches!(next_frame(&mut ws).await, ServerFrame::Welcome { .. }));
        assert!(matches!(next_frame(&mut ws).await, ServerFrame::History { .. }));
        clients.push(ws);
    }
    let internal = app.internal;
    let poster = tokio::task::spawn_blocking(move || {
        for start in (0..CHATS).step_by(10) {
            let batch: Vec<Chat> = (start..start + 10).map(chat).collect();
            // Every batch twice: the second copy must be dropped as duplicates.
            for _ in 0..2 {
                let body = serde_json::to_string(&batch).expect("json");
                let auth = format!("Bearer {}", support::TOKEN);
                let (status, _) = support::http(
                    internal,
                    "POST",
                    "/internal/events",
                    &[("Authorization", &auth)],
                    &body,
                );
                assert_eq!(status, 204);
            }
        }
    });
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while (ids.len() as u64) < CHATS {
                    match next_frame(&mut ws).await {
                        ServerFrame::Chat { chats } => ids.extend(chats.into_iter().map(|c| c.id)),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                ids
            })
        })
        .collect();
    poster.await.expect("poster");
    let want: Vec<String> = (0..CHATS).map(|i| chat(i).id).collect();
    for r in readers {
        assert_eq!(r.await.expect("reader"), want);
    }
    let (_, metrics) = support::http(app.internal, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains(&format!("wsmesh_app_duplicates_dropped_total {CHATS}")),
        "{metrics}"
    );
}
