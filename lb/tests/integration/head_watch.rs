//! The HTTP/1 head watcher stays on for the whole connection: a request
//! that names an upgrade but gets none, or a head over the size limit,
//! must not leave the rest of the connection without `timeout
//! http-request` (408) and the ambiguous-framing check (400).

use std::time::Duration;

use crate::support::*;
use tokio::io::AsyncWriteExt;

/// An lb whose heads must be complete within 1 s.
async fn start() -> (Certs, Backend, Lb) {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.timeouts.http_request = Duration::from_secs(1);
    let lb = Lb::start(&opts).await;
    (certs, app, lb)
}

/// Requests that name an upgrade the server does not grant.
const UPGRADE_NOT_GRANTED: [&str; 2] = [
    "GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n",
    "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
];

#[tokio::test]
async fn an_upgrade_not_granted_leaves_the_framing_check_on() {
    let (certs, _app, lb) = start().await;
    for first in UPGRADE_NOT_GRANTED {
        let mut tls = tls_connect(&certs, lb.https, "localhost", &[b"http/1.1"])
            .await
            .unwrap();
        tls.write_all(first.as_bytes()).await.unwrap();
        let (status, text) = read_response(&mut tls).await.expect("a response");
        assert_eq!(status, 200, "{first:?}: {text:?}");
        tls.write_all(
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .unwrap();
        let reply = read_response(&mut tls).await;
        assert_eq!(reply.map(|r| r.0), Some(400), "after {first:?}");
        assert!(closes_within(&mut tls, Duration::from_secs(2)).await);
    }
}

#[tokio::test]
async fn an_upgrade_not_granted_leaves_the_request_timeout_on() {
    let (certs, _app, lb) = start().await;
    for first in UPGRADE_NOT_GRANTED {
        let mut tls = tls_connect(&certs, lb.https, "localhost", &[b"http/1.1"])
            .await
            .unwrap();
        tls.write_all(first.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut tls).await.map(|r| r.0), Some(200));
        // A head that never completes.
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let reply = read_response(&mut tls).await;
        assert_eq!(reply.map(|r| r.0), Some(408), "after {first:?}");
    }
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431_and_the_connection_closes() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    // The default limits.
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let mut tls = tls_connect(&certs, lb.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (mut read, mut write) = tokio::io::split(&mut tls);
    let send = async {
        let _ = write.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
        for i in 0..67 {
            let line = format!("X-Filler-{i:02}: {}\r\n", "f".repeat(1000));
            if write.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = write.write_all(b"\r\n").await;
    };
    let (reply, ()) = tokio::join!(read_response(&mut read), send);
    let (status, text) = reply.expect("a response");
    assert_eq!(status, 431, "{text:?}");
    assert!(closes_within(&mut read, Duration::from_secs(2)).await);
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
