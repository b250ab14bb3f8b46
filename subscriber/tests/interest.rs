//! Interest-based fan-out with real processes (`LocalCluster`: one Redis,
//! app1 and app2, each with its own subscriber, built from the committed
//! configs): each subscriber subscribes to exactly the rooms its app has
//! sockets in, forwards only their chats, lets a room go after the grace,
//! and a socket that joins a room while others chat in it gets every chat
//! after its history exactly once, in order.
//!
//! Needs the `app` and `subscriber` binaries of this build (`cargo test -p
//! app -p subscriber` builds both).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wsmesh_client::{Connection, Incoming};
use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::ServerFrame;
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::Keys;
use wsmesh_testkit::cluster::{LocalCluster, LocalOptions};

const LIMIT: Duration = Duration::from_secs(10);
/// Longest any eventual condition may take.
const WAIT: Duration = Duration::from_secs(30);

/// A cluster whose clients may send quickly.
async fn cluster(grace: Duration) -> LocalCluster {
    let opts = LocalOptions::default()
        .app(|c| c.limits.rate_burst = 10_000)
        .app(|c| c.limits.rate_per_sec = 10_000.0)
        .subscriber(move |c| c.redis.unsubscribe_grace = grace);
    LocalCluster::start(opts).await.expect("the cluster starts")
}

/// Where subscriber `i` (1-based) serves `/metrics`.
fn health(c: &LocalCluster, i: usize) -> SocketAddr {
    let process = c.cluster.get(&format!("subscriber{i}")).expect("subscriber");
    process.spec().listens[0].0
}

/// A series' value from a subscriber's `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    wsmesh_testkit::metrics::scrape(addr, name, LIMIT).await
}

async fn redis(c: &LocalCluster) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{}/", c.redis))
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// `PUBSUB NUMSUB` of `room`'s channel: how many subscribers hear it.
async fn numsub(conn: &mut redis::aio::MultiplexedConnection, room: &str) -> u64 {
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(Keys::new("wsmesh:").channel(room))
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

/// Polls `check` until it holds; panics naming `what` after `WAIT`.
/// Subscribers on `room`'s channel once one is there (or `WAIT` passed).
/// A join waits for its room's subscription only so long (a loaded
/// machine may answer later), so a count right after a join may be 0.
async fn heard(conn: &mut redis::aio::MultiplexedConnection, room: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = numsub(conn, room).await;
    while n == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        n = numsub(conn, room).await;
    }
    n
}

async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wsmesh_testkit::eventually(WAIT, what, check).await
}

#[tokio::test]
async fn each_subscriber_subscribes_and_forwards_only_its_apps_rooms() {
    const ROOMS: usize = 8;
    const CHATS: usize = 5;
    let c = cluster(Duration::from_secs(30)).await;
    let mut conn = redis(&c).await;
    // Room i is served by app (i % 2): a socket there, none on the other app.
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("split-{i}")).collect();
    let mut members = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        members.push(c.join(i % 2, room).await.expect("join"));
    }
    for room in &rooms {
        assert_eq!(heard(&mut conn, room).await, 1, "{room} is heard by one subscriber");
    }
    for (member, room) in members.iter_mut().zip(&rooms) {
        for n in 0..CHATS {
            member
                .send_chat(&format!("{room} {n}"), None)
                .await
                .expect("send");
        }
    }
    for (member, room) in members.iter_mut().zip(&rooms) {
        let last = format!("{room} {}", CHATS - 1);
        let got = member
            .chats_until(LIMIT, |ch| ch.body == last)
            .await
            .expect("own chats");
        assert_eq!(got.len(), CHATS, "{room}: {got:?}");
    }
    let per_app = (ROOMS / 2 * CHATS) as f64;
    for i in 1..=2 {
        let addr = health(&c, i);
        eventually("each subscriber forwarded its app's chats", || async {
            metric(addr, "wsmesh_subscriber_forwarded_chats_total").await >= Some(per_app)
        })
        .await;
        assert_eq!(
            metric(addr, "wsmesh_subscriber_forwarded_chats_total").await,
            Some(per_app),
            "subscriber{i} forwarded chats of rooms its app does not serve"
        );
        assert_eq!(
            metric(addr, "wsmesh_subscriber_subscribed_rooms").await,
            Some((ROOMS / 2) as f64)
        );
    }
    let (_, other): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("wsmesh:chat")
        .query_async(&mut conn)
        .await
        .expect("PUBSUB NUMSUB");
    assert_eq!(other, 0, "nobody listens on one channel for everything");
}

