//! Zero-loss failover: a server marked down (or put in maintenance) with
//! `on_marked_down = "shutdown-sessions"` has its tunnels closed so clients
//! reconnect elsewhere at once; a drained one keeps them; with
//! `"shutdown-unreachable"` only a server that stopped answering loses
//! them, one that answers its checks 503 (draining, over capacity) keeps
//! them; a refused connect takes a server out at once with
//! `on_error = "mark-down"`, and the request that hit it, WebSocket
//! upgrades included, goes to the other.

use crate::support::*;
use futures_util::StreamExt;
use http::StatusCode;

/// Waits (bounded) for the lb to close `ws`: the stream ends or errors.
async fn closed_by_lb(ws: &mut Wss) -> bool {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        // Bounded: the backend only greets and echoes, so nothing arrives
        // unless we send.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .is_ok()
}

/// Two backends, checks on, leastconn, with `on_marked_down` as given.
async fn cluster(certs: &Certs, on_marked_down: OnMarkedDown) -> (Backend, Backend, LbProcess) {
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], certs);
    opts.balance = Balance::LeastConn;
    opts.check = true;
    opts.edit(move |c| c.backends[0].on_marked_down = on_marked_down);
    let lb = LbProcess::start(&opts).await;
    for name in ["app1", "app2"] {
        eventually(10, "first checks passed", || async {
            lb.servers().await[name]["check"]["status"] == "L7OK"
        })
        .await;
    }
    (a, b, lb)
}

/// One tunnel on each server: (tunnel on app1, tunnel on app2).
async fn one_tunnel_each(certs: &Certs, lb: &LbProcess) -> (Wss, Wss) {
    let (first, _, g1) = wss_connect(certs, lb.ports.https, "wsmesh.v1").await;
    let (second, _, g2) = wss_connect(certs, lb.ports.https, "wsmesh.v1").await;
    assert_ne!(g1, g2, "leastconn puts the second tunnel on the other server");
    if g1 == "hello from app1" {
        (first, second)
    } else {
        (second, first)
    }
}

