//! Per-source limits on a frontend (what HAProxy users build from a stick
//! table, `tcp-request connection track-sc0 src` and `http-request deny
//! deny_status 429`): open connections, new connections, HTTP requests and
//! WebSocket upgrades per client address.
//!
//! A connection is admitted or refused before its TLS handshake (refused:
//! closed at once, the cheapest answer); a request over a rate gets 429
//! with `Retry-After`. Refused attempts count too, so a client that keeps
//! hammering stays refused until it slows down. Behind trusted proxies the
//! requests are counted against the address they forward
//! (`X-Forwarded-For`); connections from a trusted proxy carry many
//! clients and are not limited, unless a PROXY header names the client.

mod forwarded;
mod table;
mod window;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::config::{self, Cidr, PerSource, ProxyProtocol, Rate};
pub use table::{SourceTable, SourceView};

/// Which limit refused a connection or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `max_conns`: too many connections open at once.
    MaxConns,
    /// `conn_rate`: too many new connections.
    ConnRate,
    /// `request_rate`: too many HTTP requests.
    RequestRate,
    /// `upgrade_rate`: too many WebSocket upgrades.
    UpgradeRate,
}

impl LimitKind {
    /// Every kind, in the order of the counters indexed by [`LimitKind::index`].
    pub const ALL: [LimitKind; 4] = [
        LimitKind::MaxConns,
        LimitKind::ConnRate,
        LimitKind::RequestRate,
        LimitKind::UpgradeRate,
    ];

    /// The key's name, as logged and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::MaxConns => "max_conns",
            LimitKind::ConnRate => "conn_rate",
            LimitKind::RequestRate => "request_rate",
            LimitKind::UpgradeRate => "upgrade_rate",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refusal by a per-source limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub kind: LimitKind,
    /// The key the source is tracked under.
    pub source: IpAddr,
    /// For a rate: its period, sent as `Retry-After`.
    pub retry_after: Duration,
    /// For a refused connection: `Some(n)` when it is to be logged, `n`
    /// refusals of the source having gone unlogged since the last line.
    pub log: Option<u64>,
}

/// One connection's slot in its source's `max_conns`; released on drop.
#[derive(Debug)]
pub struct SourceConn(Arc<AtomicU32>);

impl Drop for SourceConn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Period the admin API reads a rate over when its limit is not set.
const SHOWN_PERIOD: Duration = Duration::from_secs(10);

/// A frontend's view of its clients' addresses and the limits on them.
#[derive(Debug, Default)]
pub struct SourcePolicy {
    /// Peers whose `X-Forwarded-For` and PROXY header are believed.
    pub trusted: Vec<Cidr>,
    /// Whether connections start with a PROXY v2 header.
    pub proxy_protocol: ProxyProtocol,
    /// The limits, with the table that tracks sources for them.
    pub limits: Option<(PerSource, Arc<SourceTable>)>,
}

impl SourcePolicy {
    /// The policy of frontend `f`; the table of `previous` (the same
    /// frontend before a reload) is kept when its size and keying stay.
    pub fn new(f: &config::Frontend, previous: Option<&SourcePolicy>) -> SourcePolicy {
        let limits = f.per_source.clone().map(|p| {
            let kept = previous
                .and_then(|prev| prev.limits.as_ref())
                .map(|(_, table)| table)
                .filter(|t| t.max_sources == p.max_sources && t.ipv6_prefix == p.ipv6_prefix)
                .cloned();
            let table = kept.unwrap_or_else(|| Arc::new(SourceTable::new(p.max_sources, p.ipv6_prefix)));
            (p, table)
        });
        SourcePolicy {
            trusted: f.trusted_proxies.clone(),
            proxy_protocol: f.proxy_protocol,
            limits,
        }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        forwarded::is_trusted(&self.trusted, ip)
    }

    /// The client a request on a connection from `peer` comes from.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        forwarded::client(peer, headers, &self.trusted)
    }

    /// Admits a new connection from `source` (after any PROXY header): its
    /// slot in `max_conns` while it is open, `None` when no limit applies.
    pub fn admit_connection(&self, source: IpAddr) -> Result<Option<SourceConn>, Refused> {
        let Some((limits, table)) = &self.limits else {
            return Ok(None);
        };
        if self.is_trusted(source) {
            return Ok(None);
        }
        let now = table.now();
        table.with(source, now, limits.expire, |e| {
            e.totals.connections += 1;
            let refuse = |kind: LimitKind, e: &mut table::Entry, retry_after| {
                e.refused[kind.index()] += 1;
                Err(Refused {
                    kind,
                    source: table.key(source),
                    retry_after,
                    log: e.log_refusal(now),
                })
            };
            if let Some(rate) = limits.conn_rate {
                if over(&mut e.conn_rate, now, rate) {
                    return refuse(LimitKind::ConnRate, e, rate.period);
                }
            }
            if limits.max_conns > 0 && e.conns.load(Ordering::Relaxed) >= limits.max_conns {
                return refuse(LimitKind::MaxConns, e, Duration::ZERO);
            }
            e.conns.fetch_add(1, Ordering::Relaxed);
            Ok(Some(SourceConn(e.conns.clone())))
        })
    }

    /// Admits a request (a WebSocket upgrade when `upgrade`) on a
    /// connection from `peer`.
    pub fn admit_request(&self, peer: IpAddr, headers: &HeaderMap, upgrade: bool) -> Result<(), Refused> {
        let Some((limits, table)) = &self.limits else {
            return Ok(());
        };
        let client = self.client(peer, headers);
        let now = table.now();
        table.with(client, now, limits.expire, |e| {
            let refuse = |kind: LimitKind, e: &mut table::Entry, rate: Rate| {
                e.refused[kind.index()] += 1;
                Err(Refused {
                    kind,
                    source: table.key(client),
                    retry_after: rate.period,
                    log: None,
                })
            };
            e.totals.requests += 1;
            if let Some(rate) = limits.request_rate {
                if over(&mut e.request_rate, now, rate) {
                    return refuse(LimitKind::RequestRate, e, rate);
                }
            }
            if upgrade {
                e.totals.upgrades += 1;
                if let Some(rate) = limits.upgrade_rate {
                    if over(&mut e.upgrade_rate, now, rate) {
                        return refuse(LimitKind::UpgradeRate, e, rate);
                    }
                }
            }
            Ok(())
        })
    }

    /// The `n` sources highest by `by`, and how many are tracked; `None`
    /// when the frontend has no limits.
    pub fn top(&self, n: usize, by: SortBy) -> Option<(Vec<SourceView>, usize)> {
        let (limits, table) = self.limits.as_ref()?;
        let period = |r: Option<Rate>| r.map_or(SHOWN_PERIOD, |r| r.period);
        let mut all = table.snapshot([
            period(limits.conn_rate),
            period(limits.request_rate),
            period(limits.upgrade_rate),
        ]);
        let total = all.len();
        let key = |v: &SourceView| match by {
            SortBy::Conns => u64::from(v.conns),
            SortBy::ConnRate => v.rates.connections,
            SortBy::RequestRate => v.rates.requests,
            SortBy::UpgradeRate => v.rates.upgrades,
            SortBy::Refused => v.refused_total(),
        };
        all.sort_by(|a, b| key(b).cmp(&key(a)).then(a.key.cmp(&b.key)));
        all.truncate(n);
        Some((all, total))
    }
}

