//! A rate over a sliding period, kept in two counters the way HAProxy's
//! `freq_ctr` does: the events of the current period plus the previous
//! period's, weighted by how much of it still lies within one period of
//! now. Exact for a burst inside one period, smooth across periods, and
//! two integers per rate.

/// Events of the current and the previous period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Start of the current period, in the table's milliseconds.
    start: u64,
    /// Events since `start`.
    current: u32,
    /// Events of the period before.
    previous: u32,
}

impl Window {
    /// Moves the periods on to `now`.
    fn roll(&mut self, now: u64, period: u64) {
        let elapsed = now.saturating_sub(self.start);
        if elapsed < period {
            return;
        }
        if elapsed < 2 * period {
            self.previous = self.current;
            self.start += period;
        } else {
            self.previous = 0;
            self.start = now;
        }
        self.current = 0;
    }

    /// Events within one period before `now` (estimated as above).
    pub fn count(&self, now: u64, period: u64) -> u64 {
        let period = period.max(1);
        let mut w = *self;
        w.roll(now, period);
        let into = now.saturating_sub(w.start).min(period);
        u64::from(w.current) + u64::from(w.previous) * (period - into) / period
    }

    /// Counts one event at `now`; returns the count with it.
    pub fn hit(&mut self, now: u64, period: u64) -> u64 {
        let period = period.max(1);
        if self.start == 0 && self.current == 0 && self.previous == 0 {
            self.start = now;
        }
        self.roll(now, period);
        self.current = self.current.saturating_add(1);
        self.count(now, period)
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_burst_within_one_period_counts_exactly() {
        let mut w = Window::default();
        for i in 1..=5 {
            assert_eq!(w.hit(1_000 + i, 10_000), i);
        }
        assert_eq!(w.count(9_000, 10_000), 5);
    }

    #[test]
    fn the_previous_period_fades_out() {
        let mut w = Window::default();
        for _ in 0..10 {
            w.hit(1_000, 1_000);
        }
        // Half-way through the next period: half of the previous one counts.
        assert_eq!(w.count(2_500, 1_000), 5);
        assert_eq!(w.hit(2_500, 1_000), 6);
        // Two periods later nothing is left.
        assert_eq!(w.count(5_000, 1_000), 0);
        assert_eq!(w.hit(5_000, 1_000), 1);
    }
}
