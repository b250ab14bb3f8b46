//! The health state machine every checked server runs: consecutive results
//! that disagree with the current verdict count towards a flip (`rise`
//! successes bring a down server up, `fall` failures take an up one down),
//! and a result that agrees with the verdict resets the count.
//!
//! The count is kept as HAProxy's single `health` position, from 0 to
//! `rise + fall - 1` (up while at least `rise`), because operators see that
//! number on the stats page and because it survives a reload that changes
//! `rise` or `fall` with the same meaning HAProxy gives it.

/// What the checks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// A server's place on the rise/fall scale and the verdict it gives.
#[derive(Debug)]
pub struct HealthCounter {
    /// Position on the scale: 0 right after going down, `rise + fall - 1`
    /// when up with no failure since the last success.
    position: u32,
    /// Current verdict.
    state: Health,
}

impl HealthCounter {
    /// Up but one failure away from down (HAProxy starts servers so).
    pub fn starting(rise: u32) -> HealthCounter {
        HealthCounter {
            position: rise,
            state: Health::Up,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// HAProxy's `health` number, as the stats page and admin API show it.
    pub fn position(&self) -> u32 {
        self.position
    }

    /// One result: a success climbs (and jumps to the top on reaching
    /// `rise`), a failure steps down while above `rise`, else the server
    /// goes down and starts counting successes from 0.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) {
        let top = rise + fall - 1;
        if ok {
            if self.position < top {
                self.position += 1;
                if self.position >= rise {
                    self.position = top;
                    self.state = Health::Up;
                }
            }
        } else if self.position > rise {
            self.position -= 1;
        } else {
            self.position = 0;
            self.state = Health::Down;
        }
    }

    /// An up server moves to the lowest "up" position: the next failure
    /// takes it down (`on_error = "sudden-death"`).
    pub fn one_failure_from_down(&mut self, rise: u32) {
        if self.state == Health::Up {
            self.position = self.position.min(rise);
        }
    }

    /// Down at once, whatever the count (`on_error = "mark-down"`).
    pub fn mark_down(&mut self) {
        self.position = 0;
        self.state = Health::Down;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RISE: u32 = 2;
    const FALL: u32 = 3;

    fn fully_up() -> HealthCounter {
        let mut c = HealthCounter::starting(RISE);
        c.observe(true, RISE, FALL);
        assert_eq!((c.state(), c.position()), (Health::Up, RISE + FALL - 1));
        c
    }

    #[test]
    fn starts_up_one_failure_from_down() {
        let mut c = HealthCounter::starting(RISE);
        assert_eq!(c.state(), Health::Up);
        c.observe(false, RISE, FALL);
        assert_eq!((c.state(), c.position()), (Health::Down, 0));
    }

    #[test]
    fn flips_down_after_fall_failures_in_a_row() {
        let mut c = fully_up();
        for _ in 1..FALL {
            c.observe(false, RISE, FALL);
            assert_eq!(c.state(), Health::Up);
        }
        c.observe(false, RISE, FALL);
        assert_eq!(c.state(), Health::Down);
    }

    #[test]
    fn flips_up_after_rise_successes_in_a_row() {
        let mut c = fully_up();
        c.mark_down();
        for _ in 1..RISE {
            c.observe(true, RISE, FALL);
            assert_eq!(c.state(), Health::Down);
        }
        c.observe(true, RISE, FALL);
        assert_eq!((c.state(), c.position()), (Health::Up, RISE + FALL - 1));
    }

    #[test]
    fn a_result_agreeing_with_the_verdict_resets_the_count() {
        let mut c = fully_up();
        for _ in 1..FALL {
            c.observe(false, RISE, FALL);
        }
        c.observe(true, RISE, FALL);
        for _ in 1..FALL {
            c.observe(false, RISE, FALL);
        }
        assert_eq!(c.state(), Health::Up, "the success restarted the run of failures");

        c.mark_down();
        c.observe(true, RISE, FALL);
        c.observe(false, RISE, FALL);
        assert_eq!(c.position(), 0, "the failure restarted the run of successes");
        c.observe(true, RISE, FALL);
        assert_eq!(c.state(), Health::Down);
    }

    #[test]
    fn sudden_death_leaves_one_failure_and_mark_down_none() {
        let mut c = fully_up();
        c.one_failure_from_down(RISE);
        assert_eq!((c.state(), c.position()), (Health::Up, RISE));
        c.observe(false, RISE, FALL);
        assert_eq!(c.state(), Health::Down);
        c.one_failure_from_down(RISE);
        assert_eq!(
            (c.state(), c.position()),
            (Health::Down, 0),
            "a down server stays as it is"
        );
        let mut c = fully_up();
        c.mark_down();
        assert_eq!((c.state(), c.position()), (Health::Down, 0));
    }
}
