//! The hash key of a request to a `balance = "hash"` backend: a query
//! parameter (percent-decoded, so `dev%2D1` and `dev-1` are one room), a
//! header, a cookie or the client's address. Keys are cut to
//! [`MAX_KEY_BYTES`], which bounds what the access log and the admin API
//! hold per session, and control characters become `?`, so a decoded key
//! cannot break a log line.

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderMap, Uri};

use crate::config::HashKey;

/// Longest key kept; a longer one is cut (at a character boundary).
pub const MAX_KEY_BYTES: usize = 128;

/// The key `what` names in the request, `None` when it is absent or empty.
pub fn extract(what: &HashKey, uri: &Uri, headers: &HeaderMap, client: IpAddr) -> Option<Arc<str>> {
    let value = match what {
        HashKey::UrlParam(name) => uri.query().and_then(|q| url_param(q, name))?,
        HashKey::Header(name) => headers.get(name)?.to_str().ok()?.trim().to_string(),
        HashKey::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| cookie(v, name))?,
        HashKey::Source => client.to_string(),
    };
    (!value.is_empty()).then(|| cut(value).into())
}

/// The last value of parameter `name` in `query` (as the app reads it),
/// percent-decoded when that gives UTF-8, raw otherwise.
fn url_param(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .rev()
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)?
        .1;
    Some(percent_decode(raw).unwrap_or_else(|| raw.to_string()))
}

/// `%XX` escapes decoded; `None` when one is malformed or the result is
/// not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of cookie `name` in one `Cookie` header.
fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"').to_string())
    })
}

fn cut(s: String) -> String {
    let mut s: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.len() > MAX_KEY_BYTES {
        let mut end = MAX_KEY_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::request::Parts;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    fn key(what: &str, req: &Parts) -> Option<String> {
        let what = HashKey::try_from(what.to_string()).unwrap();
        extract(&what, &req.uri, &req.headers, CLIENT).map(|k| k.to_string())
    }

    #[test]
    fn each_kind_of_key_is_found() {
        let req = parts(
            "/ws?since=1&room=dev%2D1",
            &[
                ("x-room", " lobby "),
                ("cookie", "a=1"),
                ("cookie", "room=\"blue\"; b=2"),
            ],
        );
        assert_eq!(key("url_param:room", &req).as_deref(), Some("dev-1"));
        assert_eq!(key("header:x-room", &req).as_deref(), Some("lobby"));
        assert_eq!(key("cookie:room", &req).as_deref(), Some("blue"));
        assert_eq!(key("source", &req).as_deref(), Some("10.0.0.7"));
    }

    #[test]
    fn absent_or_empty_keys_are_none_and_long_ones_are_cut() {
        let req = parts("/ws?room=&x=1", &[]);
        assert_eq!(key("url_param:room", &req), None);
        assert_eq!(key("url_param:other", &parts("/ws", &[])), None);
        assert_eq!(key("header:x-room", &req), None);
        assert_eq!(key("cookie:room", &req), None);
        let long = format!("/ws?room={}", "%C3%A9".repeat(100));
        assert_eq!(key("url_param:room", &parts(&long, &[])).unwrap().len(), 128);
        assert_eq!(
            key("url_param:room", &parts("/ws?room=a%ZZ", &[])).as_deref(),
            Some("a%ZZ")
        );
        assert_eq!(
            key("url_param:room", &parts("/ws?room=a%0Ab", &[])).as_deref(),
            Some("a?b")
        );
    }
}
