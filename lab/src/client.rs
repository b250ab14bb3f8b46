//! A low-level WebSocket client for tests, drills and benchmarks: it connects
//! exactly as asked (path, query, subprotocol or none, extra headers, `ws://` or
//! `wss://`), sends whatever it is told — including frames a well-behaved client
//! never sends — and reports what came back, close codes included. Reconnecting
//! and resuming live one level up, in `session.rs`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::{ClientFrame, ServerFrame, SUBPROTOCOL};

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `ws://host:port/path` or `wss://…`.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `wss://` URL without a TLS configuration (no CA given).
    #[error("wss:// needs a CA file to trust")]
    NoTls,
    /// TCP connect or TLS failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port that was dialled.
        addr: String,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// The server answered the upgrade with a plain HTTP status (e.g. 403).
    #[error("upgrade refused with HTTP {status}")]
    Refused {
        /// HTTP status of the refusal.
        status: u16,
    },
    /// A header name or value given in the options is not valid HTTP.
    #[error("bad header {0:?}")]
    BadHeader(String),
    /// Nothing arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server sent something the caller did not expect.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// The socket is closed.
    #[error("connection closed ({0:?})")]
    Closed(Option<CloseInfo>),
    /// Any other WebSocket protocol failure.
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
}

/// `ws://` (plain) or `wss://` (TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Ws,
    /// TLS over TCP.
    Wss,
}

/// Where to connect: scheme, host, port and path (query added per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Plain or TLS.
    pub scheme: Scheme,
    /// Host name or IP, also the TLS server name (SNI).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path, e.g. `/ws`.
    pub path: String,
}

impl FromStr for Endpoint {
    type Err = ClientError;

    /// Parses `ws://host[:port][/path]`; a query part is ignored (options carry it).
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ClientError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::Ws, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (Scheme::Wss, rest)
        } else {
            return Err(bad("scheme must be ws:// or wss://"));
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = match scheme {
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None => default_port,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            scheme,
            host,
            port,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 host.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same server on another path (e.g. `/chatsocket`).
    pub fn with_path(&self, path: &str) -> Endpoint {
        Endpoint {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

/// Which protocol the client offers in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Offer `wsmesh.v1` (and require the server to select it).
    V1,
    /// Offer no subprotocol: the seed clients' formats.
    Seed,
}

/// Everything that shapes one connection attempt.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Server and path.
    pub endpoint: Endpoint,
    /// `room=` query parameter.
    pub room: Option<String>,
    /// `since=` query parameter (last id seen).
    pub since: Option<String>,
    /// `session=` query parameter (token from a `welcome`).
    pub session: Option<String>,
    /// Subprotocol offered.
    pub protocol: Protocol,
    /// Extra request headers, e.g. `Origin`.
    pub headers: Vec<(String, String)>,
    /// Trust for `wss://`; required there, ignored for `ws://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Limit for TCP connect plus TLS plus upgrade.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Options for `url` with the v1 protocol and nothing else set.
    pub fn new(url: &str) -> Result<ConnectOptions, ClientError> {
        Ok(ConnectOptions::for_endpoint(url.parse()?))
    }

    /// Options for an already parsed endpoint.
    pub fn for_endpoint(endpoint: Endpoint) -> ConnectOptions {
        ConnectOptions {
            endpoint,
            room: None,
            since: None,
            session: None,
            protocol: Protocol::V1,
            headers: Vec::new(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the room.
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }

    /// Sets `since`.
    pub fn since(mut self, since: impl Into<String>) -> Self {
        self.since = Some(since.into());
        self
    }

    /// Sets the session token.
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// Sets the offered protocol.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the TLS trust used for `wss://`.
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The request URL with its query, e.g. `ws://h:1/ws?room=lobby&since=1-0`.
    pub fn url(&self) -> String {
        let params = [
            ("room", &self.room),
            ("since", &self.since),
            ("session", &self.session),
        ];
        let query: Vec<String> = params
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode_query_value(v))))
            .collect();
        if query.is_empty() {
            self.endpoint.to_string()
        } else {
            format!("{}?{}", self.endpoint, query.join("&"))
        }
    }
}

/// Percent-encodes everything but unreserved characters, so tests can send
/// hostile room names and the server sees exactly them.
fn encode_query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The close frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// WebSocket close code, e.g. 1012.
    pub code: u16,
    /// Reason text.
    pub reason: String,
}

