//! What a drill found, in one shape for the terminal (a fixed-width table per
//! drill and a summary with one row per fault) and for machines (`--json`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::faults::{Fault, Timeline};
use super::ledger::Totals;

/// Reconnect times in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Reconnects the figures are taken over.
    pub count: u64,
    /// Median.
    pub p50_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Longest.
    pub max_ms: u64,
}

impl Latency {
    /// From a list of durations (hdrhistogram, 3 significant digits).
    pub fn of(samples: &[Duration]) -> Latency {
        let Ok(mut h) = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3) else {
            return Latency::default();
        };
        for d in samples {
            let ms = (d.as_millis() as u64).clamp(1, 3_600_000);
            // Clamped into the bounds, so recording cannot fail.
            let _ = h.record(ms);
        }
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5),
            p99_ms: h.value_at_quantile(0.99),
            max_ms: h.max(),
        }
    }
}

/// One drill's result.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The fault this drill injected.
    pub fault: Fault,
    /// Clients.
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Sending time in seconds (at least the fault and its healing).
    pub sending_s: f64,
    /// The reconciled ledger over all clients: sent, acked, lost, duplicated…
    pub totals: Totals,
    /// Reconnects (welcomes after the first), and their time from losing the
    /// connection to the next `welcome`.
    pub reconnect: Latency,
    /// The same reconnects, until the end of the new connection's history replay.
    pub caught_up: Latency,
    /// Every acked send, from handing it to the client to its first ack:
    /// the stall a fault causes where nobody reconnects (a Redis failover).
    pub ack_after: Latency,
    /// Seconds from the fault's injection to the last reconnect's welcome: how
    /// long until every client that lost its connection was served again,
    /// detection included (which `reconnect`, measured from the moment a client
    /// noticed, leaves out).
    pub back_after_s: Option<f64>,
    /// Clients whose last instance differs from their first.
    pub moved: u64,
    /// `moved` / clients.
    pub moved_share: f64,
    /// Error frames the clients got (e.g. `unavailable` during a Redis restart).
    pub refused: u64,
    /// Whether every client was quiet (acked, connected, caught up) before the deadline.
    pub quiesced: bool,
    /// Seconds from the end of sending to quiet (or to the deadline).
    pub quiesce_s: f64,
    /// What was done when.
    pub timeline: Timeline,
    /// Where the processes' logs are, when kept.
    pub logs: Option<String>,
    /// A few lost deliveries: `client N room R id I (sent by client K)`.
    pub lost_sample: Vec<String>,
    /// When the ledger is not clean: the processes' warnings and errors.
    pub diagnosis: Vec<String>,
}

impl DrillReport {
    /// Whether every loss column is zero.
    pub fn clean(&self) -> bool {
        self.totals.clean()
    }

    /// The fixed-width table of this drill.
    pub fn table(&self) -> String {
        let t = &self.totals;
        let r = &self.reconnect;
        let mut s = String::new();
        let verdict = if self.clean() { "PASS" } else { "FAIL" };
        let _ = writeln!(
            s,
            "drill {} — {} clients, {} rooms, {:.0} s sending — {verdict}",
            self.fault, self.clients, self.rooms, self.sending_s
        );
        for (at, step) in &self.timeline.steps {
            let _ = writeln!(s, "  t+{at:>5.1}s  {step}");
        }
        let rows: [(&str, String); 22] = [
            ("messages sent", t.sent.to_string()),
            ("messages acked", t.acked.to_string()),
            ("deliveries expected", t.expected.to_string()),
            ("deliveries made", t.made.to_string()),
            ("lost (must be 0)", t.lost.to_string()),
            ("duplicated (must be 0)", t.duplicated.to_string()),
            ("out of order (must be 0)", t.out_of_order.to_string()),
            ("unacked sends (must be 0)", t.unacked.to_string()),
            ("ack conflicts (must be 0)", t.ack_conflicts.to_string()),
            ("clients gave up (must be 0)", t.gave_up.to_string()),
            ("undecodable frames (must be 0)", t.undecodable.to_string()),
            ("acked but not stored (must be 0)", t.acked_not_stored.to_string()),
            ("seen then lost (must be 0)", t.seen_then_lost.to_string()),
            ("cids stored twice (must be 0)", t.cids_twice.to_string()),
            ("reconnects", r.count.to_string()),
            (
                "reconnect p50 / p99 / max",
                format!("{} / {} / {} ms", r.p50_ms, r.p99_ms, r.max_ms),
            ),
            (
                "send to ack p50 / p99 / max",
                format!(
                    "{} / {} / {} ms",
                    self.ack_after.p50_ms, self.ack_after.p99_ms, self.ack_after.max_ms
                ),
            ),
            (
                "reconnect to caught up p50/p99/max",
                format!(
                    "{} / {} / {} ms",
                    self.caught_up.p50_ms, self.caught_up.p99_ms, self.caught_up.max_ms
                ),
            ),
            (
                "all back after the fault",
                match self.back_after_s {
                    Some(s) => format!("{s:.1} s"),
                    None => "nobody left".into(),
                },
            ),
            (
                "clients moved instance",
                format!("{} ({:.0} %)", self.moved, self.moved_share * 100.0),
            ),
            ("error frames", self.refused.to_string()),
            (
                "quiet after sending",
                if self.quiesced {
                    format!("{:.1} s", self.quiesce_s)
                } else {
                    format!("NO (deadline {:.0} s)", self.quiesce_s)
                },
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<34} {v:>20}");
        }
        for lost in &self.lost_sample {
            let _ = writeln!(s, "  lost: {lost}");
        }
        for line in &self.diagnosis {
            let _ = writeln!(s, "  log: {line}");
        }
        if let Some(logs) = &self.logs {
            let _ = writeln!(s, "  logs: {logs}");
        }
        s
    }
}

/// The summary: one row per fault.
pub fn summary(reports: &[DrillReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| fault | clients | acked | expected | made | lost | seen then lost | dup | cid twice | ooo | unacked | gave up | reconnects | p50 ms | p99 ms | max ms | caught up p99 ms | all back s | moved | ack p50/p99/max ms |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in reports {
        let t = &r.totals;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} % | {}/{}/{} |",
            r.fault,
            r.clients,
            t.acked,
            t.expected,
            t.made,
            t.lost,
            t.seen_then_lost,
            t.duplicated,
            t.cids_twice,
            t.out_of_order,
            t.unacked,
            t.gave_up,
            r.reconnect.count,
            r.reconnect.p50_ms,
            r.reconnect.p99_ms,
            r.reconnect.max_ms,
            r.caught_up.p99_ms,
            r.back_after_s.map_or("-".to_string(), |s| format!("{s:.1}")),
            r.moved_share * 100.0,
            r.ack_after.p50_ms,
            r.ack_after.p99_ms,
            r.ack_after.max_ms
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_from_samples() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&samples);
        assert_eq!((l.count, l.p50_ms, l.p99_ms, l.max_ms), (100, 50, 99, 100));
        assert_eq!(Latency::of(&[]).count, 0);
    }
}
