//! Admin API: the documented JSON, state changes (drain keeps established
//! tunnels and sends new sessions elsewhere; maint stops traffic and
//! checks), errors, bearer token, stats page and metrics.

use std::net::SocketAddr;

use crate::support::*;
use http::StatusCode;

#[tokio::test]
async fn backends_json_has_the_documented_shape() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.check = true;
    let lb = Lb::start(&opts).await;
    https_get(&certs, lb.ports.https, "/").await;
    let v = admin_get(lb.ports.admin, "/api/backends").await.unwrap();
    let backend = &v["backends"][0];
    assert_eq!(backend["name"], "apps");
    let s = &backend["servers"][0];
    assert_eq!(s["name"], "app1");
    assert_eq!(s["addr"], a.addr.to_string());
    assert!(["up", "down", "drain", "maint"].contains(&s["state"].as_str().unwrap()));
    assert_eq!(s["weight"], 1);
    for key in [
        "sessions",
        "max_sessions",
        "total_sessions",
        "bytes_in",
        "bytes_out",
        "last_change_secs",
    ] {
        assert!(s[key].is_u64(), "{key} missing in {s}");
    }
    for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
        assert!(s["responses"][class].is_u64(), "{class} missing in {s}");
    }
    assert!(s["check"]["status"].is_string(), "{s}");
}

#[tokio::test]
async fn drain_keeps_established_tunnels_and_sends_new_ones_elsewhere() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.balance = Balance::LeastConn;
    opts.check = true;
    let lb = Lb::start(&opts).await;
    let (mut first, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
    let drained = greeting.trim_start_matches("hello from ").to_string();
    let other = if drained == "app1" { "app2" } else { "app1" };
    assert_eq!(
        admin_set_state(lb.ports.admin, &drained, "drain").await,
        StatusCode::OK
    );
    assert_eq!(lb.state_of(&drained).await, "drain");
    for i in 0..4 {
        let (_, _, g) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        assert_eq!(g, format!("hello from {other}"), "new tunnel {i}");
    }
    // Still draining after checks ran (checks do not undo an admin state).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(lb.state_of(&drained).await, "drain");
    echo(&mut first, "still here").await;
    assert_eq!(lb.servers().await[&drained]["sessions"], 1);
    assert_eq!(
        admin_set_state(lb.ports.admin, &drained, "ready").await,
        StatusCode::OK
    );
    assert_eq!(lb.state_of(&drained).await, "up");
}

#[tokio::test]
async fn maint_stops_traffic_and_checks() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.check = true;
    let lb = Lb::start(&opts).await;
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "maint").await,
        StatusCode::OK
    );
    a.set_healthy(false);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let s = &lb.servers().await["app1"];
    assert_eq!(s["state"], "maint");
    assert_eq!(s["check"]["status"], "INI", "no checks run in maint: {s}");
    for _ in 0..4 {
        let (_, headers, _) = https_get(&certs, lb.ports.https, "/").await;
        assert_eq!(headers["x-server"], "app2");
    }
    a.set_healthy(true);
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "ready").await,
        StatusCode::OK
    );
    lb.wait_state("app1", "up").await;
}

#[tokio::test]
async fn unknown_server_is_404_and_bad_body_is_400() {
    let certs = Certs::new();
    let a = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&a], &certs)).await;
    assert_eq!(
        admin_set_state(lb.ports.admin, "nope", "drain").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "sleepy").await,
        StatusCode::BAD_REQUEST
    );
    let req = http::Request::post("/api/backends/app1/state")
        .header("host", admin_host(lb.ports.admin))
        .header("content-type", "application/json")
        .body(body("not json"))
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], lb.ports.admin).into();
    assert_eq!(http1(addr, req).await.unwrap().0, StatusCode::BAD_REQUEST);
    assert_eq!(lb.state_of("app1").await, "up");
}

#[tokio::test]
async fn bearer_token_guards_the_admin_api_when_configured() {
    let certs = Certs::new();
    let a = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&a], &certs);
    opts.edit(|c| c.admin.token = "s3cret".into());
    // Lb::start waits on an unauthenticated call, so start this one by hand.
    let ports = Ports {
        https: free_port(),
        http: free_port(),
        admin: free_port(),
    };
    let _lb = LbProcess::spawn(&opts, ports, |spec| spec.env.clear());
    let addr: SocketAddr = ([127, 0, 0, 1], ports.admin).into();
    let get = |token: Option<&'static str>| async move {
        let mut req = http::Request::get("/api/backends").header("host", admin_host(addr.port()));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        http1(addr, req.body(empty()).unwrap()).await.map(|r| r.0)
    };
    eventually(10, "admin answers", || async { get(None).await.is_some() }).await;
    assert_eq!(get(None).await, Some(StatusCode::UNAUTHORIZED));
    assert_eq!(get(Some("wrong")).await, Some(StatusCode::UNAUTHORIZED));
    assert_eq!(get(Some("s3cret")).await, Some(StatusCode::OK));
}

#[tokio::test]
async fn stats_page_and_metrics_show_the_frontends_and_servers() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&LbOpts::new(&[&a, &b], &certs)).await;
    https_get(&certs, lb.ports.https, "/").await;
    let addr: SocketAddr = ([127, 0, 0, 1], lb.ports.admin).into();
    let get = |path: &'static str| async move {
        let req = http::Request::get(path)
            .header("host", admin_host(addr.port()))
            .body(empty())
            .unwrap();
        let (status, headers, body) = http1(addr, req).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        (headers, String::from_utf8(body.to_vec()).unwrap())
    };
    let (headers, html) = get("/stats").await;
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(
        html.contains("app1") && html.contains("app2") && html.contains("<table"),
        "{html}"
    );
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains("lb_server_up{backend=\"apps\",server=\"app1\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("lb_server_responses_total{"), "{metrics}");
    // One TLS connection so far (the https_get above).
    for line in [
        "lb_frontend_connections_total{frontend=\"https\"} 1",
        "lb_frontend_tls_handshakes_total{frontend=\"https\"} 1",
        "lb_frontend_request_errors_total{frontend=\"https\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(html.contains("TLS handshakes"), "{html}");
}
