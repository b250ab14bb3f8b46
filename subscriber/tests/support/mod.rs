//! Test harness for the subscriber: a real HTTP server playing the app's
//! internal API, the subscriber with a generated config (in-process through
//! `subscriber::run`, or the binary where a test is about signals or the
//! process log), and a publisher writing chats with the app's own store
//! script (`wsmesh_redis_wire::append`). `redis-server` and the binary are
//! started by `wsmesh-testkit`, the config is built as a value. Everything is
//! stopped on Drop; every wait is bounded.
//! Over 600 lines because the fake app (the internal API the subscriber
//! posts to) is a server of its own.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use wsmesh_common::chat::Chat;
use wsmesh_common::events::{
    Cursors, CursorsQuery, Interest, InterestVersion, RoomsQuery, CURSORS_PATH, EVENTS_PATH, ROOMS_PATH,
};
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::{Append, Keys};
use wsmesh_testkit::cluster::subscriber_spec;
use wsmesh_testkit::configs::{self, SubscriberConfig};
use wsmesh_testkit::eventually::eventually_or;
use wsmesh_testkit::ports::free_loopback_port;
use wsmesh_testkit::process::{Output, Process};
use wsmesh_testkit::redis::{Fsync, Persistence, RedisOptions};

pub use wsmesh_testkit::redis::RedisServer;

/// Token shared by the fake app and the subscriber under test.
pub const TOKEN: &str = "test-internal-token";
/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it is true; panics with `what` after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wsmesh_testkit::eventually(WAIT, what, check).await
}

/// A real `redis-server` on a free port, every write on disk (AOF, fsync
/// always) so streams survive a restart.
pub async fn redis() -> RedisServer {
    RedisServer::start_with(RedisOptions {
        persistence: Persistence::Aof(Fsync::Always),
        args: Vec::new(),
    })
    .await
}

/// Streams are never trimmed in these tests: what a stream holds is what must arrive.
const STREAM_MAXLEN: u64 = 1_000_000;

/// Writes chats the way the app does, with its store script.
pub struct Publisher {
    /// Opens the connection again after redis-server restarted.
    client: redis::Client,
    /// Connection, dropped after an error so the next call reconnects.
    conn: Option<redis::aio::MultiplexedConnection>,
    /// The app's default prefix, the one the subscriber under test is configured with.
    keys: Keys,
}

impl Publisher {
    pub async fn connect(redis: &RedisServer) -> Publisher {
        Publisher {
            client: redis::Client::open(redis.url()).expect("redis url"),
            conn: None,
            keys: Keys::new("wsmesh:"),
        }
    }

