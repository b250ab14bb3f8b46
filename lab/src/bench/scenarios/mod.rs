//! The eight benchmark scenarios and their sizes. `proxy` holds 1–4 and 7
//! (lb vs HAProxy vs direct on the fast backend), `chat` holds 5–6 (wsmesh
//! vs the peers), `scale_out` holds 8 (CPU per delivery as instances grow,
//! sized by its own `ScaleParams`). Each scenario runs every system once
//! per round, alternating, so
//! drift on the machine hits all systems alike.

pub mod chat;
pub mod proxy;
pub mod scale_out;

use std::time::Duration;

use super::report::Metric;

/// Sizes and durations of one bench run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Rounds for scenarios 1–3 and 5 (each system once per round).
    pub rounds: usize,
    /// Rounds for scenario 4.
    pub tunnel_rounds: usize,
    /// Length of one measured run in scenarios 1–3.
    pub duration: Duration,
    /// Warm-up before each scenario's first round, per system.
    pub warmup: Duration,
    /// Keep-alive connections in scenario 1.
    pub keepalive_conns: usize,
    /// Concurrent connect loops in scenario 2.
    pub handshake_concurrency: usize,
    /// HTTP/2 connections in scenario 7.
    pub h2_conns: usize,
    /// Requests in flight per HTTP/2 connection in scenario 7.
    pub h2_streams: usize,
    /// Connection counts of scenario 3.
    pub echo_conns: Vec<usize>,
    /// Idle tunnels in scenario 4.
    pub tunnels: usize,
    /// Upper bound on operations in any one run.
    pub max_ops: u64,
    /// Scenario 5: rooms.
    pub rooms: usize,
    /// Scenario 5: clients per room.
    pub per_room: usize,
    /// Scenario 5: senders.
    pub senders: usize,
    /// Scenario 5: the fixed offered rate, messages/s over all senders.
    pub offered_rate: f64,
    /// Scenario 5: messages each sender keeps in flight at saturation.
    pub window: usize,
    /// Scenario 5: sending time per run.
    pub chat_duration: Duration,
    /// Scenario 5: how long deliveries of messages sent in the window still count.
    pub grace: Duration,
    /// Scenario 6: most idle chat clients.
    pub scale_clients: usize,
    /// Scenario 6: time budget for opening them.
    pub scale_time: Duration,
    /// Scenario 6: memory budget for lb + apps, bytes.
    pub scale_memory: u64,
}

impl Params {
    /// `make bench QUICK=1`: about two minutes.
    pub fn quick() -> Params {
        Params {
            rounds: 2,
            tunnel_rounds: 1,
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(300),
            keepalive_conns: 32,
            handshake_concurrency: 16,
            h2_conns: 16,
            h2_streams: 10,
            echo_conns: vec![1, 100, 1000],
            tunnels: 2000,
            max_ops: 5_000_000,
            rooms: 10,
            per_room: 20,
            senders: 10,
            offered_rate: 100.0,
            window: 16,
            chat_duration: Duration::from_secs(2),
            grace: Duration::from_secs(1),
            scale_clients: 2000,
            scale_time: Duration::from_secs(20),
            scale_memory: 2 << 30,
        }
    }

    /// `make bench`: the full run.
    pub fn full() -> Params {
        Params {
            rounds: 3,
            tunnel_rounds: 2,
            duration: Duration::from_secs(8),
            warmup: Duration::from_secs(2),
            keepalive_conns: 64,
            handshake_concurrency: 32,
            h2_conns: 32,
            h2_streams: 10,
            echo_conns: vec![1, 100, 1000],
            // 10k asked; each proxied tunnel costs the proxy two descriptors
            // and the open-file limit here is 20000 (see the notes).
            tunnels: 9000,
            max_ops: 50_000_000,
            rooms: 20,
            per_room: 50,
            senders: 20,
            offered_rate: 200.0,
            window: 16,
            chat_duration: Duration::from_secs(8),
            grace: Duration::from_secs(2),
            scale_clients: 8000,
            scale_time: Duration::from_secs(90),
            scale_memory: 4 << 30,
        }
    }