#[tokio::test]
async fn a_room_whose_last_socket_left_is_unsubscribed_after_the_grace() {
    let grace = Duration::from_secs(2);
    let c = cluster(grace).await;
    let mut conn = redis(&c).await;
    let first = c.join(0, "fleeting").await.expect("join");
    let second = c.join(0, "fleeting").await.expect("join");
    let stays = c.join(0, "staying").await.expect("join");
    assert_eq!(heard(&mut conn, "fleeting").await, 1);
    first.close().await;
    let left = Instant::now();
    second.close().await;
    eventually("the room's channel is unsubscribed", || async {
        numsub(&mut conn.clone(), "fleeting").await == 0
    })
    .await;
    assert!(
        left.elapsed() >= grace,
        "unsubscribed {:?} after the last socket left, before the grace",
        left.elapsed()
    );
    assert_eq!(numsub(&mut conn, "staying").await, 1);
    let addr = health(&c, 1);
    assert_eq!(
        metric(addr, "wsmesh_subscriber_room_unsubscribes_total").await,
        Some(1.0)
    );
    assert_eq!(
        metric(addr, "wsmesh_subscriber_subscribed_rooms").await,
        Some(1.0)
    );
    // Back again: subscribed anew, and its chats flow.
    let mut back = c.join(0, "fleeting").await.expect("join");
    assert_eq!(heard(&mut conn, "fleeting").await, 1);
    back.send_chat("again", None).await.expect("send");
    back.chats_until(LIMIT, |ch| ch.body == "again")
        .await
        .expect("live again");
    drop(stays);
}

/// Where the chats a joiner must get start.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// After its `since`.
    After(StreamId),
    /// From the first chat of its history on.
    From(StreamId),
    /// Everything: its history was empty.
    Everything,
}

impl Expect {
    fn covers(self, id: StreamId) -> bool {
        match self {
            Expect::After(since) => id > since,
            Expect::From(first) => id >= first,
            Expect::Everything => true,
        }
    }
}

/// What one joiner saw: its history, then live chats.
struct Seen {
    chats: Vec<Chat>,
    expect: Expect,
}

/// Connects to app2 in `room` (resuming from `since` if given), reads its
/// history and then at least `live` further chats.
async fn join_and_read(c: &LocalCluster, room: &str, since: Option<&str>, live: usize) -> Seen {
    let mut opts = c.ws(1).room(room);
    if let Some(since) = since {
        opts = opts.since(since);
    }
    let mut conn = Connection::connect(&opts).await.expect("connect");
    let (_, history) = conn.join(LIMIT).await.expect("welcome and history");
    let expect = match (since, history.first()) {
        (Some(since), _) => Expect::After(since.parse().expect("since")),
        (None, Some(first)) => Expect::From(first.stream_id().expect("id")),
        (None, None) => Expect::Everything,
    };
    let mut chats = history;
    let mut after = 0;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while after < live {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.recv_timeout(left).await.expect("chats keep coming") {
            Incoming::Frame(ServerFrame::Chat { chats: batch }) => {
                after += batch.len();
                chats.extend(batch);
            }
            Incoming::Frame(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    conn.close().await;
    Seen { chats, expect }
}

#[tokio::test]
async fn joining_a_busy_room_under_load_loses_and_repeats_nothing() {
    const SENDERS: usize = 2;
    const MAX_SENDS: usize = 1500;
    const JOINS: usize = 12;
    // No grace: every join on app2 is a fresh subscription of the room.
    let c = cluster(Duration::ZERO).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let mut conn = c.join(0, "busy").await.expect("sender joins on app1");
        let mut stop = stop.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..MAX_SENDS {
                if *stop.borrow_and_update() {
                    break;
                }
                conn.send_chat(&format!("s{s} {n}"), None).await.expect("send");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            conn
        }));
    }
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    for j in 0..JOINS {
        // Every other joiner resumes from where the one before it stopped.
        let resume = since.take().filter(|_| j % 2 == 1);
        let s = join_and_read(&c, "busy", resume.as_deref(), 20).await;
        since = s.chats.last().map(|ch| ch.id.clone());
        seen.push(s);
    }
    stop_tx.send_replace(true);
    for sender in senders {
        sender.await.expect("sender").close().await;
    }
    let mut conn = redis(&c).await;
    let stream: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(Keys::new("wsmesh:").stream("busy"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let all: Vec<StreamId> = stream.ids.iter().map(|e| e.id.parse().expect("id")).collect();
    for (j, s) in seen.iter().enumerate() {
        let got: Vec<StreamId> = s.chats.iter().map(|ch| ch.stream_id().expect("id")).collect();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "joiner {j}: a chat twice or out of order: {got:?}"
        );
        let last = *got.last().expect("chats");
        let want: Vec<StreamId> = all
            .iter()
            .copied()
            .filter(|id| s.expect.covers(*id) && *id <= last)
            .collect();
        assert_eq!(
            got, want,
            "joiner {j} missed chats between its history and live ones"
        );
    }
}
