//! `/stats`: HTML tables like HAProxy's stats page — per frontend its
//! connections, TLS handshakes, client errors, refusals by per-source
//! limits and PROXY checks, and its busiest sources; per server its state,
//! last check and when the state last changed, current / max / total
//! sessions, bytes in and out, response classes, weight and, for a hash
//! backend, the keys its open sessions were placed by. Refreshes itself.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::metrics::CLASSES;

/// Hash keys shown per server on the page (busiest first).
const KEYS_SHOWN: usize = 20;

/// Sources shown per frontend (busiest first).
const SOURCES_SHOWN: usize = 20;

use crate::runtime::{Frontend, Runtime};
use crate::source_limits::{source_name, SortBy};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the page.
pub fn render(rt: &Runtime) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>lb stats</title><style>body{font-family:sans-serif;font-size:13px}\
         table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #999;padding:2px 6px;text-align:right}\
         th{background:#ddd}td.n{text-align:left}.up{background:#c0ffc0}.down{background:#ffa0a0}\
         .drain{background:#a0a0ff}.maint{background:#c0c0c0}</style></head><body><h1>lb statistics</h1>",
    );
    h.push_str(
        "<h2>frontends</h2><table><tr><th>frontend</th><th>address</th><th>connections</th>\
         <th>TLS handshakes</th><th>request errors</th><th>limited</th><th>PROXY refused</th></tr>",
    );
    let mut frontends: Vec<_> = rt.frontends.iter().collect();
    frontends.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    for (addr, f) in &frontends {
        let c = &f.counters;
        let counts = |pairs: Vec<(&str, u64)>| {
            let shown: Vec<String> = pairs
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if shown.is_empty() {
                "0".to_string()
            } else {
                shown.join(", ")
            }
        };
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{addr}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&f.name),
            c.connections.load(Ordering::Relaxed),
            c.tls_handshakes.load(Ordering::Relaxed),
            c.request_errors.load(Ordering::Relaxed),
            counts(c.limited_by_kind().map(|(k, n)| (k.as_str(), n)).collect()),
            counts(
                c.proxy_refused_by_reason()
                    .map(|(r, n)| (r.as_str(), n))
                    .collect()
            ),
        );
    }
    h.push_str("</table>");
    for (_, f) in &frontends {
        sources_table(&mut h, f);
    }
    for b in &rt.backends {
        let _ = write!(
            h,
            "<h2>backend {} ({:?}{})</h2><table><tr><th>server</th><th>address</th><th>state</th><th>last change</th>\
             <th>check</th><th>weight</th><th>cur</th><th>max</th><th>total</th><th>bytes in</th><th>bytes out</th>",
            esc(&b.name),
            b.balance,
            b.hashing
                .as_ref()
                .map(|h| format!(" on {}, bound {}%", esc(&h.key.to_string()), h.factor))
                .unwrap_or_default()
        );
        for c in CLASSES {
            let _ = write!(h, "<th>{c}</th>");
        }
        h.push_str("<th>conn err</th><th>hash keys (sessions)</th></tr>");
        for s in &b.servers {
            let v = s.view();
            let c = &s.shared.counters;
            let check = match &v.last_check {
                Some(r) => format!(
                    "{}{} {}",
                    r.status.as_str(),
                    r.code.map(|c| format!(" {c}")).unwrap_or_default(),
                    esc(&r.detail)
                ),
                None if b.check.is_some() => "INI".into(),
                None => "no check".into(),
            };
            let _ = write!(
                h,
                "<tr class=\"{st}\"><td class=\"n\">{name}{backup}</td><td class=\"n\">{addr}</td><td class=\"n\">{st}</td>\
                 <td>{since}s</td><td class=\"n\">{check}</td><td>{w}</td><td>{cur}</td><td>{max}</td><td>{tot}</td>\
                 <td>{bin}</td><td>{bout}</td>",
                st = v.state.as_str(),
                name = esc(&s.name),
                backup = if s.backup { " (backup)" } else { "" },
                addr = s.addr,
                since = v.since_change.as_secs(),
                w = s.weight,
                cur = s.sessions(),
                max = c.max_sessions.load(Ordering::Relaxed),
                tot = c.total_sessions.load(Ordering::Relaxed),
                bin = c.bytes_in.load(Ordering::Relaxed),
                bout = c.bytes_out.load(Ordering::Relaxed),
            );
            for n in &c.responses {
                let _ = write!(h, "<td>{}</td>", n.load(Ordering::Relaxed));
            }
            let (keys, total) = c.keys.top(KEYS_SHOWN);
            let mut shown: Vec<String> = keys.iter().map(|(k, n)| format!("{} ({n})", esc(k))).collect();
            if total > keys.len() {
                shown.push(format!("… {} more", total - keys.len()));
            }
            let _ = write!(
                h,
                "<td>{}</td><td class=\"n\">{}</td></tr>",
                c.connect_errors.load(Ordering::Relaxed),
                shown.join(", ")
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

/// The busiest sources of a frontend with per-source limits.
fn sources_table(h: &mut String, f: &Frontend) {
    let Some((shown, tracked)) = f.sources.top(SOURCES_SHOWN, SortBy::RequestRate) else {
        return;
    };
    let ipv6_prefix = f.sources.limits.as_ref().map_or(128, |(l, _)| l.ipv6_prefix);
    let _ = write!(
        h,
        "<h2>frontend {} sources ({tracked} tracked, busiest first)</h2><table><tr><th>source</th>\
         <th>conns</th><th>conn rate</th><th>request rate</th><th>upgrade rate</th><th>requests</th>\
         <th>refused</th><th>idle</th></tr>",
        esc(&f.name)
    );
    for v in &shown {
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}s</td></tr>",
            source_name(v.key, ipv6_prefix),
            v.conns,
            v.rates.connections,
            v.rates.requests,
            v.rates.upgrades,
            v.totals.requests,
            v.refused_total(),
            v.idle.as_secs(),
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
