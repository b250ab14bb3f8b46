//! One HTTP request through the lb: redirect or path rules, then a server
//! from the backend's candidates (a failed connect tries the next one before
//! anything reached the client), then the request forwarded over HTTP/1.1
//! with hop-by-hop headers removed and forwarding headers added, and the
//! response streamed back. An accepted WebSocket upgrade becomes a tunnel.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};

use crate::access_log::{CountedBody, Exchange, InFlight, LoggedBody};
use crate::config::RetryOn;
use crate::conn::ConnCtx;
use crate::tunnel::{self, TunnelCtx};
use crate::upstream::pool::{self, ConnectError, Sender, UpstreamBody};
use crate::upstream::{select, Backend, CheckResult, CheckStatus, Server, SessionGuard};

/// Body of responses to clients.
pub type ClientResponse = Response<LoggedBody>;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Handles one request; never fails (errors become responses).
pub async fn handle(req: Request<Incoming>, ctx: Arc<ConnCtx>) -> Result<ClientResponse, Infallible> {
    let in_flight = InFlight::new(&ctx.in_flight);
    let mut exchange = Exchange {
        client: ctx.peer,
        frontend: ctx.frontend.name.clone(),
        backend: "-".into(),
        server: "-".into(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        status: 0,
        th: ctx.th,
        started: Instant::now(),
        tc: None,
        tr: None,
        bytes_in: Arc::new(AtomicU64::new(0)),
        retries: 0,
    };
    let fe = &ctx.frontend;
    if let Some(port) = fe.redirect_https_port {
        return Ok(redirect(&req, port, exchange, in_flight));
    }
    if ambiguous_framing(req.headers()) {
        return Ok(local(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: ambiguous message framing.\n",
            exchange,
            in_flight,
        ));
    }
    let path = req.uri().path();
    if fe.deny.iter().any(|p| path.starts_with(p.as_str())) {
        return Ok(local(
            StatusCode::FORBIDDEN,
            "403 Forbidden: request forbidden by administrative rules.\n",
            exchange,
            in_flight,
        ));
    }
    let backend = fe
        .routes
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, b)| b.clone())
        .or_else(|| fe.backend.clone());
    let Some(backend) = backend else {
        return Ok(unavailable(exchange, in_flight));
    };
    exchange.backend = backend.name.clone();
    let upgrade = wants_upgrade(&req);
    let mut req = req;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut outgoing = match Outgoing::new(req, &ctx, upgrade, exchange.bytes_in.clone()) {
        Ok(r) => r,
        Err(_) => {
            return Ok(local(
                StatusCode::BAD_REQUEST,
                "400 Bad Request.\n",
                exchange,
                in_flight,
            ))
        }
    };

    let (server, sender, session, mut resp) =
        match forward(&backend, &ctx, upgrade, &mut outgoing, &mut exchange).await {
            Forwarded::Response {
                server,
                sender,
                session,
                response,
            } => (server, sender, session, response),
            Forwarded::Local(status, body) => return Ok(local(status, body, exchange, in_flight)),
        };
    let status = resp.status();
    exchange.status = status.as_u16();

    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, status) {
        let server_upgrade = hyper::upgrade::on(&mut resp);
        start_tunnel(client_upgrade, server_upgrade, &ctx, exchange, session);
        let (parts, _) = resp.into_parts();
        let mut out = Response::from_parts(parts, LoggedBody::new(empty(), None, None, Some(in_flight)));
        *out.version_mut() = Version::HTTP_11;
        return Ok(out);
    }

    if !upgrade {
        server.shared.pool.put(sender);
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if fe.tls.is_some() {
        if let Some(hsts) = &fe.hsts {
            parts
                .headers
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(
        parts,
        LoggedBody::new(body.boxed(), Some(exchange), Some(session), Some(in_flight)),
    ))
}

/// The request as it goes to servers: the head is kept so that a request
/// without a body can be sent again to another server; a body is sent once.
struct Outgoing {
    /// Method, origin-form URI, headers as sent.
    head: http::request::Parts,
    /// The body, until it is sent; replayable requests have none.
    body: Option<UpstreamBody>,
    /// GET or HEAD with no body: safe to send again to another server as
    /// long as no response reached the client (a WebSocket upgrade before
    /// its 101 is one).
    replayable: bool,
}

impl Outgoing {
    /// Origin-form URI, HTTP/1.1, `Host` kept (taken from the authority for
    /// HTTP/2 clients), hop-by-hop headers removed, forwarding headers added.
    fn new(
        req: Request<Incoming>,
        ctx: &ConnCtx,
        upgrade: bool,
        bytes_in: Arc<AtomicU64>,
    ) -> Result<Outgoing, http::Error> {
        let replayable =
            matches!(*req.method(), http::Method::GET | http::Method::HEAD) && req.body().is_end_stream();
        let (mut parts, body) = req.into_parts();
        let host = request_host(&parts.headers, &parts.uri);
        let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let (true, Some(value)) = (upgrade, upgrade_value) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, value);
        }
        if !parts.headers.contains_key(header::HOST) {
            if let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
                parts.headers.insert(header::HOST, h);
            }
        }
        if ctx.frontend.forwarded_headers {
            add_forwarded(
                &mut parts.headers,
                ctx.peer.ip(),
                ctx.frontend.tls.is_some(),
                host.as_deref(),
            );
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let (mut head, ()) = Request::builder()
            .method(parts.method)
            .uri(path)
            .version(Version::HTTP_11)
            .body(())?
            .into_parts();
        head.headers = parts.headers;
        Ok(Outgoing {
            head,
            body: (!replayable).then(|| CountedBody::new(body, bytes_in).boxed()),
            replayable,
        })
    }

    /// The request for the next attempt; `None` once a body was sent.
    fn next(&mut self) -> Option<Request<UpstreamBody>> {
        let body = match self.body.take() {
            Some(body) => body,
            None if self.replayable => empty(),
            None => return None,
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.head.headers.clone();
        Some(req)
    }
}

