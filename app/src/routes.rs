//! The public listener's routes: the page, the two WebSocket endpoints,
//! `/healthz` and `/metrics`. WebSocket requests are checked here (state,
//! capacity, handshake) and the socket's life is handed to `ws` or `legacy`.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::drain::Phase;
use crate::legacy::{self, Format};
use crate::page::{self, Body};
use crate::shared::Shared;
use crate::{query, upgrade, ws};

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
        "/metrics" => match shared.metrics.encode() {
            Ok(text) => page::with_type(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(_) => page::text(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n"),
        },
        _ => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok());
            match page::asset(&path, host) {
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
    if shared.drain.phase() == Phase::Closing {
        return page::text(StatusCode::SERVICE_UNAVAILABLE, "instance is shutting down\n");
    }
    let Some(slot) = shared.slots.try_take() else {
        return page::text(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    let v1 = endpoint == Endpoint::Ws && handshake.v1;
    let response = handshake.response(v1);
    let origin = handshake.origin;
    let connect = query::parse(req.uri().query());
    let max_frame = shared.config.limits.max_frame_bytes;
    tokio::spawn(async move {
        let Some(socket) = upgrade::finish(req, max_frame).await else {
            return;
        };
        shared.metrics.connections.inc();
        match (endpoint, v1) {
            (Endpoint::Ws, true) => ws::run(shared.clone(), socket, connect, origin).await,
            (Endpoint::Ws, false) => legacy::run(shared.clone(), socket, Format::SimpleChat, origin).await,
            (Endpoint::ChatSocket, _) => legacy::run(shared.clone(), socket, Format::CloudChat, origin).await,
        }
        shared.metrics.connections.dec();
        drop(slot);
    });
    response
}
