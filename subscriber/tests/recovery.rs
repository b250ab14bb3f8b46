//! Losslessness across restarts: of redis-server (pub/sub drops whatever is
//! published while nobody listens) and of the subscriber itself. In both
//! cases the gap fill reads the streams from the app's cursors. A crash of the
//! subscriber is an abort of its in-process `run`; SIGTERM is sent to the binary.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{eventually, redis, wait_delivered, AppMode, FakeApp, Publisher, Settings, Subscriber};

#[tokio::test]
async fn redis_restart_while_publishing_is_filled_from_the_streams() {
    const ROOMS: [&str; 3] = ["alpha", "beta", "gamma"];
    let mut redis = redis().await;
    // "quiet" only ever gets chats that pub/sub never carried.
    let app = FakeApp::start(&["alpha", "beta", "gamma", "quiet"]).await;
    let sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    let mut publisher = Publisher::connect(&redis).await;
    let first = vec![publisher.publish("alpha", "first").await];
    wait_delivered(&app, &sub, "alpha", &first).await;
    // Stored but never published, as if published while nobody listened:
    // only the gap fill after the reconnect can deliver these.
    let mut quiet = Vec::new();
    for i in 0..3 {
        quiet.push(publisher.append("quiet", &format!("lost {i}")).await);
    }

    // A writer keeps storing and publishing while redis-server restarts; its
    // failures while Redis is away are expected and skipped.
    let stored = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let stored = stored.clone();
        async move {
            for i in 0..300 {
                let room = ROOMS[i % ROOMS.len()];
                match publisher.try_store(room, &format!("m{i}"), true).await {
                    Ok(_) => stored.fetch_add(1, Ordering::Relaxed),
                    Err(_) => 0,
                };
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            publisher
        }
    });
    eventually("the writer is under way", || async {
        stored.load(Ordering::Relaxed) >= 30
    })
    .await;
    redis.restart().await;
    let mut publisher = writer.await.expect("writer task");
    for room in ROOMS {
        publisher.publish(room, "after the restart").await;
    }

    // The streams are the truth: every entry is delivered once, in order.
    for room in ROOMS {
        let expected = publisher.stream(room).await;
        wait_delivered(&app, &sub, room, &expected).await;
    }
    app.assert_posts_in_order_with_token();
    sub.wait_metric_at_least("wsmesh_subscriber_redis_reconnects_total", 1.0)
        .await;
    sub.wait_metric_at_least("wsmesh_subscriber_gap_fills_total", 2.0)
        .await;
    sub.wait_metric_at_least("wsmesh_subscriber_chats_refilled_total", 3.0)
        .await;
}

#[tokio::test]
async fn subscriber_restart_is_filled_from_the_app_cursors() {
    let redis = redis().await;
    let app = FakeApp::start(&["alpha", "beta"]).await;
    let mut sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    let mut publisher = Publisher::connect(&redis).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..10 {
        a.push(publisher.publish("alpha", &format!("a{i}")).await);
        b.push(publisher.publish("beta", &format!("b{i}")).await);
    }
    wait_delivered(&app, &sub, "alpha", &a).await;
    wait_delivered(&app, &sub, "beta", &b).await;

    let mut while_down = Vec::new();
    sub.restart_after(async {
        for i in 0..30 {
            while_down.push(publisher.publish("alpha", &format!("down a{i}")).await);
            while_down.push(publisher.publish("beta", &format!("down b{i}")).await);
        }
    })
    .await;
    for chat in while_down {
        if chat.room == "alpha" {
            a.push(chat)
        } else {
            b.push(chat)
        }
    }
    a.push(publisher.publish("alpha", "after restart").await);
    wait_delivered(&app, &sub, "alpha", &a).await;
    wait_delivered(&app, &sub, "beta", &b).await;
    app.assert_posts_in_order_with_token();
    sub.wait_metric_at_least("wsmesh_subscriber_chats_refilled_total", 60.0)
        .await;
}

#[tokio::test]
async fn sigterm_with_the_app_down_exits_cleanly_and_the_next_start_refills() {
    let redis = redis().await;
    let mut app = FakeApp::start(&["lobby"]).await;
    let mut sub = Subscriber::start_process(&redis, &app, &Settings::default()).await;
    let mut publisher = Publisher::connect(&redis).await;
    let mut sent = vec![publisher.publish("lobby", "before").await];
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.down().await;
    for i in 0..10 {
        sent.push(publisher.publish("lobby", &format!("queued {i}")).await);
    }
    sub.wait_metric_at_least("wsmesh_subscriber_post_retries_total", 1.0)
        .await;
    // The flush cannot reach the app; the process still ends on its own, with 0.
    let status = sub.terminate().await.expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", sub.log());
    assert!(sub.log().contains("flushing"), "{}", sub.log());
    app.up().await;
    sub.restart_after(async {}).await;
    wait_delivered(&app, &sub, "lobby", &sent).await;
    app.assert_posts_in_order_with_token();
}

#[tokio::test]
async fn every_fault_at_once_still_delivers_every_stored_chat_in_order() {
    const ROOMS: [&str; 4] = ["r0", "r1", "r2", "r3"];
    const WRITES: usize = 600;
    let mut redis = redis().await;
    let mut app = FakeApp::start(&ROOMS).await;
    let settings = Settings {
        capacity: 40,
        batch_max: 10,
        ..Settings::default()
    };
    let sub = Subscriber::start(&redis, &app, &settings).await;
    let mut publisher = Publisher::connect(&redis).await;
    let attempted = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let attempted = attempted.clone();
        async move {
            for i in 0..WRITES {
                // Failures while redis-server restarts are expected; the streams tell what was stored.
                let _ = publisher
                    .try_store(ROOMS[i % ROOMS.len()], &format!("m{i}"), true)
                    .await;
                attempted.store(i + 1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            publisher
        }
    });
    let reached = |n: usize| {
        let attempted = attempted.clone();
        async move {
            eventually(&format!("{n} writes attempted"), || async {
                attempted.load(Ordering::Relaxed) >= n
            })
            .await
        }
    };
    reached(50).await;
    app.down().await;
    reached(200).await;
    app.up().await;
    reached(250).await;
    app.set_mode(AppMode::RejectBatches(1));
    reached(300).await;
    redis.restart().await;
    reached(400).await;
    app.set_mode(AppMode::Unavailable);
    reached(500).await;
    app.set_mode(AppMode::Healthy);
    let mut publisher = writer.await.expect("writer task");
    for room in ROOMS {
        publisher.publish(room, "last").await;
    }
    for room in ROOMS {
        let expected = publisher.stream(room).await;
        wait_delivered(&app, &sub, room, &expected).await;
    }
    app.assert_posts_in_order_with_token();
    // Every fault really happened.
    for series in [
        "wsmesh_subscriber_chats_dropped_overflow_total",
        "wsmesh_subscriber_batches_rejected_total",
        "wsmesh_subscriber_redis_reconnects_total",
        "wsmesh_subscriber_post_retries_total",
    ] {
        sub.wait_metric_at_least(series, 1.0).await;
    }
}
