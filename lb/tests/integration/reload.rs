//! SIGHUP reload: new certificates and configuration for new connections
//! while an open tunnel keeps running; a broken file is refused and the
//! running configuration stays. SIGTERM: stop and exit 0.

use std::time::Duration;

use crate::support::*;
use futures_util::StreamExt;

async fn wait_log(lb: &LbProcess, needle: &str) {
    let what = format!("log line containing {needle:?}");
    eventually(10, &what, || async { lb.log_text().contains(needle) }).await;
}

#[tokio::test]
async fn sighup_applies_new_certificate_and_config_while_a_tunnel_stays_open() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let opts = LbOpts::new(&[&a], &certs);
    let mut lb = LbProcess::start(&opts).await;
    let (mut tunnel, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
    assert_eq!(greeting, "hello from app1");
    assert!(
        tls_connect(&certs, lb.ports.https, "reloaded.test", &[b"http/1.1"])
            .await
            .is_err(),
        "the first certificate does not name reloaded.test"
    );

    let mut new_opts = LbOpts::new(&[&b], &certs);
    let (c, k) = certs.server("renewed", &["localhost", "reloaded.test"]);
    new_opts.certs = vec![(c, Some(k))];
    write_config(&new_opts, lb.ports, &lb.config);
    lb.signal(libc::SIGHUP);
    wait_log(&lb, "configuration reloaded").await;

    assert!(
        tls_connect(&certs, lb.ports.https, "reloaded.test", &[b"http/1.1"])
            .await
            .is_ok()
    );
    let (_, headers, _) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!(headers["x-server"], "app2", "new connections use the new config");
    echo(&mut tunnel, "still open after reload").await;
    // The frontend's counters carry over: the tunnel's handshake, then two
    // after the reload (the refused certificate completed none).
    let frontends = admin_get(lb.ports.admin, "/api/frontends")
        .await
        .expect("frontends");
    let https = &frontends["frontends"][1];
    assert_eq!(https["name"], "https", "frontends in name order");
    assert_eq!(https["tls_handshakes"], 3, "{https}");
}

#[tokio::test]
async fn broken_config_on_reload_is_refused_and_the_running_one_stays() {
    let certs = Certs::new();
    let a = Backend::start("app1").await;
    let opts = LbOpts::new(&[&a], &certs);
    let mut lb = LbProcess::start(&opts).await;
    let mut broken = config_table(&opts, lb.ports);
    broken["backend"][0]["balance"] = "nonsense".into();
    std::fs::write(&lb.config, toml::to_string(&broken).unwrap()).unwrap();
    lb.signal(libc::SIGHUP);
    wait_log(&lb, "reload refused").await;
    let refused = lb
        .log_text()
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap()
        .to_string();
    assert!(
        refused.contains("lb.toml:") && refused.contains("nonsense"),
        "{refused}"
    );
    let (status, headers, _) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!(
        (status, headers["x-server"].to_str().unwrap()),
        (http::StatusCode::OK, "app1")
    );
}

#[tokio::test]
async fn sigterm_closes_tunnels_after_the_grace_and_exits_zero() {
    let certs = Certs::new();
    let a = Backend::start("app1").await;
    let mut lb = LbProcess::start(&LbOpts::new(&[&a], &certs)).await;
    let (mut tunnel, _, _) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
    lb.signal(libc::SIGTERM);
    // The tunnel keeps working during the grace period (2 s in the harness config)…
    echo(&mut tunnel, "during grace").await;
    // …and is closed at its end.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = tunnel.next().await {}
    })
    .await;
    assert!(end.is_ok(), "tunnel not closed after the grace period");
    let mut status = None;
    for _ in 0..100 {
        status = lb.process.exit_status();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(status.expect("lb exited").success(), "{status:?}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", lb.ports.https))
            .await
            .is_err(),
        "no longer accepting"
    );
}
