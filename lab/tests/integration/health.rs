//! `/healthz` says whether an instance should get new sessions: 200 with a
//! JSON body when Redis answers, the subscriber is heard from and connections
//! are under the capacity threshold; 503 with reasons otherwise.

use std::time::Duration;

use wsmesh_client::http;
use wsmesh_client::{ClientError, Connection};
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn healthy_instances_answer_200_with_json_and_serve_metrics() {
    let c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    for app in &c.apps {
        let health = http::get(&format!("{}/healthz", app.http_url()), LIMIT)
            .await
            .unwrap();
        assert_eq!(health.status, 200);
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&health.body);
        assert!(parsed.is_ok(), "not JSON: {}", health.body);
        let metrics = http::get(&format!("{}/metrics", app.internal_url()), LIMIT)
            .await
            .unwrap();
        assert_eq!(metrics.status, 200);
        assert!(!metrics.body.is_empty());
    }
    for name in ["subscriber1", "subscriber2"] {
        let url = c
            .cluster
            .get(name)
            .unwrap()
            .health_url()
            .unwrap()
            .replace("/healthz", "/metrics");
        assert_eq!(http::get(&url, LIMIT).await.unwrap().status, 200, "{url}");
    }
}

#[tokio::test]
async fn redis_down_turns_apps_unhealthy_until_it_is_back() {
    let mut c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let health = format!("{}/healthz", c.app(0).http_url());
    c.process("redis").unwrap().shutdown(LIMIT).await.unwrap();
    let down = http::wait_status(&health, 503, LIMIT).await.unwrap();
    assert!(!down.body.is_empty(), "503 says why");
    c.process("redis").unwrap().start().unwrap();
    http::wait_status(&health, 200, LIMIT).await.unwrap();
}

#[tokio::test]
async fn connections_over_the_capacity_threshold_turn_503_and_over_the_limit_are_refused() {
    let opts = LocalOptions::default()
        .app(|c| c.limits.max_connections = 4)
        .app(|c| c.limits.capacity_threshold = 0.5);
    let c = LocalCluster::start(opts).await.unwrap();
    let health = format!("{}/healthz", c.app(0).http_url());
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(c.join(0, "cap").await.unwrap());
    }
    http::wait_status(&health, 503, LIMIT).await.unwrap();
    open.push(c.join(0, "cap").await.unwrap());
    match Connection::connect(&c.ws(0).room("cap")).await {
        Err(ClientError::Refused { status }) => assert_eq!(status, 503),
        Ok(mut conn) => panic!("fifth connection accepted: {:?}", conn.welcome(LIMIT).await),
        Err(other) => panic!("fifth connection: {other}"),
    }
    for conn in open {
        conn.close().await;
    }
    http::wait_status(&health, 200, LIMIT).await.unwrap();
}

#[tokio::test]
async fn draining_instance_turns_503_at_once() {
    let opts = LocalOptions::default().app(|c| c.drain.grace = Duration::from_secs(5));
    let mut c = LocalCluster::start(opts).await.unwrap();
    let health = format!("{}/healthz", c.app(0).http_url());
    c.process("app1").unwrap().term().unwrap();
    // Within the grace period the instance still answers, with 503.
    let draining = http::wait_status(&health, 503, LIMIT).await.unwrap();
    assert!(!draining.body.is_empty());
    let other = format!("{}/healthz", c.app(1).http_url());
    assert_eq!(http::get(&other, LIMIT).await.unwrap().status, 200);
}
