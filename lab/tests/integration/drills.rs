//! The failover drills at a small size: each fault on a fresh cluster (Redis,
//! two apps, two subscribers, the TLS lb) with 24 resilient clients in 3
//! rooms sending through `wss://`; the ledger must show nothing lost,
//! duplicated, reordered or unacked, and no client may give up.
//!
//! One test per fault, but they run one after the other (a shared lock):
//! each starts six processes and 24 TLS clients, and two at once on the
//! 2-core CI machine would measure the machine, not failover.

use lab::drill::{self, DrillOptions, DrillReport, Fault};
use tokio::sync::Mutex;

/// Serializes the drills within this test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn drill_is_clean(fault: Fault) {
    clean_drill(fault, &DrillOptions::small()).await;
}

/// Runs the drill of `fault` at `size` (one drill at a time) and checks
/// every loss column of its ledger is 0; returns the report.
pub(crate) async fn clean_drill(fault: Fault, size: &DrillOptions) -> DrillReport {
    let _turn = ONE_AT_A_TIME.lock().await;
    let _ = drill::raise_nofile_limit();
    let report = drill::run_one(fault, size)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", report.table());
    let t = &report.totals;
    assert!(t.acked > 0 && t.expected > 0, "the load ran: {t:?}");
    assert_eq!(t.lost, 0, "lost\n{}", report.table());
    assert_eq!(t.duplicated, 0, "duplicated\n{}", report.table());
    assert_eq!(t.out_of_order, 0, "out of order\n{}", report.table());
    assert_eq!(t.unacked, 0, "unacked\n{}", report.table());
    assert_eq!(t.ack_conflicts, 0, "ack conflicts\n{}", report.table());
    assert_eq!(t.gave_up, 0, "gave up\n{}", report.table());
    assert_eq!(t.seen_then_lost, 0, "seen then lost\n{}", report.table());
    assert_eq!(t.cids_twice, 0, "cids stored twice\n{}", report.table());
    assert_eq!(t.undecodable, 0, "undecodable frames\n{}", report.table());
    assert!(report.clean(), "{}", report.table());
    assert!(report.quiesced, "not quiet\n{}", report.table());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_app_loses_nothing() {
    drill_is_clean(Fault::KillApp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_app_on_sigterm_loses_nothing() {
    drill_is_clean(Fault::DrainApp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_admin_drain_and_ready_loses_nothing() {
    drill_is_clean(Fault::LbDrain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_subscriber_loses_nothing() {
    drill_is_clean(Fault::KillSubscriber).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_redis_loses_nothing() {
    drill_is_clean(Fault::RestartRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_app_past_the_health_timeout_loses_nothing() {
    drill_is_clean(Fault::FreezeApp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_lb_loses_nothing() {
    drill_is_clean(Fault::KillLb).await;
}

/// The client side of the frozen-app drill on its own: a server that stops
/// answering (no frames, no pongs; TCP stays open, as with SIGSTOP or a cut
/// path) is left after the idle timeout and the client reconnects.
#[tokio::test]
async fn a_silent_server_is_left_after_the_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;
    use wsmesh_client::resilient::{Event, ResilientClient, ResilientConfig};
    use wsmesh_client::ConnectOptions;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut frozen = Vec::new();
        for round in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            #[allow(clippy::result_large_err)] // tungstenite's callback signature
            let callback = |_: &Request, mut resp: Response| {
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wsmesh.v1"));
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
            let welcome = serde_json::json!({"type": "welcome", "session": "s", "nick": "n",
                "room": "r", "instance": format!("i{round}"), "connected_since": 1});
            ws.send(Message::text(welcome.to_string())).await.unwrap();
            let history = serde_json::json!({"type": "history", "room": "r", "chats": []});
            ws.send(Message::text(history.to_string())).await.unwrap();
            if round == 0 {
                // Never read again: pings stay unanswered, the socket stays open.
                frozen.push(ws);
            } else {
                while let Some(Ok(_)) = ws.next().await {}
            }
        }
        drop(frozen);
    });
    let connect = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws"))
        .unwrap()
        .room("r");
    let mut config = ResilientConfig::new(connect);
    config.ping_every = Some(Duration::from_millis(100));
    config.idle_timeout = Duration::from_millis(500);
    config.backoff_base = Duration::from_millis(20);
    let mut client = ResilientClient::spawn(config);
    let mut seen = Vec::new();
    let mut lost = false;
    // Bounded: a client that never leaves the silent server fails here, not hangs.
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(30), client.next_event())
            .await
            .expect("no reconnect within 30 s");
        match event {
            Some(Event::Connected(r)) => seen.push(r.instance),
            Some(Event::Disconnected(code)) => {
                assert_eq!(code, None, "no close frame from a silent server");
                lost = true;
            }
            Some(_) => {}
            None => panic!("client task ended"),
        }
    }
    assert!(lost);
    assert_eq!(seen, ["i0", "i1"]);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_redis_master_loses_nothing() {
    drill_is_clean(Fault::KillRedisMaster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_redis_master_loses_nothing() {
    drill_is_clean(Fault::FreezeRedisMaster).await;
}