#[tokio::test]
async fn tunnels_of_a_server_marked_down_are_closed_with_shutdown_sessions() {
    let certs = Certs::new();
    let (a, _b, lb) = cluster(&certs, OnMarkedDown::ShutdownSessions).await;
    let (mut on_app1, mut on_app2) = one_tunnel_each(&certs, &lb).await;
    // The server stops passing checks (as a frozen app would) but its
    // socket stays open: only the lb can end the tunnel.
    a.set_healthy(false);
    lb.wait_state("app1", "down").await;
    assert!(
        closed_by_lb(&mut on_app1).await,
        "tunnel to the down server still open"
    );
    echo(&mut on_app2, "the other tunnel is untouched").await;
    eventually(5, "tunnel end logged as server-down", || async {
        lb.log_text()
            .lines()
            .any(|l| l.contains(r#""message":"tunnel""#) && l.contains(r#""end":"server-down""#))
    })
    .await;
    // The client reconnects at once, to the healthy server.
    let (_, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
    assert_eq!(greeting, "hello from app2");
}

#[tokio::test]
async fn tunnels_of_a_frozen_server_are_closed_once_its_checks_time_out() {
    let certs = Certs::new();
    let (a, _b, lb) = cluster(&certs, OnMarkedDown::ShutdownSessions).await;
    let (mut on_app1, mut on_app2) = one_tunnel_each(&certs, &lb).await;
    // As after SIGSTOP: connections stay open, nothing answers.
    a.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    lb.wait_state("app1", "down").await;
    assert_eq!(lb.servers().await["app1"]["check"]["status"], "L7TOUT");
    assert!(
        closed_by_lb(&mut on_app1).await,
        "tunnel to the frozen server still open"
    );
    echo(&mut on_app2, "the other tunnel is untouched").await;
}

const UNREACHABLE: OnMarkedDown = OnMarkedDown::ShutdownUnreachable;

/// Waits until the lb has logged that app1 was marked down by its answers
/// and its sessions were kept: logged when the mark-down is acted on, so a
/// tunnel still open afterwards was left open, not just not yet closed.
async fn sessions_kept_at_mark_down(lb: &LbProcess) {
    eventually(10, "app1's sessions kept at mark-down", || async {
        lb.log_text()
            .lines()
            .any(|l| l.contains("keeping its sessions") && l.contains(r#""server":"app1""#))
    })
    .await;
}

#[tokio::test]
async fn shutdown_unreachable_keeps_tunnels_of_a_server_answering_503() {
    let certs = Certs::new();
    let (a, _b, lb) = cluster(&certs, UNREACHABLE).await;
    assert_eq!(
        lb.servers().await["app1"]["on_marked_down"],
        "shutdown-unreachable"
    );
    let (mut on_app1, mut on_app2) = one_tunnel_each(&certs, &lb).await;
    // As a draining app or one over its capacity threshold: /healthz says
    // 503, the app goes on serving its WebSockets.
    a.set_healthy(false);
    lb.wait_state("app1", "down").await;
    sessions_kept_at_mark_down(&lb).await;
    assert_eq!(lb.servers().await["app1"]["check"]["status"], "L7STS");
    echo(&mut on_app1, "down by its answers, still served").await;
    // New sessions go elsewhere while the established one stays.
    for i in 0..3 {
        let (_, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        assert_eq!(greeting, "hello from app2", "new tunnel {i}");
    }
    echo(&mut on_app1, "after more checks").await;
    echo(&mut on_app2, "the other tunnel is untouched").await;
    assert!(
        !lb.log_text().contains(r#""end":"server-down""#),
        "no tunnel was closed by the lb"
    );
    a.set_healthy(true);
    lb.wait_state("app1", "up").await;
    echo(&mut on_app1, "and after it is back up").await;
}

#[tokio::test]
async fn shutdown_unreachable_closes_tunnels_of_a_frozen_server() {
    let certs = Certs::new();
    let (a, _b, lb) = cluster(&certs, UNREACHABLE).await;
    let (mut on_app1, mut on_app2) = one_tunnel_each(&certs, &lb).await;
    // As after SIGSTOP: connections stay open, checks get no answer.
    a.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    lb.wait_state("app1", "down").await;
    assert_eq!(lb.servers().await["app1"]["check"]["status"], "L7TOUT");
    assert!(
        closed_by_lb(&mut on_app1).await,
        "tunnel to the frozen server still open"
    );
    echo(&mut on_app2, "the other tunnel is untouched").await;
    eventually(5, "tunnel end logged as server-down", || async {
        lb.log_text()
            .lines()
            .any(|l| l.contains(r#""message":"tunnel""#) && l.contains(r#""end":"server-down""#))
    })
    .await;
}

#[tokio::test]
async fn shutdown_unreachable_closes_tunnels_once_a_server_down_by_status_stops_answering() {
    let certs = Certs::new();
    let (a, _b, lb) = cluster(&certs, UNREACHABLE).await;
    let (mut on_app1, mut on_app2) = one_tunnel_each(&certs, &lb).await;
    // Draining (503), then frozen before its own 1012s went out.
    a.set_healthy(false);
    lb.wait_state("app1", "down").await;
    sessions_kept_at_mark_down(&lb).await;
    echo(&mut on_app1, "draining, still served").await;
    a.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        closed_by_lb(&mut on_app1).await,
        "tunnel to the server that stopped answering still open"
    );
    assert_eq!(lb.servers().await["app1"]["check"]["status"], "L7TOUT");
    assert_eq!(lb.state_of("app1").await, "down");
    echo(&mut on_app2, "the other tunnel is untouched").await;
}

#[tokio::test]
async fn shutdown_unreachable_closes_tunnels_in_maint_not_in_drain() {
    let certs = Certs::new();
    let (_a, _b, lb) = cluster(&certs, UNREACHABLE).await;
    let (mut on_app1, _on_app2) = one_tunnel_each(&certs, &lb).await;
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "drain").await,
        StatusCode::OK
    );
    assert_eq!(lb.state_of("app1").await, "drain");
    echo(&mut on_app1, "drained, still served").await;
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "maint").await,
        StatusCode::OK
    );
    assert!(
        closed_by_lb(&mut on_app1).await,
        "tunnel to the server in maint still open"
    );
}

#[tokio::test]
async fn without_shutdown_sessions_a_down_server_keeps_its_tunnels() {
    let certs = Certs::new();
    let (a, _b, lb) = cluster(&certs, OnMarkedDown::None).await;
    let (mut on_app1, _on_app2) = one_tunnel_each(&certs, &lb).await;
    a.set_healthy(false);
    lb.wait_state("app1", "down").await;
    echo(&mut on_app1, "HAProxy's default: sessions stay").await;
}

#[tokio::test]
async fn drain_keeps_tunnels_and_maint_closes_them_with_shutdown_sessions() {
    let certs = Certs::new();
    let (_a, _b, lb) = cluster(&certs, OnMarkedDown::ShutdownSessions).await;
    let (mut on_app1, mut on_app2) = one_tunnel_each(&certs, &lb).await;
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "drain").await,
        StatusCode::OK
    );
    // Checks keep running while draining; let a few of them pass.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(lb.state_of("app1").await, "drain");
    echo(&mut on_app1, "drained, still served").await;
    assert_eq!(
        admin_set_state(lb.ports.admin, "app1", "maint").await,
        StatusCode::OK
    );
    assert!(
        closed_by_lb(&mut on_app1).await,
        "tunnel to the server in maint still open"
    );
    echo(&mut on_app2, "the other tunnel is untouched").await;
}

#[tokio::test]
async fn refused_connect_marks_the_server_down_at_once_and_the_request_moves() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.check = true;
    // fall x interval is 10 s: only passive health can be this quick.
    opts.check_interval = Duration::from_secs(1);
    opts.check_fall = 10;
    opts.edit(|c| {
        c.backends[0].on_error = OnError::MarkDown;
        c.backends[0].error_limit = 1;
    });
    let lb = LbProcess::start(&opts).await;
    for name in ["app1", "app2"] {
        eventually(10, "fully up (health at rise + fall - 1)", || async {
            lb.servers().await[name]["check"]["health"] == 11
        })
        .await;
    }
    a.kill().await;
    // Roundrobin: one of the first two upgrades tries app1 first.
    for i in 0..2 {
        let (mut ws, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        assert_eq!(greeting, "hello from app2", "upgrade {i}");
        echo(&mut ws, "moved").await;
    }
    let app1 = &lb.servers().await["app1"];
    assert_eq!(app1["state"], "down", "{app1}");
    assert_eq!(
        (&app1["on_error"], &app1["error_limit"]),
        (&"mark-down".into(), &1.into())
    );
    assert_eq!(app1["check"]["status"], "L4CON", "{app1}");
    assert!(
        app1["check"]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("client request:")),
        "{app1}"
    );
    for _ in 0..4 {
        let (status, headers, _) = https_get(&certs, lb.ports.https, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-server"], "app2");
    }
    assert_eq!(
        lb.servers().await["app1"]["connect_errors"],
        1,
        "down servers are not tried"
    );
}

/// Status of a WebSocket upgrade request through the lb (101 or the error).
async fn upgrade_status(certs: &Certs, lb: &LbProcess) -> StatusCode {
    https_request(certs, lb.ports.https, sources::upgrade_request()).await.0
}

#[tokio::test]
async fn upgrade_answered_503_by_a_draining_app_moves_to_the_other_with_retry_on_503() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    // app1 drains: it refuses new upgrades with 503 before the lb's checks
    // have noticed (no checks here at all).
    a.refuse_upgrades.store(true, std::sync::atomic::Ordering::SeqCst);

    let plain = LbProcess::start(&LbOpts::new(&[&a, &b], &certs)).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(upgrade_status(&certs, &plain).await);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::SWITCHING_PROTOCOLS, StatusCode::SERVICE_UNAVAILABLE],
        "without retry_on 503 the client gets the 503"
    );

    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.edit(|c| c.backends[0].retry_on = vec![RetryOn::ConnFailure, RetryOn::Status503]);
    let lb = LbProcess::start(&opts).await;
    let app1_hits = a.hits.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..4 {
        let (mut ws, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        assert_eq!(greeting, "hello from app2", "upgrade {i}");
        echo(&mut ws, "moved").await;
    }
    assert!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst) > app1_hits,
        "app1 was asked first at least once"
    );
    let app1 = &lb.servers().await["app1"];
    assert!(app1["responses"]["5xx"].as_u64().unwrap() >= 1, "{app1}");
    eventually(5, "a retried tunnel is logged with its retry", || async {
        lb.log_text()
            .lines()
            .any(|l| l.contains(r#""message":"tunnel""#) && l.contains(r#""retries":1"#))
    })
    .await;
}

#[tokio::test]
async fn a_request_with_a_body_is_not_sent_again_after_a_503() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    a.refuse_upgrades.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.edit(|c| c.backends[0].retry_on = vec![RetryOn::ConnFailure, RetryOn::Status503]);
    let lb = LbProcess::start(&opts).await;
    // A POST upgrade with a body is not replayable: whoever gets it answers.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let req = http::Request::post("/ws")
            .header("host", "localhost")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("content-length", "2")
            .body(body("hi"))
            .unwrap();
        statuses.push(https_request(&certs, lb.ports.https, req).await.0);
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
}