    /// The connection, made again after an error.
    async fn conn(&mut self) -> redis::RedisResult<&mut redis::aio::MultiplexedConnection> {
        if self.conn.is_none() {
            self.conn = Some(self.client.get_multiplexed_async_connection().await?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Stores (and with `publish`, publishes) a chat by the app's store
    /// script; errors when Redis is away.
    pub async fn try_store(&mut self, room: &str, body: &str, publish: bool) -> redis::RedisResult<Chat> {
        // Without `publish`, the chat goes out on a channel nobody hears.
        let channel = match publish {
            true => self.keys.channel(room),
            false => format!("{}unheard", self.keys.prefix),
        };
        let chat = Append {
            room,
            nick: "tester",
            body,
            cid: None,
            stream_maxlen: STREAM_MAXLEN,
            cid_ttl: Duration::from_secs(600),
            channel: &channel,
        };
        let keys = self.keys.clone();
        let result = match self.conn().await {
            Ok(conn) => wsmesh_redis_wire::append(conn, &keys, &chat).await,
            Err(e) => Err(e),
        };
        let id = result.inspect_err(|_| self.conn = None)?.id;
        let ts = id.parse::<StreamId>().expect("stream id").ms;
        Ok(Chat {
            id,
            room: room.into(),
            nick: "tester".into(),
            body: body.into(),
            ts,
            cid: None,
        })
    }

    /// Stores a chat without publishing it (a publish that pub/sub lost).
    pub async fn append(&mut self, room: &str, body: &str) -> Chat {
        self.try_store(room, body, false).await.expect("store a chat")
    }

    /// Stores and publishes a chat.
    pub async fn publish(&mut self, room: &str, body: &str) -> Chat {
        self.try_store(room, body, true)
            .await
            .expect("store and publish a chat")
    }

    /// Publishes any payload on `room`'s chat channel.
    pub async fn publish_raw(&mut self, room: &str, payload: String) {
        let channel = self.keys.channel(room);
        let conn = self.conn().await.expect("connect");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(conn)
            .await
            .expect("PUBLISH");
    }

    /// Every chat in a room's stream, oldest first (the ground truth after a restart).
    pub async fn stream(&mut self, room: &str) -> Vec<Chat> {
        let key = self.keys.stream(room);
        let conn = self.conn().await.expect("connect");
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await
            .expect("XRANGE");
        reply
            .ids
            .iter()
            .map(|entry| wsmesh_redis_wire::entry_to_chat(room, entry).expect("a stored chat"))
            .collect()
    }
}

/// How the fake app answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMode {
    /// 204 / cursors, like a healthy app.
    Healthy,
    /// 503 to everything.
    Unavailable,
    /// 401 to everything.
    Unauthorized,
    /// 400 to the next N non-empty batches, then healthy.
    RejectBatches(u32),
    /// 413 to batches of more than N chats.
    SizeLimit(usize),
}

/// One POST the fake app received.
#[derive(Debug, Clone)]
pub struct Post {
    /// The `Authorization` header as sent.
    pub auth: Option<String>,
    /// The chats posted, in order; empty for a heartbeat.
    pub chats: Vec<Chat>,
    /// What the fake app answered.
    pub status: u16,
}

/// What the fake app has seen and delivered.
#[derive(Debug)]
struct AppLog {
    /// Every POST, in arrival order.
    posts: Vec<Post>,
    /// Room → last delivered id (what `GET /internal/cursors` serves).
    cursors: Cursors,
    /// The rooms it "has sockets in" (what `GET /internal/rooms` serves).
    rooms: BTreeSet<String>,
    /// The newest version of `rooms` the subscriber confirmed.
    confirmed: Option<u64>,
    /// Room → delivered chats, in delivery order (the app's dedup applied).
    delivered: BTreeMap<String, Vec<Chat>>,
    /// How the next requests are answered; tests switch it to fake failures.
    mode: AppMode,
}

/// A real HTTP server playing the app's internal API; can go down and come back on its port.
pub struct FakeApp {
    /// Its port (kept across restarts).
    pub port: u16,
    /// What it received and delivered, shared with the connection tasks; kept across restarts.
    log: Arc<Mutex<AppLog>>,
    /// The version of its room set; a change wakes a held poll.
    version: Arc<watch::Sender<u64>>,
    /// Accept loop (owns the connections); `None` while down.
    server: Option<JoinHandle<()>>,
}

impl FakeApp {
    /// Like the real app with clients in `rooms`: it names them as its
    /// rooms and lists a cursor for each (`0-0` until something is
    /// delivered), so gap fills cover them.
    pub async fn start(rooms: &[&str]) -> FakeApp {
        let mut app = FakeApp {
            port: free_loopback_port().expect("a free port"),
            log: Arc::new(Mutex::new(AppLog {
                posts: Vec::new(),
                cursors: Cursors::new(),
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                confirmed: None,
                delivered: BTreeMap::new(),
                mode: AppMode::Healthy,
            })),
            version: Arc::new(watch::Sender::new(1)),
            server: None,
        };
        for room in rooms {
            app.set_cursor(room, "0-0");
        }
        app.up().await;
        app
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts listening again (same port).
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
            .await
            .expect("bind the fake app port");
        let log = self.log.clone();
        let version = self.version.clone();
        self.server = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let version = version.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let log = log.clone();
                        let version = version.clone();
                        async move { Ok::<_, Infallible>(answer(&log, &version, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Closes the listener and every open connection.
    pub async fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    pub fn set_mode(&self, mode: AppMode) {
        self.lock().mode = mode;
    }

    /// Pretends the app already covers `room` up to `id`.
    pub fn set_cursor(&self, room: &str, id: &str) {
        self.lock().cursors.insert(room.into(), id.into());
    }

    /// Changes the rooms it has sockets in (a new version of the set).
    pub fn set_rooms(&self, rooms: &[&str]) {
        self.lock().rooms = rooms.iter().map(|r| r.to_string()).collect();
        self.version.send_modify(|v| *v += 1);
    }

    /// Whether the subscriber confirmed the current room set.
    pub fn rooms_confirmed(&self) -> bool {
        self.lock().confirmed == Some(*self.version.borrow())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AppLog> {
        self.log.lock().expect("fake app log")
    }

    pub fn posts(&self) -> Vec<Post> {
        self.lock().posts.clone()
    }

    /// Ids delivered in `room`, in delivery order.
    pub fn delivered_ids(&self, room: &str) -> Vec<String> {
        self.lock()
            .delivered
            .get(room)
            .map(|chats| chats.iter().map(|c| c.id.clone()).collect())
            .unwrap_or_default()
    }

    pub fn delivered(&self, room: &str) -> Vec<Chat> {
        self.lock().delivered.get(room).cloned().unwrap_or_default()
    }

    /// Heartbeats (empty batches) answered 204.
    pub fn heartbeats(&self) -> usize {
        self.lock()
            .posts
            .iter()
            .filter(|p| p.chats.is_empty() && p.status == 204)
            .count()
    }

    /// Panics unless every accepted POST had the token and, per room, every
    /// accepted chat is newer than the ones accepted before it.
    pub fn assert_posts_in_order_with_token(&self) {
        let mut newest: BTreeMap<String, StreamId> = BTreeMap::new();
        for post in self.posts().iter().filter(|p| p.status == 204) {
            assert_eq!(post.auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
            for chat in &post.chats {
                let id: StreamId = chat.id.parse().expect("stream id");
                if let Some(prev) = newest.get(&chat.room) {
                    assert!(id > *prev, "room {}: {id} posted after {prev}", chat.room);
                }
                newest.insert(chat.room.clone(), id);
            }
        }
    }
}

impl Drop for FakeApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The fake app's epoch: one process for the whole test.
const EPOCH: u64 = 7;

/// `GET /internal/rooms`: takes the confirmation, holds the answer while
/// the subscriber knows the current set (up to its wait).
async fn rooms(
    log: &Mutex<AppLog>,
    version: &watch::Sender<u64>,
    query: RoomsQuery,
) -> Response<Full<Bytes>> {
    if let (Some(known), Some(confirmed)) = (query.known, query.confirmed) {
        if known.epoch == EPOCH {
            let mut log = log.lock().expect("fake app log");
            log.confirmed = log.confirmed.max(Some(confirmed));
        }
    }
    if let Some(known) = query.known.filter(|k| k.epoch == EPOCH) {
        let mut changes = version.subscribe();
        let _ = tokio::time::timeout(query.wait, changes.wait_for(|v| *v != known.version)).await;
    }
    let interest = Interest {
        at: InterestVersion {
            epoch: EPOCH,
            version: *version.borrow(),
        },
        rooms: log.lock().expect("fake app log").rooms.iter().cloned().collect(),
    };
    reply(StatusCode::OK, serde_json::to_vec(&interest).expect("json"))
}

async fn answer(
    shared: &Mutex<AppLog>,
    version: &watch::Sender<u64>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, Vec::new()),
    };
    let authorized = auth.as_deref() == Some(format!("Bearer {TOKEN}").as_str());
    let refused = match shared.lock().expect("fake app log").mode {
        AppMode::Unavailable => Some(StatusCode::SERVICE_UNAVAILABLE),
        AppMode::Unauthorized => Some(StatusCode::UNAUTHORIZED),
        _ if !authorized => Some(StatusCode::UNAUTHORIZED),
        _ => None,
    };
    if path == ROOMS_PATH {
        return match refused {
            Some(status) => reply(status, Vec::new()),
            None => {
                let query = RoomsQuery::parse(query.as_deref()).expect("a rooms query");
                rooms(shared, version, query).await
            }
        };
    }
    let mut log = shared.lock().expect("fake app log");
    if path == CURSORS_PATH {
        let only = CursorsQuery::parse(query.as_deref()).rooms;
        let cursors: Cursors = log
            .cursors
            .iter()
            .filter(|(room, _)| only.as_ref().is_none_or(|only| only.contains(room)))
            .map(|(room, id)| (room.clone(), id.clone()))
            .collect();
        return match refused {
            Some(status) => reply(status, Vec::new()),
            None => reply(StatusCode::OK, serde_json::to_vec(&cursors).expect("json")),
        };
    }
    if path != EVENTS_PATH {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let Ok(chats) = serde_json::from_slice::<Vec<Chat>>(&body) else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    let status = match (refused, log.mode) {
        (Some(status), _) => status,
        (None, AppMode::RejectBatches(n)) if n > 0 && !chats.is_empty() => {
            log.mode = AppMode::RejectBatches(n - 1);
            StatusCode::BAD_REQUEST
        }
        (None, AppMode::SizeLimit(max)) if chats.len() > max => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::NO_CONTENT,
    };
    if status == StatusCode::NO_CONTENT {
        for chat in &chats {
            // The real app's rule: drop what is not newer than the room's cursor.
            let id: StreamId = chat.id.parse().expect("stream id");
            let cursor = log
                .cursors
                .get(&chat.room)
                .and_then(|c| c.parse::<StreamId>().ok());
            if cursor.is_none_or(|c| id > c) {
                log.cursors.insert(chat.room.clone(), chat.id.clone());
                log.delivered
                    .entry(chat.room.clone())
                    .or_default()
                    .push(chat.clone());
            }
        }
    }
    log.posts.push(Post {
        auth,
        chats,
        status: status.as_u16(),
    });
    reply(status, Vec::new())
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Settings of the subscriber under test that tests vary.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `queue.capacity`: small values make a test overflow the queue.
    pub capacity: usize,
    /// `queue.batch_max`: the largest batch the fake app may see.
    pub batch_max: usize,
    /// `app.heartbeat`: how soon an idle subscriber posts `[]`.
    pub heartbeat: Duration,
    /// `redis.unsubscribe_grace`: how long a room the app left stays subscribed.
    pub grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            capacity: 1000,
            batch_max: 50,
            heartbeat: Duration::from_millis(200),
            grace: Duration::from_secs(30),
        }
    }
}

/// How the subscriber under test runs.
enum Running {
    /// `subscriber::run` on the test's runtime; aborting it stops everything
    /// at once, as a crash would.
    InProcess {
        /// The task running `Subscriber::run`; aborted to kill it.
        task: JoinHandle<Result<(), subscriber::Error>>,
        /// `run`'s shutdown: held while it runs (sending or dropping it
        /// stops `run` gracefully).
        shutdown: oneshot::Sender<()>,
    },
    /// The binary, for signals and what the process logs.
    Process(Box<Process>),
    /// Killed and not started again yet.
    Stopped,
}

/// The subscriber under test, with a generated config.
pub struct Subscriber {
    /// In-process or the binary, and the handle to stop it.
    running: Running,
    /// Where its /healthz and /metrics answer.
    health: SocketAddr,
    /// The fake app's log, for the rooms it names.
    app: Arc<Mutex<AppLog>>,
    /// Holds the config file (and the process' log).
    dir: tempfile::TempDir,
}

/// Logs of in-process subscribers go to the test's captured output.
fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
}

impl Subscriber {
    /// Runs `subscriber::run` in this test, on a port-0 health listener.
    pub async fn start(redis: &RedisServer, app: &FakeApp, settings: &Settings) -> Subscriber {
        capture_logs();
        let mut sub = Subscriber::configured(redis, app, settings, 0);
        sub.run_in_process().await;
        sub.wait_ready().await;
        sub
    }

    /// Runs the real binary, for tests of signals and of its log.
    pub async fn start_process(redis: &RedisServer, app: &FakeApp, settings: &Settings) -> Subscriber {
        let port = free_loopback_port().expect("a free port");
        let mut sub = Subscriber::configured(redis, app, settings, port);
        sub.running = Running::Process(Box::new(sub.spawn_process()));
        sub.wait_ready().await;
        sub
    }

    /// Writes the config (health on `health_port`) without starting anything.
    fn configured(redis: &RedisServer, app: &FakeApp, settings: &Settings, health_port: u16) -> Subscriber {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = SubscriberConfig::default();
        config.redis.url = redis.url();
        config.redis.prefix = "wsmesh:".into();
        config.redis.reconnect_base = Duration::from_millis(100);
        config.redis.reconnect_cap = Duration::from_millis(500);
        config.app.internal_url = app.url();
        config.app.token = Some(TOKEN.into());
        config.app.request_timeout = Duration::from_secs(1);
        config.app.retry_base = Duration::from_millis(50);
        config.app.retry_cap = Duration::from_millis(300);
        config.app.heartbeat = settings.heartbeat;
        config.redis.unsubscribe_grace = settings.grace;
        config.queue.capacity = settings.capacity;
        config.queue.batch_max = settings.batch_max;
        config.listen.health = SocketAddr::from((Ipv4Addr::LOCALHOST, health_port));
        configs::write(&config, &dir.path().join("subscriber.toml")).expect("write config");
        Subscriber {
            running: Running::Stopped,
            health: SocketAddr::from((Ipv4Addr::LOCALHOST, health_port)),
            app: app.log.clone(),
            dir,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("subscriber.toml")
    }

    /// The binary on the config, its output captured.
    fn spawn_process(&self) -> Process {
        let program = env!("CARGO_BIN_EXE_subscriber").into();
        let mut spec = subscriber_spec("subscriber", program, &self.config_path(), self.health);
        spec.env_remove = vec!["WSMESH_REDIS_URL".into(), "WSMESH_INTERNAL_TOKEN".into()];
        spec.env = vec![("RUST_LOG".into(), "info".into())];
        spec.output = Output::Capture;
        Process::spawn(spec).expect("spawn subscriber")
    }

    async fn run_in_process(&mut self) {
        let config = subscriber::Config::load(&self.config_path()).expect("a valid config");
        let bound = subscriber::Subscriber::bind(config).await.expect("bind");
        self.health = bound.health_addr().expect("health address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.run(async move {
            let _ = stop.await;
            Ok(())
        }));
        self.running = Running::InProcess { task, shutdown };
    }

    /// Kills it and starts it again the same way with the same config.
    pub async fn restart_after(&mut self, while_down: impl Future<Output = ()>) {
        let in_process = matches!(self.running, Running::InProcess { .. });
        self.kill().await;
        while_down.await;
        if in_process {
            self.run_in_process().await;
        } else {
            self.running = Running::Process(Box::new(self.spawn_process()));
        }
        self.wait_ready().await;
    }

    /// Waits until it is live and subscribed to every room the fake app names.
    async fn wait_ready(&self) {
        let rooms = self.app.lock().expect("fake app log").rooms.len() as f64;
        eventually_or(
            WAIT,
            "the subscriber goes live on the app's rooms",
            || self.log(),
            || async {
                self.healthz()
                    .await
                    .is_some_and(|(_, body)| body["feed"] == "live")
                    && self.metric("wsmesh_subscriber_subscribed_rooms").await == Some(rooms)
            },
        )
        .await;
    }

    /// The process' log so far (for failure messages and log assertions);
    /// an in-process subscriber logs into the test's captured output instead.
    pub fn log(&self) -> String {
        match &self.running {
            Running::Process(process) => process.log(),
            _ => "(in-process subscriber: its log is in the captured test output)".into(),
        }
    }

    /// Stops it at once without a flush: SIGKILL for the process, an abort in process.
    pub async fn kill(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::InProcess { task, .. } => {
                task.abort();
                let _ = task.await;
            }
            Running::Process(mut process) => process.kill9().expect("SIGKILL"),
            Running::Stopped => {}
        }
    }

    /// SIGTERM to the process and its exit status (`None` if it had to be
    /// killed after `WAIT`).
    pub async fn terminate(&mut self) -> Option<ExitStatus> {
        let Running::Process(process) = &mut self.running else {
            panic!("terminate is for a subscriber started with start_process");
        };
        process.term().expect("SIGTERM");
        let status = process.wait_exit(WAIT).await;
        if status.is_none() {
            process.kill9().expect("SIGKILL");
        }
        status
    }

    /// Status code and JSON body of `/healthz`, `None` when it cannot be read.
    pub async fn healthz(&self) -> Option<(u16, serde_json::Value)> {
        let (status, body) = self.get("/healthz").await?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// A series' value from `/metrics` (e.g. `wsmesh_subscriber_gap_fills_total`).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        wsmesh_testkit::metrics::sample(&text, name)
    }

    /// Waits until the series reaches at least `min`.
    pub async fn wait_metric_at_least(&self, name: &str, min: f64) {
        let what = format!("{name} at least {min}");
        eventually_or(
            WAIT,
            &what,
            || self.log(),
            || async { self.metric(name).await >= Some(min) },
        )
        .await;
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(self.health).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Running::InProcess { task, .. } = &self.running {
            task.abort();
        }
    }
}

/// Waits until the fake app delivered exactly `expected` in `room` (in order, once each).
pub async fn wait_delivered(app: &FakeApp, sub: &Subscriber, room: &str, expected: &[Chat]) {
    let want: Vec<String> = expected.iter().map(|c| c.id.clone()).collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = app.delivered_ids(room);
        if got == want {
            break;
        }
        assert!(
            got.len() <= want.len() && want.starts_with(&got),
            "room {room}: delivered {got:?}, expected {want:?}\n{}",
            sub.log()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "room {room}: only {} of {} delivered\n{}",
            got.len(),
            want.len(),
            sub.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.delivered(room), expected, "room {room}: chats differ");
}