/// One thing received from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A `wsmesh.v1` frame.
    Frame(ServerFrame),
    /// A text frame that is not a `wsmesh.v1` frame (seed formats).
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// The connection ended; the close frame when the server sent one.
    Closed(Option<CloseInfo>),
}

/// The `welcome` frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Session token to resume with.
    pub session: String,
    /// Nick the server assigned or kept.
    pub nick: String,
    /// Room joined.
    pub room: String,
    /// Instance that served the connection.
    pub instance: String,
    /// Unix ms when the session first connected.
    pub connected_since: u64,
}

/// Byte stream under the WebSocket: plain TCP or TLS, behind one type.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One open WebSocket connection.
pub struct Connection {
    /// The socket.
    ws: WebSocketStream<Box<dyn Io>>,
    /// Subprotocol the server selected, if any.
    subprotocol: Option<String>,
    /// Set once the connection ended, so later reads report it again.
    closed: Option<Option<CloseInfo>>,
    /// When the server was last heard from (any frame, pongs included), so a
    /// client can tell a frozen server or a dead path from a quiet room.
    heard: tokio::time::Instant,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("subprotocol", &self.subprotocol)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Connection {
    /// Connects and upgrades; a refusal with an HTTP status is `ClientError::Refused`.
    pub async fn connect(opts: &ConnectOptions) -> Result<Connection, ClientError> {
        tokio::time::timeout(opts.connect_timeout, Self::connect_inner(opts))
            .await
            .map_err(|_| ClientError::Timeout(opts.connect_timeout))?
    }

    async fn connect_inner(opts: &ConnectOptions) -> Result<Connection, ClientError> {
        let addr = opts.endpoint.authority();
        let connect_error = |source| ClientError::Connect {
            addr: addr.clone(),
            source,
        };
        let tcp = TcpStream::connect((opts.endpoint.host.as_str(), opts.endpoint.port))
            .await
            .map_err(connect_error)?;
        // Small frames both ways; waiting to fill a segment only adds latency.
        tcp.set_nodelay(true).map_err(connect_error)?;
        let stream: Box<dyn Io> = match opts.endpoint.scheme {
            Scheme::Ws => Box::new(tcp),
            Scheme::Wss => {
                let tls = opts.tls.clone().ok_or(ClientError::NoTls)?;
                let name =
                    ServerName::try_from(opts.endpoint.host.clone()).map_err(|_| ClientError::BadUrl {
                        url: opts.endpoint.to_string(),
                        reason: "host is not a valid TLS server name",
                    })?;
                let tls = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .map_err(connect_error)?;
                Box::new(tls)
            }
        };
        let mut request = opts.url().into_client_request()?;
        let headers = request.headers_mut();
        if opts.protocol == Protocol::V1 {
            headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
        }
        for (name, value) in &opts.headers {
            let bad = || ClientError::BadHeader(name.clone());
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(value).map_err(|_| bad())?;
            headers.insert(name, value);
        }
        // Outgoing frames may exceed the server's limits on purpose; incoming are ours to bound.
        // A small read buffer (the default is 128 KiB, allocated up front) keeps a
        // thousand drill clients in one process cheap.
        let config = WebSocketConfig::default()
            .max_message_size(Some(16 << 20))
            .read_buffer_size(16 * 1024);
        let (ws, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                WsError::Http(response) => ClientError::Refused {
                    status: response.status().as_u16(),
                },
                other => ClientError::Ws(other),
            })?;
        let subprotocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Connection {
            ws,
            subprotocol,
            closed: None,
            heard: tokio::time::Instant::now(),
        })
    }

    /// Subprotocol the server selected.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.ws.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), ClientError> {
        self.ws.send(Message::binary(data)).await?;
        Ok(())
    }

    /// Sends a text-opcode frame whose payload need not be UTF-8 (a raw frame,
    /// which the WebSocket library would otherwise refuse to build).
    pub async fn send_raw_text(&mut self, payload: Vec<u8>) -> Result<(), ClientError> {
        let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
        self.ws.send(Message::Frame(frame)).await?;
        Ok(())
    }

    /// Sends a `wsmesh.v1` frame.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        self.send_text(text).await
    }

    /// Sends a chat message, with a `cid` when given.
    pub async fn send_chat(&mut self, body: &str, cid: Option<&str>) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Send {
            body: body.to_string(),
            cid: cid.map(str::to_string),
        })
        .await
    }

    /// Next thing from the server (ping/pong are answered and skipped).
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        if let Some(closed) = &self.closed {
            return Ok(Incoming::Closed(closed.clone()));
        }
        loop {
            let message = match self.ws.next().await {
                None => return Ok(self.mark_closed(None)),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Ok(self.mark_closed(None))
                }
                Some(Err(WsError::Protocol(_) | WsError::Io(_))) => return Ok(self.mark_closed(None)),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => m,
            };
            self.heard = tokio::time::Instant::now();
            match message {
                Message::Text(text) => {
                    return Ok(match serde_json::from_str::<ServerFrame>(text.as_str()) {
                        Ok(frame) => Incoming::Frame(frame),
                        Err(_) => Incoming::Text(text.to_string()),
                    })
                }
                Message::Binary(data) => return Ok(Incoming::Binary(data.to_vec())),
                Message::Close(frame) => {
                    // Completes the closing handshake (the library queued our reply).
                    let _ = self.ws.flush().await;
                    let info = frame.map(|f| CloseInfo {
                        code: f.code.into(),
                        reason: f.reason.to_string(),
                    });
                    return Ok(self.mark_closed(info));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    fn mark_closed(&mut self, info: Option<CloseInfo>) -> Incoming {
        self.closed = Some(info.clone());
        Incoming::Closed(info)
    }

    /// `recv` with a deadline.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Incoming, ClientError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout(limit))?
    }

    /// Skips frames until `pick` accepts one, within `limit`. Text, binary and
    /// close are errors: a v1 test waiting for a frame did not expect them.
    pub async fn wait_for<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&ServerFrame) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_timeout(left).await? {
                Incoming::Frame(frame) => {
                    if let Some(found) = pick(&frame) {
                        return Ok(found);
                    }
                }
                Incoming::Closed(info) => return Err(ClientError::Closed(info)),
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// The `welcome` frame (the first frame of a v1 connection).
    pub async fn welcome(&mut self, limit: Duration) -> Result<Welcome, ClientError> {
        match self.recv_timeout(limit).await? {
            Incoming::Frame(ServerFrame::Welcome {
                session,
                nick,
                room,
                instance,
                connected_since,
            }) => Ok(Welcome {
                session,
                nick,
                room,
                instance,
                connected_since,
            }),
            Incoming::Closed(info) => Err(ClientError::Closed(info)),
            other => Err(ClientError::Unexpected(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    /// The `history` frame's chats (skipping presence frames before it).
    pub async fn history(&mut self, limit: Duration) -> Result<(Vec<Chat>, bool), ClientError> {
        self.wait_for(limit, |f| match f {
            ServerFrame::History { chats, truncated, .. } => Some((chats.clone(), *truncated)),
            _ => None,
        })
        .await
    }

    /// Welcome and history in one go, for the common connect-and-settle case.
    pub async fn join(&mut self, limit: Duration) -> Result<(Welcome, Vec<Chat>), ClientError> {
        let welcome = self.welcome(limit).await?;
        let (chats, _) = self.history(limit).await?;
        Ok((welcome, chats))
    }

    /// Waits for the next live chat (one chat, even if the batch held several:
    /// callers that care about batches use `wait_for`).
    pub async fn next_chats(&mut self, limit: Duration) -> Result<Vec<Chat>, ClientError> {
        self.wait_for(limit, |f| match f {
            ServerFrame::Chat { chats } => Some(chats.clone()),
            _ => None,
        })
        .await
    }

    /// Live chats until one matches `last` (included), within `limit`; other
    /// frames are skipped. Tests send a marker and read up to it, so "nothing
    /// else arrived" is checked without sleeping.
    pub async fn chats_until(
        &mut self,
        limit: Duration,
        mut last: impl FnMut(&Chat) -> bool,
    ) -> Result<Vec<Chat>, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            for chat in self.next_chats(left).await? {
                let done = last(&chat);
                out.push(chat);
                if done {
                    return Ok(out);
                }
            }
        }
    }

    /// Waits for the server to close; `Ok(None)` when it dropped without a close frame.
    pub async fn wait_close(&mut self, limit: Duration) -> Result<Option<CloseInfo>, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Incoming::Closed(info) = self.recv_timeout(left).await? {
                return Ok(info);
            }
        }
    }

    /// Sends a WebSocket ping; the pong (answered by the peer's stack, so it
    /// shows the peer is alive, not merely the path) refreshes `last_heard`.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.ws.send(Message::Ping(Vec::new().into())).await?;
        Ok(())
    }

    /// When the server was last heard from (connect time until the first frame).
    pub fn last_heard(&self) -> tokio::time::Instant {
        self.heard
    }

    /// Closes politely (1000); errors are ignored since the peer may be gone.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    #[test]
    fn endpoint_parses_hosts_ports_and_paths() {
        let e: Endpoint = "ws://127.0.0.1:9001/ws?room=x".parse().unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.path.as_str()),
            (Scheme::Ws, "127.0.0.1", 9001, "/ws")
        );
        let e: Endpoint = "wss://localhost".parse().unwrap();
        assert_eq!((e.port, e.path.as_str()), (443, "/"));
        let e: Endpoint = "ws://[::1]:8/chatsocket".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8));
        assert_eq!(e.to_string(), "ws://[::1]:8/chatsocket");
        for bad in ["http://x/ws", "ws://:1/", "ws://h:notaport/", "ws://[::1/"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn url_carries_the_query_encoded() {
        let o = ConnectOptions::new("ws://h:1/ws")
            .unwrap()
            .room("a b")
            .since("5-0")
            .session("t");
        assert_eq!(o.url(), "ws://h:1/ws?room=a%20b&since=5-0&session=t");
        assert_eq!(ConnectOptions::new("ws://h:1/ws").unwrap().url(), "ws://h:1/ws");
    }

    /// A one-connection server that records the request and echoes text frames
    /// back as-is, then closes with 4000 on "bye".
    #[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
    async fn echo_server() -> (u16, tokio::task::JoinHandle<Vec<(String, String)>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, mut resp: Response| {
                seen.push(("uri".to_string(), req.uri().to_string()));
                for (k, v) in req.headers() {
                    seen.push((k.to_string(), v.to_str().unwrap().to_string()));
                }
                if req.headers().contains_key("sec-websocket-protocol") {
                    resp.headers_mut()
                        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
                }
                Ok(resp)
            })
            .await
            .unwrap();
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) if t.as_str() == "bye" => {
                        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                            code: 4000.into(),
                            reason: "bye".into(),
                        };
                        ws.close(Some(frame)).await.unwrap();
                    }
                    Message::Text(_) | Message::Binary(_) => ws.send(m).await.unwrap(),
                    _ => {}
                }
            }
            seen
        });
        (port, task)
    }

    #[tokio::test]
    async fn v1_connection_offers_the_subprotocol_and_sends_the_query_and_headers() {
        let (port, server) = echo_server().await;
        let opts = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws"))
            .unwrap()
            .room("r1")
            .header("Origin", "http://evil.example");
        let mut conn = Connection::connect(&opts).await.unwrap();
        assert_eq!(conn.subprotocol(), Some(SUBPROTOCOL));
        let welcome = r#"{"type":"welcome","session":"s","nick":"n","room":"r1","instance":"app1","connected_since":7}"#;
        conn.send_text(welcome).await.unwrap();
        let w = conn.welcome(Duration::from_secs(5)).await.unwrap();
        assert_eq!((w.instance.as_str(), w.connected_since), ("app1", 7));
        conn.send_text("not json").await.unwrap();
        assert_eq!(
            conn.recv_timeout(Duration::from_secs(5)).await.unwrap(),
            Incoming::Text("not json".into())
        );
        conn.send_text("bye").await.unwrap();
        let close = conn.wait_close(Duration::from_secs(5)).await.unwrap();
        assert_eq!(close.map(|c| c.code), Some(4000));
        drop(conn);
        let seen = server.await.unwrap();
        assert!(seen.contains(&("uri".into(), "/ws?room=r1".into())), "{seen:?}");
        assert!(
            seen.contains(&("origin".into(), "http://evil.example".into())),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn seed_connection_offers_no_subprotocol() {
        let (port, server) = echo_server().await;
        let opts = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/chatsocket"))
            .unwrap()
            .protocol(Protocol::Seed);
        let mut conn = Connection::connect(&opts).await.unwrap();
        assert_eq!(conn.subprotocol(), None);
        conn.send_binary(vec![1, 2, 3]).await.unwrap();
        assert_eq!(
            conn.recv_timeout(Duration::from_secs(5)).await.unwrap(),
            Incoming::Binary(vec![1, 2, 3])
        );
        conn.close().await;
        let seen = server.await.unwrap();
        assert!(
            !seen.iter().any(|(k, _)| k == "sec-websocket-protocol"),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn refused_upgrade_reports_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 2048];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
        let opts = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws")).unwrap();
        match Connection::connect(&opts).await {
            Err(ClientError::Refused { status }) => assert_eq!(status, 403),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A CA file in `dir` and a TLS acceptor whose leaf for 127.0.0.1 it signed.
    fn dev_pki(dir: &std::path::Path) -> (std::path::PathBuf, tokio_rustls::TlsAcceptor) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        (ca_path, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    #[tokio::test]
    async fn wss_trusts_the_given_ca_and_speaks_websocket_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, acceptor) = dev_pki(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
            if let Some(Ok(m)) = ws.next().await {
                ws.send(m).await.unwrap();
            }
        });
        let opts = ConnectOptions::new(&format!("wss://127.0.0.1:{port}/ws"))
            .unwrap()
            .protocol(Protocol::Seed)
            .tls(crate::tls::client_config(&ca).unwrap());
        let mut conn = Connection::connect(&opts).await.unwrap();
        conn.send_text("over tls").await.unwrap();
        assert_eq!(
            conn.recv_timeout(Duration::from_secs(5)).await.unwrap(),
            Incoming::Text("over tls".into())
        );
    }

    #[tokio::test]
    async fn wss_refuses_a_server_signed_by_another_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (_, acceptor) = dev_pki(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (other_ca, _) = dev_pki(other.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let opts = ConnectOptions::new(&format!("wss://127.0.0.1:{port}/ws"))
            .unwrap()
            .tls(crate::tls::client_config(&other_ca).unwrap());
        assert!(matches!(
            Connection::connect(&opts).await,
            Err(ClientError::Connect { .. })
        ));
    }

    #[tokio::test]
    async fn wss_without_trust_is_refused_before_dialling_tls() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let opts = ConnectOptions::new(&format!("wss://127.0.0.1:{port}/ws")).unwrap();
        assert!(matches!(
            Connection::connect(&opts).await,
            Err(ClientError::NoTls)
        ));
    }
}
