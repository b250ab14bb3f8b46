//! A low-level WebSocket connection for tests, drills and benchmarks: it connects
//! exactly as asked (path, query, subprotocol or none, extra headers, `ws://` or
//! `wss://`), sends whatever it is told — including frames a well-behaved client
//! never sends — and reports what came back, close codes included. Reconnecting
//! and resuming live one level up, in `resilient`.

use std::fmt;
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

use crate::endpoint::Scheme;
use crate::error::ClientError;
use crate::options::{ConnectOptions, Protocol};

/// The close frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// WebSocket close code, e.g. 1012.
    pub code: u16,
    /// Reason text, e.g. why the server is going away.
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
    /// Over plain TCP or TLS, behind one type.
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
                        reason: "host is not a valid TLS server name".into(),
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
        if let Some(token) = &opts.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::BadHeader("Authorization".into()))?;
            headers.insert("Authorization", value);
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
