//! Prometheus counters of the subscriber, served on `/metrics`. One struct so
//! every part increments the same registered series.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every series the subscriber exports (names get the `wsmesh_subscriber_` prefix).
#[derive(Debug)]
pub struct Metrics {
    /// Registry the series below are registered in.
    registry: Registry,
    /// Chats posted to the app and accepted by it.
    pub forwarded_chats: Counter,
    /// Non-empty batches the app accepted.
    pub batches: Counter,
    /// Heartbeats (empty batches) the app accepted.
    pub heartbeats: Counter,
    /// POSTs retried after a connection error, timeout, 401 or 5xx.
    pub retries: Counter,
    /// Batches the app refused as malformed (400) and that were dropped.
    pub batches_rejected: Counter,
    /// Chats waiting to be posted.
    pub queue_depth: Gauge,
    /// Chats dropped because the queue overflowed (refilled from the streams).
    pub dropped_overflow: Counter,
    /// Times the Redis subscription was lost and re-established.
    pub redis_reconnects: Counter,
    /// Gap fills run (after every subscribe and after drops).
    pub gap_fills: Counter,
    /// Chats read from the streams by gap fills.
    pub chats_refilled: Counter,
    /// Pub/sub payloads that were not a valid chat and were skipped.
    pub malformed_payloads: Counter,
    /// Room channels subscribed now (those in their grace included).
    pub subscribed_rooms: Gauge,
    /// Room channels SUBSCRIBEd (again after every reconnect).
    pub room_subscribes: Counter,
    /// Room channels UNSUBSCRIBEd after their grace.
    pub room_unsubscribes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wsmesh_subscriber");
        let m = Metrics {
            forwarded_chats: Counter::default(),
            batches: Counter::default(),
            heartbeats: Counter::default(),
            retries: Counter::default(),
            batches_rejected: Counter::default(),
            queue_depth: Gauge::default(),
            dropped_overflow: Counter::default(),
            redis_reconnects: Counter::default(),
            gap_fills: Counter::default(),
            chats_refilled: Counter::default(),
            malformed_payloads: Counter::default(),
            subscribed_rooms: Gauge::default(),
            room_subscribes: Counter::default(),
            room_unsubscribes: Counter::default(),
            registry: Registry::default(),
        };
        let counters = [
            (
                "forwarded_chats",
                "Chats posted to the app and accepted by it",
                &m.forwarded_chats,
            ),
            ("batches", "Non-empty batches the app accepted", &m.batches),
            ("heartbeats", "Heartbeats the app accepted", &m.heartbeats),
            (
                "post_retries",
                "POSTs retried (connection error, timeout, 401, 5xx)",
                &m.retries,
            ),
            (
                "batches_rejected",
                "Batches refused with 400 and dropped",
                &m.batches_rejected,
            ),
            (
                "chats_dropped_overflow",
                "Chats dropped on queue overflow",
                &m.dropped_overflow,
            ),
            (
                "redis_reconnects",
                "Redis subscriptions lost and re-established",
                &m.redis_reconnects,
            ),
            ("gap_fills", "Gap fills run", &m.gap_fills),
            (
                "chats_refilled",
                "Chats read from the streams by gap fills",
                &m.chats_refilled,
            ),
            (
                "malformed_payloads",
                "Pub/sub payloads skipped as malformed",
                &m.malformed_payloads,
            ),
            (
                "room_subscribes",
                "Room channels subscribed (again after every reconnect)",
                &m.room_subscribes,
            ),
            (
                "room_unsubscribes",
                "Room channels unsubscribed after their grace",
                &m.room_unsubscribes,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register("queue_depth", "Chats waiting to be posted", m.queue_depth.clone());
        registry.register(
            "subscribed_rooms",
            "Room channels subscribed now",
            m.subscribed_rooms.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_series_with_its_value() {
        let m = Metrics::default();
        m.forwarded_chats.inc_by(3);
        m.queue_depth.set(7);
        m.subscribed_rooms.set(2);
        let text = m.render().unwrap();
        assert!(
            text.contains("wsmesh_subscriber_forwarded_chats_total 3"),
            "{text}"
        );
        assert!(text.contains("wsmesh_subscriber_subscribed_rooms 2"), "{text}");
        assert!(text.contains("wsmesh_subscriber_queue_depth 7"), "{text}");
        for name in [
            "gap_fills_total",
            "chats_dropped_overflow_total",
            "redis_reconnects_total",
            "room_subscribes_total",
            "room_unsubscribes_total",
        ] {
            assert!(
                text.contains(&format!("wsmesh_subscriber_{name} 0")),
                "{name}: {text}"
            );
        }
    }
}
