//! A request on its way to a server: the outgoing request kept so a
//! replayable one can be sent again, and the attempts on the backend's
//! candidates (connect or reuse, send, wait for the response head) with
//! HAProxy's `retries`, `retry-on` and redispatch.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::headers::{forwarded_lines, request_host, strip_hop_by_hop};
use super::upgrade::{to_http1_websocket, UpgradeKind};
use crate::access_log::{BodyIn, CountedBody, Exchange, Fault};
use crate::config::RetryOn;
use crate::conn::ConnCtx;
use crate::upstream::h1::{self, Answer, ConnectError, ExchangeError, HeadLimits, RequestBody, RequestHead, ServerConn};
use crate::upstream::{select, Backend, CheckResult, CheckStatus, Server, SessionGuard};

/// The request as it goes to servers: the head is kept so that a request
/// without a body can be sent again to another server; a body is sent once.
pub struct Outgoing {
    /// Method, origin-form URI, headers as sent.
    head: RequestHead,
    /// The body, until it is sent; replayable requests have none.
    body: Option<RequestBody>,
    /// GET or HEAD with no body: safe to send again to another server as
    /// long as no response reached the client (a WebSocket upgrade before
    /// its 101 is one).
    replayable: bool,
}

impl Outgoing {
    /// Origin-form URI, HTTP/1.1, `Host` kept (taken from the authority for
    /// HTTP/2 clients), hop-by-hop headers removed, forwarding headers added;
    /// an upgrade is asked for as HTTP/1.1 does.
    pub fn new(
        req: Request<Incoming>,
        ctx: &ConnCtx,
        upgrade: Option<UpgradeKind>,
        body_in: Arc<BodyIn>,
    ) -> Result<Outgoing, http::Error> {
        // An extended CONNECT has no body: its stream becomes the tunnel.
        let replayable = upgrade == Some(UpgradeKind::WebSocketOverH2)
            || matches!(*req.method(), http::Method::GET | http::Method::HEAD) && req.body().is_end_stream();
        let (mut parts, body) = req.into_parts();
        let host = request_host(&parts.headers, &parts.uri);
        let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        match (upgrade, upgrade_value) {
            (Some(UpgradeKind::Http1), Some(value)) => {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, value);
            }
            (Some(UpgradeKind::WebSocketOverH2), _) => to_http1_websocket(&mut parts),
            _ => {}
        }
        if !parts.headers.contains_key(header::HOST) {
            if let Some(h) = &host {
                parts.headers.insert(header::HOST, h.clone());
            }
        }
        // Room for the four forwarding lines with an IPv6 client and a host.
        let mut added = Vec::with_capacity(256);
        let replaced = match ctx.frontend.forwarded_headers {
            true => forwarded_lines(
                &parts.headers,
                ctx.peer.ip(),
                ctx.frontend.tls.is_some(),
                host.as_ref(),
                &mut added,
            ),
            false => &[],
        };
        parts.uri = origin_form(parts.uri)?;
        parts.version = Version::HTTP_11;
        Ok(Outgoing {
            head: RequestHead {
                parts,
                replaced,
                added,
            },
            body: (!replayable).then(|| CountedBody::new(body, body_in).boxed()),
            replayable,
        })
    }

    /// Whether the request can still be sent: a body is sent once (a
    /// request that is not replayable has one until it is sent).
    fn sendable(&self) -> bool {
        self.replayable || self.body.is_some()
    }
}

/// `uri` as a server expects it: path and query only. An HTTP/1 client's
/// URI usually is that already and is kept without being parsed again.
fn origin_form(uri: http::Uri) -> Result<http::Uri, http::Error> {
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return Ok(uri);
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    Ok(http::Uri::from_parts(parts)?)
}

/// How forwarding a request ended.
// Made once per request and moved straight into its match: boxing the large
// variant would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Forwarded {
    /// A server's response head, with its connection and session.
    Response {
        server: Arc<Server>,
        conn: ServerConn,
        session: SessionGuard,
        response: Answer,
    },
    /// No usable answer: the lb answers itself with this.
    Local(StatusCode, &'static str),
}

