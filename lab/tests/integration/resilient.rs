//! `ResilientClient` against a draining instance: clients closed with 1012
//! reconnect (jittered) to the other instance, resume with `since` and their
//! session, get every message exactly once and in order, and their queued send
//! is acked once.

use std::time::Duration;

use wsmesh_client::resilient::{Event, ResilientClient, ResilientConfig};
use wsmesh_client::ConnectOptions;
use wsmesh_common::protocol::close;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(20);
const CLIENTS: usize = 20;

fn client(c: &LocalCluster) -> ResilientClient {
    let connect: ConnectOptions = c.ws(0).room("drill");
    let mut config = ResilientConfig::new(connect);
    config.fallbacks = vec![c.ws(1).endpoint];
    config.backoff_base = Duration::from_millis(50);
    config.restart_jitter = Duration::from_millis(100);
    config.resend_after = Duration::from_millis(300);
    ResilientClient::spawn(config)
}

#[tokio::test]
async fn clients_of_a_draining_instance_move_over_and_miss_nothing() {
    let opts = LocalOptions::default()
        .app(|c| c.drain.grace = Duration::from_millis(200))
        .app(|c| c.drain.window = Duration::from_millis(500));
    let mut c = LocalCluster::start(opts).await.unwrap();
    let mut clients: Vec<ResilientClient> = (0..CLIENTS).map(|_| client(&c)).collect();
    for cl in &mut clients {
        let first = cl
            .wait_for(LIMIT, |e| match e {
                Event::Connected(r) => Some(r.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(first.instance, "app1");
    }

    let mut sender = c.join(1, "drill").await.unwrap();
    for i in 0..10 {
        sender.send_chat(&format!("m{i}"), None).await.unwrap();
    }
    c.process("app1").unwrap().term().unwrap();
    let queued_cid = clients[0].send("queued");
    for i in 10..30 {
        sender.send_chat(&format!("m{i}"), None).await.unwrap();
    }

    // Follow each client's events until it is on app2, keeping what it yielded.
    let mut bodies: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    let mut closes: Vec<Vec<Option<u16>>> = vec![Vec::new(); CLIENTS];
    for (n, cl) in clients.iter_mut().enumerate() {
        let moved = cl
            .wait_for(LIMIT, |e| match e {
                Event::Connected(r) if r.instance == "app2" => Some(()),
                Event::Chat(ch) => {
                    bodies[n].push(ch.body.clone());
                    None
                }
                Event::Disconnected(code) => {
                    closes[n].push(*code);
                    None
                }
                _ => None,
            })
            .await;
        assert!(moved.is_some(), "client {n} never reached app2: {:?}", cl.stats());
    }
    sender.send_chat("end", None).await.unwrap();

    for (n, cl) in clients.iter_mut().enumerate() {
        let seen = &mut bodies[n];
        while seen.last().map(String::as_str) != Some("end") {
            let Some(chat) = cl.next_chat(LIMIT).await else {
                panic!("client {n} stalled after {seen:?}: {:?}", cl.stats());
            };
            seen.push(chat.body);
        }
        let numbered: Vec<String> = seen.iter().filter(|b| b.starts_with('m')).cloned().collect();
        let expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
        assert_eq!(numbered, expected, "client {n}");
        assert_eq!(
            seen.iter().filter(|b| *b == "queued").count(),
            1,
            "client {n}: {seen:?}"
        );
        assert_eq!(
            closes[n].first(),
            Some(&Some(close::SERVICE_RESTART)),
            "client {n}"
        );
        let stats = cl.stats();
        assert_eq!((stats.duplicates, stats.out_of_order), (0, 0), "client {n}");
        let last = &stats.connections[stats.connections.len() - 1];
        assert!(last.reconnect_took.is_some(), "client {n}");
        assert_eq!(
            last.connected_since, stats.connections[0].connected_since,
            "session kept"
        );
    }
    let stats = clients[0].stats();
    assert_eq!((stats.acked, stats.pending), (1, 0), "queued send {queued_cid}");
    assert!(
        c.process("app1").unwrap().wait_exit(LIMIT).await.is_some(),
        "app1 finished draining"
    );
}

#[tokio::test]
async fn clients_of_a_killed_instance_back_off_to_the_other_and_miss_nothing() {
    let mut c = LocalCluster::start(LocalOptions::default()).await.unwrap();
    let mut clients: Vec<ResilientClient> = (0..CLIENTS).map(|_| client(&c)).collect();
    for cl in &mut clients {
        let on_app1 = cl.wait_for(LIMIT, |e| match e {
            Event::Connected(r) => Some(r.instance == "app1"),
            _ => None,
        });
        assert_eq!(on_app1.await, Some(true));
    }
    let mut sender = c.join(1, "drill").await.unwrap();
    sender.send_chat("before", None).await.unwrap();
    for cl in &mut clients {
        assert_eq!(cl.next_chat(LIMIT).await.map(|ch| ch.body), Some("before".into()));
    }

    // No close frame this time: the clients must notice and back off.
    c.process("app1").unwrap().kill9().unwrap();
    sender.send_chat("during", None).await.unwrap();
    for (n, cl) in clients.iter_mut().enumerate() {
        let lost = cl
            .wait_for(LIMIT, |e| match e {
                Event::Disconnected(code) => Some(*code),
                _ => None,
            })
            .await;
        assert!(matches!(lost, Some(None | Some(1006))), "client {n}: {lost:?}");
    }
    sender.send_chat("after", None).await.unwrap();
    for (n, cl) in clients.iter_mut().enumerate() {
        let bodies: Vec<String> = cl.chats(2, LIMIT).await.into_iter().map(|ch| ch.body).collect();
        assert_eq!(bodies, ["during", "after"], "client {n}: {:?}", cl.stats());
        let stats = cl.stats();
        assert_eq!(
            stats.connections.last().map(|r| r.instance.as_str()),
            Some("app2")
        );
        assert_eq!((stats.duplicates, stats.out_of_order), (0, 0), "client {n}");
    }
}
