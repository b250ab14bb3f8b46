//! Request and response headers as a proxy must treat them: hop-by-hop
//! headers removed, ambiguous framing refused, and forwarding headers
//! added.

use std::io::Write as _;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

// Names as constants: a header looked up by `&str` is parsed and hashed
// again on every call, which showed in the per-request profile.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// The tokens of the `Connection` headers, trimmed (compare them ignoring case).
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Both `Content-Length` and `Transfer-Encoding`, or several lengths. The
/// client stream watcher catches what hyper hides; this catches the rest.
pub fn ambiguous_framing(headers: &HeaderMap) -> bool {
    let lengths: usize = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes().split(|b| *b == b',').count())
        .sum();
    lengths > 1 || (lengths == 1 && headers.contains_key(header::TRANSFER_ENCODING))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request's `Host`, or for HTTP/2 its `:authority`.
pub fn request_host(headers: &HeaderMap, uri: &http::Uri) -> Option<HeaderValue> {
    match headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

/// Writes `ip` as text: IPv4 without the formatting machinery (this runs
/// on every request), IPv6 in brackets and quotes when `quoted` (RFC 7239).
fn put_ip(out: &mut BytesMut, ip: IpAddr, quoted: bool) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.put_u8(b'.');
                }
                if octet >= 100 {
                    out.put_u8(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.put_u8(b'0' + octet / 10 % 10);
                }
                out.put_u8(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            let mut w = out.writer();
            // Writing into memory cannot fail.
            let _ = if quoted {
                write!(w, "\"[{v6}]\"")
            } else {
                write!(w, "{v6}")
            };
        }
    }
}

/// `prev, ` when `name` is present, so a value is appended to it.
fn start_appending(headers: &HeaderMap, name: &HeaderName, out: &mut BytesMut) {
    if let Some(prev) = headers.get(name) {
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(b", ");
    }
}

/// `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`
/// and `Forwarded` (RFC 7239, appended).
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, tls: bool, host: Option<&HeaderValue>) {
    let proto: &'static str = if tls { "https" } else { "http" };
    let mut buf = BytesMut::with_capacity(128);
    start_appending(headers, &X_FORWARDED_FOR, &mut buf);
    put_ip(&mut buf, client, false);
    let xff = buf.split().freeze();

    start_appending(headers, &header::FORWARDED, &mut buf);
    buf.extend_from_slice(b"for=");
    put_ip(&mut buf, client, true);
    buf.extend_from_slice(b";proto=");
    buf.extend_from_slice(proto.as_bytes());
    if let Some(h) = host.filter(|h| h.as_bytes().iter().all(|b| b.is_ascii_graphic() && *b != b'"')) {
        buf.extend_from_slice(b";host=\"");
        buf.extend_from_slice(h.as_bytes());
        buf.put_u8(b'"');
    }
    let forwarded = buf.split().freeze();

    let mut set = |name: HeaderName, value: Bytes| {
        if let Ok(v) = HeaderValue::from_maybe_shared(value) {
            headers.insert(name, v);
        }
    };
    set(X_FORWARDED_FOR, xff);
    set(header::FORWARDED, forwarded);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST, h.clone());
    }
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
        let host = HeaderValue::from_static("chat.test");
        add_forwarded(&mut h, "::1".parse().unwrap(), true, Some(&host));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "chat.test");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https;host=\"chat.test\"");
    }

    #[test]
    fn ipv4_is_written_like_its_display() {
        for ip in ["0.0.0.0", "10.2.30.255", "127.0.0.1", "192.168.100.9"] {
            let mut h = HeaderMap::new();
            add_forwarded(&mut h, ip.parse().unwrap(), false, None);
            assert_eq!(h["x-forwarded-for"], ip);
            assert_eq!(h["forwarded"], format!("for={ip};proto=http").as_str());
            assert_eq!(h["x-forwarded-proto"], "http");
        }
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
