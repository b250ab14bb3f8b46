//! WebSocket through the lb: `wss://` to the lb, plain WebSocket to the
//! server, subprotocol intact, frames spliced both ways.

use crate::support::*;

#[tokio::test]
async fn websocket_through_the_lb_keeps_the_subprotocol_and_echoes() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = LbProcess::start(&LbOpts::new(&[&app], &certs)).await;
    let (mut ws, protocol, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
    assert_eq!(protocol.as_deref(), Some("wsmesh.v1"));
    assert_eq!(greeting, "hello from app1");
    for i in 0..20 {
        echo(&mut ws, &format!("message {i}")).await;
    }
    let big = "y".repeat(100_000);
    echo(&mut ws, &big).await;
    // A mebibyte each way, in one message, through the lb's pump buffers.
    let huge: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    echo(&mut ws, &huge).await;
    let h = app.last_headers.lock().unwrap().clone();
    assert_eq!(h["sec-websocket-protocol"], "wsmesh.v1");
    assert_eq!(h["upgrade"], "websocket");
    eventually(5, "server shows the tunnel as a session", || async {
        lb.servers().await["app1"]["sessions"] == 1
    })
    .await;
    drop(ws);
    eventually(5, "tunnel log line after close", || async {
        lb.log_text()
            .lines()
            .any(|l| l.contains(r#""message":"tunnel""#) && l.contains(r#""status":101"#))
    })
    .await;
}

#[tokio::test]
async fn idle_tunnel_is_closed_after_timeout_tunnel_but_not_by_timeout_client() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    // The client timeout is shorter, yet must not apply to a tunnel.
    opts.timeouts.client = Duration::from_millis(200);
    opts.timeouts.tunnel = Duration::from_secs(1);
    let lb = LbProcess::start(&opts).await;
    let (mut ws, _, _) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
    // Activity keeps it open past several client timeouts.
    for i in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        echo(&mut ws, &format!("keepalive {i}")).await;
    }
    // Then silence: closed by the tunnel timeout.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "idle tunnel still open");
    eventually(5, "tunnel end logged as timeout-tunnel", || async {
        lb.log_text().contains("timeout-tunnel")
    })
    .await;
}
