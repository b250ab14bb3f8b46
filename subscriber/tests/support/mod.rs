//! Test harness for the subscriber: a real `redis-server` in a tempdir, a
//! real HTTP server playing the app's internal API, the real subscriber
//! binary with a generated config, and a publisher writing chats with the
//! app's own store script (`wsmesh_redis_wire::append`).
//! Every process is killed on Drop, on every path; every wait is bounded.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
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
use tokio::task::{JoinHandle, JoinSet};
use wsmesh_common::chat::Chat;
use wsmesh_common::events::{Cursors, CURSORS_PATH, EVENTS_PATH};
use wsmesh_common::stream_id::StreamId;
use wsmesh_redis_wire::{Append, Keys};

/// Token shared by the fake app and the subscriber under test.
pub const TOKEN: &str = "test-internal-token";
/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// A free loopback port below the ephemeral range, so a server stopped and
/// started again on it finds it free (`wsmesh_common::ports`).
pub fn free_port() -> u16 {
    wsmesh_common::ports::free_loopback_port().expect("a free loopback port")
}

/// Polls `check` every 50 ms until it is true; panics with `what` after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits up to `WAIT` for `child` to exit; kills it after that.
fn reap(child: &mut Child) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A real `redis-server` on a free loopback port, AOF on so streams survive a restart.
pub struct RedisServer {
    /// Its port (kept across restarts).
    pub port: u16,
    /// Data directory (AOF files).
    dir: tempfile::TempDir,
    /// The running process, if up.
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        server.up().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let url = self.url();
        eventually("redis-server answers PING", || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        })
        .await;
    }

    /// Stops it cleanly (SIGTERM: the AOF is complete) and starts it again on the same port.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            reap(&mut child);
        }
        self.up().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Streams are never trimmed in these tests: what a stream holds is what must arrive.
const STREAM_MAXLEN: u64 = 1_000_000;

/// Writes chats the way the app does, with its store script.
pub struct Publisher {
    /// Where to (re)connect.
    client: redis::Client,
    /// Connection, dropped after an error so the next call reconnects.
    conn: Option<redis::aio::MultiplexedConnection>,
    /// Key names with the default prefix.
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

    /// Stores (and with `publish`, publishes) a chat by the app's store
    /// script; errors when Redis is away.
    pub async fn try_store(&mut self, room: &str, body: &str, publish: bool) -> redis::RedisResult<Chat> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self
                .conn
                .insert(self.client.get_multiplexed_async_connection().await?),
        };
        // Without `publish`, the chat goes out on a channel nobody hears.
        let channel = match publish {
            true => self.keys.channel(),
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
        let result = wsmesh_redis_wire::append(conn, &self.keys, &chat).await;
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

    /// Publishes any payload on the chat channel.
    pub async fn publish_raw(&mut self, payload: String) {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self.conn.insert(
                self.client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect"),
            ),
        };
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.keys.channel())
            .arg(payload)
            .query_async(conn)
            .await
            .expect("PUBLISH");
    }

    /// Every chat in a room's stream, oldest first (the ground truth after a restart).
    pub async fn stream(&mut self, room: &str) -> Vec<Chat> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self.conn.insert(
                self.client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect"),
            ),
        };
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys.stream(room))
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
    /// The batch.
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
    /// Room → delivered chats, in delivery order (the app's dedup applied).
    delivered: BTreeMap<String, Vec<Chat>>,
    /// How to answer.
    mode: AppMode,
}

/// A real HTTP server playing the app's internal API; can go down and come back on its port.
pub struct FakeApp {
    /// Its port (kept across restarts).
    pub port: u16,
    /// Shared log.
    log: Arc<Mutex<AppLog>>,
    /// Accept loop (owns the connections); `None` while down.
    server: Option<JoinHandle<()>>,
}

