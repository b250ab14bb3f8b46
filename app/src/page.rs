//! The chat page (`page/index.html`, `page/chat.js`, `page/chat.css`,
//! compiled into the binary) and the small response helpers every listener
//! uses. The page gets a strict Content-Security-Policy: only its own scripts
//! and styles, and WebSocket connections only back to the host that served it
//! (plus the origin of `auth.refresh_url`, which it fetches fresh tokens
//! from; the URL reaches the page in a `<meta>` tag).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::config::AuthConfig;

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

/// The `<meta>` tag of `index.html` that carries `auth.refresh_url`.
const REFRESH_META: &str = r#"<meta name="wsmesh-token-refresh" content="">"#;

/// The policy for the page served under `host` (the request's `Host`, used
/// only when it looks like a host, so older browsers that do not count ws: as
/// 'self' still may connect back) that fetches tokens from `refresh`.
fn csp(host: Option<&str>, refresh: Option<&str>) -> String {
    let host = host.filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    let mut connect = match host {
        Some(h) => format!("'self' ws://{h} wss://{h}"),
        None => "'self'".to_string(),
    };
    // An absolute refresh URL's origin (checked at config load: no spaces,
    // no quotes); a path is 'self'.
    if let Some(origin) = refresh.filter(|u| u.contains("://")).and_then(url_origin) {
        connect.push(' ');
        connect.push_str(origin);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `scheme://authority` of an absolute URL.
fn url_origin(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..url.len() - rest.len() + end])
}

/// `text` with `&`, `<`, `>` and `"` escaped, for an HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page file for `path`, if it is one; `auth` tells the page where to
/// get a fresh token.
pub fn asset(path: &str, host: Option<&str>, auth: &AuthConfig) -> Option<Response<Body>> {
    let refresh = auth.refresh_url.as_deref();
    let (content_type, body): (_, Bytes) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            match refresh {
                Some(url) => INDEX_HTML
                    .replace(
                        REFRESH_META,
                        &format!(
                            r#"<meta name="wsmesh-token-refresh" content="{}">"#,
                            attribute(url)
                        ),
                    )
                    .into(),
                None => INDEX_HTML.into(),
            },
        ),
        "/chat.js" => ("text/javascript; charset=utf-8", CHAT_JS.into()),
        "/chat.css" => ("text/css; charset=utf-8", CHAT_CSS.into()),
        _ => return None,
    };
    let mut resp = with_type(StatusCode::OK, content_type, body);
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&csp(host, refresh)) {
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
            let resp = asset(path, Some("127.0.0.1:8443"), &AuthConfig::default()).expect("served");
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
        assert!(asset("/other", None, &AuthConfig::default()).is_none());
    }

    #[test]
    fn refresh_url_reaches_the_page_and_its_policy() {
        let auth = AuthConfig {
            refresh_url: Some("https://sso.example:8443/token?x=1&y=2".into()),
            ..AuthConfig::default()
        };
        let resp = asset("/", Some("h:1"), &auth).expect("served");
        let policy = resp.headers()[CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(policy.contains("wss://h:1 https://sso.example:8443;"), "{policy}");
        let body = String::from_utf8(resp.into_body().into_inner().expect("a body").to_vec()).expect("utf-8");
        assert!(
            body.contains(r#"content="https://sso.example:8443/token?x=1&amp;y=2""#),
            "{body}"
        );
        assert!(INDEX_HTML.contains(REFRESH_META), "the page carries the tag");
    }

    #[test]
    fn odd_host_is_left_out_of_the_policy() {
        let policy = csp(Some("x; script-src *"), None);
        assert!(policy.contains("connect-src 'self';"), "{policy}");
    }
}
