//! Request and response headers as a proxy must treat them: hop-by-hop
//! headers removed, ambiguous framing refused, and forwarding headers
//! added.

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

// Names as constants: a header looked up by `&str` is parsed and hashed
// again on every call, which showed in the per-request profile.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// A `static`, not a `const`: a `const` array is copied onto the stack at
/// every use, which showed in the per-request instruction count.
static HOP_BY_HOP: [HeaderName; 8] = [
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

/// Whether a name of this length can be one of [`HOP_BY_HOP`]: rules out
/// almost every field without comparing names.
fn hop_by_hop_length(len: usize) -> bool {
    matches!(len, 2 | 7 | 10 | 16 | 17 | 18)
}

/// Removes hop-by-hop headers, including those the `Connection` header
/// names. One pass over the names finds the ones present, so a message
/// without any (or with only `Connection`) costs no lookups by name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in headers.keys() {
        if !hop_by_hop_length(name.as_str().len()) {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        let listed: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
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
fn put_ip(out: &mut Vec<u8>, ip: IpAddr, quoted: bool) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            // Writing into memory cannot fail.
            let _ = if quoted {
                write!(out, "\"[{v6}]\"")
            } else {
                write!(out, "{v6}")
            };
        }
    }
}

/// Starts the line of `name`, with the client's value of it and `, ` when
/// it sent one, so the lb's value is appended to it.
fn start_appending(headers: &HeaderMap, name: &HeaderName, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    if let Some(prev) = headers.get(name) {
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(b", ");
    }
}

/// The forwarding headers the client's own fields of these names give way to.
static FORWARDING: [HeaderName; 4] = [X_FORWARDED_FOR, header::FORWARDED, X_FORWARDED_PROTO, X_FORWARDED_HOST];

/// The forwarding header lines for the request to the server:
/// `X-Forwarded-For` (appended to the client's), `Forwarded` (RFC 7239,
/// appended), `X-Forwarded-Proto` and, with a host, `X-Forwarded-Host`.
/// They are written as lines after the client's fields rather than
/// inserted into its header map (a map insert hashes and may grow the map:
/// this runs on every request). Returns the names whose client fields the
/// lines replace.
pub fn forwarded_lines(
    headers: &HeaderMap,
    client: IpAddr,
    tls: bool,
    host: Option<&HeaderValue>,
    out: &mut Vec<u8>,
) -> &'static [HeaderName] {
    let proto: &[u8] = if tls { b"https" } else { b"http" };
    start_appending(headers, &X_FORWARDED_FOR, out);
    put_ip(out, client, false);
    out.extend_from_slice(b"\r\n");

    start_appending(headers, &header::FORWARDED, out);
    out.extend_from_slice(b"for=");
    put_ip(out, client, true);
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto);
    if let Some(h) = host.filter(|h| h.as_bytes().iter().all(|b| b.is_ascii_graphic() && *b != b'"')) {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(h.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(proto);
    out.extend_from_slice(b"\r\n");
    match host {
        Some(h) => {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
            &FORWARDING
        }
        // Without a host of its own, the client's `X-Forwarded-Host` stays.
        None => &FORWARDING[..3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_filter_lets_every_hop_by_hop_name_through() {
        for name in &HOP_BY_HOP {
            assert!(hop_by_hop_length(name.as_str().len()), "{name}");
        }
    }

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

    /// The lines as (name, value) pairs, and the names they replace.
    fn forwarded(h: &HeaderMap, ip: &str, tls: bool, host: Option<&HeaderValue>) -> (Vec<(String, String)>, Vec<String>) {
        let mut out = Vec::new();
        let replaced = forwarded_lines(h, ip.parse().unwrap(), tls, host, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n"));
        let lines = text
            .trim_end()
            .split("\r\n")
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        (lines, replaced.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn forwarded_headers_append_to_existing_ones() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let host = HeaderValue::from_static("chat.test");
        let (lines, replaced) = forwarded(&h, "::1", true, Some(&host));
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert_eq!(
            lines,
            pairs(&[
                ("x-forwarded-for", "10.0.0.1, ::1"),
                ("forwarded", "for=\"[::1]\";proto=https;host=\"chat.test\""),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "chat.test"),
            ])
        );
        assert_eq!(replaced, ["x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host"]);
    }

    #[test]
    fn ipv4_is_written_like_its_display() {
        for ip in ["0.0.0.0", "10.2.30.255", "127.0.0.1", "192.168.100.9"] {
            let (lines, replaced) = forwarded(&HeaderMap::new(), ip, false, None);
            assert_eq!(lines[0], ("x-forwarded-for".to_string(), ip.to_string()));
            assert_eq!(lines[1], ("forwarded".to_string(), format!("for={ip};proto=http")));
            assert_eq!(lines[2], ("x-forwarded-proto".to_string(), "http".to_string()));
            assert_eq!(lines.len(), 3);
            assert!(!replaced.contains(&"x-forwarded-host".to_string()));
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
