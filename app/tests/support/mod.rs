//! Test harness: a real `redis-server` on a free loopback port and real `app`
//! processes, each killed when dropped; plus tiny HTTP and WebSocket helpers.
//! Every wait is bounded in count and time. `APP_TEST_LOG=debug` shows the
//! apps' logs (default `warn`).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsmesh_common::protocol::ServerFrame;

pub const TOKEN: &str = "test-internal-token";

/// A free loopback port below the ephemeral range, so a server stopped and
/// started again on it finds it free (`wsmesh_common::ports`).
pub fn free_port() -> u16 {
    wsmesh_common::ports::free_loopback_port().expect("a free loopback port")
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str) {
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr}");
}

/// A throwaway redis-server.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts on a given port (to restart "the same" Redis after a kill).
    pub fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // Small stream nodes so MAXLEN ~ trims even in small tests.
            .args(["--stream-node-max-entries", "4"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            &mut child,
            "redis-server",
        );
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }

    /// The app's own Redis store on this server, streams capped at `maxlen`.
    pub fn store(&self, maxlen: u64) -> app::store::Store {
        let cfg = app::config::RedisConfig {
            url: self.url(),
            stream_maxlen: maxlen,
            ..app::config::RedisConfig::default()
        };
        app::store::Store::new(&cfg, std::sync::Arc::new(app::metrics::Metrics::new())).expect("store")
    }

    /// Subscribes to the chat channel, like the subscriber does.
    pub async fn subscribe(&self) -> redis::aio::PubSub {
        let mut ps = redis::Client::open(self.url())
            .expect("url")
            .get_async_pubsub()
            .await
            .expect("pubsub");
        ps.subscribe("wsmesh:chat").await.expect("subscribe");
        ps
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `app` binary.
pub struct App {
    child: Child,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts the binary with a config for `redis`; `extra` is appended TOML
    /// (sections like `[limits]`).
    pub fn start(redis: &Redis, instance: &str, extra: &str) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let internal = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("app.toml");
        let text = format!(
            "instance = \"{instance}\"\n[listen]\npublic = \"{public}\"\ninternal = \"{internal}\"\n\
             [internal]\ntoken = \"{TOKEN}\"\n{extra}"
        );
        std::fs::write(&config, text).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
            .arg("--config")
            .arg(&config)
            // Through the environment override, so `extra` may hold a [redis] table.
            .env("WSMESH_REDIS_URL", redis.url())
            .env_remove("WSMESH_INTERNAL_TOKEN")
            .env(
                "RUST_LOG",
                std::env::var("APP_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn app");
        wait_for_port(public, &mut child, "app");
        wait_for_port(internal, &mut child, "app");
        App {
            child,
            public,
            internal,
            config,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("app did not exit after SIGTERM");
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

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
