//! Graceful stop: one signal that tells every connection and tunnel to wind
//! down, and a count of what is still running so `main` can wait for it
//! (bounded by `global.grace`) before exiting.

use std::time::Duration;

use tokio::sync::watch;

/// The stop signal and the count of running connections and tunnels.
#[derive(Debug, Clone)]
pub struct Drain {
    /// `true` once stopping.
    stop: watch::Sender<bool>,
    /// Connections and tunnels still running.
    active: watch::Sender<usize>,
}

/// Held by a running connection or tunnel; dropping it counts it out.
#[derive(Debug)]
pub struct ActiveGuard {
    /// The running count this guard is part of.
    active: watch::Sender<usize>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            stop: watch::Sender::new(false),
            active: watch::Sender::new(0),
        }
    }
}

impl Drain {
    /// Counts one more connection or tunnel.
    pub fn track(&self) -> ActiveGuard {
        self.active.send_modify(|n| *n += 1);
        ActiveGuard {
            active: self.active.clone(),
        }
    }

    /// Tells everyone to stop.
    pub fn begin(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once stopping has begun.
    pub async fn stopping(&self) {
        let mut rx = self.stop.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Waits until nothing runs or `limit` passes; returns what still runs.
    pub async fn wait_idle(&self, limit: Duration) -> usize {
        let mut rx = self.active.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        let left = *self.active.borrow();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_running_work_to_finish() {
        let d = Drain::default();
        let r = d.track();
        d.begin();
        d.stopping().await;
        assert_eq!(d.wait_idle(Duration::from_millis(10)).await, 1);
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait_idle(Duration::from_secs(30)).await });
        drop(r);
        assert_eq!(waiter.await.unwrap(), 0);
    }
}