/// What one attempt on one server gave.
// As `Forwarded`: made once per attempt and matched at once.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// A response head (possibly one that `retry_on` retries).
    Response(ServerConn, SessionGuard, Answer),
    /// The connect was refused or timed out; nothing was sent.
    ConnectFailed,
    /// The server closed without answering.
    Empty,
    /// The server's sessions were shut down (`on_marked_down`) while we waited.
    ServerDown,
    /// Reading the client's body failed (malformed chunk framing, or the
    /// client went away): the client's fault, not the server's.
    ClientBody,
    /// Some other failure of the server; the lb answers with this.
    Fail(StatusCode, &'static str),
}

/// Sends the request to the backend's candidates in turn: the next one is
/// tried after a refused or timed-out connect (`conn-failure`) and, for a
/// replayable request, after an empty response (`empty-response`), a
/// `503` (`503`) or the server being marked down while we waited, at most
/// `retries` times (HAProxy `retries` + `retry-on` + `option redispatch`).
pub async fn forward(
    backend: &Backend,
    ctx: &ConnCtx,
    upgrade: bool,
    outgoing: &mut Outgoing,
    exchange: &mut Exchange,
) -> Forwarded {
    let unavailable = Forwarded::Local(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: no server is available to handle this request.\n",
    );
    let retry_on = |what: RetryOn| backend.retry_on.contains(&what);
    let mut candidates = select::candidates(backend, ctx.peer.ip(), exchange.hash_key.as_deref()).peekable();
    for attempt in 0..=backend.retries {
        let Some(server) = candidates.next() else {
            return unavailable;
        };
        // Another try is possible only within `retries` and with a server left.
        let mut can_retry = attempt < backend.retries && candidates.peek().is_some();
        match attempt_on(&server, ctx, upgrade, outgoing, exchange).await {
            Attempt::Response(conn, session, response) => {
                let status = response.head.parts.status;
                server.count_response(status.as_u16());
                can_retry &= outgoing.replayable;
                if status == StatusCode::SERVICE_UNAVAILABLE && retry_on(RetryOn::Status503) && can_retry {
                    tracing::info!(server = %server.name, "503 from the server, trying the next one (retry_on)");
                    exchange.retries += 1;
                    continue;
                }
                return Forwarded::Response {
                    server,
                    conn,
                    session,
                    response,
                };
            }
            Attempt::ConnectFailed if retry_on(RetryOn::ConnFailure) && can_retry => {
                exchange.retries += 1;
            }
            Attempt::ConnectFailed => {
                exchange.fault = Fault::Server;
                return unavailable;
            }
            Attempt::Empty if retry_on(RetryOn::EmptyResponse) && can_retry && outgoing.replayable => {
                tracing::info!(server = %server.name, "no response from the server, trying the next one (retry_on)");
                exchange.retries += 1;
            }
            Attempt::Empty => {
                server.count_response(502);
                exchange.fault = Fault::Server;
                return Forwarded::Local(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway: the server returned an invalid or incomplete response.\n",
                );
            }
            Attempt::ServerDown if can_retry && outgoing.replayable => {
                exchange.retries += 1;
            }
            Attempt::ServerDown => {
                exchange.fault = Fault::Server;
                return Forwarded::Local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "503 Service Unavailable: the server went down during the request.\n",
                );
            }
            Attempt::ClientBody => {
                ctx.frontend.counters.request_refused();
                exchange.fault = Fault::Client;
                return Forwarded::Local(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: the request body could not be read.\n",
                );
            }
            Attempt::Fail(status, body) => {
                exchange.fault = Fault::Server;
                return Forwarded::Local(status, body);
            }
        }
    }
    unavailable
}

