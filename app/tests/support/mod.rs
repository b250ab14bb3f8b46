//! Test harness: a real `redis-server` and real `app` processes, started
//! through `wsmesh-testkit` and killed when dropped, with configs built as
//! values; plus tiny HTTP and WebSocket helpers. Every wait is bounded in
//! count and time. `APP_TEST_LOG=debug` shows the apps' logs (default `warn`).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsmesh_common::protocol::{ErrorCode, ServerFrame};
use wsmesh_testkit::cluster::app_spec;
use wsmesh_testkit::configs::{self, AppConfig};
use wsmesh_testkit::ports::free_addr;
use wsmesh_testkit::process::{Health, Process};
use wsmesh_testkit::redis::{Persistence, RedisOptions};

pub use wsmesh_testkit::redis::RedisServer as Redis;

pub const TOKEN: &str = "test-internal-token";

/// How the app tests run Redis: nothing kept on disk, and small stream
/// nodes so MAXLEN ~ trims even in small tests.
fn redis_options() -> RedisOptions {
    RedisOptions {
        persistence: Persistence::Off,
        args: vec!["--stream-node-max-entries".into(), "4".into()],
    }
}

/// A throwaway redis-server on a free port.
pub async fn redis() -> Redis {
    Redis::start_with(redis_options()).await
}

/// A new, empty redis-server on `port` ("the same" Redis after a kill).
pub async fn redis_on(port: u16) -> Redis {
    Redis::start_on(port, redis_options()).await
}

/// What the app tests do with a Redis besides running it.
pub trait RedisExt {
    /// The app's own Redis store on this server, streams capped at `maxlen`.
    fn store(&self, maxlen: u64) -> app::store::Store;
    /// Subscribes to every room's chat channel, like the subscribers of
    /// every app together.
    fn subscribe(&self) -> impl std::future::Future<Output = redis::aio::PubSub>;
}

impl RedisExt for Redis {
    fn store(&self, maxlen: u64) -> app::store::Store {
        let cfg = app::config::RedisConfig {
            url: self.url(),
            stream_maxlen: maxlen,
            ..app::config::RedisConfig::default()
        };
        app::store::Store::new(&cfg, std::sync::Arc::new(app::metrics::Metrics::new())).expect("store")
    }

    async fn subscribe(&self) -> redis::aio::PubSub {
        let mut ps = redis::Client::open(self.url())
            .expect("url")
            .get_async_pubsub()
            .await
            .expect("pubsub");
        let every_room = format!("{}*", wsmesh_redis_wire::Keys::new("wsmesh:").channel_prefix());
        ps.psubscribe(every_room).await.expect("psubscribe");
        ps
    }
}

/// A running `app` binary.
pub struct App {
    /// The process (killed on drop, before `_dir` goes).
    process: Process,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts the binary with every default, `redis` and `TOKEN`, and
    /// `edit` applied to the config; ready once both listeners accept.
    pub async fn start(redis: &Redis, instance: &str, edit: impl FnOnce(&mut AppConfig)) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = free_addr().expect("a free port");
        let internal = free_addr().expect("a free port");
        let mut config = AppConfig::new(instance, public, internal);
        config.internal.token = Some(TOKEN.into());
        config.redis.url = redis.url();
        edit(&mut config);
        let path = dir.path().join("app.toml");
        configs::write(&config, &path).expect("write config");
        let mut spec = app_spec(
            instance,
            env!("CARGO_BIN_EXE_app").into(),
            &path,
            public,
            internal,
        );
        spec.health = Health::Listening(vec![public, internal]);
        spec.env_remove = vec!["WSMESH_REDIS_URL".into(), "WSMESH_INTERNAL_TOKEN".into()];
        spec.env = vec![(
            "RUST_LOG".into(),
            std::env::var("APP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )];
        let mut process = Process::spawn(spec).expect("spawn app");
        process
            .wait_healthy(Duration::from_secs(10))
            .await
            .expect("app listens");
        App {
            process,
            public,
            internal,
            config: path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().expect("app running")
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.process.term().expect("SIGTERM");
        self.process
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("app exits after SIGTERM")
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.public, path_and_query)
    }

    /// Posts a batch to the internal listener; returns the status.
    pub fn post_events(&self, body: &str) -> u16 {
        http(
            self.internal,
            "POST",
            "/internal/events",
            &[
                ("Authorization", &format!("Bearer {TOKEN}")),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .0
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, headers+body text).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("write request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    (status, out)
}

pub type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects a v1 client (offering `wsmesh.v1`); returns the socket and the
/// selected subprotocol.
pub async fn connect_v1(url: &str) -> (Client, Option<String>) {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wsmesh.v1"));
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (ws, proto)
}

/// Connects a v1 client whose socket has a tiny fixed receive buffer (no
/// autotuning), so a client that stops reading backs up the server quickly.
pub async fn connect_v1_tiny_buffer(addr: SocketAddr, path_and_query: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8192).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let mut req = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wsmesh.v1"));
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket handshake");
    ws
}

/// The next message, within 10 s.
pub async fn next_msg(ws: &mut Client) -> Message {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next v1 frame that is not presence, within 10 s each.
pub async fn next_frame(ws: &mut Client) -> ServerFrame {
    for _ in 0..1000 {
        match next_msg(ws).await {
            Message::Text(t) => {
                let f: ServerFrame = serde_json::from_str(t.as_str()).expect("server frame parses");
                if !matches!(f, ServerFrame::Presence { .. }) {
                    return f;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
    panic!("only presence frames arrived");
}

/// Waits for the close frame; returns its code.
pub async fn close_code(ws: &mut Client) -> u16 {
    for _ in 0..20 {
        match next_msg(ws).await {
            Message::Close(Some(f)) => return u16::from(f.code),
            Message::Close(None) => panic!("close without code"),
            _ => {}
        }
    }
    panic!("no close frame");
}

pub async fn send_json(ws: &mut Client, v: serde_json::Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Forwards the next published chat to the app, like the subscriber.
pub async fn forward_next(ps: &mut redis::aio::PubSub, apps: &[&App]) -> String {
    let msg = tokio::time::timeout(Duration::from_secs(5), ps.on_message().next())
        .await
        .expect("a publish within 5 s")
        .expect("pubsub open");
    let payload: String = msg.get_payload().expect("payload");
    for app in apps {
        assert_eq!(app.post_events(&format!("[{payload}]")), 204);
    }
    payload
}

pub fn expect_error(frame: ServerFrame, code: ErrorCode) {
    match frame {
        ServerFrame::Error { code: got, .. } => assert_eq!(got, code),
        other => panic!("expected error {code:?}, got {other:?}"),
    }
}
