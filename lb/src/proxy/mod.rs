//! One HTTP request through the lb: redirect or path rules, then a server
//! from the backend's candidates (a failed connect tries the next one before
//! anything reached the client), then the request forwarded over HTTP/1.1
//! with hop-by-hop headers removed and forwarding headers added, and the
//! response streamed back. An accepted WebSocket upgrade (HTTP/1.1, or
//! HTTP/2's extended CONNECT) becomes a tunnel.

mod forward;
mod hash_key;
mod headers;
mod local;
mod upgrade;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::access_log::{Exchange, Fault, InFlight, LoggedBody, Source};
use crate::conn::ConnCtx;
use crate::tunnel::{self, TunnelCtx};
use crate::upstream::h1::{ServerBody, ServerConn};
use crate::upstream::SessionGuard;
use forward::{forward, Forwarded, Outgoing};
use headers::{ambiguous_framing, strip_hop_by_hop};
use local::{local, redirect, too_many, unavailable, ClientResponse};
use upgrade::UpgradeKind;

/// Handles one request; never fails (errors become responses).
pub async fn handle(req: Request<Incoming>, ctx: Arc<ConnCtx>) -> Result<ClientResponse, Infallible> {
    let in_flight = InFlight::new(&ctx.in_flight);
    let mut exchange = Exchange::new(ctx.peer, &ctx.frontend.name, req.method(), req.uri().path(), ctx.th);
    let fe = &ctx.frontend;
    let upgrade = upgrade::requested(&req);
    if let Err(refused) = fe
        .sources
        .admit_request(ctx.peer.ip(), req.headers(), upgrade.is_some())
    {
        fe.counters.limited(refused.kind);
        return Ok(too_many(refused, exchange, in_flight));
    }
    if let Some(port) = fe.redirect_https_port {
        return Ok(redirect(&req, port, exchange, in_flight));
    }
    if req.headers().len() > ctx.runtime.config.limits.max_headers {
        return Ok(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "431 Request Header Fields Too Large: too many header fields.\n",
            exchange,
            in_flight,
            &ctx,
        ));
    }
    if ambiguous_framing(req.headers()) {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: ambiguous message framing.\n",
            exchange,
            in_flight,
            &ctx,
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
    exchange.set_backend(&backend.name);
    exchange.hash_key = backend
        .hashing
        .as_ref()
        .and_then(|h| hash_key::extract(&h.key, req.uri(), req.headers(), ctx.peer.ip()));
    let mut req = req;
    let client_upgrade = upgrade.map(|_| hyper::upgrade::on(&mut req));
    let mut outgoing = match Outgoing::new(req, &ctx, upgrade, exchange.body_in.clone()) {
        Ok(r) => r,
        Err(_) => {
            return Ok(refuse(
                StatusCode::BAD_REQUEST,
                "400 Bad Request.\n",
                exchange,
                in_flight,
                &ctx,
            ))
        }
    };

    let (server, conn, session, resp) =
        match forward(&backend, &ctx, upgrade.is_some(), &mut outgoing, &mut exchange).await {
            Forwarded::Response {
                server,
                conn,
                session,
                response,
            } => (server, conn, session, response),
            Forwarded::Local(status, body) => return Ok(local(status, body, exchange, in_flight)),
        };
    let status = resp.head.parts.status;
    exchange.status = status.as_u16();

    if let (Some(kind), Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) =
        (upgrade, client_upgrade, status)
    {
        let mut parts = resp.head.parts;
        match kind {
            UpgradeKind::Http1 => {
                ctx.switched.store(true, Ordering::Relaxed);
                parts.version = Version::HTTP_11;
            }
            UpgradeKind::WebSocketOverH2 => {
                upgrade::established(&mut parts);
                exchange.status = parts.status.as_u16();
            }
        }
        start_tunnel(client_upgrade, conn, &ctx, exchange, session, in_flight);
        return Ok(Response::from_parts(
            parts,
            LoggedBody::new(Source::Local(None), None, None, None),
        ));
    }
    if upgrade == Some(UpgradeKind::WebSocketOverH2) && status.is_success() {
        // A 2xx to a CONNECT opens a tunnel on the stream: only a 101 may.
        exchange.fault = Fault::Server;
        return Ok(local(
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: the server answered the WebSocket without switching protocols.\n",
            exchange,
            in_flight,
        ));
    }

    // An upgrade's connection was opened for it alone.
    let pool = (upgrade.is_none() && resp.head.keep_alive).then(|| server.shared.pool.clone());
    let body = ServerBody::new(conn, resp.head.framing, resp.upload, pool);
    let mut parts = resp.head.parts;
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
        LoggedBody::new(Source::Server(body), Some(exchange), Some(session), Some(in_flight)),
    ))
}

/// The lb's answer to a request refused because of the client: counted in
/// the frontend's `request_errors`, logged as the client's fault.
fn refuse(
    status: StatusCode,
    body: &'static str,
    mut exchange: Exchange,
    in_flight: InFlight,
    ctx: &ConnCtx,
) -> ClientResponse {
    ctx.frontend.counters.request_refused();
    exchange.fault = Fault::Client;
    local(status, body, exchange, in_flight)
}

/// Splices the two upgraded streams once both sides have switched.
fn start_tunnel(
    client: hyper::upgrade::OnUpgrade,
    server: ServerConn,
    ctx: &ConnCtx,
    exchange: Exchange,
    session: SessionGuard,
    in_flight: InFlight,
) {
    let t = &ctx.runtime.timeouts;
    let tunnel_ctx = Box::new(TunnelCtx {
        exchange,
        session,
        tunnel_timeout: t.tunnel,
        client_fin: t.client_fin,
        grace: ctx.runtime.config.global.grace,
        drain: ctx.drain.clone(),
        _active: ctx.drain.track(),
        _permits: ctx.permits.clone(),
        _in_flight: in_flight,
    });
    tokio::spawn(tunnel::splice(client, server, tunnel_ctx));
}
