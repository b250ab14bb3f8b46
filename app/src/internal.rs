//! The internal listener the local subscriber talks to (loopback by
//! default): `POST /internal/events` delivers a batch of published chats to
//! the hub (an empty batch is a heartbeat), `GET /internal/cursors` tells the
//! subscriber where to refill each room from, and `GET /internal/rooms`
//! (long-polled) tells it which rooms to subscribe to and takes its
//! confirmations. All need the shared bearer token, compared in constant
//! time. `GET /metrics` (Prometheus) is served here too, without a token.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use wsmesh_common::chat::is_valid_room;
use wsmesh_common::events::{CursorsQuery, EventBatch, RoomsQuery, CURSORS_PATH, EVENTS_PATH, ROOMS_PATH};

use crate::config::InternalToken;
use crate::hub::{Hub, MAX_POLL_WAIT};
use crate::page::{self, Body};
use crate::shared::Shared;

/// Largest accepted event batch body, in bytes; a bigger one gets 413 and
/// the subscriber splits it.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// Answers one internal request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let route = (req.method().clone(), req.uri().path());
    if route == (Method::GET, "/metrics") {
        // Counters only; readable by a scraper without the subscriber's token.
        return shared.metrics.response();
    }
    if !matches!(
        route,
        (Method::POST, EVENTS_PATH) | (Method::GET, CURSORS_PATH) | (Method::GET, ROOMS_PATH)
    ) {
        return page::text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !authorized(req.headers().get(AUTHORIZATION), &shared.token) {
        let mut resp = page::text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if req.uri().path() == ROOMS_PATH {
        return match RoomsQuery::parse(req.uri().query()) {
            Ok(query) => rooms(&shared.hub, query).await,
            Err(why) => page::text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        };
    }
    if req.method() == Method::GET {
        let query = CursorsQuery::parse(req.uri().query());
        return match serde_json::to_string(&shared.hub.cursors(query.rooms.as_deref())) {
            Ok(body) => page::json(StatusCode::OK, body),
            Err(_) => page::text(StatusCode::INTERNAL_SERVER_ERROR, "cursor encoding failed\n"),
        };
    }
    shared.subscriber.heard();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return page::text(StatusCode::PAYLOAD_TOO_LARGE, "batch too large\n"),
        Err(BodyError::Unreadable(why)) => {
            return page::text(StatusCode::BAD_REQUEST, format!("cannot read body: {why}\n"))
        }
    };
    let batch: EventBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return page::text(
                StatusCode::BAD_REQUEST,
                format!("body is not a JSON array of chats: {e}\n"),
            )
        }
    };
    shared.metrics.internal_batches.inc();
    let (valid, invalid): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|c| is_valid_room(&c.room) && c.stream_id().is_some());
    if !invalid.is_empty() {
        // Skipped, not refused: a refusal would make the subscriber retry forever.
        tracing::warn!(count = invalid.len(), "skipping chats with a bad room or id");
    }
    if !valid.is_empty() {
        let fresh = shared.hub.deliver(valid);
        tracing::trace!(fresh, "batch delivered");
    }
    page::empty(StatusCode::NO_CONTENT)
}

/// `GET /internal/rooms`: takes the subscriber's confirmation, then answers
/// the room set at once if the subscriber does not know it yet, else once
/// it changes or `wait` (at most `MAX_POLL_WAIT`) is over.
async fn rooms(hub: &Hub, query: RoomsQuery) -> Response<Body> {
    let wait = query.wait.min(MAX_POLL_WAIT);
    let interest = hub.interest();
    let _polling = interest.poll_started(wait);
    if let (Some(known), Some(confirmed)) = (query.known, query.confirmed) {
        interest.confirm(known.epoch, confirmed);
    }
    if let Some(known) = query.known.filter(|k| k.epoch == interest.current().epoch) {
        // Resolves at once when the version already moved past `known`.
        let _ = tokio::time::timeout(wait, interest.changed_from(known.version)).await;
    }
    match serde_json::to_string(&hub.rooms_of_interest()) {
        Ok(body) => page::json(StatusCode::OK, body),
        Err(_) => page::text(StatusCode::INTERNAL_SERVER_ERROR, "room encoding failed\n"),
    }
}

/// Whether `Authorization: Bearer <token>` carries the token.
fn authorized(header: Option<&HeaderValue>, token: &InternalToken) -> bool {
    let Some(given) = header.and_then(|h| h.as_bytes().strip_prefix(b"Bearer ")) else {
        return false;
    };
    given.ct_eq(token.as_bytes()).into()
}

/// Why a batch body could not be read.
#[derive(Debug)]
enum BodyError {
    /// Over `MAX_BATCH_BYTES`.
    TooLarge,
    /// The connection broke or the body was malformed.
    Unreadable(String),
}

/// Reads the body up to `MAX_BATCH_BYTES`.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(req.into_body(), MAX_BATCH_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Unreadable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let t = InternalToken::new("s3cret".into());
        let h = |v: &'static str| HeaderValue::from_static(v);
        assert!(authorized(Some(&h("Bearer s3cret")), &t));
        assert!(!authorized(Some(&h("Bearer s3cre")), &t));
        assert!(!authorized(Some(&h("Bearer s3cret2")), &t));
        assert!(!authorized(Some(&h("bearer s3cret")), &t));
        assert!(!authorized(Some(&h("s3cret")), &t));
        assert!(!authorized(None, &t));
    }
}
