//! Losslessness across restarts: of redis-server (pub/sub drops whatever is
//! published while nobody listens) and of the subscriber itself. In both
//! cases the gap fill reads the streams from the app's cursors.

mod support;

use support::{wait_delivered, FakeApp, Publisher, RedisServer, Settings, Subscriber};

#[tokio::test]
async fn redis_restart_gap_is_filled_from_the_streams() {
    let mut redis = RedisServer::start().await;
    let app = FakeApp::start(&["alpha", "beta"]).await;
    let sub = Subscriber::start(&redis, &app, &Settings::default()).await;
    let mut publisher = Publisher::connect(&redis).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..5 {
        a.push(publisher.publish("alpha", &format!("a{i}")).await);
        b.push(publisher.publish("beta", &format!("b{i}")).await);
    }
    wait_delivered(&app, &sub, "alpha", &a).await;
    // Stored but never published: only a gap fill can deliver these.
    for i in 0..3 {
        a.push(publisher.append("alpha", &format!("lost a{i}")).await);
    }
    redis.restart().await;
    let mut publisher = Publisher::connect(&redis).await;
    for i in 0..20 {
        a.push(publisher.publish("alpha", &format!("after a{i}")).await);
        b.push(publisher.publish("beta", &format!("after b{i}")).await);
    }
    wait_delivered(&app, &sub, "alpha", &a).await;
    wait_delivered(&app, &sub, "beta", &b).await;
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
    let redis = RedisServer::start().await;
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