impl FakeApp {
    /// Like the real app with clients in `rooms`: it lists a cursor for each
    /// (`0-0` until something is delivered), so gap fills cover them.
    pub async fn start(rooms: &[&str]) -> FakeApp {
        let mut app = FakeApp {
            port: free_port(),
            log: Arc::new(Mutex::new(AppLog {
                posts: Vec::new(),
                cursors: Cursors::new(),
                delivered: BTreeMap::new(),
                mode: AppMode::Healthy,
            })),
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
        self.server = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(answer(&log, req).await) }
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

async fn answer(log: &Mutex<AppLog>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, Vec::new()),
    };
    let mut log = log.lock().expect("fake app log");
    let authorized = auth.as_deref() == Some(format!("Bearer {TOKEN}").as_str());
    let refused = match log.mode {
        AppMode::Unavailable => Some(StatusCode::SERVICE_UNAVAILABLE),
        AppMode::Unauthorized => Some(StatusCode::UNAUTHORIZED),
        _ if !authorized => Some(StatusCode::UNAUTHORIZED),
        _ => None,
    };
    if path == CURSORS_PATH {
        return match refused {
            Some(status) => reply(status, Vec::new()),
            None => reply(StatusCode::OK, serde_json::to_vec(&log.cursors).expect("json")),
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
    /// `queue.capacity`.
    pub capacity: usize,
    /// `queue.batch_max`.
    pub batch_max: usize,
    /// `app.heartbeat`.
    pub heartbeat: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            capacity: 1000,
            batch_max: 50,
            heartbeat: "200ms",
        }
    }
}

/// The real subscriber binary, running with a generated config.
pub struct Subscriber {
    /// The process.
    child: Option<Child>,
    /// Port of its /healthz and /metrics.
    pub health_port: u16,
    /// Holds the config file and the log.
    dir: tempfile::TempDir,
}

impl Subscriber {
    pub async fn start(redis: &RedisServer, app: &FakeApp, settings: &Settings) -> Subscriber {
        let dir = tempfile::tempdir().expect("tempdir");
        let health_port = free_port();
        let config = format!(
            "[redis]\nurl = \"{redis}\"\nprefix = \"wsmesh:\"\nreconnect_base = \"100ms\"\nreconnect_cap = \"500ms\"\n\n\
             [app]\ninternal_url = \"{app}\"\ntoken = \"{TOKEN}\"\nrequest_timeout = \"1s\"\n\
             retry_base = \"50ms\"\nretry_cap = \"300ms\"\nheartbeat = \"{hb}\"\n\n\
             [queue]\ncapacity = {cap}\nbatch_max = {max}\n\n[listen]\nhealth = \"127.0.0.1:{health_port}\"\n",
            redis = redis.url(),
            app = app.url(),
            hb = settings.heartbeat,
            cap = settings.capacity,
            max = settings.batch_max,
        );
        let path = dir.path().join("subscriber.toml");
        std::fs::write(&path, config).expect("write config");
        let mut sub = Subscriber {
            child: None,
            health_port,
            dir,
        };
        sub.spawn(&path);
        sub.wait_ready().await;
        sub
    }

    fn spawn(&mut self, config: &PathBuf) {
        let log = std::fs::File::create(self.dir.path().join("subscriber.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_subscriber"))
            .arg("--config")
            .arg(config)
            .env_remove("WSMESH_REDIS_URL")
            .env_remove("WSMESH_INTERNAL_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn subscriber");
        self.child = Some(child);
    }

    /// Kills the process and starts a new one with the same config.
    pub async fn restart_after(&mut self, while_down: impl Future<Output = ()>) {
        self.kill();
        while_down.await;
        let config = self.dir.path().join("subscriber.toml");
        self.spawn(&config);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self
            .healthz()
            .await
            .is_some_and(|(_, body)| body["feed"] == "live")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscriber never went live:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The subscriber's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("subscriber.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and the exit status (`None` if it had to be killed).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(&child, libc::SIGTERM);
        reap(&mut child)
    }

    /// Status code and JSON body of `/healthz`, `None` when it cannot be read.
    pub async fn healthz(&self) -> Option<(u16, serde_json::Value)> {
        let (status, body) = self.get("/healthz").await?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    /// A series' value from `/metrics` (e.g. `wsmesh_subscriber_gap_fills_total`).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits until the series reaches at least `min`.
    pub async fn wait_metric_at_least(&self, name: &str, min: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.metric(name).await;
            if value >= Some(min) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {value:?}, expected at least {min}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.health_port))
            .await
            .ok()?;
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
        self.kill();
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
