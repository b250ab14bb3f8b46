//! What a bench run found, in one shape for the terminal table,
//! `report.md` and `report.json`: per metric, every system's samples (one
//! per round, systems alternating), their median, min and max, and the ratio
//! of the reference system (the lb, or wsmesh) to each peer. The performance
//! goals are checked against the medians here, and said plainly when missed.

use std::fmt::Write as _;

use serde::Serialize;

use super::sys::Machine;

/// One measured quantity of one scenario, for every system.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Scenario id and title, e.g. `1 https keep-alive`.
    pub scenario: String,
    /// What is measured, e.g. `requests/s`.
    pub name: String,
    /// Whether more is better (throughput) or less (latency, memory).
    pub higher_is_better: bool,
    /// The system the ratio column is about (`lb`, `wsmesh`).
    pub reference: String,
    /// (system, samples), in the order systems ran.
    pub samples: Vec<(String, Vec<f64>)>,
}

/// Median, min and max of one system's samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// Summarises samples; `None` when there are none.
pub fn summary(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

impl Metric {
    /// A metric with no samples yet.
    pub fn new(scenario: &str, name: &str, higher_is_better: bool, reference: &str) -> Metric {
        Metric {
            scenario: scenario.into(),
            name: name.into(),
            higher_is_better,
            reference: reference.into(),
            samples: Vec::new(),
        }
    }

    /// Adds one sample for `system`.
    pub fn push(&mut self, system: &str, value: f64) {
        match self.samples.iter_mut().find(|(s, _)| s == system) {
            Some((_, v)) => v.push(value),
            None => self.samples.push((system.to_string(), vec![value])),
        }
    }

    /// The summary of `system`.
    pub fn of(&self, system: &str) -> Option<Summary> {
        self.samples
            .iter()
            .find(|(s, _)| s == system)
            .and_then(|(_, v)| summary(v))
    }

    /// reference median ÷ `system` median.
    pub fn ratio(&self, system: &str) -> Option<f64> {
        let r = self.of(&self.reference)?.median;
        let s = self.of(system)?.median;
        (s != 0.0).then(|| r / s)
    }
}

/// One performance goal and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// The goal as stated.
    pub goal: String,
    /// Met, missed, or not measured in this run.
    pub met: Option<bool>,
    /// The numbers behind it.
    pub detail: String,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: String,
    /// The command that produced it.
    pub command: String,
    /// Start, UTC (RFC 3339-ish, from the system clock).
    pub started: String,
    /// Whole run, seconds.
    pub seconds: f64,
    /// CPU, memory and limits the numbers were measured on.
    pub machine: Machine,
    /// Rounds per scenario (each system once per round).
    pub rounds: usize,
    /// Scenario parameters, one line each.
    pub parameters: Vec<String>,
    /// Every scenario's metrics, in run order.
    pub metrics: Vec<Metric>,
    /// Goals checked against the medians.
    pub goals: Vec<Goal>,
    /// Errors and other things a reader must know.
    pub notes: Vec<String>,
}

/// Formats a number compactly for tables.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// The results table (markdown; also readable in a terminal).
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("| scenario | metric | system | median | min | max | ref ÷ system |\n");
        out.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: |\n");
        for m in &self.metrics {
            for (system, _) in &m.samples {
                let Some(s) = m.of(system) else { continue };
                let ratio = if *system == m.reference {
                    "—".to_string()
                } else {
                    m.ratio(system)
                        .map(|r| {
                            format!(
                                "{} {}",
                                fmt_num(r),
                                if m.higher_is_better {
                                    "(↑ better)"
                                } else {
                                    "(↓ better)"
                                }
                            )
                        })
                        .unwrap_or_else(|| "n/a".into())
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    m.scenario,
                    m.name,
                    system,
                    fmt_num(s.median),
                    fmt_num(s.min),
                    fmt_num(s.max),
                    ratio
                );
            }
        }
        out
    }

    /// The goals as a list.
    pub fn goals_text(&self) -> String {
        let mut out = String::new();
        for g in &self.goals {
            let mark = match g.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let _ = writeln!(out, "- **{mark}** — {}: {}", g.goal, g.detail);
        }
        out
    }

    /// `report.md`.
    pub fn markdown(&self, charts: &[String]) -> String {
        let m = &self.machine;
        let mut out = format!(
            "# wsmesh benchmark ({mode})\n\n`{cmd}` — started {started}, took {secs:.0} s, {rounds} rounds per scenario, systems alternating (A B A B …).\n\nMachine: {cpu}, {cores} CPUs, {mem} GiB RAM, {kernel}, open-file limit {nofile}. Load generator, proxies, backends and Redis all share these CPUs.\n\n",
            mode = self.mode,
            cmd = self.command,
            started = self.started,
            secs = self.seconds,
            rounds = self.rounds,
            cpu = m.cpu,
            cores = m.cores,
            mem = m.mem_gib,
            kernel = m.kernel,
            nofile = m.nofile,
        );
        out.push_str("## Results\n\n");
        out.push_str(&self.table());
        out.push_str("\nThe last column is the reference system's median (the lb in scenarios 1–4, 6 and 7, wsmesh in 5, wsmesh hash in 8) divided by that system's median.\n\n## Goals\n\n");
        out.push_str(&self.goals_text());
        out.push_str("\n## Parameters\n\n");
        for p in &self.parameters {
            let _ = writeln!(out, "- {p}");
        }
        if !self.notes.is_empty() {
            out.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        if !charts.is_empty() {
            out.push_str("\n## Charts\n\n");
            for c in charts {
                let _ = writeln!(out, "![{c}]({c})");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_middle_and_the_ends() {
        let s = summary(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(summary(&[1.0, 2.0, 3.0, 10.0]).unwrap().median, 2.5);
        assert!(summary(&[]).is_none());
    }

    #[test]
    fn ratio_is_reference_over_system() {
        let mut m = Metric::new("1", "req/s", true, "lb");
        m.push("lb", 100.0);
        m.push("haproxy", 50.0);
        assert_eq!(m.ratio("haproxy"), Some(2.0));
        assert_eq!(m.ratio("none"), None);
    }
}
