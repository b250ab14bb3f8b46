//! What a host-loss drill found: the rows of `lab drill`'s table (the same
//! ledger, `drill::ledger::Totals`, store rows included), and a
//! summary with one markdown row per fault for `docs/failover.md`.

use std::fmt::Write as _;

use serde::Serialize;

use super::hostloss::Fault;
use crate::drill::faults::Timeline;
use crate::drill::ledger::Totals;
use crate::drill::report::Latency;

/// One host-loss drill's result.
#[derive(Debug, Clone, Serialize)]
pub struct HostLossReport {
    /// The host that was lost.
    pub fault: Fault,
    /// Clients.
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Sending time in seconds.
    pub sending_s: f64,
    /// The ledger: the clients against each other and against the final
    /// master's streams (sent, acked, lost, seen then lost, duplicated…).
    pub totals: Totals,
    /// Reconnects, from a client losing its connection to the next `welcome`.
    pub reconnect: Latency,
    /// Per client, the longest silence (no chat received) that ended after
    /// the fault: what a user saw of it, detection included.
    pub stall: Latency,
    /// From the fault to the end of the last client's stall: when everyone
    /// received chats again.
    pub all_back_s: Option<f64>,
    /// Whether every client was quiet before the deadline.
    pub quiesced: bool,
    /// Seconds from the end of sending to quiet (or to the deadline).
    pub quiesce_s: f64,
    /// What was done when.
    pub timeline: Timeline,
}

impl HostLossReport {
    /// Whether every loss column, of the clients and of the store, is zero.
    pub fn clean(&self) -> bool {
        self.totals.clean()
    }

    /// The fixed-width table of this drill.
    pub fn table(&self) -> String {
        let t = &self.totals;
        let ms = |l: &Latency| format!("{} / {} / {} ms", l.p50_ms, l.p99_ms, l.max_ms);
        let rows: Vec<(&str, String)> = vec![
            ("messages sent", t.sent.to_string()),
            ("messages acked", t.acked.to_string()),
            ("entries in the final master", t.stored.to_string()),
            ("deliveries expected", t.expected.to_string()),
            ("deliveries made", t.made.to_string()),
            ("lost (must be 0)", t.lost.to_string()),
            ("acked but not stored (must be 0)", t.acked_not_stored.to_string()),
            ("seen then lost (must be 0)", t.seen_then_lost.to_string()),
            ("duplicated (must be 0)", t.duplicated.to_string()),
            ("cid stored twice (must be 0)", t.cids_twice.to_string()),
            ("out of order (must be 0)", t.out_of_order.to_string()),
            ("unacked sends (must be 0)", t.unacked.to_string()),
            ("ack conflicts (must be 0)", t.ack_conflicts.to_string()),
            ("clients gave up (must be 0)", t.gave_up.to_string()),
            ("undecodable frames (must be 0)", t.undecodable.to_string()),
            ("reconnects", self.reconnect.count.to_string()),
            ("reconnect p50 / p99 / max", ms(&self.reconnect)),
            ("stall p50 / p99 / max", ms(&self.stall)),
            (
                "all back after the fault",
                self.all_back_s
                    .map_or_else(|| "never".to_string(), |s| format!("{s:.1} s")),
            ),
            (
                "quiet after sending",
                match self.quiesced {
                    true => format!("{:.1} s", self.quiesce_s),
                    false => format!("NO (deadline {:.0} s)", self.quiesce_s),
                },
            ),
        ];
        let mut s = String::new();
        let _ = writeln!(
            s,
            "drill {} — {} clients, {} rooms, {:.0} s sending — {}",
            self.fault,
            self.clients,
            self.rooms,
            self.sending_s,
            if self.clean() { "PASS" } else { "FAIL" }
        );
        for (at, step) in &self.timeline.steps {
            let _ = writeln!(s, "  t+{at:>5.1}s  {step}");
        }
        for (k, v) in rows {
            let _ = writeln!(s, "  {k:<34} {v:>20}");
        }
        s
    }
}

/// One markdown row per drill, with its header.
pub fn summary(reports: &[HostLossReport]) -> String {
    let mut s = String::from(
        "| fault | clients | acked | expected | made | lost | seen then lost | dup | cid twice | ooo | unacked | gave up | reconnects | reconnect p50 / p99 / max ms | stall p50 / p99 / max ms | all back s |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in reports {
        let t = &r.totals;
        let l = |l: &Latency| format!("{} / {} / {}", l.p50_ms, l.p99_ms, l.max_ms);
        let cells = [
            r.fault.to_string(),
            r.clients.to_string(),
            t.acked.to_string(),
            t.expected.to_string(),
            t.made.to_string(),
            t.lost.to_string(),
            t.seen_then_lost.to_string(),
            t.duplicated.to_string(),
            t.cids_twice.to_string(),
            t.out_of_order.to_string(),
            t.unacked.to_string(),
            t.gave_up.to_string(),
            r.reconnect.count.to_string(),
            l(&r.reconnect),
            l(&r.stall),
            r.all_back_s
                .map_or_else(|| "-".to_string(), |s| format!("{s:.1}")),
        ];
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}
