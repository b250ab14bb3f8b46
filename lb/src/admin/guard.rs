//! What keeps a browser from being turned against the admin API (a page
//! on another site posting to it, or a DNS name rebound to the lb's
//! address): a request must name this listener in `Host` (its own
//! address, `localhost` on loopback, or one of `admin.hosts`), must not
//! come from another origin (`Origin`, `Sec-Fetch-Site`), and a state
//! change must be `application/json`, which no HTML form and no
//! cross-site fetch without a CORS preflight can send. Each refusal is a
//! 403 with its reason.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap};
use http::uri::Authority;
use http::{Method, Uri};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("Host {0:?} is not this admin listener (admin.hosts lists other names)")]
    Host(String),
    #[error("cross-origin request (Origin {0:?}) refused")]
    Origin(String),
    #[error("cross-site request (Sec-Fetch-Site: {0}) refused")]
    FetchSite(String),
    #[error("a state change needs Content-Type: application/json")]
    ContentType,
}

/// The names a request may use for the listener that accepted it on `local`.
#[derive(Debug, Clone, Copy)]
pub struct Listener<'a> {
    /// The accepted connection's local address.
    pub local: SocketAddr,
    /// `admin.hosts`.
    pub names: &'a [String],
}

impl Listener<'_> {
    /// Whether `authority` (from `Host` or an origin, `default_port` when
    /// it has none) names this listener.
    fn names(&self, authority: &str, default_port: u16) -> bool {
        let Ok(a) = authority.parse::<Authority>() else {
            return false;
        };
        if authority.contains('@') {
            return false;
        }
        let host = a.host().trim_start_matches('[').trim_end_matches(']');
        let port = a.port_u16().unwrap_or(default_port);
        let own_ip = self.local.ip().to_canonical();
        let own = host.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical() == own_ip)
            || (own_ip.is_loopback() && host.eq_ignore_ascii_case("localhost"));
        if own && port == self.local.port() {
            return true;
        }
        self.names.iter().any(|name| match name.parse::<Authority>() {
            Ok(n) => {
                n.host().eq_ignore_ascii_case(a.host()) && n.port_u16().unwrap_or(self.local.port()) == port
            }
            Err(_) => false,
        })
    }

    /// Checks a request's head.
    pub fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Forbidden> {
        let host = headers
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        if !self.names(&host, 80) {
            return Err(Forbidden::Host(host));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            let parsed = text.parse::<Uri>().ok();
            let default_port = match parsed.as_ref().and_then(|u| u.scheme_str()) {
                Some("http") => Some(80),
                Some("https") => Some(443),
                _ => None,
            };
            let same = match (parsed.as_ref().and_then(|u| u.authority()), default_port) {
                (Some(a), Some(port)) => self.names(a.as_str(), port),
                _ => false,
            };
            if !same {
                return Err(Forbidden::Origin(text));
            }
        }
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return Err(Forbidden::FetchSite(site.to_string()));
            }
        }
        if method != Method::GET && method != Method::HEAD && !is_json(headers) {
            return Err(Forbidden::ContentType);
        }
        Ok(())
    }
}

/// Whether the body is declared `application/json` (parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(
        local: &str,
        names: &[String],
        method: Method,
        headers: &[(&'static str, &'static str)],
    ) -> Result<(), Forbidden> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        Listener {
            local: local.parse().unwrap(),
            names,
        }
        .check(&method, &Uri::from_static("/api/backends"), &h)
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn the_listener_s_own_names_pass() {
        let local = "127.0.0.1:8404";
        for host in ["127.0.0.1:8404", "localhost:8404", "LOCALHOST:8404"] {
            let h = [("host", host)];
            assert_eq!(check(local, &[], Method::GET, &h), Ok(()), "{host}");
        }
        let with_origin = [
            ("host", "127.0.0.1:8404"),
            ("origin", "http://localhost:8404"),
            JSON,
        ];
        assert_eq!(check(local, &[], Method::POST, &with_origin), Ok(()));
        let v6 = [("host", "[::1]:8404")];
        assert_eq!(check("[::1]:8404", &[], Method::GET, &v6), Ok(()));
        let port80 = [("host", "10.0.0.5")];
        assert_eq!(check("10.0.0.5:80", &[], Method::GET, &port80), Ok(()));
        let names = ["lb1.internal".to_string(), "admin.example:443".to_string()];
        for host in ["lb1.internal:8404", "admin.example:443"] {
            assert_eq!(
                check(local, &names, Method::GET, &[("host", host)]),
                Ok(()),
                "{host}"
            );
        }
        let proxied = [("host", "admin.example:443"), ("origin", "https://admin.example")];
        assert_eq!(check(local, &names, Method::GET, &proxied), Ok(()));
    }

    #[test]
    fn a_rebound_or_cross_site_request_is_refused() {
        let local = "127.0.0.1:8404";
        let csrf = [
            ("host", "evil.example:8404"),
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
        ];
        assert!(matches!(
            check(local, &[], Method::POST, &csrf),
            Err(Forbidden::Host(_))
        ));
        for host in [
            "127.0.0.1:9999",
            "localhost",
            "",
            "user@127.0.0.1:8404",
            "lb1.internal:8404",
        ] {
            let h = [("host", host)];
            assert!(
                matches!(check(local, &[], Method::GET, &h), Err(Forbidden::Host(_))),
                "{host}"
            );
        }
        assert!(matches!(
            check("10.0.0.5:8404", &[], Method::GET, &[("host", "localhost:8404")]),
            Err(Forbidden::Host(_))
        ));
        for origin in ["http://evil.example", "null", "http://127.0.0.1:8405", "file://"] {
            let h = [("host", "127.0.0.1:8404"), ("origin", origin)];
            assert!(
                matches!(check(local, &[], Method::GET, &h), Err(Forbidden::Origin(_))),
                "{origin}"
            );
        }
        let site = [("host", "127.0.0.1:8404"), ("sec-fetch-site", "cross-site")];
        assert!(matches!(
            check(local, &[], Method::GET, &site),
            Err(Forbidden::FetchSite(_))
        ));
        let own = [("host", "127.0.0.1:8404"), ("sec-fetch-site", "same-origin")];
        assert_eq!(check(local, &[], Method::GET, &own), Ok(()));
    }

    #[test]
    fn a_state_change_must_be_json() {
        let local = "127.0.0.1:8404";
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let h = [("host", "127.0.0.1:8404"), ("content-type", ct)];
            assert_eq!(
                check(local, &[], Method::POST, &h),
                Err(Forbidden::ContentType),
                "{ct}"
            );
        }
        let none = [("host", "127.0.0.1:8404")];
        assert_eq!(
            check(local, &[], Method::POST, &none),
            Err(Forbidden::ContentType)
        );
        assert_eq!(check(local, &[], Method::GET, &none), Ok(()));
    }
}
