//! Prometheus metrics of one app instance, served as text on `/metrics`.
//! Every metric is created once here so the names are in one place.

use http::{Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use wsmesh_common::protocol::ErrorCode;

use crate::page::{self, Body};

/// Label set `code="bad_json"` and the like.
type CodeLabel = [(&'static str, &'static str); 1];
/// Label set `reason="room"` and the like.
type ReasonLabel = [(&'static str, &'static str); 1];

/// The instance's counters, gauges and histograms.
#[derive(Debug)]
pub struct Metrics {
    /// Where everything is registered, for encoding.
    registry: Registry,
    /// Upgraded WebSockets open now; `routes` raises it when a socket's task
    /// starts and lowers it when the task ends.
    pub connections: Gauge,
    /// Chats stored on behalf of this instance's clients.
    pub messages_in: Counter,
    /// Chats written to this instance's clients (one per socket).
    pub messages_out: Counter,
    /// Sockets closed with 1013 because their queue was full.
    pub queue_drops: Counter,
    /// Redis command latency in seconds.
    pub redis_latency: Histogram,
    /// Refusals by code: `error` frames, and seed clients' dropped messages.
    pub errors: Family<CodeLabel, Counter>,
    /// Authorized `POST /internal/events` received (heartbeats included).
    pub internal_batches: Counter,
    /// Chats dropped because their id was not newer than the room's last.
    pub duplicates_dropped: Counter,
    /// Clients closed with 1008 for earning too many refusals in a window.
    pub error_closes: Counter,
    /// WebSocket requests refused before the upgrade, by reason
    /// (`unauthenticated` 401, `room` 403).
    pub auth_refusals: Family<ReasonLabel, Counter>,
    /// Sockets closed with 4001 because their token expired.
    pub token_expiries: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wsmesh_app");
        let connections = Gauge::default();
        let messages_in = Counter::default();
        let messages_out = Counter::default();
        let queue_drops = Counter::default();
        let redis_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let errors = Family::<CodeLabel, Counter>::default();
        let internal_batches = Counter::default();
        let duplicates_dropped = Counter::default();
        let error_closes = Counter::default();
        let auth_refusals = Family::<ReasonLabel, Counter>::default();
        let token_expiries = Counter::default();
        registry.register("connections", "Open WebSocket connections", connections.clone());
        registry.register(
            "messages_in",
            "Chats stored for local clients",
            messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Chats written to local clients",
            messages_out.clone(),
        );
        registry.register(
            "queue_drops",
            "Clients closed with 1013 because their send queue was full",
            queue_drops.clone(),
        );
        registry.register(
            "redis_latency_seconds",
            "Redis command latency",
            redis_latency.clone(),
        );
        registry.register("errors", "Error frames sent to clients, by code", errors.clone());
        registry.register(
            "internal_batches",
            "Authorized event batches (and heartbeats) from the subscriber",
            internal_batches.clone(),
        );
        registry.register(
            "duplicates_dropped",
            "Chats dropped as not newer than the room's last delivered id",
            duplicates_dropped.clone(),
        );
        registry.register(
            "error_closes",
            "Clients closed with 1008 after too many refusals in a window",
            error_closes.clone(),
        );
        registry.register(
            "auth_refusals",
            "WebSocket requests refused before the upgrade (unauthenticated: 401, room: 403)",
            auth_refusals.clone(),
        );
        registry.register(
            "token_expiries",
            "Sockets closed with 4001 because their token expired",
            token_expiries.clone(),
        );
        for reason in ["unauthenticated", "room"] {
            drop(auth_refusals.get_or_create(&[("reason", reason)]));
        }
        for code in ErrorCode::ALL {
            // Report zero counts too, so dashboards see every code.
            drop(errors.get_or_create(&[("code", code.as_str())]));
        }
        Metrics {
            registry,
            connections,
            messages_in,
            messages_out,
            queue_drops,
            redis_latency,
            errors,
            internal_batches,
            duplicates_dropped,
            error_closes,
            auth_refusals,
            token_expiries,
        }
    }

    /// Counts one refusal by code: an `error` frame, or a seed client's
    /// message that was dropped (those formats have no error frame).
    pub fn error(&self, code: ErrorCode) {
        self.errors.get_or_create(&[("code", code.as_str())]).inc();
    }

    /// The `/metrics` response: every metric in the OpenMetrics text format.
    pub fn response(&self) -> Response<Body> {
        match self.encode() {
            Ok(text) => page::with_type(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(_) => page::text(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n"),
        }
    }

    /// Every metric in the OpenMetrics text format, the body of `/metrics`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_every_metric_and_error_code() {
        let m = Metrics::new();
        m.error(ErrorCode::RateLimited);
        m.redis_latency.observe(0.001);
        let text = m.encode().expect("encodes");
        for name in [
            "wsmesh_app_connections",
            "wsmesh_app_messages_in_total",
            "wsmesh_app_messages_out_total",
            "wsmesh_app_queue_drops_total",
            "wsmesh_app_redis_latency_seconds_bucket",
            "wsmesh_app_internal_batches_total",
            "wsmesh_app_duplicates_dropped_total",
            "wsmesh_app_error_closes_total",
            "wsmesh_app_auth_refusals_total{reason=\"room\"} 0",
            "wsmesh_app_token_expiries_total",
            "wsmesh_app_errors_total{code=\"bad_json\"} 0",
            "wsmesh_app_errors_total{code=\"rate_limited\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
