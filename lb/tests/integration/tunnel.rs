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
    // The tunnel took the TLS record layer over from rustls, so it held
    // no TLS buffer while idle.
    let log = lb.log_text();
    let line = log.lines().find(|l| l.contains(r#""message":"tunnel""#)).unwrap_or_default();
    assert!(line.contains(r#""client_side":"tls-records""#), "{line}");
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

/// What the strict WebSocket server does after its greeting.
#[derive(Clone, Copy)]
enum Strict {
    /// Reads with a 64 KiB message limit, as the app does; a larger
    /// message is answered with close 1009 and the connection dropped at
    /// once, unread data and all.
    Limit,
    /// Sends 16 KiB messages until one waits over 300 ms (a slow reader),
    /// then sends close 1013 (giving up on sending it after `close_wait`),
    /// waits up to 2 s for the answer and drops the connection — the app's
    /// end for a slow client. The app reads its client all along (`reads`),
    /// so its close is a FIN behind what it sent; a server that does not
    /// read resets the connection instead, which arrives at once.
    Flood { close_wait: Duration, reads: bool },
}

/// A WebSocket server like the app at its limits, on plain TCP.
async fn strict_server(mode: Strict) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{handshake::server, Error, Message};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(64 * 1024))
                    .max_frame_size(Some(64 * 1024));
                // Takes the first subprotocol offered. The handshake's own
                // callback type fixes the error type.
                #[allow(clippy::result_large_err)]
                let choose = |req: &server::Request, mut resp: server::Response| {
                    if let Some(p) = req.headers().get("sec-websocket-protocol") {
                        let first = p.to_str().unwrap_or("").split(',').next().unwrap_or("").trim();
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", first.parse().unwrap());
                    }
                    Ok(resp)
                };
                let Ok(mut ws) =
                    tokio_tungstenite::accept_hdr_async_with_config(tcp, choose, Some(config)).await
                else {
                    return;
                };
                if ws.send(Message::text("hello from strict")).await.is_err() {
                    return;
                }
                let close = |code: CloseCode, reason: &'static str| {
                    Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    })
                };
                match mode {
                    Strict::Limit => {
                        while let Some(msg) = ws.next().await {
                            match msg {
                                Ok(_) => {}
                                Err(Error::Capacity(_)) => {
                                    let _ = ws.close(close(CloseCode::Size, "frame too large")).await;
                                    return;
                                }
                                Err(_) => return,
                            }
                        }
                    }
                    Strict::Flood { close_wait, reads } => {
                        let (mut sink, mut stream) = ws.split();
                        let (answered, answer) = tokio::sync::oneshot::channel();
                        let reader = tokio::spawn(async move {
                            if !reads {
                                // Holds the stream half, unread, until aborted.
                                return std::future::pending().await;
                            }
                            while let Some(Ok(msg)) = stream.next().await {
                                if msg.is_close() {
                                    let _ = answered.send(());
                                    return;
                                }
                            }
                        });
                        let chunk = vec![7u8; 16 * 1024];
                        for _ in 0..10_000 {
                            let sent = tokio::time::timeout(
                                Duration::from_millis(300),
                                sink.send(Message::binary(chunk.clone())),
                            )
                            .await;
                            match sent {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => return,
                                Err(_) => break,
                            }
                        }
                        let frame = close(CloseCode::Again, "too slow");
                        if let Ok(Ok(())) =
                            tokio::time::timeout(close_wait, sink.send(Message::Close(frame))).await
                        {
                            // The app's wait for the answer to its close.
                            let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
                        }
                        reader.abort();
                    }
                }
            });
        }
    });
    (addr, task)
}

/// An lb in front of the strict server, with `timeouts` changed.
async fn strict_lb(certs: &Certs, addr: std::net::SocketAddr, timeouts: impl FnOnce(&mut Timeouts)) -> Lb {
    let app = Backend::start("unused").await;
    let mut opts = LbOpts::new(&[&app], certs);
    opts.servers = vec![("strict".into(), addr)];
    timeouts(&mut opts.timeouts);
    Lb::start(&opts).await
}

#[tokio::test]
async fn a_close_1009_for_an_oversized_message_reaches_the_client() {
    use futures_util::SinkExt;
    let certs = Certs::new();
    let (addr, _server) = strict_server(Strict::Limit).await;
    let lb = strict_lb(&certs, addr, |_| {}).await;
    for round in 0..10 {
        let (mut ws, _, greeting) = wss_connect(&certs, lb.https, "wsmesh.v1").await;
        assert_eq!(greeting, "hello from strict");
        let big = tokio_tungstenite::tungstenite::Message::text("x".repeat(70_000));
        // The server may cut the connection before all of it is written.
        let _ = ws.send(big).await;
        assert_eq!(
            close_code(&mut ws, Duration::from_secs(10)).await,
            Some(1009),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_slow_reader_gets_the_servers_close_1013_after_what_was_sent_before_it() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let certs = Certs::new();
    let flood = Strict::Flood {
        close_wait: Duration::from_secs(20),
        reads: true,
    };
    let (addr, _server) = strict_server(flood).await;
    let lb = strict_lb(&certs, addr, |t| t.client_fin = Duration::from_secs(20)).await;
    for round in 0..2 {
        let (ws, _, _) = wss_connect(&certs, lb.https, "wsmesh.v1").await;
        let (mut tx, mut rx) = ws.split();
        // The client keeps talking: a message every 20 ms, whatever happens.
        let talk = tokio::spawn(async move {
            for i in 0..1500 {
                if tx.send(Message::text(format!("still here {i}"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        // It reads nothing for a second (the server gives up on it), then
        // a message every 5 ms: slower than the backlog before the close
        // drains within the server's 2 s wait for an answer.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut binary = 0usize;
        let end = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(msg) = rx.next().await {
                match msg {
                    Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                    Ok(Message::Binary(_)) => {
                        binary += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        talk.abort();
        assert!(binary > 0, "the flood arrived");
        assert_eq!(end, Some(1013), "round {round}, after {binary} messages");
    }
}

#[tokio::test]
async fn a_tunnel_ends_within_client_fin_once_its_server_closed() {
    use futures_util::SinkExt;
    let certs = Certs::new();
    let flood = Strict::Flood {
        close_wait: Duration::from_millis(500),
        reads: false,
    };
    let (addr, _server) = strict_server(flood).await;
    let lb = strict_lb(&certs, addr, |t| {
        t.client_fin = Duration::from_secs(1);
        t.tunnel = Duration::from_secs(3600);
    })
    .await;
    let (mut ws, _, _) = wss_connect(&certs, lb.https, "wsmesh.v1").await;
    // A client that stops reading for good, but says one more thing.
    ws.send(tokio_tungstenite::tungstenite::Message::text("bye"))
        .await
        .unwrap();
    eventually(5, "the tunnel is a session", || async {
        lb.servers().await["strict"]["sessions"] == 1
    })
    .await;
    // The server gives up on the client after 300 ms, on its close frame
    // 500 ms later, and resets the connection (the client's last words
    // are unread); the lb then has 1 s to pass on what it holds, which
    // the client never takes.
    eventually(
        8,
        "the tunnel ended within client_fin of the server's close",
        || async { lb.servers().await["strict"]["sessions"] == 0 },
    )
    .await;
    drop(ws);
}
