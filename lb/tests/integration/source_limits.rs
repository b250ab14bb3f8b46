//! Per-source limits (`[frontend.per_source]`) over real TLS from several
//! loopback source addresses: each limit stops its source while a
//! bystander from another address is served; a request over a rate gets
//! 429 with `Retry-After`, logged with its limit and counted in metrics and
//! the admin API; behind a trusted proxy the forwarded client is limited.

use std::sync::Arc;

use crate::support::*;
use http::{Request, StatusCode};
use lb::config::PerSource;

const LIMITED: [u8; 4] = [127, 0, 0, 21];
const BYSTANDER: [u8; 4] = [127, 0, 0, 22];

/// An lb whose https frontend has `limits` (and `trusted` proxies).
async fn lb_with(app: &Backend, certs: &Certs, limits: PerSource, trusted: &[&str]) -> Lb {
    let mut opts = LbOpts::new(&[app], certs);
    let trusted: Vec<lb::config::Cidr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
    opts.edit(move |c| {
        c.frontends[0].per_source = Some(limits.clone());
        c.frontends[0].trusted_proxies = trusted.clone();
    });
    Lb::start(&opts).await
}

fn rate(text: &str) -> Option<lb::config::Rate> {
    Some(text.parse().expect("a rate"))
}

async fn metrics(lb: &Lb) -> String {
    admin_text(lb.admin, "/metrics").await.expect("metrics").1
}

fn limited_line(limit: &str) -> String {
    format!("lb_frontend_limited_total{{frontend=\"https\",limit=\"{limit}\"}}")
}

/// `GET /` from `source` on a new connection: status and headers.
async fn get_request_from(
    certs: &Certs,
    source: [u8; 4],
    port: u16,
) -> Option<(StatusCode, http::HeaderMap)> {
    let req = Request::get("/")
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    request_from(certs, source, port, &[], req).await
}

#[tokio::test]
async fn max_conns_closes_a_source_s_extra_connection_before_tls() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let limits = PerSource {
        max_conns: 2,
        ..PerSource::default()
    };
    let lb = lb_with(&app, &certs, limits, &[]).await;
    let first = tls_from(&certs, LIMITED, lb.https, &[]).await.expect("first");
    let second = tls_from(&certs, LIMITED, lb.https, &[]).await.expect("second");
    assert!(
        tls_from(&certs, LIMITED, lb.https, &[]).await.is_err(),
        "a third connection from the same source is closed"
    );
    assert_eq!(
        get_from(&certs, BYSTANDER, lb.https, "/").await,
        Some(StatusCode::OK)
    );
    assert_eq!(metric(&metrics(&lb).await, &limited_line("max_conns")), Some(1));
    let sources = admin_get(lb.admin, "/api/sources?by=conns")
        .await
        .expect("sources");
    let top = &frontend_named(&sources, "https")["sources"][0];
    assert_eq!(
        (top["source"].as_str(), top["conns"].as_u64()),
        (Some("127.0.0.21"), Some(2)),
        "{sources}"
    );
    assert_eq!(top["refused"]["max_conns"], 1, "{sources}");
    let (_, page) = admin_text(lb.admin, "/stats").await.expect("stats page");
    assert!(page.contains("sources") && page.contains("127.0.0.21"), "{page}");
    // A closed connection frees its slot.
    drop(first);
    eventually(5, "a slot is free again", || async {
        get_from(&certs, LIMITED, lb.https, "/").await == Some(StatusCode::OK)
    })
    .await;
    drop(second);
}

#[tokio::test]
async fn conn_rate_refuses_a_source_s_new_connections_over_it() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let limits = PerSource {
        conn_rate: rate("3/1m"),
        ..PerSource::default()
    };
    let lb = lb_with(&app, &certs, limits, &[]).await;
    for i in 0..3 {
        assert_eq!(
            get_from(&certs, LIMITED, lb.https, "/").await,
            Some(StatusCode::OK),
            "{i}"
        );
    }
    assert_eq!(
        get_from(&certs, LIMITED, lb.https, "/").await,
        None,
        "the fourth is closed"
    );
    assert_eq!(
        get_from(&certs, BYSTANDER, lb.https, "/").await,
        Some(StatusCode::OK)
    );
    assert_eq!(metric(&metrics(&lb).await, &limited_line("conn_rate")), Some(1));
}

#[tokio::test]
async fn request_rate_answers_429_with_retry_after_and_spares_the_bystander() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let limits = PerSource {
        request_rate: rate("3/1m"),
        ..PerSource::default()
    };
    let lb = lb_with(&app, &certs, limits, &[]).await;
    // Over one keep-alive connection, as a browser would send them.
    let gets = (0..5)
        .map(|_| {
            Request::get("/")
                .header("host", "localhost")
                .body(empty())
                .unwrap()
        })
        .collect();
    assert_eq!(
        requests_from(&certs, LIMITED, lb.https, gets).await,
        [200, 200, 200, 429, 429].map(|s| StatusCode::from_u16(s).unwrap())
    );
    let over = get_request_from(&certs, LIMITED, lb.https)
        .await
        .expect("answered");
    assert_eq!(over.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        over.1.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("60")
    );
    assert_eq!(
        get_from(&certs, BYSTANDER, lb.https, "/").await,
        Some(StatusCode::OK)
    );
    assert_eq!(
        metric(&metrics(&lb).await, &limited_line("request_rate")),
        Some(3)
    );
    let frontends = admin_get(lb.admin, "/api/frontends").await.unwrap();
    let https = frontend_named(&frontends, "https");
    assert_eq!(https["limited"]["request_rate"], 3, "{https}");
    assert_eq!(
        https["request_errors"], 0,
        "a limit is not a malformed request: {https}"
    );
}

