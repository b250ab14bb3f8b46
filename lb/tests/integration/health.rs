//! Health: active checks bring a server down after `fall` failures and up
//! after `rise` successes, logging the reason; a refused connect is retried
//! on the other server before anything reaches the client.

use std::sync::atomic::Ordering;

use crate::support::*;
use http::StatusCode;

#[tokio::test]
async fn rise_and_fall_follow_a_backend_that_flips_its_health() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.check = true;
    let lb = LbProcess::start(&opts).await;
    eventually(10, "first checks ran", || async {
        lb.servers().await["app1"]["check"]["status"] == "L7OK"
    })
    .await;
    a.set_healthy(false);
    lb.wait_state("app1", "down").await;
    let app1 = &lb.servers().await["app1"];
    assert_eq!(app1["check"]["status"], "L7STS");
    assert_eq!(app1["check"]["code"], 503);
    eventually(5, "state change logged with its reason", || async {
        lb.log_text().lines().any(|l| {
            l.contains("server state changed") && l.contains(r#""to":"down""#) && l.contains("L7STS 503")
        })
    })
    .await;
    let before = a.hits.load(Ordering::SeqCst);
    for _ in 0..6 {
        let (status, headers, _) = https_get(&certs, lb.ports.https, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-server"], "app2");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), before);
    a.set_healthy(true);
    lb.wait_state("app1", "up").await;
    assert_eq!(
        lb.servers().await["app1"]["check"]["health"],
        4,
        "rise jumps health to rise+fall-1"
    );
}

#[tokio::test]
async fn refused_connect_is_retried_on_the_other_server() {
    let certs = Certs::new();
    let live = Backend::start("app2").await;
    let dead_addr = dead_addr();
    let mut opts = LbOpts::new(&[&live], &certs);
    opts.servers.insert(0, ("app1".into(), dead_addr));
    let lb = Lb::start(&opts).await;
    for _ in 0..6 {
        let (status, headers, _) = https_get(&certs, lb.ports.https, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-server"], "app2");
    }
    let servers = lb.servers().await;
    assert!(
        servers["app1"]["connect_errors"].as_u64().unwrap() >= 1,
        "{servers:?}"
    );
    assert_eq!(servers["app2"]["responses"]["2xx"], 6);
}

#[tokio::test]
async fn refused_connect_counts_against_a_checked_server() {
    let certs = Certs::new();
    let live = Backend::start("app2").await;
    let dead_addr = dead_addr();
    let mut opts = LbOpts::new(&[&live], &certs);
    opts.check = true;
    opts.servers.insert(0, ("app1".into(), dead_addr));
    let lb = Lb::start(&opts).await;
    lb.wait_state("app1", "down").await;
    let (status, headers, _) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!(
        (status, headers["x-server"].to_str().unwrap()),
        (StatusCode::OK, "app2")
    );
    let check = &lb.servers().await["app1"]["check"];
    assert_eq!(check["status"], "L4CON", "{check}");
}
