//! Requests that switch protocols: an HTTP/1.1 `Upgrade` (WebSocket) is
//! forwarded as it is; a WebSocket over HTTP/2 (RFC 8441: an extended
//! CONNECT with `:protocol websocket`, which browsers use on an HTTP/2
//! connection that advertised it) is sent to the server as the HTTP/1.1
//! upgrade the servers speak, and the server's `101` becomes the `200`
//! that opens the tunnel on the client's stream. The tunnel itself is the
//! same either way.

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;

use super::headers::{connection_tokens, strip_hop_by_hop};

/// How a request asks to switch protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeKind {
    /// HTTP/1.1 `Upgrade` with `Connection: upgrade`.
    Http1,
    /// HTTP/2 extended CONNECT for a WebSocket.
    WebSocketOverH2,
}

/// The upgrade `req` asks for, if any.
pub fn requested(req: &Request<Incoming>) -> Option<UpgradeKind> {
    match req.version() {
        Version::HTTP_11
            if req.headers().contains_key(header::UPGRADE)
                && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade")) =>
        {
            Some(UpgradeKind::Http1)
        }
        Version::HTTP_2
            if req.method() == Method::CONNECT
                && req
                    .extensions()
                    .get::<Protocol>()
                    .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket")) =>
        {
            Some(UpgradeKind::WebSocketOverH2)
        }
        _ => None,
    }
}

/// Makes the head of an extended CONNECT the HTTP/1.1 WebSocket upgrade a
/// server expects: `GET`, `Connection: upgrade`, `Upgrade: websocket`, a
/// fresh `Sec-WebSocket-Key` (HTTP/2 has none: RFC 8441 §5) and version
/// 13; subprotocols, extensions, origin and the rest are kept.
pub fn to_http1_websocket(head: &mut http::request::Parts) {
    head.method = Method::GET;
    let h = &mut head.headers;
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
    h.entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
}

/// Makes the head of the server's `101` the `200` that opens a WebSocket
/// on an HTTP/2 stream: its headers but the hop-by-hop ones and the accept
/// key, which belongs to the HTTP/1.1 handshake (RFC 8441 §5).
pub fn established(head: &mut http::response::Parts) {
    strip_hop_by_hop(&mut head.headers);
    head.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    head.status = StatusCode::OK;
    head.version = Version::HTTP_2;
}

/// A random `Sec-WebSocket-Key`: 16 bytes in base64.
fn websocket_key() -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: [u8; 16] = rand::random();
    let mut key = Vec::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            key.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63]
            } else {
                b'='
            });
        }
    }
    HeaderValue::from_bytes(&key).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    /// Whether `name` is a header of the HTTP/1.1 handshake only.
    fn handshake_only(name: &http::header::HeaderName) -> bool {
        name == header::SEC_WEBSOCKET_ACCEPT || name == header::UPGRADE || name == header::CONNECTION
    }

    #[test]
    fn a_key_is_16_bytes_in_base64_and_fresh_each_time() {
        let a = websocket_key();
        let b = websocket_key();
        assert_ne!(a, b);
        for k in [a, b] {
            let k = k.to_str().unwrap().to_string();
            assert_eq!(k.len(), 24, "{k}");
            assert!(k.ends_with("=="), "{k}");
            assert!(
                k[..22]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'),
                "{k}"
            );
        }
    }

    #[test]
    fn an_extended_connect_becomes_an_http1_upgrade_and_the_101_a_200() {
        let (mut head, ()) = Request::connect("https://chat.test/ws?room=a")
            .version(Version::HTTP_2)
            .header("sec-websocket-protocol", "wsmesh.v1")
            .header("origin", "https://chat.test")
            .body(())
            .unwrap()
            .into_parts();
        to_http1_websocket(&mut head);
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.headers["upgrade"], "websocket");
        assert_eq!(head.headers["connection"], "upgrade");
        assert_eq!(head.headers["sec-websocket-version"], "13");
        assert_eq!(head.headers["sec-websocket-protocol"], "wsmesh.v1");
        assert_eq!(head.headers["origin"], "https://chat.test");
        assert!(head.headers.contains_key("sec-websocket-key"));
        let (mut ok, ()) = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "x")
            .header("sec-websocket-protocol", "wsmesh.v1")
            .body(())
            .unwrap()
            .into_parts();
        established(&mut ok);
        assert_eq!(ok.status, StatusCode::OK);
        assert!(ok.headers.keys().all(|k| !handshake_only(k)), "{:?}", ok.headers);
        assert_eq!(ok.headers["sec-websocket-protocol"], "wsmesh.v1");
    }
}
