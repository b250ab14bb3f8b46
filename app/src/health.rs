//! `/healthz`: the lb's view of whether this instance should get new
//! sessions. Healthy means Redis answers, the subscriber is alive (otherwise
//! clients here would miss live messages), there is room for more sockets, and
//! the instance is not draining. The body says which of these failed.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::drain::{Drain, Phase};
use crate::limits::Slots;
use crate::store::{Store, StoreError};

/// When the subscriber last posted (a batch or a heartbeat).
#[derive(Debug, Default)]
pub struct SubscriberClock {
    /// Time of the last authorized POST, if any.
    last: Mutex<Option<Instant>>,
}

impl SubscriberClock {
    /// Records "heard from the subscriber now".
    pub fn heard(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Time since the subscriber was last heard, if ever.
    pub fn age(&self) -> Option<Duration> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| t.elapsed())
    }
}

/// The `/healthz` verdict; it picks the HTTP status the lb checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Send new sessions here (HTTP 200).
    Ok,
    /// Do not (HTTP 503); `reasons` says why.
    Fail,
}

/// A check that `/healthz` failed, by name only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// A drain has started.
    Draining,
    /// Redis did not answer in time.
    Redis,
    /// The local subscriber was not heard from recently enough.
    Subscriber,
    /// Open sockets reached the 503 threshold.
    Connections,
}

/// What the public `/healthz` says: the verdict the lb's check needs and
/// which checks failed, without the details of [`Report`] (the Redis
/// master's address, timings, connection counts), which are served on the
/// internal listener only.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `ok` (HTTP 200) or `fail` (HTTP 503).
    pub status: Status,
    /// The configured instance name (the chat page shows it too).
    pub instance: String,
    /// The checks that failed; empty when ok.
    pub failing: Vec<Check>,
}

impl Report {
    /// The public part of this report.
    pub fn verdict(&self) -> Verdict {
        let failed = [
            (self.draining, Check::Draining),
            (!self.redis.ok, Check::Redis),
            (!self.subscriber.ok, Check::Subscriber),
            (
                self.connections.current >= self.connections.threshold,
                Check::Connections,
            ),
        ];
        Verdict {
            status: self.status,
            instance: self.instance.clone(),
            failing: failed.into_iter().filter(|(f, _)| *f).map(|(_, c)| c).collect(),
        }
    }

    /// The HTTP status the lb checks.
    pub fn http_status(&self) -> http::StatusCode {
        match self.status {
            Status::Ok => http::StatusCode::OK,
            Status::Fail => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The JSON body of `/healthz` on the internal listener.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `ok` (HTTP 200) or `fail` (HTTP 503).
    pub status: Status,
    /// The configured instance name, so reports from several instances can
    /// be told apart.
    pub instance: String,
    /// Whether a drain has started.
    pub draining: bool,
    /// Whether Redis answered a PING, and how fast.
    pub redis: RedisHealth,
    /// Whether the local subscriber posted recently enough.
    pub subscriber: SubscriberHealth,
    /// Open sockets against the limit and the 503 threshold.
    pub connections: ConnectionsHealth,
    /// Why `status` is `fail`; empty when ok.
    pub reasons: Vec<String>,
}

/// `redis` part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RedisHealth {
    /// PING answered within the command timeout.
    pub ok: bool,
    /// PING round trip, when it answered.
    pub rtt_ms: Option<f64>,
    /// `host:port` of the master in use; `null` before one was found.
    pub master: Option<String>,
}

/// `subscriber` part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberHealth {
    /// Heard from within `subscriber_max_age`.
    pub ok: bool,
    /// Milliseconds since it was last heard; `null` if never.
    pub age_ms: Option<u64>,
}

/// `connections` part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsHealth {
    /// WebSockets open on this instance now.
    pub current: usize,
    /// `limits.max_connections`: with this many open, new sockets get 503.
    pub max: usize,
    /// Count at which health turns 503.
    pub threshold: usize,
}

/// Everything `/healthz` looks at.
#[derive(Debug, Clone)]
pub struct Health {
    /// Instance name for the report.
    pub instance: String,
    /// Redis, for the PING.
    pub store: Store,
    /// The open-socket counter, for the count and its maximum.
    pub slots: Arc<Slots>,
    /// Socket count at which to report 503.
    pub threshold: usize,
    /// Set by the internal listener whenever the subscriber posts.
    pub subscriber: Arc<SubscriberClock>,
    /// Longest acceptable subscriber silence.
    pub subscriber_max_age: Duration,
    /// Longest wait for Redis' PING: the report must come back before the
    /// lb's check times out, whatever Redis does.
    pub redis_timeout: Duration,
    /// Any phase but `Serving` fails the report, so the lb stops sending
    /// new sessions before sockets are closed.
    pub drain: Drain,
}

impl Health {
    /// Runs every check now; the Redis PING takes at most `redis_timeout`.
    pub async fn report(&self) -> Report {
        let mut reasons = Vec::new();
        let draining = self.drain.phase() != Phase::Serving;
        if draining {
            reasons.push("draining".to_string());
        }
        let ping = tokio::time::timeout(self.redis_timeout, self.store.ping()).await;
        let ping = ping.unwrap_or_else(|_| Err(StoreError::Timeout(self.redis_timeout)));
        let redis = match ping {
            Ok(rtt) => RedisHealth {
                ok: true,
                rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
                master: self.store.master(),
            },
            Err(e) => {
                reasons.push(format!("redis: {e}"));
                RedisHealth {
                    ok: false,
                    rtt_ms: None,
                    master: self.store.master(),
                }
            }
        };
        let age = self.subscriber.age();
        let subscriber_ok = age.is_some_and(|a| a <= self.subscriber_max_age);
        if !subscriber_ok {
            reasons.push(match age {
                Some(a) => format!("subscriber silent for {} ms", a.as_millis()),
                None => "subscriber never heard from".to_string(),
            });
        }
        let current = self.slots.current();
        if current >= self.threshold {
            reasons.push(format!("{current} connections, threshold {}", self.threshold));
        }
        Report {
            status: if reasons.is_empty() {
                Status::Ok
            } else {
                Status::Fail
            },
            instance: self.instance.clone(),
            draining,
            redis,
            subscriber: SubscriberHealth {
                ok: subscriber_ok,
                age_ms: age.map(|a| a.as_millis() as u64),
            },
            connections: ConnectionsHealth {
                current,
                max: self.slots.max(),
                threshold: self.threshold,
            },
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_clock_starts_unheard_and_records() {
        let c = SubscriberClock::default();
        assert!(c.age().is_none());
        c.heard();
        assert!(c.age().is_some());
    }

    #[test]
    fn report_serializes_in_the_documented_shape() {
        let r = Report {
            status: Status::Fail,
            instance: "app1".into(),
            draining: true,
            redis: RedisHealth {
                ok: true,
                rtt_ms: Some(0.4),
                master: Some("127.0.0.1:6390".into()),
            },
            subscriber: SubscriberHealth {
                ok: true,
                age_ms: Some(300),
            },
            connections: ConnectionsHealth {
                current: 3,
                max: 10,
                threshold: 8,
            },
            reasons: vec!["draining".into()],
        };
        let v: serde_json::Value = serde_json::to_value(&r).expect("serializes");
        assert_eq!(v["status"], "fail");
        assert_eq!(v["redis"]["rtt_ms"], 0.4);
        assert_eq!(v["redis"]["master"], "127.0.0.1:6390");
        assert_eq!(v["subscriber"]["age_ms"], 300);
        assert_eq!(v["connections"]["threshold"], 8);
        assert_eq!(v["reasons"][0], "draining");
    }
}
