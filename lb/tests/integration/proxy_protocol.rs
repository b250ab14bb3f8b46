//! PROXY protocol v2 on a frontend: a trusted balancer's header names the
//! client (the per-source limits and `X-Forwarded-For` use it); a
//! malformed or missing header, or a header from a peer that is not
//! trusted, closes the connection before TLS, counted by reason.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::support::*;
use http::StatusCode;
use lb::config::{PerSource, ProxyProtocol};
use lb::proxy_protocol::encode;

/// The L4 balancer in front of the lb.
const BALANCER: [u8; 4] = [127, 0, 0, 31];
/// A peer that is not a trusted balancer.
const STRANGER: [u8; 4] = [127, 0, 0, 32];

fn header(client: &str, lb_port: u16) -> Vec<u8> {
    encode(
        client.parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], lb_port)),
    )
}

fn proxy_refused(metrics: &str, reason: &str) -> Option<u64> {
    metric(
        metrics,
        &format!("lb_frontend_proxy_refused_total{{frontend=\"https\",reason=\"{reason}\"}}"),
    )
}

#[tokio::test]
async fn the_header_names_the_client_and_bad_or_untrusted_ones_are_closed() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.edit(|c| {
        let f = &mut c.frontends[0];
        f.proxy_protocol = ProxyProtocol::V2;
        f.trusted_proxies = vec!["127.0.0.31".parse().unwrap()];
        f.per_source = Some(PerSource {
            request_rate: Some("1/1m".parse().unwrap()),
            ..PerSource::default()
        });
    });
    let lb = Lb::start(&opts).await;
    let port = lb.https;
    let get = |client: &'static str| {
        let certs = &certs;
        async move {
            let req = http::Request::get("/")
                .header("host", "localhost")
                .body(empty())
                .unwrap();
            request_from(certs, BALANCER, port, &header(client, port), req)
                .await
                .map(|r| r.0)
        }
    };
    assert_eq!(get("198.51.100.7:40000").await, Some(StatusCode::OK));
    let seen = app.last_headers.lock().unwrap().get("x-forwarded-for").cloned();
    assert_eq!(
        seen.as_deref(),
        Some("198.51.100.7"),
        "the server sees the header's client"
    );
    // The limit follows the header's client, not the balancer.
    assert_eq!(
        get("198.51.100.7:40001").await,
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(
        get("198.51.100.8:40000").await,
        Some(StatusCode::OK),
        "another client"
    );

    let hits = app.hits.load(Ordering::SeqCst);
    // Straight TLS without a header, and a v1 header, from the balancer.
    assert!(tls_from(&certs, BALANCER, port, &[]).await.is_err());
    assert!(tls_from(
        &certs,
        BALANCER,
        port,
        b"PROXY TCP4 198.51.100.9 127.0.0.1 5 6\r\n"
    )
    .await
    .is_err());
    // A valid header from a peer that is not trusted.
    assert!(tls_from(&certs, STRANGER, port, &header("198.51.100.9:1", port))
        .await
        .is_err());
    // A balancer that connects and says nothing is closed after `timeout http_request`;
    // one that closes mid-header is counted as missing at once.
    let mut partial = tcp_from(BALANCER, port).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut partial, &header("198.51.100.9:1", port)[..10])
        .await
        .unwrap();
    drop(partial);
    assert_eq!(app.hits.load(Ordering::SeqCst), hits, "nothing reached the app");
    eventually(5, "refusals counted by reason", || async {
        let text = admin_text(lb.admin, "/metrics").await.unwrap().1;
        proxy_refused(&text, "invalid") == Some(2)
            && proxy_refused(&text, "untrusted") == Some(1)
            && proxy_refused(&text, "missing") == Some(1)
    })
    .await;
    let sources = admin_get(lb.admin, "/api/sources").await.unwrap();
    let https = frontend_named(&sources, "https");
    let listed: Vec<&str> = https["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["source"].as_str())
        .collect();
    assert!(
        listed.contains(&"198.51.100.7") && !listed.contains(&"127.0.0.31"),
        "{sources}"
    );
}
