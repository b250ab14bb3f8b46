//! The closed admin and internal surface: the admin API refuses what a
//! browser could be made to send (another `Host`, a foreign `Origin`, a
//! state change that is not JSON), needs its bearer token when one is set,
//! will not start off loopback without one; the apps' `/metrics` and
//! `/internal/` are not served through the public listener. The clients
//! the project ships (these tests' helpers, curl as the docs write it,
//! the drills' HTTP client) keep working.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::support::*;
use http::{Request, StatusCode};

fn admin_addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// `POST /api/backends/SERVER/state` with `headers` and `body`.
async fn post_state(port: u16, server: &str, headers: &[(&str, String)], body_text: &str) -> StatusCode {
    let mut req = Request::post(format!("/api/backends/{server}/state"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    http1(admin_addr(port), req.body(body(body_text.to_string())).unwrap())
        .await
        .expect("admin answers")
        .0
}

#[tokio::test]
async fn the_cross_site_drain_request_is_refused_and_changes_nothing() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&LbOpts::new(&[&a, &b], &certs)).await;
    let port = lb.ports.admin;
    let own = admin_host(port);
    let json = ("content-type", "application/json".to_string());
    let cases: [(&str, Vec<(&str, String)>); 5] = [
        (
            "the reproduction: rebound Host, foreign Origin, text/plain",
            vec![
                ("host", format!("evil.example:{port}")),
                ("origin", "http://evil.example".into()),
                ("content-type", "text/plain".into()),
            ],
        ),
        (
            "a rebound Host alone",
            vec![("host", format!("evil.example:{port}")), json.clone()],
        ),
        (
            "a foreign Origin with the right Host",
            vec![
                ("host", own.clone()),
                ("origin", "http://evil.example".into()),
                json.clone(),
            ],
        ),
        (
            "a form post (no JSON) with the right Host",
            vec![
                ("host", own.clone()),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
        ),
        (
            "a cross-site fetch",
            vec![
                ("host", own.clone()),
                ("sec-fetch-site", "cross-site".into()),
                json.clone(),
            ],
        ),
    ];
    for (what, headers) in cases {
        assert_eq!(
            post_state(port, "app2", &headers, r#"{"state":"drain"}"#).await,
            StatusCode::FORBIDDEN,
            "{what}"
        );
    }
    assert_eq!(lb.state_of("app2").await, "up", "nothing drained");
    // A GET under another name is refused too (DNS rebinding reads).
    let req = Request::get("/api/backends")
        .header("host", format!("evil.example:{port}"))
        .body(empty())
        .unwrap();
    assert_eq!(
        http1(admin_addr(port), req).await.unwrap().0,
        StatusCode::FORBIDDEN
    );
    // The same change from the admin's own origin goes through.
    let same_origin = vec![("host", own.clone()), ("origin", format!("http://{own}")), json];
    assert_eq!(
        post_state(port, "app2", &same_origin, r#"{"state":"drain"}"#).await,
        StatusCode::OK
    );
    assert_eq!(lb.state_of("app2").await, "drain");
}

#[tokio::test]
async fn a_configured_token_is_required_for_state_changes_and_reads() {
    let certs = Certs::new();
    let a = Backend::start("app1").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    std::fs::write(&file, "t0ken-from-file\n").unwrap();
    let mut opts = LbOpts::new(&[&a], &certs);
    let path = path_str(&file);
    opts.edit(move |c| c.admin.token_file = Some(toml::Spanned::new(0..0, path.clone())));
    let lb = Lb::start(&opts).await;
    let port = lb.ports.admin;
    let headers = |token: Option<&str>| {
        let mut h = vec![
            ("host", admin_host(port)),
            ("content-type", "application/json".to_string()),
        ];
        if let Some(t) = token {
            h.push(("authorization", format!("Bearer {t}")));
        }
        h
    };
    let drain = r#"{"state":"drain"}"#;
    assert_eq!(
        post_state(port, "app1", &headers(None), drain).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_state(port, "app1", &headers(Some("wrong")), drain).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin_text(port, "/api/backends").await.unwrap().0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_state(port, "app1", &headers(Some("t0ken-from-file")), drain).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_admin_listener_off_loopback_without_a_token_does_not_start() {
    let certs = Certs::new();
    let a = Backend::start("app1").await;
    let ports = Ports {
        https: free_port(),
        http: free_port(),
        admin: free_port(),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    let mut opts = LbOpts::new(&[&a], &certs);
    let admin = ports.admin;
    opts.edit(move |c| *c.admin.listen.get_mut() = format!("0.0.0.0:{admin}"));
    write_config(&opts, ports, &config);
    if std::env::var_os("WSMESH_ADMIN_TOKEN").is_none() {
        let e = match lb::Lb::start(&config, lb::Prebound::default()).await {
            Ok(_) => panic!("started with an open admin listener and no token"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("lb.toml:") && e.contains("is not a loopback address"),
            "{e}"
        );
        // `lb check-config` says the same, with the line of admin.listen.
        let out = std::process::Command::new(lb_bin())
            .args(["check-config".as_ref(), config.as_os_str()])
            .env_remove("WSMESH_ADMIN_TOKEN")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        let line = std::fs::read_to_string(&config)
            .unwrap()
            .lines()
            .position(|l| l.contains("0.0.0.0"))
            .unwrap()
            + 1;
        assert!(text.contains(&format!("lb.toml:{line}:")), "line {line}: {text}");
    }
    // With a token the same file is valid.
    opts.edit(|c| c.admin.token = "s3cret".into());
    write_config(&opts, ports, &config);
    lb::check(&config).expect("valid with a token");
}

#[tokio::test]
async fn the_shipped_clients_of_the_admin_api_keep_working() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&LbOpts::new(&[&a, &b], &certs)).await;
    let port = lb.ports.admin;
    // The drills' and lab's client (Host from the URL, JSON body).
    let url = format!("http://127.0.0.1:{port}/api/backends/app1/state");
    let resp = wsmesh_client::http::request(
        "POST",
        &url,
        &[("content-type", "application/json")],
        r#"{"state":"drain"}"#.into(),
        Duration::from_secs(5),
    )
    .await
    .expect("admin answers");
    assert_eq!(resp.status, 200, "{url}: {}", resp.body);
    let get = wsmesh_client::http::get(
        &format!("http://127.0.0.1:{port}/api/backends"),
        Duration::from_secs(5),
    )
    .await
    .expect("admin answers");
    assert_eq!(get.status, 200, "{}", get.body);
    assert_eq!(lb.state_of("app1").await, "drain");
    // curl as docs/operations.md writes it.
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let state_url = format!("127.0.0.1:{port}/api/backends/app1/state");
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            &state_url,
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"state":"ready"}"#
        ]),
        "200"
    );
    assert_eq!(lb.state_of("app1").await, "up");
    // Without the content type (a form post) it is refused.
    assert_eq!(
        curl(&["-X", "POST", &state_url, "-d", r#"{"state":"drain"}"#]),
        "403"
    );
    for path in [
        "/api/backends",
        "/api/frontends",
        "/api/sources",
        "/stats",
        "/metrics",
    ] {
        assert_eq!(curl(&[&format!("127.0.0.1:{port}{path}")]), "200", "{path}");
        assert_eq!(
            curl(&[&format!("localhost:{port}{path}")]),
            "200",
            "localhost {path}"
        );
    }
}

#[tokio::test]
async fn the_apps_metrics_and_internal_paths_are_not_served_through_the_lb() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    for path in [
        "/metrics",
        "/metrics?format=prometheus",
        "/metrics/",
        "/internal/events",
    ] {
        let (status, _, _) = https_get(&certs, lb.ports.https, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (h2_status, _, _) = h2_get(&certs, lb.ports.https, "/metrics").await;
    assert_eq!(h2_status, StatusCode::FORBIDDEN, "over HTTP/2");
    assert_eq!(app.hits.load(Ordering::SeqCst), 0, "nothing reached the app");
    assert_eq!(https_get(&certs, lb.ports.https, "/").await.0, StatusCode::OK);
}

#[test]
fn the_shipped_lb_configs_deny_metrics_and_internal() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
    for dir in ["local", "ha", "vagrant"] {
        let file = std::path::PathBuf::from(format!("{root}/{dir}/lb.toml"));
        let text = std::fs::read_to_string(&file).unwrap();
        let config: lb::config::Config = toml::from_str(&text).unwrap();
        for f in config
            .frontends
            .iter()
            .filter(|f| f.redirect_https_port.is_none())
        {
            for denied in ["/internal/", "/metrics"] {
                assert!(
                    f.deny.iter().any(|d| d == denied),
                    "{dir}: frontend {} does not deny {denied}",
                    f.name.get_ref()
                );
            }
        }
    }
}