/// A raw TCP server: reads the start of each request and writes what
/// `reply` gives for it (nothing: no answer), then closes.
async fn raw_server(reply: impl Fn(&[u8]) -> &'static [u8] + Copy + Send + 'static) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(reply(&buf[..n])).await;
            });
        }
    });
    addr
}

/// A server that reads a request and closes the connection unanswered.
async fn closes_without_answering() -> std::net::SocketAddr {
    raw_server(|_| b"").await
}

/// A server answering its health checks with a plain 200 and every other
/// request with `answer`.
async fn answers_with(answer: &'static [u8]) -> std::net::SocketAddr {
    raw_server(move |request| {
        if request.starts_with(b"GET /healthz") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        } else {
            answer
        }
    })
    .await
}

#[tokio::test]
async fn a_response_head_over_the_limits_is_a_502_of_the_server() {
    let big: &'static [u8] = Box::leak(
        format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "a".repeat(20_000))
            .into_bytes()
            .into_boxed_slice(),
    );
    let many: &'static [u8] = Box::leak(
        format!("HTTP/1.1 200 OK\r\n{}content-length: 2\r\n\r\nok", "x-n: 1\r\n".repeat(120))
            .into_bytes()
            .into_boxed_slice(),
    );
    let certs = Certs::new();
    let live = Backend::start("app2").await;
    let mut opts = LbOpts::new(&[&live], &certs);
    opts.servers[0].1 = answers_with(big).await;
    let lb = LbProcess::start(&opts).await;
    assert_eq!(https_get(&certs, lb.ports.https, "/").await.0, StatusCode::BAD_GATEWAY);
    opts.servers[0].1 = answers_with(many).await;
    let lb = LbProcess::start(&opts).await;
    assert_eq!(https_get(&certs, lb.ports.https, "/").await.0, StatusCode::BAD_GATEWAY);
    // Within the limits the same server is answered through.
    opts.servers[0].1 = answers_with(b"HTTP/1.1 200 OK\r\nx-n: 1\r\ncontent-length: 2\r\n\r\nok").await;
    let lb = LbProcess::start(&opts).await;
    let (status, _, body) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn empty_response_is_retried_on_the_other_server_only_with_retry_on() {
    let certs = Certs::new();
    let live = Backend::start("app2").await;
    let mut opts = LbOpts::new(&[&live], &certs);
    opts.servers
        .insert(0, ("app1".into(), closes_without_answering().await));
    let plain = LbProcess::start(&opts).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(https_get(&certs, plain.ports.https, "/").await.0);
    }
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");

    opts.edit(|c| c.backends[0].retry_on = vec![RetryOn::ConnFailure, RetryOn::EmptyResponse]);
    let lb = LbProcess::start(&opts).await;
    for _ in 0..4 {
        let (status, headers, _) = https_get(&certs, lb.ports.https, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-server"], "app2");
    }
}

