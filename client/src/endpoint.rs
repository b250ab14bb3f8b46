//! Where a client connects: the `ws://` or `wss://` URL taken apart into the
//! pieces the dialler and the TLS handshake need.

use std::fmt;
use std::str::FromStr;

use url::{Host, Url};

use crate::error::ClientError;

/// `ws://` (plain) or `wss://` (TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Ws,
    /// TLS over TCP.
    Wss,
}

/// Where to connect: scheme, host, port and path (query added per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Plain or TLS.
    pub scheme: Scheme,
    /// Host name or IP, also the TLS server name (SNI).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request path, e.g. `/ws`.
    pub path: String,
}

impl FromStr for Endpoint {
    type Err = ClientError;

    /// Parses `ws://host[:port][/path]` (or `wss://`) with the `url` crate,
    /// which knows both schemes' default ports; a query part is ignored
    /// (options carry it).
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| ClientError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let scheme = match parsed.scheme() {
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(bad("scheme must be ws:// or wss://".into())),
        };
        let host = match parsed.host() {
            Some(Host::Domain(name)) if !name.is_empty() => name.to_string(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(bad("no host".into())),
        };
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("no port".into()))?;
        Ok(Endpoint {
            scheme,
            host,
            port,
            path: parsed.path().to_string(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

impl Endpoint {
    /// `host:port`, with brackets around an IPv6 host.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same server on another path (e.g. `/chatsocket`).
    pub fn with_path(&self, path: &str) -> Endpoint {
        Endpoint {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parses_hosts_ports_and_paths() {
        let e: Endpoint = "ws://127.0.0.1:9001/ws?room=x".parse().unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.path.as_str()),
            (Scheme::Ws, "127.0.0.1", 9001, "/ws")
        );
        let e: Endpoint = "wss://localhost".parse().unwrap();
        assert_eq!((e.port, e.path.as_str()), (443, "/"));
        let e: Endpoint = "ws://[::1]:8/chatsocket".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8));
        assert_eq!(e.to_string(), "ws://[::1]:8/chatsocket");
        let e: Endpoint = "wss://lb.example:8443".parse().unwrap();
        assert_eq!((e.scheme, e.port, e.path.as_str()), (Scheme::Wss, 8443, "/"));
        assert_eq!(e.to_string(), "wss://lb.example:8443/");
        let e: Endpoint = "ws://h/a/b#frag".parse().unwrap();
        assert_eq!((e.port, e.path.as_str()), (80, "/a/b"));
        for bad in [
            "http://x/ws",
            "ws://:1/",
            "ws://h:notaport/",
            "ws://[::1/",
            "ws://h:70000/",
            "not a url",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} accepted");
        }
    }
}
