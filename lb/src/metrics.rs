//! `/metrics` in Prometheus text format: per-frontend connections, TLS
//! handshakes, client errors, per-source limit and PROXY refusals and
//! tracked sources; per-server state, sessions, bytes,
//! response classes and connect errors. Values are read from the live
//! counters at scrape time, so there is no second set of numbers to keep
//! in step.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::runtime::Runtime;
use crate::upstream::ServerState;

type Labels = Vec<(String, String)>;

/// Response class labels, in the order of `Counters::responses`.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Renders the metrics of `rt`.
pub fn render(rt: &Runtime) -> Result<String, std::fmt::Error> {
    let up = Family::<Labels, Gauge>::default();
    let state = Family::<Labels, Gauge>::default();
    let weight = Family::<Labels, Gauge>::default();
    let sessions = Family::<Labels, Gauge>::default();
    let max_sessions = Family::<Labels, Gauge>::default();
    let total = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let bytes_in = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let bytes_out = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let responses = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let connect_errors = Family::<Labels, Counter<u64, AtomicU64>>::default();
    for b in &rt.backends {
        for s in &b.servers {
            let labels = vec![
                ("backend".to_string(), b.name.clone()),
                ("server".to_string(), s.name.clone()),
            ];
            let c = &s.shared.counters;
            let shown = s.state();
            up.get_or_create(&labels).set(i64::from(shown == ServerState::Up));
            for st in [
                ServerState::Up,
                ServerState::Down,
                ServerState::Draining,
                ServerState::Maint,
            ] {
                let mut l = labels.clone();
                l.push(("state".into(), st.as_str().into()));
                state.get_or_create(&l).set(i64::from(shown == st));
            }
            weight.get_or_create(&labels).set(i64::from(s.weight));
            sessions.get_or_create(&labels).set(s.sessions() as i64);
            max_sessions
                .get_or_create(&labels)
                .set(c.max_sessions.load(Ordering::Relaxed) as i64);
            total
                .get_or_create(&labels)
                .inc_by(c.total_sessions.load(Ordering::Relaxed));
            bytes_in
                .get_or_create(&labels)
                .inc_by(c.bytes_in.load(Ordering::Relaxed));
            bytes_out
                .get_or_create(&labels)
                .inc_by(c.bytes_out.load(Ordering::Relaxed));
            connect_errors
                .get_or_create(&labels)
                .inc_by(c.connect_errors.load(Ordering::Relaxed));
            for (class, n) in CLASSES.iter().zip(&c.responses) {
                let mut l = labels.clone();
                l.push(("class".into(), (*class).into()));
                responses.get_or_create(&l).inc_by(n.load(Ordering::Relaxed));
            }
        }
    }
    let fe_connections = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let fe_handshakes = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let fe_errors = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let fe_limited = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let fe_proxy_refused = Family::<Labels, Counter<u64, AtomicU64>>::default();
    let fe_sources = Family::<Labels, Gauge>::default();
    let fe_evicted = Family::<Labels, Counter<u64, AtomicU64>>::default();
    for f in rt.frontends.values() {
        let labels = vec![("frontend".to_string(), f.name.clone())];
        let c = &f.counters;
        fe_connections
            .get_or_create(&labels)
            .inc_by(c.connections.load(Ordering::Relaxed));
        fe_handshakes
            .get_or_create(&labels)
            .inc_by(c.tls_handshakes.load(Ordering::Relaxed));
        fe_errors
            .get_or_create(&labels)
            .inc_by(c.request_errors.load(Ordering::Relaxed));
        let with = |key: &str, value: &str| {
            let mut l = labels.clone();
            l.push((key.to_string(), value.to_string()));
            l
        };
        for (kind, n) in c.limited_by_kind() {
            fe_limited.get_or_create(&with("limit", kind.as_str())).inc_by(n);
        }
        for (reason, n) in c.proxy_refused_by_reason() {
            fe_proxy_refused
                .get_or_create(&with("reason", reason.as_str()))
                .inc_by(n);
        }
        if let Some((_, table)) = &f.sources.limits {
            fe_sources.get_or_create(&labels).set(table.len() as i64);
            fe_evicted
                .get_or_create(&labels)
                .inc_by(table.evicted.load(Ordering::Relaxed));
        }
    }
    let mut registry = Registry::with_prefix("lb");
    registry.register(
        "frontend_connections",
        "Client connections accepted",
        fe_connections,
    );
    registry.register(
        "frontend_tls_handshakes",
        "TLS handshakes completed",
        fe_handshakes,
    );
    registry.register(
        "frontend_request_errors",
        "Requests refused because of the client (framing, limits, timeout http-request, malformed body)",
        fe_errors,
    );
    registry.register(
        "frontend_limited",
        "Connections and requests refused by a per-source limit, by limit",
        fe_limited,
    );
    registry.register(
        "frontend_proxy_refused",
        "Connections closed by the PROXY protocol check (untrusted peer, invalid or missing header)",
        fe_proxy_refused,
    );
    registry.register(
        "frontend_sources",
        "Client sources tracked for the per-source limits",
        fe_sources,
    );
    registry.register(
        "frontend_sources_evicted",
        "Tracked sources forgotten because the table was full",
        fe_evicted,
    );
    registry.register("server_up", "1 when the server is up and ready", up);
    registry.register("server_state", "1 for the server's current state", state);
    registry.register("server_weight", "Configured weight", weight);
    registry.register("server_sessions", "Current sessions", sessions);
    registry.register("server_sessions_max", "Highest concurrent sessions", max_sessions);
    registry.register("server_session_starts", "Sessions started since start", total);
    registry.register(
        "server_bytes_in",
        "Body bytes from clients to the server",
        bytes_in,
    );
    registry.register(
        "server_bytes_out",
        "Body bytes from the server to clients",
        bytes_out,
    );
    registry.register("server_responses", "Responses by status class", responses);
    registry.register(
        "server_connect_errors",
        "Failed connects to the server",
        connect_errors,
    );
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}