    /// One line per scenario, for the report.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "rounds: {} (scenario 4: {}); warm-up {:?} per system before each scenario",
                self.rounds, self.tunnel_rounds, self.warmup
            ),
            format!(
                "1: {} keep-alive HTTPS connections, GET of a 13-byte body, and again of a 3 KB body (about the chat page), {:?} per run",
                self.keepalive_conns, self.duration
            ),
            "1–3, 7: CPU µs per operation = the proxy process's user + system CPU time (/proc/PID/stat, all threads) over the run ÷ operations that succeeded".to_string(),
            format!(
                "2: {} loops of connect + full TLS handshake + one request + close, {:?} per run",
                self.handshake_concurrency, self.duration
            ),
            format!(
                "3: WebSocket echo of 32-byte text, one message in flight per connection, {:?} connections, {:?} per run",
                self.echo_conns, self.duration
            ),
            format!("4: {} idle WebSocket tunnels, RSS delta of the proxy ÷ tunnels", self.tunnels),
            format!(
                "7: h2load, {} HTTP/2 connections (h2 by ALPN) × {} streams in flight, GET of the 13-byte body, {:?} per run; lb and HAProxy only (the backends speak HTTP/1)",
                self.h2_conns, self.h2_streams, self.duration
            ),
            format!(
                "5: {} rooms × {} clients over two instances behind the lb, {} senders; fixed rate {} msg/s, and saturation with {} messages in flight per sender; {:?} per run, deliveries counted for messages sent in the window ({:?} grace)",
                self.rooms, self.per_room, self.senders, self.offered_rate, self.window, self.chat_duration, self.grace
            ),
            "systems: the lb runs the committed configs/local/lb.toml with listen addresses, certificate paths and servers replaced, access log off (RUST_LOG=warn) as HAProxy runs without `log`; HAProxy 2.x gets the equivalent config (leastconn, same timeouts, retries + redispatch, checks, http-reuse always, nbthread = the lb's worker threads, maxconn 10000 or what the open-file limit allows); direct = plain HTTP/WS straight to the two backends, no TLS, no proxy".to_string(),
            "5: wsmesh runs with the per-connection send budget lifted (rate_burst/rate_per_sec 1e6) and max_connections raised; it still stores every message in a Redis stream (XADD script), the peers only PUBLISH".to_string(),
            format!(
                "6: up to {} idle wsmesh clients through the lb to 2 apps (10 per room), budget {:?} / {} MiB",
                self.scale_clients,
                self.scale_time,
                self.scale_memory >> 20
            ),
        ]
    }
}

/// What scenarios add to the report.
#[derive(Debug, Default)]
pub struct Findings {
    /// Every metric the scenario measured, all systems' samples in each.
    pub metrics: Vec<Metric>,
    /// Errors and caveats.
    pub notes: Vec<String>,
}

impl Findings {
    /// The metric for (scenario, name), created on first use.
    pub fn metric(
        &mut self,
        scenario: &str,
        name: &str,
        higher_is_better: bool,
        reference: &str,
    ) -> &mut Metric {
        let i = match self
            .metrics
            .iter()
            .position(|m| m.scenario == scenario && m.name == name)
        {
            Some(i) => i,
            None => {
                self.metrics
                    .push(Metric::new(scenario, name, higher_is_better, reference));
                self.metrics.len() - 1
            }
        };
        &mut self.metrics[i]
    }

    /// Notes a failure count with its first error.
    pub fn errors(&mut self, what: &str, system: &str, n: u64, first: Option<&String>) {
        if n > 0 {
            let first = first.map(String::as_str).unwrap_or("?");
            tracing::warn!(what, system, n, first, "errors during a run");
            self.notes
                .push(format!("{what}, {system}: {n} errors (first: {first})"));
        }
    }
}
