//! Timeouts: a request head that does not complete within `http_request`
//! gets 408 (slowloris, or a client that says nothing); a server slower
//! than `server` gets 504.

use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(timeouts: impl FnOnce(&mut Timeouts)) -> (Certs, Backend, Lb) {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    timeouts(&mut opts.timeouts);
    let lb = Lb::start(&opts).await;
    (certs, app, lb)
}

async fn read_all(tls: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slowloris_gets_408() {
    let (certs, app, lb) = start(|t| t.http_request = Duration::from_millis(300)).await;
    let mut tls = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // Trickle header lines, never finishing the head.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if tls
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let reply = read_all(&mut tls).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn silent_client_gets_408_and_keep_alive_requests_are_not_cut() {
    let (certs, _app, lb) = start(|t| t.http_request = Duration::from_millis(300)).await;
    let mut silent = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let reply = read_all(&mut silent).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    // A keep-alive client pausing between complete requests is fine: the
    // timer only runs while a head is incomplete.
    let mut tls = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    for round in 0..2 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\napp1") {
            let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
                .await
                .expect("response within 5s")
                .unwrap();
            assert!(
                n > 0,
                "closed in round {round}: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        // Idle longer than http_request between the two requests.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn slow_server_gets_504() {
    let (certs, _app, lb) = start(|t| t.server = Duration::from_millis(500)).await;
    let (status, _, _) = https_get(&certs, lb.ports.https, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_timeout_client() {
    let (certs, _app, lb) = start(|t| t.client = Duration::from_millis(300)).await;
    let mut tls = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let reply = read_all(&mut tls).await;
    // read_all returns at EOF: the lb closed the idle connection itself.
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("app1"),
        "{reply:?}"
    );
}

/// The frame types in `bytes`, a server's side of an HTTP/2 connection.
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn idle_h2_client_that_never_answers_the_shutdown_ping_is_closed() {
    let (certs, _app, lb) = start(|t| t.client = Duration::from_millis(300)).await;
    let mut tls = tls_connect(&certs, lb.ports.https, "localhost", &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    // The preface and an empty SETTINGS, then only reading: no SETTINGS
    // ack, no PING ack.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let types = h2_frame_types(&got);
    const GOAWAY: u8 = 7;
    assert!(types.contains(&GOAWAY), "frames from the lb: {types:?}");
    assert!(
        closed.is_ok(),
        "still open 5 s after its GOAWAY; frames: {types:?}"
    );
}
