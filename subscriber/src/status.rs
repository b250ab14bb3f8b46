//! What the subscriber knows about its own condition right now: where the
//! Redis feed is and when the app last accepted a POST. The feed and the
//! forwarder write it; `/healthz` reads it. Kept apart from metrics because
//! health is a judgement on the present, metrics are counts over time.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Where the Redis side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// Not subscribed: connecting, or waiting to reconnect.
    Connecting,
    /// Subscribed; filling the gap from the streams before going live.
    Filling,
    /// Subscribed and forwarding live chats.
    Live,
}

impl FeedState {
    /// Name used in logs and `/healthz`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Connecting => "connecting",
            FeedState::Filling => "filling",
            FeedState::Live => "live",
        }
    }

    /// Whether the SUBSCRIBE is confirmed (nothing published now is missed).
    pub fn is_subscribed(self) -> bool {
        !matches!(self, FeedState::Connecting)
    }

    fn from_u8(v: u8) -> FeedState {
        match v {
            1 => FeedState::Filling,
            2 => FeedState::Live,
            _ => FeedState::Connecting,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            FeedState::Connecting => 0,
            FeedState::Filling => 1,
            FeedState::Live => 2,
        }
    }
}

/// Shared, lock-light condition of this process.
#[derive(Debug)]
pub struct Status {
    /// Current `FeedState`, encoded for atomic access.
    feed: AtomicU8,
    /// When the app last answered a POST with success; `None` before the first.
    last_app_success: Mutex<Option<Instant>>,
    /// `host:port` of the Redis master of the current (or last) subscription.
    master: Mutex<Option<String>>,
    /// When the live subscription last delivered a message or answered a PING.
    pubsub_heard: Mutex<Option<Instant>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            feed: AtomicU8::new(FeedState::Connecting.to_u8()),
            last_app_success: Mutex::new(None),
            master: Mutex::new(None),
            pubsub_heard: Mutex::new(None),
        }
    }
}

impl Status {
    pub fn feed(&self) -> FeedState {
        FeedState::from_u8(self.feed.load(Ordering::Relaxed))
    }

    pub fn set_feed(&self, state: FeedState) {
        self.feed.store(state.to_u8(), Ordering::Relaxed);
    }

    /// Records a successful POST (batch or heartbeat).
    pub fn app_succeeded(&self) {
        *self.last_app_success.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub fn last_app_success(&self) -> Option<Instant> {
        *self.last_app_success.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the master a new subscription is on.
    pub fn set_master(&self, addr: String) {
        *self.master.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    pub fn master(&self) -> Option<String> {
        self.master.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records "the subscription delivered or answered now".
    pub fn pubsub_heard(&self) {
        *self.pubsub_heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Time since the subscription last delivered or answered, if ever.
    pub fn pubsub_silence(&self) -> Option<std::time::Duration> {
        self.pubsub_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_state_round_trips_through_the_atomic() {
        let s = Status::default();
        assert_eq!(s.feed(), FeedState::Connecting);
        for state in [FeedState::Filling, FeedState::Live, FeedState::Connecting] {
            s.set_feed(state);
            assert_eq!(s.feed(), state);
        }
        assert!(!FeedState::Connecting.is_subscribed());
        assert!(FeedState::Filling.is_subscribed());
    }

    #[test]
    fn app_success_is_remembered() {
        let s = Status::default();
        assert!(s.last_app_success().is_none());
        s.app_succeeded();
        assert!(s.last_app_success().is_some());
    }
}
