//! The public listener's routes: the page, the two WebSocket endpoints,
//! `/healthz`, and `/metrics` only when `listen.public_metrics` says so (it
//! lives on the internal listener). WebSocket requests are checked here
//! (handshake, token and room, state, capacity) and the socket's life is
//! handed to `ws` or `legacy`.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::Denied;
use crate::drain::Phase;
use crate::legacy::{self, Format};
use crate::page::{self, Body};
use crate::shared::Shared;
use crate::{query, upgrade, ws};
use wsmesh_common::chat::DEFAULT_ROOM;

/// Which protocol a WebSocket endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/ws`: v1 when offered, else simple-chat.
    Ws,
    /// `/chatsocket`: CloudChat.
    ChatSocket,
}

/// Answers one public request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/ws" => websocket(shared, req, Endpoint::Ws),
        "/chatsocket" => websocket(shared, req, Endpoint::ChatSocket),
        "/healthz" => healthz(&shared).await,
        "/metrics" if shared.config.listen.public_metrics => shared.metrics.response(),
        _ => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok());
            match page::asset(&path, host, &shared.config.auth) {
                Some(_) if !matches!(*req.method(), Method::GET | Method::HEAD) => {
                    page::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
                }
                Some(resp) => resp,
                None => page::text(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
    }
}

async fn healthz(shared: &Shared) -> Response<Body> {
    let report = shared.health.report().await;
    let status = match report.status {
        crate::health::Status::Ok => StatusCode::OK,
        crate::health::Status::Fail => StatusCode::SERVICE_UNAVAILABLE,
    };
    match serde_json::to_string(&report) {
        Ok(body) => {
            let mut resp = page::json(status, body);
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(_) => page::text(StatusCode::INTERNAL_SERVER_ERROR, "health encoding failed\n"),
    }
}

/// Checks a WebSocket request and, if it may proceed, answers 101 and spawns
/// the socket's task.
fn websocket(shared: Arc<Shared>, req: Request<Incoming>, endpoint: Endpoint) -> Response<Body> {
    let handshake = match upgrade::check(&req, &shared.config.limits.allowed_origins) {
        Ok(h) => h,
        Err(refusal) => return refusal.response(),
    };
    let connect = query::parse(req.uri().query());
    let v1 = endpoint == Endpoint::Ws && handshake.v1;
    // The seed formats always chat in the lobby; a bad `room` is told by its
    // error frame after the upgrade, so only the token is checked for it.
    let room = match (v1, &connect) {
        (true, Ok(c)) => Some(c.room.as_str()),
        (true, Err(_)) => None,
        (false, _) => Some(DEFAULT_ROOM),
    };
    let limits = &shared.config.limits;
    let grant = match shared.auth.check(req.headers(), req.uri().query(), room, limits) {
        Ok(grant) => grant,
        Err(denied) => return refuse(&shared, &denied),
    };
    if shared.drain.phase() == Phase::Closing {
        return page::text(StatusCode::SERVICE_UNAVAILABLE, "instance is shutting down\n");
    }
    let Some(slot) = shared.slots.try_take() else {
        return page::text(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    let response = handshake.response(v1);
    let origin = handshake.origin;
    let max_frame = shared.config.limits.max_frame_bytes;
    tokio::spawn(async move {
        let Some(socket) = upgrade::finish(req, max_frame).await else {
            return;
        };
        shared.metrics.connections.inc();
        match (endpoint, v1) {
            (Endpoint::Ws, true) => ws::run(shared.clone(), socket, connect, origin, grant).await,
            (Endpoint::Ws, false) => {
                legacy::run(shared.clone(), socket, Format::SimpleChat, origin, grant).await
            }
            (Endpoint::ChatSocket, _) => {
                legacy::run(shared.clone(), socket, Format::CloudChat, origin, grant).await
            }
        }
        shared.metrics.connections.dec();
        drop(slot);
    });
    response
}

/// The answer to a request without a usable token (401, with the
/// `WWW-Authenticate` challenge) or for a room it does not allow (403).
fn refuse(shared: &Shared, denied: &Denied) -> Response<Body> {
    let (status, reason) = match denied {
        Denied::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        Denied::RoomNotAllowed(_) => (StatusCode::FORBIDDEN, "room"),
    };
    shared
        .metrics
        .auth_refusals
        .get_or_create(&[("reason", reason)])
        .inc();
    tracing::debug!(%denied, "websocket request refused");
    let mut resp = page::text(status, format!("{denied}\n"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"wsmesh\""),
        );
    }
    resp
}
