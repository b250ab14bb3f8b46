//! The forwarding path against a real redis-server and a real HTTP app, with
//! the subscriber in-process (the binary where SIGTERM or its log is the
//! point): batches, order, token, heartbeats, and every way the app can fail
//! (down, 503, 401, 400) without losing a chat.

mod support;

use support::{eventually, redis, wait_delivered, AppMode, FakeApp, Publisher, Settings, Subscriber};

#[tokio::test]
async fn published_chats_arrive_in_order_with_the_token() {
    let redis = redis().await;
    let app = FakeApp::start(&["alpha", "beta"]).await;
    let sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    let mut publisher = Publisher::connect(&redis).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..60 {
        a.push(publisher.publish("alpha", &format!("a{i}")).await);
        if i % 2 == 0 {
            b.push(publisher.publish("beta", &format!("b{i}")).await);
        }
    }
    wait_delivered(&app, &sub, "alpha", &a).await;
    wait_delivered(&app, &sub, "beta", &b).await;
    app.assert_posts_in_order_with_token();
    assert!(app.posts().iter().all(|p| p.chats.len() <= 50));
    sub.wait_metric_at_least("wsmesh_subscriber_forwarded_chats_total", 90.0)
        .await;
    assert_eq!(
        sub.metric("wsmesh_subscriber_forwarded_chats_total").await,
        Some(90.0)
    );
}

#[tokio::test]
async fn queued_chats_are_posted_in_batches_of_at_most_batch_max() {
    let redis = redis().await;
    let app = FakeApp::start(&["lobby"]).await;
    let settings = Settings {
        batch_max: 20,
        ..Settings::default()
    };
    let sub = Subscriber::start(&redis, &app, &settings).await;
    app.set_mode(AppMode::Unavailable);
    let mut publisher = Publisher::connect(&redis).await;
    let mut sent = Vec::new();
    for i in 0..70 {
        sent.push(publisher.publish("lobby", &format!("m{i}")).await);
    }
    // At most one batch is in flight, so the rest waits in the queue.
    eventually("chats queued while the app answers 503", || async {
        sub.metric("wsmesh_subscriber_queue_depth").await >= Some(50.0)
    })
    .await;
    app.set_mode(AppMode::Healthy);
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.assert_posts_in_order_with_token();
    let accepted: Vec<usize> = app
        .posts()
        .iter()
        .filter(|p| p.status == 204 && !p.chats.is_empty())
        .map(|p| p.chats.len())
        .collect();
    assert!(accepted.iter().all(|&n| n <= 20), "{accepted:?}");
    assert!(
        accepted.contains(&20),
        "queued chats were not batched: {accepted:?}"
    );
    assert!(app.posts().iter().any(|p| p.status == 503));
    sub.wait_metric_at_least("wsmesh_subscriber_post_retries_total", 1.0)
        .await;
}

#[tokio::test]
async fn heartbeats_arrive_when_idle_and_sigterm_exits_cleanly() {
    let redis = redis().await;
    let app = FakeApp::start(&[]).await;
    let mut sub = Subscriber::start_process(&redis, &app, &Settings::default()).await;
    eventually("three heartbeats", || async { app.heartbeats() >= 3 }).await;
    app.assert_posts_in_order_with_token();
    let (code, body) = sub.healthz().await.expect("healthz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["redis"], "subscribed");
    assert_eq!(body["app"]["ok"], true);
    let status = sub.terminate().await.expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", sub.log());
}

#[tokio::test]
async fn app_down_then_up_loses_nothing_and_health_tells() {
    let redis = redis().await;
    let mut app = FakeApp::start(&["lobby"]).await;
    let sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    let mut publisher = Publisher::connect(&redis).await;
    let mut sent = vec![publisher.publish("lobby", "before").await];
    wait_delivered(&app, &sub, "lobby", &sent).await;

    app.down().await;
    for i in 0..30 {
        sent.push(publisher.publish("lobby", &format!("while down {i}")).await);
    }
    eventually("healthz reports the app unreachable", || async {
        sub.healthz().await.is_some_and(|(code, body)| {
            code == 503
                && body["app"]["ok"] == false
                && body["reasons"].as_array().is_some_and(|r| !r.is_empty())
        })
    })
    .await;
    app.up().await;
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.assert_posts_in_order_with_token();
    eventually("healthz is ok again", || async {
        sub.healthz().await.is_some_and(|(code, _)| code == 200)
    })
    .await;
}

#[tokio::test]
async fn refused_token_is_retried_until_the_app_accepts_it() {
    let redis = redis().await;
    let app = FakeApp::start(&["lobby"]).await;
    let sub = Subscriber::start_process(&redis, &app, &Settings::default()).await;
    app.set_mode(AppMode::Unauthorized);
    let mut publisher = Publisher::connect(&redis).await;
    let sent = vec![
        publisher.publish("lobby", "one").await,
        publisher.publish("lobby", "two").await,
    ];
    eventually("a post refused with 401", || async {
        app.posts().iter().any(|p| p.status == 401 && !p.chats.is_empty())
    })
    .await;
    eventually("the 401 is logged as an error naming the token", || async {
        sub.log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("token"))
    })
    .await;
    app.set_mode(AppMode::Healthy);
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.assert_posts_in_order_with_token();
}