#[tokio::test]
async fn upgrade_rate_limits_websockets_and_not_other_requests() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let limits = PerSource {
        upgrade_rate: rate("2/1m"),
        ..PerSource::default()
    };
    let lb = lb_with(&app, &certs, limits, &[]).await;
    let port = lb.https;
    let upgrade = |source| {
        let certs = &certs;
        async move {
            request_from(certs, source, port, &[], upgrade_request())
                .await
                .map(|r| r.0)
        }
    };
    assert_eq!(upgrade(LIMITED).await, Some(StatusCode::SWITCHING_PROTOCOLS));
    assert_eq!(upgrade(LIMITED).await, Some(StatusCode::SWITCHING_PROTOCOLS));
    assert_eq!(upgrade(LIMITED).await, Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(
        get_from(&certs, LIMITED, lb.https, "/").await,
        Some(StatusCode::OK),
        "plain requests pass"
    );
    assert_eq!(upgrade(BYSTANDER).await, Some(StatusCode::SWITCHING_PROTOCOLS));
    assert_eq!(
        metric(&metrics(&lb).await, &limited_line("upgrade_rate")),
        Some(1)
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let limits = PerSource {
        request_rate: rate("2/1m"),
        max_conns: 1,
        ..PerSource::default()
    };
    let proxy = [127, 0, 0, 23];
    let lb = lb_with(&app, &certs, limits, &["127.0.0.23/32"]).await;
    let port = lb.https;
    let from = |source: [u8; 4], xff: &'static str| {
        let certs = &certs;
        async move {
            let req = Request::get("/")
                .header("host", "localhost")
                .header("x-forwarded-for", xff)
                .body(empty())
                .unwrap();
            request_from(certs, source, port, &[], req).await.map(|r| r.0)
        }
    };
    // The proxy holds more connections than max_conns: it is not limited by them.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tls_from(&certs, proxy, port, &[]).await.unwrap());
    }
    for _ in 0..2 {
        assert_eq!(
            from(proxy, "198.51.100.9, 203.0.113.1").await,
            Some(StatusCode::OK)
        );
    }
    assert_eq!(
        from(proxy, "198.51.100.9, 203.0.113.1").await,
        Some(StatusCode::TOO_MANY_REQUESTS),
        "the rightmost untrusted address is the client"
    );
    assert_eq!(
        from(proxy, "203.0.113.2").await,
        Some(StatusCode::OK),
        "another client of the same proxy"
    );
    // An untrusted peer's header is not believed: it is limited as itself.
    let spoofed = (0..3)
        .map(|_| {
            Request::get("/")
                .header("host", "localhost")
                .header("x-forwarded-for", "203.0.113.3")
                .body(empty())
                .unwrap()
        })
        .collect();
    assert_eq!(
        requests_from(&certs, LIMITED, port, spoofed).await,
        [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]
    );
    let sources = admin_get(lb.admin, "/api/sources?by=refused&top=2")
        .await
        .unwrap();
    let https = frontend_named(&sources, "https");
    let shown: Vec<&str> = https["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["source"].as_str())
        .collect();
    assert_eq!(shown.len(), 2, "{sources}");
    assert!(
        shown.contains(&"203.0.113.1") && shown.contains(&"127.0.0.21"),
        "{sources}"
    );
}

#[tokio::test]
async fn a_refusal_is_in_the_access_log_with_its_limit() {
    let certs = Arc::new(Certs::new());
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.edit(|c| {
        c.frontends[0].per_source = Some(PerSource {
            max_conns: 1,
            request_rate: rate("1/1m"),
            ..PerSource::default()
        })
    });
    let lb = LbProcess::start(&opts).await;
    let get = |path: &str| {
        Request::get(path)
            .header("host", "localhost")
            .body(empty())
            .unwrap()
    };
    assert_eq!(
        requests_from(&certs, LIMITED, lb.https, vec![get("/"), get("/logged")]).await,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]
    );
    let _held = tls_from(&certs, BYSTANDER, lb.https, &[]).await.unwrap();
    assert!(tls_from(&certs, BYSTANDER, lb.https, &[]).await.is_err());
    eventually(
        5,
        "the 429 and the refused connection in the access log",
        || async {
            let text = lb.log_text();
            let request = text.lines().any(|l| {
                l.contains(r#""path":"/logged""#)
                    && l.contains(r#""status":429"#)
                    && l.contains(r#""fault":"limit""#)
                    && l.contains(r#""limit":"request_rate""#)
                    && l.contains(r#""client":"127.0.0.21:"#)
            });
            let connection = text.lines().any(|l| {
                l.contains("connection refused")
                    && l.contains(r#""limit":"max_conns""#)
                    && l.contains(r#""client":"127.0.0.22:"#)
            });
            request && connection
        },
    )
    .await;
}
