//! HTTP proxying: bodies stream both ways, forwarding headers are added,
//! hop-by-hop headers are not forwarded, ambiguous framing gets 400,
//! `/internal/` gets 403, no usable server gets 503.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(4);
    let stream = tokio_stream_from(rx);
    let req = http::Request::post("/echo")
        .header("host", "localhost")
        .body(StreamBody::new(stream).boxed())
        .unwrap();
    let tls = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx.send(Ok(Frame::data(Bytes::from_static(b"first chunk;"))))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .expect("response head while the request body is still open")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // The first chunk comes back before the request body is finished: streamed, not buffered.
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk echoed while the request is still open")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"first chunk;"));
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    tx.send(Ok(Frame::data(big.clone()))).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, big);
}

/// A body stream fed from a channel.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, hyper::Error>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, hyper::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn forwarding_headers_are_added_and_hop_by_hop_headers_dropped() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let req = http::Request::get("/x?y=1")
        .header("host", "chat.example")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-kept", "yes")
        .body(empty())
        .unwrap();
    let (status, _, _) = https_request(&certs, lb.ports.https, req).await;
    assert_eq!(status, StatusCode::OK);
    let h = app.last_headers.lock().unwrap().clone();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "chat.example");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=https;host=\"chat.example\"");
    assert_eq!(h["host"], "chat.example");
    assert_eq!(h[":path"], "/x?y=1");
    assert_eq!(h["x-kept"], "yes");
    assert!(!h.contains_key("x-private"), "{h:?}");
}

#[tokio::test]
async fn http2_clients_are_proxied_to_http1_servers_with_host() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let (status, _, body) = h2_get(&certs, lb.ports.https, "/hello?q=1").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"app1"[..]));
    let h = app.last_headers.lock().unwrap().clone();
    assert_eq!(h["host"], format!("localhost:{}", lb.ports.https));
    assert_eq!(h[":path"], "/hello?q=1");
}

/// Writes a raw request over TLS and returns what comes back until close.
async fn raw_exchange(certs: &Certs, port: u16, request: &[u8]) -> String {
    let mut tls = tls_connect(certs, port, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn ambiguous_framing_is_rejected_with_400() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    for request in [
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    ] {
        let reply = raw_exchange(&certs, lb.ports.https, request.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{request:?} got {reply:?}");
    }
    assert_eq!(app.hits.load(Ordering::SeqCst), 0, "nothing reached the server");
    // A clean request on the same lb still works.
    let reply = raw_exchange(
        &certs,
        lb.ports.https,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("abcd"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn internal_paths_are_denied_with_403() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let (status, _, _) = https_get(&certs, lb.ports.https, "/internal/events").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn route_sends_a_prefix_to_another_backend() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let api = Backend::start("api1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    let api_addr = api.addr;
    opts.edit(move |c| {
        c.frontends[0].routes.push(lb::config::Route::new("/api/", "api"));
        let api1 = lb::config::Server::new("api1", api_addr);
        c.backends.push(lb::config::Backend::new("api", vec![api1]));
    });
    let lb = Lb::start(&opts).await;
    assert_eq!(&https_get(&certs, lb.ports.https, "/api/x").await.2[..], b"api1");
    assert_eq!(&https_get(&certs, lb.ports.https, "/other").await.2[..], b"app1");
}

#[tokio::test]
async fn no_usable_server_gives_503_with_a_short_body() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "maint").await,
        StatusCode::OK
    );
    let (status, _, body) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&body).contains("no server is available"),
        "{body:?}"
    );
}

#[tokio::test]
async fn each_request_writes_an_access_log_line_with_timers() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = LbProcess::start(&LbOpts::new(&[&app], &certs)).await;
    https_get(&certs, lb.ports.https, "/logged-path").await;
    eventually(5, "access log line", || async {
        lb.log_text().lines().any(|l| {
            l.contains(r#""path":"/logged-path""#)
                && l.contains(r#""server":"app1""#)
                && l.contains(r#""status":200"#)
                && l.contains(r#""client":"127.0.0.1:"#)
                && [
                    "th_ms",
                    "tw_ms",
                    "tc_ms",
                    "tr_ms",
                    "tt_ms",
                    "bytes_in",
                    "bytes_out",
                ]
                .iter()
                .all(|k| l.contains(&format!("\"{k}\":")))
        })
    })
    .await;
}

#[tokio::test]
async fn hsts_is_added_on_tls_responses_when_configured() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.edit(|c| c.frontends[0].hsts = "max-age=60".into());
    let lb = Lb::start(&opts).await;
    let (_, headers, _) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!(headers["strict-transport-security"], "max-age=60");
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_400_not_a_servers_502() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = LbProcess::start(&LbOpts::new(&[&app], &certs)).await;
    for (what, body) in [
        (
            "a chunk size over 2^64",
            "1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("a bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
    ] {
        let mut tls = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
            .await
            .unwrap();
        let request = format!("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        tls.write_all(request.as_bytes()).await.unwrap();
        let reply = read_response(&mut tls).await;
        assert_eq!(reply.as_ref().map(|r| r.0), Some(400), "{what}: {reply:?}");
    }
    // Counted against the client, not the server.
    let frontends = admin_get(lb.ports.admin, "/api/frontends")
        .await
        .expect("frontends");
    let https = frontends["frontends"]
        .as_array()
        .expect("list")
        .iter()
        .find(|f| f["name"] == "https")
        .expect("the https frontend")
        .clone();
    assert_eq!(https["request_errors"], 2, "{https}");
    let app1 = &lb.servers().await["app1"];
    assert_eq!(app1["responses"]["5xx"], 0, "{app1}");
    eventually(5, "two access log lines with the client's fault", || async {
        let text = lb.log_text();
        let lines = text.lines().filter(|l| {
            l.contains(r#""path":"/upload""#)
                && l.contains(r#""status":400"#)
                && l.contains(r#""fault":"client""#)
        });
        lines.count() == 2
    })
    .await;
}