#[tokio::test]
async fn malformed_batch_is_dropped_and_refilled_from_the_stream() {
    let redis = redis().await;
    let app = FakeApp::start(&["lobby"]).await;
    let sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    app.set_mode(AppMode::RejectBatches(2));
    let mut publisher = Publisher::connect(&redis).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(publisher.publish("lobby", &format!("m{i}")).await);
    }
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.assert_posts_in_order_with_token();
    assert_eq!(app.posts().iter().filter(|p| p.status == 400).count(), 2);
    assert_eq!(
        sub.metric("wsmesh_subscriber_batches_rejected_total").await,
        Some(2.0)
    );
    sub.wait_metric_at_least("wsmesh_subscriber_chats_refilled_total", 1.0)
        .await;
}

#[tokio::test]
async fn queue_overflow_drops_and_refills_from_the_streams() {
    let redis = redis().await;
    let app = FakeApp::start(&["lobby"]).await;
    let settings = Settings {
        capacity: 10,
        batch_max: 5,
        ..Settings::default()
    };
    let sub = Subscriber::start(&redis, &app, &settings).await;
    app.set_mode(AppMode::Unavailable);
    let mut publisher = Publisher::connect(&redis).await;
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(publisher.publish("lobby", &format!("m{i}")).await);
    }
    eventually("the queue overflowed", || async {
        sub.metric("wsmesh_subscriber_chats_dropped_overflow_total").await > Some(0.0)
    })
    .await;
    app.set_mode(AppMode::Healthy);
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.assert_posts_in_order_with_token();
}

#[tokio::test]
async fn malformed_payload_is_skipped_and_later_chats_still_arrive() {
    let redis = redis().await;
    let app = FakeApp::start(&["lobby"]).await;
    let sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    let mut publisher = Publisher::connect(&redis).await;
    publisher.publish_raw("lobby", "{not a chat".into()).await;
    let sent = vec![publisher.publish("lobby", "after garbage").await];
    wait_delivered(&app, &sub, "lobby", &sent).await;
    assert_eq!(
        sub.metric("wsmesh_subscriber_malformed_payloads_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn batch_over_the_app_size_limit_is_split_in_order() {
    let redis = redis().await;
    let app = FakeApp::start(&["lobby"]).await;
    let sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    app.set_mode(AppMode::Unavailable);
    let mut publisher = Publisher::connect(&redis).await;
    let mut sent = Vec::new();
    for i in 0..45 {
        sent.push(publisher.publish("lobby", &format!("m{i}")).await);
    }
    eventually("chats queued while the app answers 503", || async {
        sub.metric("wsmesh_subscriber_queue_depth").await >= Some(40.0)
    })
    .await;
    app.set_mode(AppMode::SizeLimit(7));
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.assert_posts_in_order_with_token();
    assert!(app.posts().iter().any(|p| p.status == 413));
    assert!(app
        .posts()
        .iter()
        .filter(|p| p.status == 204)
        .all(|p| p.chats.len() <= 7));
}
