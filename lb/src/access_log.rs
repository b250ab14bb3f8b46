//! One structured log line per request and per tunnel (target `access`),
//! with HAProxy's timers: `th` TLS handshake, `tw` queue wait (always 0:
//! the lb does not queue), `tc` server connect, `tr` response headers,
//! `tt` total (for a tunnel: its whole life). Also the body wrappers that
//! count bytes and write the line when a response is done, since a streamed
//! body ends long after the handler returns; the response body also stops
//! with an error when its server's sessions are shut down
//! (`on_marked_down = "shutdown-sessions"` or `"shutdown-unreachable"`),
//! so the client sees a cut
//! response rather than waiting on a frozen server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::source_limits::LimitKind;
use crate::upstream::h1::ServerBody;
use crate::upstream::SessionGuard;

/// The client's request body as it passes, shared by the body on its way
/// to the server and the request's record.
#[derive(Debug, Default)]
pub struct BodyIn {
    /// Bytes received so far.
    pub bytes: AtomicU64,
    /// Reading it failed: malformed (chunk framing) or cut by the client.
    pub failed: AtomicBool,
}

/// Whose fault a failed request was, logged as `fault` so client errors
/// and server errors are told apart (HAProxy's termination state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Nothing failed, or the lb refused by rule.
    #[default]
    None,
    /// The client sent what cannot be served (counted in the frontend's
    /// `request_errors`).
    Client,
    /// The client went over a per-source limit (429; logged with the
    /// limit as `limit`).
    Limit(LimitKind),
    /// The server failed to answer (counted in the server's responses).
    Server,
}

impl Fault {
    fn as_str(self) -> &'static str {
        match self {
            Fault::None => "-",
            Fault::Client => "client",
            Fault::Limit(_) => "limit",
            Fault::Server => "server",
        }
    }

    /// The per-source limit that refused the request, `-` for none.
    fn limit(self) -> &'static str {
        match self {
            Fault::Limit(kind) => kind.as_str(),
            _ => "-",
        }
    }
}

/// Logs a connection refused before its TLS handshake by a per-source
/// limit; `unlogged` refusals of the same source went unlogged before it
/// (at most one line a second per source).
pub fn connection_refused(client: SocketAddr, frontend: &str, limit: LimitKind, unlogged: u64) {
    tracing::info!(
        target: "access",
        client = %client,
        frontend = %frontend,
        fault = "limit",
        limit = limit.as_str(),
        unlogged,
        "connection refused"
    );
}

/// What is known about one request, filled in as it goes. Its names and
/// path are copied only when request lines are written at all (the
/// `access` target enabled): the record is made for every request.
#[derive(Debug)]
pub struct Exchange {
    /// Request lines are written: the names below are filled in.
    logged: bool,
    /// Client address.
    pub client: SocketAddr,
    /// Frontend name.
    frontend: String,
    /// Backend name, empty (logged `-`) when none was involved.
    backend: String,
    /// Server name, empty (logged `-`) when none was involved.
    server: String,
    /// Request method.
    method: http::Method,
    /// Request path (no query).
    path: String,
    /// Status sent to the client.
    pub status: u16,
    /// TLS handshake time of the connection.
    pub th: Duration,
    /// When the request head was received.
    pub started: Instant,
    /// Time to connect to the server.
    pub tc: Option<Duration>,
    /// Time until the server's response head.
    pub tr: Option<Duration>,
    /// The request body as received so far.
    pub body_in: Arc<BodyIn>,
    /// Server connect attempts that failed before this one.
    pub retries: usize,
    /// Whose fault it was if the request failed.
    pub fault: Fault,
    /// The key a `balance = "hash"` backend placed it by; `None` for other
    /// backends and for requests without the key.
    pub hash_key: Option<Arc<str>>,
}

fn ms(d: Option<Duration>) -> i64 {
    d.map_or(-1, |d| d.as_millis() as i64)
}

impl Exchange {
    /// The record of a request to `frontend` from `client`, started now.
    pub fn new(client: SocketAddr, frontend: &str, method: &http::Method, path: &str, th: Duration) -> Exchange {
        let logged = tracing::enabled!(target: "access", tracing::Level::INFO);
        let copy = |s: &str| if logged { s.to_owned() } else { String::new() };
        Exchange {
            logged,
            client,
            frontend: copy(frontend),
            backend: String::new(),
            server: String::new(),
            method: method.clone(),
            path: copy(path),
            status: 0,
            th,
            started: Instant::now(),
            tc: None,
            tr: None,
            body_in: Arc::default(),
            retries: 0,
            fault: Fault::None,
            hash_key: None,
        }
    }

    /// Records the backend chosen.
    pub fn set_backend(&mut self, name: &str) {
        if self.logged {
            name.clone_into(&mut self.backend);
        }
    }

    /// Records the server the request went to.
    pub fn set_server(&mut self, name: &str) {
        if self.logged {
            name.clone_into(&mut self.server);
        }
    }

    /// A name as logged: `-` when none.
    fn or_dash(name: &str) -> &str {
        if name.is_empty() {
            "-"
        } else {
            name
        }
    }

    /// The hash key as logged: `-` when none.
    fn hash_key(&self) -> &str {
        self.hash_key.as_deref().unwrap_or("-")
    }

