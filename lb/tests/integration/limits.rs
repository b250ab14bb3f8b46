//! One request head limit for HTTP/1 and HTTP/2 (`[limits]`): over it,
//! either protocol gets 431 and nothing reaches a server.

use std::sync::atomic::Ordering;

use crate::support::*;
use http::{Request, StatusCode};

/// `GET /` with `headers`, over HTTP/1.1 or HTTP/2 (one connection each).
async fn status_of(certs: &Certs, port: u16, h2: bool, headers: &[(String, String)]) -> StatusCode {
    let mut req = Request::get(format!("https://localhost:{port}/"));
    if !h2 {
        req = req.header("host", "localhost");
    }
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let req = req.body(empty()).expect("request");
    if !h2 {
        return https_request(certs, port, req).await.0;
    }
    let mut send = h2_connection(certs, port).await;
    send.send_request(req).await.expect("response").status()
}

/// One header of `len` bytes of value.
fn one_header(len: usize) -> Vec<(String, String)> {
    vec![("x-big".into(), "b".repeat(len))]
}

/// `n` small headers.
fn many_headers(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("x-h{i}"), "v".into())).collect()
}

#[tokio::test]
async fn http1_and_http2_share_the_default_head_limit() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    for h2 in [false, true] {
        let fits = status_of(&certs, lb.https, h2, &one_header(15 * 1024)).await;
        assert_eq!(fits, StatusCode::OK, "h2: {h2}");
        let over = status_of(&certs, lb.https, h2, &one_header(17 * 1024)).await;
        assert_eq!(over, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "h2: {h2}");
    }
    assert_eq!(
        app.hits.load(Ordering::SeqCst),
        2,
        "only the heads within the limit"
    );
}

#[tokio::test]
async fn configured_limits_apply_to_both_protocols() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.edit(|c| {
        c.limits.max_header_bytes = 4096;
        c.limits.max_headers = 20;
    });
    let lb = Lb::start(&opts).await;
    for h2 in [false, true] {
        assert_eq!(
            status_of(&certs, lb.https, h2, &one_header(3000)).await,
            StatusCode::OK,
            "h2: {h2}"
        );
        assert_eq!(
            status_of(&certs, lb.https, h2, &many_headers(15)).await,
            StatusCode::OK,
            "h2: {h2}"
        );
        for headers in [one_header(5000), many_headers(25)] {
            assert_eq!(
                status_of(&certs, lb.https, h2, &headers).await,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "h2: {h2}, {} headers",
                headers.len()
            );
        }
    }
    assert_eq!(app.hits.load(Ordering::SeqCst), 4);
}