#[tokio::test]
async fn a_waiting_request_moves_on_when_its_server_is_marked_down() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.edit(|c| c.backends[0].on_marked_down = OnMarkedDown::ShutdownSessions);
    let lb = LbProcess::start(&opts).await;
    // Roundrobin on a fresh lb: the first request goes to app1, app2 next.
    let port = lb.ports.https;
    let request = {
        let certs_ca = certs.client_config(&[b"http/1.1"]);
        tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(certs_ca)
                .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("/slow")
                .header("host", "localhost")
                .body(empty())
                .unwrap();
            send.send_request(req).await.unwrap().status()
        })
    };
    eventually(5, "the request waits on app1", || async {
        lb.servers().await["app1"]["sessions"] == 1
    })
    .await;
    // The frozen-looking app1 goes to maintenance: its waiting GET is sent
    // again to app2 instead of hanging or failing.
    admin_set_state(lb.ports.admin, "app1", "maint").await;
    assert_eq!(request.await.unwrap(), StatusCode::OK);
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    eventually(5, "the request is logged with its retry", || async {
        lb.log_text().lines().any(|l| {
            l.contains(r#""path":"/slow""#)
                && l.contains(r#""retries":1"#)
                && l.contains(r#""server":"app2""#)
        })
    })
    .await;
}

#[tokio::test]
async fn a_response_still_streaming_from_a_server_marked_down_is_cut() {
    use http_body_util::BodyExt;
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.edit(|c| c.backends[0].on_marked_down = OnMarkedDown::ShutdownSessions);
    let lb = LbProcess::start(&opts).await;
    // Roundrobin on a fresh lb: the first request goes to app1.
    let tls = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/stream")
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["x-server"], "app1");
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"start");
    admin_set_state(lb.ports.admin, "app1", "maint").await;
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("the lb ends the response");
    assert!(matches!(rest, Some(Err(_))), "cut, not a clean end: {rest:?}");
}