    /// Writes the line for a finished request.
    fn log(&self, bytes_out: u64) {
        tracing::info!(
            target: "access",
            client = %self.client,
            frontend = %self.frontend,
            backend = Self::or_dash(&self.backend),
            server = Self::or_dash(&self.server),
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes_in = self.body_in.bytes.load(Ordering::Relaxed),
            bytes_out,
            th_ms = self.th.as_millis() as u64,
            tw_ms = 0,
            tc_ms = ms(self.tc),
            tr_ms = ms(self.tr),
            tt_ms = self.started.elapsed().as_millis() as u64,
            retries = self.retries,
            hash_key = self.hash_key(),
            fault = self.fault.as_str(),
            limit = self.fault.limit(),
            "request"
        );
    }

    /// Writes the line for a finished tunnel.
    /// `client_side` says how the tunnel held the client's connection
    /// (`tls-records`, `tcp`, `rustls` or `stream`).
    pub fn log_tunnel(&self, bytes_in: u64, bytes_out: u64, duration: Duration, end: &str, client_side: &str) {
        tracing::info!(
            target: "access",
            client = %self.client,
            frontend = %self.frontend,
            backend = Self::or_dash(&self.backend),
            server = Self::or_dash(&self.server),
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes_in,
            bytes_out,
            th_ms = self.th.as_millis() as u64,
            tw_ms = 0,
            tc_ms = ms(self.tc),
            tr_ms = ms(self.tr),
            tt_ms = duration.as_millis() as u64,
            retries = self.retries,
            hash_key = self.hash_key(),
            end,
            client_side,
            "tunnel"
        );
    }
}

/// Marks a request in flight on its client connection (for the idle timer).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a response body stopped early.
#[derive(Debug, thiserror::Error)]
#[error("the server was marked down during the response (on_marked_down)")]
pub struct ServerDown;

/// Error of a response body sent to a client.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves when the response's server has its sessions shut down.
struct ServerDownSignal(Pin<Box<dyn Future<Output = ()> + Send>>);

impl std::fmt::Debug for ServerDownSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerDownSignal")
    }
}

/// Where a response body comes from.
#[derive(Debug)]
pub enum Source {
    /// A server's response, read from its connection.
    Server(ServerBody),
    /// The lb's own: these bytes (once), or nothing.
    Local(Option<Bytes>),
}

impl Source {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self {
            Source::Server(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::from))),
            Source::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Server(body) => body.is_end_stream(),
            Source::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Server(body) => body.size_hint(),
            Source::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A response body's watch on its server's shutdown signal.
#[derive(Debug)]
enum DownWatch {
    /// Not needed so far: the body has not waited on its server.
    NotYet,
    /// Watching (the signal only sees shutdowns after the session opened).
    Watching(ServerDownSignal),
    /// The server's sessions were shut down; the body was cut.
    Fired,
}

/// Response body sent to the client: counts bytes, holds the server
/// session open until the body is done, and logs the exchange on drop.
#[derive(Debug)]
pub struct LoggedBody {
    /// The body itself.
    inner: Source,
    /// The server's shutdown signal, made when the body first waits on its
    /// server (most bodies never do: they arrive with their head).
    server_down: DownWatch,
    /// The request's record; logged on drop.
    exchange: Option<Exchange>,
    /// Bytes sent so far.
    bytes_out: u64,
    /// Session on the server, if one was used.
    session: Option<SessionGuard>,
    /// Keeps the request counted as in flight.
    _in_flight: Option<InFlight>,
}

impl LoggedBody {
    pub fn new(
        inner: Source,
        exchange: Option<Exchange>,
        session: Option<SessionGuard>,
        in_flight: Option<InFlight>,
    ) -> LoggedBody {
        LoggedBody {
            inner,
            server_down: DownWatch::NotYet,
            exchange,
            bytes_out: 0,
            session,
            _in_flight: in_flight,
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(_) => {}
            Poll::Pending => {
                // Only a body still waiting on its server is cut.
                if let (DownWatch::NotYet, Some(session)) = (&self.server_down, &self.session) {
                    let signal = ServerDownSignal(Box::pin(session.shut_down_owned()));
                    self.server_down = DownWatch::Watching(signal);
                }
                if let DownWatch::Watching(signal) = &mut self.server_down {
                    if signal.0.as_mut().poll(cx).is_ready() {
                        self.server_down = DownWatch::Fired;
                        return Poll::Ready(Some(Err(Box::new(ServerDown))));
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(exchange) = &self.exchange {
            if let Some(session) = &self.session {
                let c = &session.server.shared.counters;
                c.bytes_out.fetch_add(self.bytes_out, Ordering::Relaxed);
                c.bytes_in
                    .fetch_add(exchange.body_in.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            exchange.log(self.bytes_out);
        }
    }
}

/// Request body from the client, counting bytes as they pass and noting
/// when reading it fails.
#[derive(Debug)]
pub struct CountedBody {
    /// The body itself.
    inner: hyper::body::Incoming,
    /// Shared with the [`Exchange`].
    progress: Arc<BodyIn>,
}

impl CountedBody {
    pub fn new(inner: hyper::body::Incoming, progress: Arc<BodyIn>) -> CountedBody {
        CountedBody { inner, progress }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.progress
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(_))) => self.progress.failed.store(true, Ordering::Relaxed),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
