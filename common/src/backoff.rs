//! Exponential backoff with full jitter (AWS architecture blog's "full
//! jitter"): the delay is uniform in `[0, min(cap, base·2^attempt)]`, so a
//! herd of retriers spreads out instead of retrying in lockstep.

use std::time::Duration;

use rand::Rng;

/// Retry delays for one peer; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Ceiling of the first delay; it doubles with each failure.
    base: Duration,
    /// Ceiling never exceeded.
    cap: Duration,
    /// Failures since the last reset.
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The current ceiling, `min(cap, base·2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next try; grows the ceiling for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// Back to the first ceiling, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last reset, for logs and retry limits.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let mut ceilings = vec![];
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10));
        }
        assert_eq!(ceilings, vec![250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn delays_are_jittered() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 10, "delays not spread: {seen:?}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(3));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(3));
    }
}
