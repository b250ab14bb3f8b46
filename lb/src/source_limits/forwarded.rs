//! The client behind trusted proxies: `X-Forwarded-For` read from the
//! right, each trusted hop skipped, the first address not trusted taken
//! (what a proxy the lb trusts saw connecting to it). Entries to the left
//! of it are the client's own word and never used.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::Cidr;

/// Whether `ip` is one of `trusted`.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client a request comes from: `peer` unless it is trusted; then the
/// rightmost untrusted `X-Forwarded-For` entry (the leftmost one when every
/// entry is trusted; `peer` when there is none or an entry is unreadable
/// before an untrusted one is found).
pub fn client(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            let Some(ip) = address(entry.trim()) else {
                return client;
            };
            client = ip;
            if !is_trusted(trusted, ip) {
                return ip;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:5000`, `[2001:db8::1]:5000`).
fn address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = xff(&["1.1.1.1, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(client(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        // An untrusted peer's header is its own word.
        assert_eq!(client(ip("198.51.100.1"), &h, &trusted), ip("198.51.100.1"));
        // Ports and brackets are allowed.
        let h = xff(&["[2001:db8::5]:4000"]);
        assert_eq!(client(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::5"));
        // Every hop trusted: the leftmost; none: the peer.
        assert_eq!(
            client(ip("10.0.0.1"), &xff(&["10.9.9.9, 10.0.0.3"]), &trusted),
            ip("10.9.9.9")
        );
        assert_eq!(
            client(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        // An unreadable hop stops the walk at the last trusted one.
        assert_eq!(
            client(ip("10.0.0.1"), &xff(&["1.1.1.1, junk"]), &trusted),
            ip("10.0.0.1")
        );
    }
}