/// How forwarding a request ended.
enum Forwarded {
    /// A server's response head, with its connection and session.
    Response {
        server: Arc<Server>,
        sender: Sender,
        session: SessionGuard,
        response: Response<Incoming>,
    },
    /// No usable answer: the lb answers itself with this.
    Local(StatusCode, &'static str),
}

/// What one attempt on one server gave.
enum Attempt {
    /// A response head (possibly one that `retry_on` retries).
    Response(Sender, SessionGuard, Response<Incoming>),
    /// The connect was refused or timed out; nothing was sent.
    ConnectFailed,
    /// The server closed without answering.
    Empty,
    /// The server's sessions were shut down (`on_marked_down`) while we waited.
    ServerDown,
    /// Some other failure; the lb answers with this.
    Fail(StatusCode, &'static str),
}

/// Sends the request to the backend's candidates in turn: the next one is
/// tried after a refused or timed-out connect (`conn-failure`) and, for a
/// replayable request, after an empty response (`empty-response`), a
/// `503` (`503`) or the server being marked down while we waited, at most
/// `retries` times (HAProxy `retries` + `retry-on` + `option redispatch`).
async fn forward(
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
    let mut candidates = select::candidates(backend, ctx.peer.ip()).peekable();
    for attempt in 0..=backend.retries {
        let Some(server) = candidates.next() else {
            return unavailable;
        };
        // Another try is possible only within `retries` and with a server left.
        let mut can_retry = attempt < backend.retries && candidates.peek().is_some();
        match attempt_on(&server, ctx, upgrade, outgoing, exchange).await {
            Attempt::Response(sender, session, response) => {
                let status = response.status();
                server.count_response(status.as_u16());
                can_retry &= outgoing.replayable;
                if status == StatusCode::SERVICE_UNAVAILABLE && retry_on(RetryOn::Status503) && can_retry {
                    tracing::info!(server = %server.name, "503 from the server, trying the next one (retry_on)");
                    exchange.retries += 1;
                    continue;
                }
                return Forwarded::Response {
                    server,
                    sender,
                    session,
                    response,
                };
            }
            Attempt::ConnectFailed if retry_on(RetryOn::ConnFailure) && can_retry => {
                exchange.retries += 1;
            }
            Attempt::ConnectFailed => return unavailable,
            Attempt::Empty if retry_on(RetryOn::EmptyResponse) && can_retry && outgoing.replayable => {
                tracing::info!(server = %server.name, "no response from the server, trying the next one (retry_on)");
                exchange.retries += 1;
            }
            Attempt::Empty => {
                server.count_response(502);
                return Forwarded::Local(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway: the server returned an invalid or incomplete response.\n",
                );
            }
            Attempt::ServerDown if can_retry && outgoing.replayable => {
                exchange.retries += 1;
            }
            Attempt::ServerDown => {
                return Forwarded::Local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "503 Service Unavailable: the server went down during the request.\n",
                )
            }
            Attempt::Fail(status, body) => return Forwarded::Local(status, body),
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
    let mut sender = match checkout(server, upgrade, timeouts.connect).await {
        Ok((sender, fresh)) => {
            if fresh {
                server.connect_succeeded();
            }
            exchange.tc = Some(if fresh { t.elapsed() } else { Duration::ZERO });
            exchange.server = server.name.clone();
            sender
        }
        Err(e) => {
            connect_failed(server, &e);
            return Attempt::ConnectFailed;
        }
    };
    let Some(req) = outgoing.next() else {
        // Not reached: only replayable requests get a second attempt.
        return Attempt::Fail(StatusCode::BAD_GATEWAY, "502 Bad Gateway.\n");
    };
    let mut session = server.open_session();
    let sent = tokio::select! {
        sent = tokio::time::timeout(timeouts.server, send(server, &mut sender, req, timeouts.connect)) => sent,
        _ = session.shut_down() => {
            server.count_response(503);
            return Attempt::ServerDown;
        }
    };
    exchange.tr = Some(exchange.started.elapsed());
    match sent {
        Err(_) => {
            server.count_response(504);
            Attempt::Fail(
                StatusCode::GATEWAY_TIMEOUT,
                "504 Gateway Time-out: the server didn't respond in time.\n",
            )
        }
        Ok(Err(SendError::Http(e))) if e.is_incomplete_message() || e.is_canceled() => {
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
        Ok(Ok(resp)) => Attempt::Response(sender, session, resp),
    }
}

/// Splices the two upgraded streams once both sides have switched.
fn start_tunnel(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    ctx: &ConnCtx,
    exchange: Exchange,
    session: SessionGuard,
) {
    let t = &ctx.runtime.timeouts;
    let tunnel_ctx = TunnelCtx {
        exchange,
        session,
        tunnel_timeout: t.tunnel,
        client_fin: t.client_fin,
        grace: ctx.runtime.config.global.grace,
        drain: ctx.drain.clone(),
        _active: ctx.drain.track(),
        _permits: ctx.permits.clone(),
    };
    tokio::spawn(async move {
        match tokio::try_join!(client, server) {
            Ok((client, server)) => tunnel::splice(client, server, tunnel_ctx).await,
            Err(e) => tracing::warn!(error = %e, "upgrade failed after 101"),
        }
    });
}

/// A connection to `server`: an idle pooled one (not for upgrades, which
/// take the connection over), else a new one. `true` when freshly connected.
async fn checkout(
    server: &Server,
    upgrade: bool,
    connect_timeout: Duration,
) -> Result<(Sender, bool), ConnectError> {
    if !upgrade {
        if let Some(sender) = server.shared.pool.take() {
            return Ok((sender, false));
        }
    }
    let stream = pool::connect(server.addr, connect_timeout).await?;
    Ok((pool::handshake(stream, server.addr).await?, true))
}

/// Why a request to a chosen server failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("reconnect for a stale pooled connection: {0}")]
    Reconnect(#[from] ConnectError),
}

/// Sends the request; if a pooled connection turned out closed before the
/// request went out, once more on a fresh connection.
async fn send(
    server: &Server,
    sender: &mut Sender,
    req: Request<UpstreamBody>,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, SendError> {
    match sender.try_send_request(req).await {
        Ok(resp) => Ok(resp),
        Err(mut e) => match e.take_message() {
            Some(req) => {
                let fresh = pool::connect(server.addr, connect_timeout).await?;
                *sender = pool::handshake(fresh, server.addr).await?;
                Ok(sender.send_request(req).await?)
            }
            None => Err(e.into_error().into()),
        },
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

/// Whether this is an HTTP/1.1 upgrade request (WebSocket).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// Both `Content-Length` and `Transfer-Encoding`, or several lengths. The
/// client stream watcher catches what hyper hides; this catches the rest.
fn ambiguous_framing(headers: &HeaderMap) -> bool {
    let lengths: usize = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes().split(|b| *b == b',').count())
        .sum();
    lengths > 1 || (lengths == 1 && headers.contains_key(header::TRANSFER_ENCODING))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in listed {
        headers.remove(name);
    }
}

fn request_host(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`
/// and `Forwarded` (RFC 7239, appended).
fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, tls: bool, host: Option<&str>) {
    let proto = if tls { "https" } else { "http" };
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut fwd = format!("for={node};proto={proto}");
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"')) {
        fwd.push_str(&format!(";host=\"{h}\""));
    }
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {fwd}"),
        None => fwd,
    };
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("x-forwarded-for", xff);
    set("x-forwarded-proto", proto.to_string());
    if let Some(h) = host {
        set("x-forwarded-host", h.to_string());
    }
    set("forwarded", forwarded);
}

fn empty() -> UpstreamBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A response made by the lb itself.
fn local(
    status: StatusCode,
    body: &'static str,
    mut exchange: Exchange,
    in_flight: InFlight,
) -> ClientResponse {
    exchange.status = status.as_u16();
    let body = Full::new(Bytes::from_static(body.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(LoggedBody::new(body, Some(exchange), None, Some(in_flight)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn unavailable(exchange: Exchange, in_flight: InFlight) -> ClientResponse {
    local(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: no server is available to handle this request.\n",
        exchange,
        in_flight,
    )
}

/// `301` to the same host on https `port`, path and query kept.
fn redirect(req: &Request<Incoming>, port: u16, exchange: Exchange, in_flight: InFlight) -> ClientResponse {
    let host = request_host(req.headers(), req.uri()).unwrap_or_default();
    let bare = match host.parse::<http::uri::Authority>() {
        Ok(a) => a.host().to_string(),
        Err(_) => String::new(),
    };
    if bare.is_empty() {
        return local(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: no Host.\n",
            exchange,
            in_flight,
        );
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{bare}{path}")
    } else {
        format!("https://{bare}:{port}{path}")
    };
    let mut resp = local(StatusCode::MOVED_PERMANENTLY, "", exchange, in_flight);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_listed_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_append_to_existing_ones() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(&mut h, "::1".parse().unwrap(), true, Some("chat.test"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "chat.test");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https;host=\"chat.test\"");
    }

    #[test]
    fn framing_with_length_and_chunked_is_ambiguous() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        assert!(!ambiguous_framing(&h));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(ambiguous_framing(&h));
    }
}
