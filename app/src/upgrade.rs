//! The HTTP side of opening a WebSocket (RFC 6455 section 4.2): recognise a
//! valid upgrade request, pick the subprotocol, answer 101 and hand the
//! upgraded connection to a task. Everything that can be refused with a plain
//! HTTP status is refused here, before the upgrade.

use http::header::{
    CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use wsmesh_common::protocol::SUBPROTOCOL;

use crate::origin::{self, Verdict};
use crate::page::{self, Body};
use crate::socket::Ws;

/// Initial read buffer of each socket.
const READ_BUFFER_BYTES: usize = 4096;

/// A request that asked for a WebSocket, checked and ready to be answered.
#[derive(Debug)]
pub struct Handshake {
    /// `Sec-WebSocket-Accept` value, derived from the client's key.
    accept: String,
    /// Whether the client offered `wsmesh.v1` (then it is selected).
    pub v1: bool,
    /// What the Origin rule says about this request.
    pub origin: Verdict,
}

/// Whether header `name` lists `token` among its comma-separated values
/// (case-insensitive), as in `Connection: keep-alive, Upgrade`.
fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Why a request to a WebSocket endpoint cannot be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotUpgrade {
    /// A plain HTTP request (or not a GET).
    NotWebSocket,
    /// A WebSocket version other than 13.
    BadVersion,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
}

impl NotUpgrade {
    /// The HTTP response refusing the request.
    pub fn response(self) -> Response<Body> {
        match self {
            NotUpgrade::NotWebSocket => page::text(
                StatusCode::BAD_REQUEST,
                "this endpoint speaks WebSocket only: send a GET with Upgrade: websocket\n",
            ),
            NotUpgrade::BadVersion => {
                let mut resp = page::text(StatusCode::UPGRADE_REQUIRED, "Sec-WebSocket-Version must be 13\n");
                resp.headers_mut()
                    .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
                resp
            }
            NotUpgrade::MissingKey => page::text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"),
        }
    }
}

/// Checks an upgrade request; what needs a plain HTTP answer comes back as a
/// `NotUpgrade`. A refused Origin is only recorded: the socket is upgraded
/// and then closed with 1008.
pub fn check(req: &Request<Incoming>, allowed_origins: &[String]) -> Result<Handshake, NotUpgrade> {
    let h = req.headers();
    let is_upgrade = req.method() == Method::GET
        && has_token(h, CONNECTION, "upgrade")
        && has_token(h, UPGRADE, "websocket");
    if !is_upgrade {
        return Err(NotUpgrade::NotWebSocket);
    }
    if h.get(SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return Err(NotUpgrade::BadVersion);
    }
    let Some(key) = h.get(SEC_WEBSOCKET_KEY) else {
        return Err(NotUpgrade::MissingKey);
    };
    let v1 = has_token(h, SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    let header = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let origin = origin::check(header(ORIGIN), header(HOST), allowed_origins);
    Ok(Handshake {
        accept: derive_accept_key(key.as_bytes()),
        v1,
        origin,
    })
}

impl Handshake {
    /// The 101 response; `select_v1` puts `wsmesh.v1` in it.
    pub fn response(&self, select_v1: bool) -> Response<Body> {
        let mut resp = page::text(StatusCode::SWITCHING_PROTOCOLS, "");
        let headers = resp.headers_mut();
        headers.remove(http::header::CONTENT_TYPE);
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&self.accept) {
            headers.insert(SEC_WEBSOCKET_ACCEPT, v);
        }
        if select_v1 && self.v1 {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        }
        resp
    }
}

/// Waits for hyper to hand over the upgraded connection and wraps it.
pub async fn finish(req: Request<Incoming>, max_frame_bytes: usize) -> Option<Ws> {
    match hyper::upgrade::on(req).await {
        Ok(upgraded) => {
            // Small eager read buffer (the default 128 KiB per socket would cost
            // over a GiB at 10k sockets); it grows for the rare large frame.
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER_BYTES)
                .max_frame_size(Some(max_frame_bytes))
                .max_message_size(Some(max_frame_bytes));
            Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
        }
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            None
        }
    }
}
