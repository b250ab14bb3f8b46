//! What one client may do: how fast it may send (token bucket), how big a
//! body, nick or cid may be, and how many sockets the instance holds at once.
//! Each refusal is a value the socket loop turns into an `error` frame or an
//! HTTP status, so the rules are testable without a socket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsmesh_common::protocol::{ErrorCode, CID_MAX_LEN};

use crate::config::Limits;

/// Per-connection send budget: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Most tokens held: how many sends may come back to back after a pause.
    burst: f64,
    /// Tokens added per second.
    per_sec: f64,
    /// Tokens available at `updated`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A bucket that starts full, so a new connection may send `burst`
    /// messages at once.
    pub fn new(burst: u32, per_sec: f64, now: Instant) -> Self {
        TokenBucket {
            burst: f64::from(burst),
            per_sec,
            tokens: f64::from(burst),
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The refusals a client earned lately, so one that keeps erring (a flood
/// of over-rate sends, garbage frames) is dropped instead of being answered
/// forever: more than `max` within `window` and it is out.
#[derive(Debug, Clone)]
pub struct Strikes {
    /// Refusals allowed within `window`.
    max: u32,
    /// How far back refusals count.
    window: Duration,
    /// When the last refusals happened, oldest first; never more than `max`.
    recent: VecDeque<Instant>,
}

impl Strikes {
    /// No strikes yet, under `limits.max_errors` per `limits.error_window`.
    pub fn new(limits: &Limits) -> Strikes {
        Strikes {
            max: limits.max_errors,
            window: limits.error_window,
            recent: VecDeque::new(),
        }
    }

    /// Counts one refusal at `now`; `true` once it is one too many.
    pub fn record(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.max as usize {
            return true;
        }
        self.recent.push_back(now);
        false
    }
}

/// Why a client frame's content is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error code sent to the client.
    pub code: ErrorCode,
    /// A short human-readable reason.
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Checks a `send`'s body and cid against the limits.
pub fn check_send(limits: &Limits, body: &str, cid: Option<&str>) -> Result<(), Refusal> {
    if body.len() > limits.max_body_bytes {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "body is {} bytes, the limit is {}",
                body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    if body.trim().is_empty() {
        return Err(Refusal::new(ErrorCode::BadJson, "body is empty"));
    }
    if let Some(cid) = cid {
        if cid.is_empty() || cid.chars().count() > CID_MAX_LEN {
            return Err(Refusal::new(
                ErrorCode::BadJson,
                format!("cid must be 1 to {CID_MAX_LEN} characters"),
            ));
        }
    }
    Ok(())
}

/// Checks a nick: 1..=max characters, no control characters, not blank.
pub fn check_nick(limits: &Limits, nick: &str) -> Result<(), Refusal> {
    let chars = nick.chars().count();
    if chars == 0 || chars > limits.max_nick_chars || nick.trim().is_empty() {
        return Err(Refusal::new(
            ErrorCode::BadJson,
            format!("nick must be 1 to {} characters", limits.max_nick_chars),
        ));
    }
    if nick.chars().any(char::is_control) {
        return Err(Refusal::new(
            ErrorCode::BadJson,
            "nick must not contain control characters",
        ));
    }
    Ok(())
}

/// Counts open WebSockets against `max_connections`.
#[derive(Debug)]
pub struct Slots {
    /// Slots taken and not yet given back: raised by `try_take`, lowered
    /// when a `Slot` drops.
    open: AtomicUsize,
    /// `limits.max_connections`; `try_take` refuses once this many are open.
    max: usize,
}

/// One taken slot; gives it back when dropped, on every exit path.
#[derive(Debug)]
pub struct Slot {
    /// The counter to give the slot back to.
    slots: Arc<Slots>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a slot, or `None` when `max` are open.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot { slots: self.clone() })
    }

    /// Sockets open now, for `/healthz` and for the drain waiting for zero.
    pub fn current(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The configured `max_connections`, reported by `/healthz`.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refuses_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 2.0, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn bucket_never_exceeds_burst_after_idling() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 100.0, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(b.try_take(later) && b.try_take(later));
        assert!(!b.try_take(later));
    }

    #[test]
    fn oversized_body_is_too_large() {
        let l = Limits {
            max_body_bytes: 4,
            ..Limits::default()
        };
        assert_eq!(
            check_send(&l, "12345", None).unwrap_err().code,
            ErrorCode::TooLarge
        );
        assert!(check_send(&l, "1234", Some("c")).is_ok());
    }

    #[test]
    fn long_or_empty_cid_and_empty_body_are_bad_json() {
        let l = Limits::default();
        let long = "c".repeat(CID_MAX_LEN + 1);
        assert_eq!(
            check_send(&l, "hi", Some(&long)).unwrap_err().code,
            ErrorCode::BadJson
        );
        assert_eq!(
            check_send(&l, "hi", Some("")).unwrap_err().code,
            ErrorCode::BadJson
        );
        assert_eq!(check_send(&l, "  ", None).unwrap_err().code, ErrorCode::BadJson);
        assert!(check_send(&l, "hi", Some(&"c".repeat(CID_MAX_LEN))).is_ok());
    }

    #[test]
    fn nicks_are_checked() {
        let l = Limits {
            max_nick_chars: 3,
            ..Limits::default()
        };
        assert!(check_nick(&l, "añb").is_ok());
        assert!(check_nick(&l, "abcd").is_err());
        assert!(check_nick(&l, "").is_err());
        assert!(check_nick(&l, " ").is_err());
        assert!(check_nick(&l, "a\nb").is_err());
    }

    #[test]
    fn strikes_allow_max_per_window_then_refuse_until_it_slides() {
        let l = Limits {
            max_errors: 3,
            error_window: Duration::from_secs(10),
            ..Limits::default()
        };
        let t0 = Instant::now();
        let mut s = Strikes::new(&l);
        assert!(!s.record(t0) && !s.record(t0) && !s.record(t0 + Duration::from_secs(5)));
        assert!(
            s.record(t0 + Duration::from_secs(6)),
            "the fourth within 10 s is one too many"
        );
        let mut s = Strikes::new(&l);
        for i in 0..100u64 {
            // One every 4 s: never more than three within 10 s.
            assert!(!s.record(t0 + Duration::from_secs(4 * i)), "strike {i}");
        }
    }

    #[test]
    fn slots_refuse_over_max_and_come_back_on_drop() {
        let s = Slots::new(2);
        let a = s.try_take();
        let b = s.try_take();
        assert!(a.is_some() && b.is_some());
        assert!(s.try_take().is_none());
        drop(a);
        assert_eq!(s.current(), 1);
        assert!(s.try_take().is_some());
    }
}