/// A source's key as shown: an address, or an IPv6 block.
pub fn source_name(key: IpAddr, ipv6_prefix: u8) -> String {
    match key {
        IpAddr::V6(_) if ipv6_prefix < 128 => format!("{key}/{ipv6_prefix}"),
        _ => key.to_string(),
    }
}

/// Counts an event in `window`; whether that puts it over `rate`.
fn over(window: &mut window::Window, now: u64, rate: Rate) -> bool {
    window.hit(now, rate.period.as_millis() as u64) > u64::from(rate.count)
}

/// What the top sources are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    Conns,
    ConnRate,
    #[default]
    RequestRate,
    UpgradeRate,
    Refused,
}

impl SortBy {
    /// From the admin API's `by=` parameter.
    pub fn parse(s: &str) -> Option<SortBy> {
        Some(match s {
            "conns" => SortBy::Conns,
            "conn_rate" => SortBy::ConnRate,
            "request_rate" => SortBy::RequestRate,
            "upgrade_rate" => SortBy::UpgradeRate,
            "refused" => SortBy::Refused,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: PerSource, trusted: &[&str]) -> SourcePolicy {
        let mut f = config::Frontend::new("f", ([127, 0, 0, 1], 1).into(), "b");
        f.per_source = Some(p);
        f.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
        SourcePolicy::new(&f, None)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn max_conns_counts_open_connections_per_source() {
        let p = policy(
            PerSource {
                max_conns: 2,
                ..PerSource::default()
            },
            &[],
        );
        let a = p.admit_connection(ip("192.0.2.1")).unwrap();
        let b = p.admit_connection(ip("192.0.2.1")).unwrap();
        let refused = p.admit_connection(ip("192.0.2.1")).unwrap_err();
        assert_eq!(refused.kind, LimitKind::MaxConns);
        assert_eq!(refused.log, Some(0));
        assert!(p.admit_connection(ip("192.0.2.1")).unwrap_err().log.is_none());
        assert!(p.admit_connection(ip("192.0.2.2")).is_ok(), "another source");
        drop(a);
        assert!(p.admit_connection(ip("192.0.2.1")).is_ok());
        drop(b);
    }

    #[test]
    fn request_rates_follow_the_forwarded_client_and_upgrades_count_twice() {
        let p = policy(
            PerSource {
                request_rate: Some("3/1m".parse().unwrap()),
                upgrade_rate: Some("1/1m".parse().unwrap()),
                ..PerSource::default()
            },
            &["10.0.0.0/8"],
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        let proxy = ip("10.0.0.1");
        assert!(p.admit_request(proxy, &h, true).is_ok());
        let e = p.admit_request(proxy, &h, true).unwrap_err();
        assert_eq!((e.kind, e.source), (LimitKind::UpgradeRate, ip("203.0.113.9")));
        assert_eq!(e.retry_after, Duration::from_secs(60));
        assert!(p.admit_request(proxy, &h, false).is_ok());
        assert_eq!(
            p.admit_request(proxy, &h, false).unwrap_err().kind,
            LimitKind::RequestRate
        );
        // The proxy's other clients are not affected.
        h.insert("x-forwarded-for", "203.0.113.10".parse().unwrap());
        assert!(p.admit_request(proxy, &h, false).is_ok());
        assert_eq!(source_name("2001:db8::".parse().unwrap(), 64), "2001:db8::/64");
        assert_eq!(source_name(ip("192.0.2.1"), 64), "192.0.2.1");
        let (top, total) = p.top(1, SortBy::Refused).unwrap();
        assert_eq!((top[0].key, total), (ip("203.0.113.9"), 2));
        assert_eq!(top[0].refused, [0, 0, 1, 1]);
    }

    #[test]
    fn trusted_proxies_are_not_limited_by_connection() {
        let p = policy(
            PerSource {
                max_conns: 1,
                ..PerSource::default()
            },
            &["10.0.0.0/8"],
        );
        let _held: Vec<_> = (0..3)
            .map(|_| p.admit_connection(ip("10.1.1.1")).unwrap())
            .collect();
    }
}
