//! `GET /api/sources?top=N&by=KEY`: per frontend with per-source limits,
//! its limits and the `N` sources (default 20, at most 1000) highest by
//! `KEY` (`request_rate`, the default; `conns`, `conn_rate`,
//! `upgrade_rate` or `refused`), each with its open connections, current
//! rates, totals and refusals by limit.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::runtime::Runtime;
use crate::source_limits::{source_name, LimitKind, SortBy, SourceView};

/// Sources listed per frontend unless `top` says otherwise, and at most.
pub const TOP_DEFAULT: usize = 20;
pub const TOP_MAX: usize = 1000;

/// `top` and `by` from a query string; `Err` names the bad parameter.
pub fn query(q: Option<&str>) -> Result<(usize, SortBy), String> {
    let mut top = TOP_DEFAULT;
    let mut by = SortBy::default();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "top" => {
                top = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=TOP_MAX).contains(n))
                    .ok_or_else(|| format!("top must be 1 to {TOP_MAX}"))?
            }
            "by" => {
                by = SortBy::parse(v)
                    .ok_or("by must be conns, conn_rate, request_rate, upgrade_rate or refused")?
            }
            _ => return Err(format!("unknown parameter {k:?}")),
        }
    }
    Ok((top, by))
}

/// Refusal counts by limit name.
pub fn by_limit(counts: impl Iterator<Item = (LimitKind, u64)>) -> Value {
    let map: Map<String, Value> = counts.map(|(k, n)| (k.as_str().to_string(), json!(n))).collect();
    Value::Object(map)
}

fn source_json(v: &SourceView, ipv6_prefix: u8) -> Value {
    json!({
        "source": source_name(v.key, ipv6_prefix),
        "conns": v.conns,
        "conn_rate": v.rates.connections,
        "request_rate": v.rates.requests,
        "upgrade_rate": v.rates.upgrades,
        "connections_total": v.totals.connections,
        "requests_total": v.totals.requests,
        "upgrades_total": v.totals.upgrades,
        "refused": by_limit(LimitKind::ALL.iter().map(|k| (*k, v.refused[k.index()]))),
        "idle_secs": v.idle.as_secs(),
    })
}

fn secs(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// The JSON of `GET /api/sources`, frontends in name order.
pub fn sources_json(rt: &Runtime, top: usize, by: SortBy) -> Value {
    let mut frontends: Vec<_> = rt.frontends.values().collect();
    frontends.sort_by(|a, b| a.name.cmp(&b.name));
    let frontends: Vec<Value> = frontends
        .into_iter()
        .map(|f| {
            let (limits, table) = match &f.sources.limits {
                Some((l, t)) => (l, t),
                None => return json!({ "name": f.name, "limits": null, "tracked": 0, "sources": [] }),
            };
            let rate = |r: Option<crate::config::Rate>| r.map(|r| r.to_string());
            let (shown, tracked) = f.sources.top(top, by).unwrap_or_default();
            json!({
                "name": f.name,
                "limits": {
                    "max_conns": limits.max_conns,
                    "conn_rate": rate(limits.conn_rate),
                    "request_rate": rate(limits.request_rate),
                    "upgrade_rate": rate(limits.upgrade_rate),
                    "max_sources": limits.max_sources,
                    "expire": secs(limits.expire),
                    "ipv6_prefix": limits.ipv6_prefix,
                },
                "tracked": tracked,
                "evicted": table.evicted.load(std::sync::atomic::Ordering::Relaxed),
                "sources": shown.iter().map(|v| source_json(v, table.ipv6_prefix)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "frontends": frontends })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        assert_eq!(query(None), Ok((TOP_DEFAULT, SortBy::RequestRate)));
        assert_eq!(query(Some("top=5&by=conns")), Ok((5, SortBy::Conns)));
        assert!(query(Some("top=0")).is_err());
        assert!(query(Some("top=5000")).is_err());
        assert!(query(Some("by=bytes")).is_err());
        assert!(query(Some("limit=3")).is_err());
    }
}
