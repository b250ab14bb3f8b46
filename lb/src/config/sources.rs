//! The frontend keys about client sources: which peers are trusted
//! proxies (their `X-Forwarded-For` and PROXY headers are believed), whether
//! the frontend takes a PROXY protocol v2 header, and the per-source limits
//! (HAProxy's stick tables tracking `src`, written as plain keys).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether connections start with a PROXY protocol header (an L4 balancer
/// in front of the lb telling the client's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// Connections carry the client's bytes from the first one.
    #[default]
    None,
    /// Every connection starts with a binary PROXY v2 header, and only
    /// trusted proxies may connect (`accept-proxy` on a HAProxy `bind`).
    V2,
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a
/// block of one). IPv4-mapped IPv6 addresses match the IPv4 blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The block's first address (host bits cleared).
    network: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

/// `ip` with every bit after the first `prefix` cleared.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix block"))?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr {
            network: mask(ip, prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// At most `count` events per `period`, written `"100/10s"` (HAProxy's
/// `http_req_rate(10s)` compared with 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed in one period.
    pub count: u32,
    /// The period, a whole number of milliseconds from 1 ms to 1 h.
    pub period: Duration,
}

/// Longest rate period: tables keep a source at least this long.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(3600);

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let expected = || format!("{s:?}: expected COUNT/PERIOD, e.g. \"100/10s\"");
        let (count, period) = s.split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        let period = humantime_serde::re::humantime::parse_duration(period.trim()).map_err(|_| expected())?;
        if count == 0 {
            return Err(format!("{s:?}: the count must be at least 1"));
        }
        if period < Duration::from_millis(1) || period > MAX_RATE_PERIOD {
            return Err(format!("{s:?}: the period must be between 1ms and 1h"));
        }
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime_serde::re::humantime::format_duration(self.period)
        )
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[frontend.per_source]`: what one client address may do on this
/// frontend. Every limit is off unless set; the table that tracks sources
/// is bounded by `max_sources` and forgets a source `expire` after its last
/// event.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerSource {
    /// Connections open at once from one source (`sc0_conn_cur`); 0: no
    /// limit. A connection over it is closed before the TLS handshake.
    pub max_conns: u32,
    /// New connections from one source (`sc0_conn_rate`); over it the
    /// connection is closed before the TLS handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn_rate: Option<Rate>,
    /// HTTP requests from one source, WebSocket upgrades included
    /// (`sc0_http_req_rate`); over it: 429 with `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<Rate>,
    /// WebSocket upgrades from one source (HTTP/1.1 `Upgrade` and HTTP/2
    /// extended CONNECT); over it: 429 with `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_rate: Option<Rate>,
    /// Sources tracked at once (the stick table's `size`); when full, the
    /// least recently seen eighth is forgotten at once.
    pub max_sources: usize,
    /// A source with no open connection is forgotten this long after its
    /// last event (`expire`); at least the longest rate period.
    #[serde(with = "humantime_serde")]
    pub expire: Duration,
    /// IPv6 clients are tracked by this prefix of their address (a host
    /// usually holds a whole /64); 128: each address on its own.
    pub ipv6_prefix: u8,
}

/// Bounds of `per_source.max_sources`.
pub const MAX_SOURCES_RANGE: std::ops::RangeInclusive<usize> = 16..=10_000_000;

impl Default for PerSource {
    fn default() -> Self {
        PerSource {
            max_conns: 0,
            conn_rate: None,
            request_rate: None,
            upgrade_rate: None,
            max_sources: 100_000,
            expire: Duration::from_secs(60),
            ipv6_prefix: 64,
        }
    }
}

impl PerSource {
    /// The longest period of the rates set.
    pub fn longest_period(&self) -> Duration {
        [self.conn_rate, self.request_rate, self.upgrade_rate]
            .iter()
            .flatten()
            .map(|r| r.period)
            .max()
            .unwrap_or_default()
    }

    /// What the file's `per_source` table gets wrong, as `(key, reason)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !MAX_SOURCES_RANGE.contains(&self.max_sources) {
            return Some((
                "max_sources",
                format!(
                    "max_sources must be between {} and {}",
                    MAX_SOURCES_RANGE.start(),
                    MAX_SOURCES_RANGE.end()
                ),
            ));
        }
        if self.ipv6_prefix == 0 || self.ipv6_prefix > 128 {
            return Some(("ipv6_prefix", "ipv6_prefix must be between 1 and 128".into()));
        }
        if self.expire < self.longest_period() || self.expire.is_zero() {
            return Some((
                "expire",
                format!(
                    "expire must be at least the longest rate period ({})",
                    humantime_serde::re::humantime::format_duration(self.longest_period())
                ),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_their_addresses_only() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(!block.contains("::1".parse().unwrap()));
        let one: Cidr = "127.0.0.3".parse().unwrap();
        assert!(one.contains("127.0.0.3".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(v6.contains("2001:db8:ffff::7".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_read_and_write_as_count_per_period() {
        let r: Rate = "100/10s".parse().unwrap();
        assert_eq!((r.count, r.period), (100, Duration::from_secs(10)));
        assert_eq!(r.to_string(), "100/10s");
        let r: Rate = "5 / 1m".parse().unwrap();
        assert_eq!(r.period, Duration::from_secs(60));
        for bad in ["100", "0/10s", "10/0s", "x/10s", "10/2h", "10/ten"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn expire_must_cover_the_longest_period() {
        let mut p = PerSource {
            request_rate: Some("10/2m".parse().unwrap()),
            ..PerSource::default()
        };
        assert_eq!(p.problem().map(|(k, _)| k), Some("expire"));
        p.expire = Duration::from_secs(120);
        assert_eq!(p.problem(), None);
        p.max_sources = 1;
        assert_eq!(p.problem().map(|(k, _)| k), Some("max_sources"));
    }
}
