//! Responses the lb makes itself: refusals, errors standing in for a
//! server's answer, and the redirect to HTTPS.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::headers::request_host;
use crate::access_log::{Exchange, Fault, InFlight, LoggedBody, Source};
use crate::source_limits::Refused;

/// Body of responses to clients.
pub type ClientResponse = Response<LoggedBody>;

/// A response made by the lb itself.
pub fn local(
    status: StatusCode,
    body: &'static str,
    mut exchange: Exchange,
    in_flight: InFlight,
) -> ClientResponse {
    exchange.status = status.as_u16();
    let body = Source::Local(Some(Bytes::from_static(body.as_bytes())));
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

pub fn unavailable(exchange: Exchange, in_flight: InFlight) -> ClientResponse {
    local(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: no server is available to handle this request.\n",
        exchange,
        in_flight,
    )
}

/// `429` for a request over a per-source rate, with `Retry-After` (the
/// rate's period, in whole seconds).
pub fn too_many(refused: Refused, mut exchange: Exchange, in_flight: InFlight) -> ClientResponse {
    exchange.fault = Fault::Limit(refused.kind);
    let mut resp = local(
        StatusCode::TOO_MANY_REQUESTS,
        "429 Too Many Requests: slow down.\n",
        exchange,
        in_flight,
    );
    let secs = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// `301` to the same host on https `port`, path and query kept.
pub fn redirect(
    req: &Request<Incoming>,
    port: u16,
    exchange: Exchange,
    in_flight: InFlight,
) -> ClientResponse {
    let host = request_host(req.headers(), req.uri())
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
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
