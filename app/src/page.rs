//! The chat page (`page/index.html`, `page/chat.js`, `page/chat.css`,
//! compiled into the binary) and the small response helpers every listener
//! uses. The page gets a strict Content-Security-Policy: only its own scripts
//! and styles, and WebSocket connections only back to the host that served it.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Body type of every response this app writes.
pub type Body = Full<Bytes>;

const INDEX_HTML: &str = include_str!("page/index.html");
const CHAT_JS: &str = include_str!("page/chat.js");
const CHAT_CSS: &str = include_str!("page/chat.css");

/// A response with a body and content type.
pub fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body)
}

/// A response with an `application/json` body (`/healthz`,
/// `/internal/cursors`).
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "application/json", body)
}

/// A response with no body and no content type, e.g. the 204 that accepts
/// an event batch.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// The policy for the page served under `host` (the request's `Host`, used
/// only when it looks like a host, so older browsers that do not count ws: as
/// 'self' still may connect back).
fn csp(host: Option<&str>) -> String {
    let host = host.filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    let connect = match host {
        Some(h) => format!("'self' ws://{h} wss://{h}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The page file for `path`, if it is one.
pub fn asset(path: &str, host: Option<&str>) -> Option<Response<Body>> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/chat.js" => ("text/javascript; charset=utf-8", CHAT_JS),
        "/chat.css" => ("text/css; charset=utf-8", CHAT_CSS),
        _ => return None,
    };
    let mut resp = with_type(StatusCode::OK, content_type, body);
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&csp(host)) {
        headers.insert(CONTENT_SECURITY_POLICY, v);
    }
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_files_have_types_cache_control_and_csp() {
        for (path, ty) in [
            ("/", "text/html"),
            ("/chat.js", "text/javascript"),
            ("/chat.css", "text/css"),
        ] {
            let resp = asset(path, Some("127.0.0.1:8443")).expect("served");
            let h = resp.headers();
            assert!(
                h[CONTENT_TYPE].to_str().is_ok_and(|v| v.starts_with(ty)),
                "{path}"
            );
            assert_eq!(h[CACHE_CONTROL], "no-cache");
            let policy = h[CONTENT_SECURITY_POLICY].to_str().expect("ascii");
            assert!(policy.contains("script-src 'self'"), "{policy}");
            assert!(policy.contains("connect-src 'self' ws://127.0.0.1:8443 wss://127.0.0.1:8443"));
        }
        assert!(asset("/other", None).is_none());
    }

    #[test]
    fn odd_host_is_left_out_of_the_policy() {
        let policy = csp(Some("x; script-src *"));
        assert!(policy.contains("connect-src 'self';"), "{policy}");
    }
}