/// One attempt: connect (or reuse), send, wait for the response head.
async fn attempt_on(
    server: &Arc<Server>,
    ctx: &ConnCtx,
    upgrade: bool,
    outgoing: &mut Outgoing,
    exchange: &mut Exchange,
) -> Attempt {
    let timeouts = &ctx.runtime.timeouts;
    let t = Instant::now();
    // Counted (with its hash key) from the choice on, not from the answer:
    // sessions chosen at once while a connect is under way see each other,
    // so a burst of a room's members meets on one server and leastconn
    // does not send a burst to one server.
    let mut session = SessionGuard::open(server, exchange.hash_key.clone());
    let mut conn = match checkout(server, upgrade, timeouts.connect).await {
        Ok((conn, fresh)) => {
            if fresh {
                server.connect_succeeded();
            }
            exchange.tc = Some(if fresh { t.elapsed() } else { Duration::ZERO });
            exchange.set_server(&server.name);
            conn
        }
        Err(e) => {
            connect_failed(server, &e);
            return Attempt::ConnectFailed;
        }
    };
    if !outgoing.sendable() {
        // Not reached: only replayable requests get a second attempt.
        return Attempt::Fail(StatusCode::BAD_GATEWAY, "502 Bad Gateway.\n");
    }
    let limits = &ctx.runtime.config.limits;
    let limits = HeadLimits {
        bytes: limits.max_header_bytes,
        fields: limits.max_headers,
    };
    let sent = tokio::select! {
        sent = tokio::time::timeout(timeouts.server, send(server, &mut conn, outgoing, limits, timeouts.connect)) => sent,
        _ = session.shut_down() => {
            server.count_response(503);
            return Attempt::ServerDown;
        }
    };
    exchange.tr = Some(exchange.started.elapsed());
    if !matches!(sent, Ok(Ok(_))) && exchange.body_in.failed.load(Ordering::Relaxed) {
        tracing::debug!(server = %server.name, "the client's request body could not be read");
        return Attempt::ClientBody;
    }
    match sent {
        Err(_) => {
            server.count_response(504);
            Attempt::Fail(
                StatusCode::GATEWAY_TIMEOUT,
                "504 Gateway Time-out: the server didn't respond in time.\n",
            )
        }
        Ok(Err(SendError::Exchange(ExchangeError::ClientBody(e)))) => {
            tracing::debug!(server = %server.name, error = %e, "the client's request body could not be read");
            Attempt::ClientBody
        }
        Ok(Err(SendError::Exchange(e @ (ExchangeError::Closed | ExchangeError::Read(_))))) => {
            tracing::warn!(server = %server.name, error = %e, "server closed without a response");
            Attempt::Empty
        }
        Ok(Err(e)) => {
            tracing::warn!(server = %server.name, error = %e, "server request failed");
            server.count_response(502);
            Attempt::Fail(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the server returned an invalid or incomplete response.\n",
            )
        }
        Ok(Ok(resp)) => Attempt::Response(conn, session, resp),
    }
}

/// A connection to `server`: an idle pooled one (not for upgrades, which
/// take the connection over), else a new one. `true` when freshly connected.
async fn checkout(
    server: &Server,
    upgrade: bool,
    connect_timeout: Duration,
) -> Result<(ServerConn, bool), ConnectError> {
    if !upgrade {
        if let Some(conn) = server.shared.pool.take() {
            return Ok((conn, false));
        }
    }
    Ok((h1::connect(server.addr, connect_timeout).await?, true))
}

/// Why a request to a chosen server failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error("reconnect for a stale pooled connection: {0}")]
    Reconnect(#[from] ConnectError),
}

/// Sends the request and reads the response head; when a pooled
/// connection turns out closed before any answer (the server closed it
/// while idle as the request went out) and the request has no body, once
/// more on a fresh connection.
async fn send(
    server: &Server,
    conn: &mut ServerConn,
    outgoing: &mut Outgoing,
    limits: HeadLimits,
    connect_timeout: Duration,
) -> Result<Answer, SendError> {
    match conn.exchange(&outgoing.head, outgoing.body.take(), limits).await {
        Err(ExchangeError::Closed) if conn.reused() && outgoing.replayable => {
            *conn = h1::connect(server.addr, connect_timeout).await?;
            Ok(conn.exchange(&outgoing.head, None, limits).await?)
        }
        r => Ok(r?),
    }
}

/// Counts a failed connect against the server (passive health) and logs it.
fn connect_failed(server: &Server, e: &ConnectError) {
    server
        .shared
        .counters
        .connect_errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(server = %server.name, addr = %server.addr, error = %e, "connect failed, trying the next server");
    server.connect_failed(CheckResult {
        status: match e {
            ConnectError::Timeout(_) => CheckStatus::L4Tout,
            _ => CheckStatus::L4Con,
        },
        code: None,
        detail: format!("client request: {e}"),
    });
}
