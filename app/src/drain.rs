//! Graceful shutdown. On SIGTERM the instance first only *says* it is going
//! (`/healthz` 503, so the lb stops sending new sessions), then stops taking
//! new sockets and closes the existing ones with 1012 at random moments spread
//! over the drain window, so the reconnects do not arrive as one herd.

use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::config::DrainConfig;
use crate::limits::Slots;

/// Where the instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Normal operation: `/healthz` may say ok and new sockets are taken.
    Serving,
    /// `/healthz` is 503; everything else still works.
    Draining,
    /// No new sockets; existing ones are being closed with 1012.
    Closing,
}

/// The shutdown phase shared by the routes, `/healthz` and every socket;
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Drain {
    /// Current phase; sockets watch it.
    tx: watch::Sender<Phase>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::Sender::new(Phase::Serving),
        }
    }
}

impl Drain {
    /// The phase now, for checks made once per request (routes, `/healthz`);
    /// sockets `subscribe` instead.
    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// A receiver for sockets, to learn when to close.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.tx.subscribe()
    }

    fn set(&self, phase: Phase) {
        self.tx.send_replace(phase);
    }

    /// Runs the drain sequence; returns when every socket is closed or the
    /// window (plus a second of slack) has passed.
    pub async fn run(&self, cfg: &DrainConfig, slots: &Slots) {
        self.set(Phase::Draining);
        tracing::info!(grace = ?cfg.grace, window = ?cfg.window, "draining: /healthz is 503");
        tokio::time::sleep(cfg.grace).await;
        self.set(Phase::Closing);
        tracing::info!(open = slots.current(), "closing sockets with 1012");
        let deadline = tokio::time::Instant::now() + cfg.window + Duration::from_secs(1);
        while slots.current() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(left_open = slots.current(), "drain done");
    }
}

/// Resolves when this socket's turn to close has come: at a random moment in
/// `window` after the phase becomes `Closing`. Never resolves while serving.
pub async fn my_turn(mut rx: watch::Receiver<Phase>, window: Duration) {
    if rx.wait_for(|p| *p == Phase::Closing).await.is_err() {
        // The sender lives as long as the process; without it there is no drain.
        std::future::pending::<()>().await;
    }
    let ms = window.as_millis() as u64;
    let delay = Duration::from_millis(rand::rng().random_range(0..=ms));
    tokio::time::sleep(delay).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sockets_close_only_after_grace_and_within_the_window() {
        let drain = Drain::default();
        let cfg = DrainConfig {
            grace: Duration::from_secs(2),
            window: Duration::from_secs(3),
        };
        let slots = Slots::new(4);
        let slot = slots.try_take();
        let rx = drain.subscribe();
        let start = tokio::time::Instant::now();
        let socket = tokio::spawn(async move {
            my_turn(rx, Duration::from_secs(3)).await;
            drop(slot);
            tokio::time::Instant::now()
        });
        let d = drain.clone();
        let runner = tokio::spawn(async move { d.run(&cfg, &slots).await });
        tokio::task::yield_now().await;
        assert_eq!(drain.phase(), Phase::Draining);
        let closed_at = socket.await.expect("socket task");
        runner.await.expect("drain task");
        let offset = closed_at - start;
        assert!(
            offset >= Duration::from_secs(2),
            "closed during grace: {offset:?}"
        );
        assert!(
            offset <= Duration::from_secs(5),
            "closed after the window: {offset:?}"
        );
        assert_eq!(drain.phase(), Phase::Closing);
    }
}