#[tokio::test]
async fn a_server_draining_itself_with_404_keeps_its_tunnels_under_shutdown_sessions() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.balance = Balance::LeastConn;
    opts.check = true;
    opts.edit(|c| {
        if let Some(check) = &mut c.backends[0].check {
            check.disable_on_404 = true;
        }
    });
    opts.edit(|c| c.backends[0].on_marked_down = OnMarkedDown::ShutdownSessions);
    let lb = LbProcess::start(&opts).await;
    for name in ["app1", "app2"] {
        eventually(10, "first checks passed", || async {
            lb.servers().await[name]["check"]["status"] == "L7OK"
        })
        .await;
    }
    let (mut on_app1, _on_app2) = one_tunnel_each(&certs, &lb).await;
    a.health_404.store(true, std::sync::atomic::Ordering::SeqCst);
    lb.wait_state("app1", "drain").await;
    assert_eq!(lb.servers().await["app1"]["check"]["status"], "L7OKC");
    for i in 0..3 {
        let (_, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        assert_eq!(greeting, "hello from app2", "new tunnel {i}");
    }
    // Not marked down, so shutdown-sessions leaves the tunnel to the app,
    // which closes it itself (the app's 1012) when its drain ends.
    echo(&mut on_app1, "still served while draining").await;
    a.health_404.store(false, std::sync::atomic::Ordering::SeqCst);
    lb.wait_state("app1", "up").await;
    echo(&mut on_app1, "and after").await;
}
