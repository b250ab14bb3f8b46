//! Where a client connects: the `ws://` or `wss://` URL taken apart into the
//! pieces the dialler and the TLS handshake need.

use std::fmt;
use std::str::FromStr;

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

    /// Parses `ws://host[:port][/path]`; a query part is ignored (options carry it).
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ClientError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::Ws, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (Scheme::Wss, rest)
        } else {
            return Err(bad("scheme must be ws:// or wss://"));
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = match scheme {
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None => default_port,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            scheme,
            host,
            port,
            path: path.to_string(),
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
        for bad in ["http://x/ws", "ws://:1/", "ws://h:notaport/", "ws://[::1/"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad} accepted");
        }
    }
}
