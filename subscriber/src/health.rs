//! The subscriber's own HTTP listener: `/healthz` (is this process doing its
//! job right now?) and `/metrics` (Prometheus text). Healthy means subscribed
//! to Redis and the app took a POST recently; a heartbeat is posted every
//! `app.heartbeat`, so three of them missed means the app or the path to it
//! is broken, and whoever watches (`lab up`, an operator) should see it.
//! A live subscription that neither delivers nor answers its PING for
//! `redis.pubsub_stall` is wedged (connected, yet deaf), and fails too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::status::{FeedState, Status};

/// Heartbeats that may be missed before the app counts as unreachable.
const MISSED_HEARTBEATS: u32 = 3;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The `/healthz` answer a load balancer or an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Subscribed, and the app took a POST recently: HTTP 200.
    Ok,
    /// Something in `reasons` is wrong: HTTP 503.
    Fail,
}

/// The Redis side as `/healthz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisHealth {
    /// The SUBSCRIBE is confirmed: nothing published now is missed.
    Subscribed,
    /// Connecting, or waiting to reconnect.
    Connecting,
}

/// The app side as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppHealth {
    /// Whether the last successful POST is recent enough.
    pub ok: bool,
    /// Milliseconds since the last successful POST; `null` before the first.
    pub last_success_ms_ago: Option<u64>,
}

/// Body of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// `ok` (HTTP 200) or `fail` (HTTP 503).
    pub status: Verdict,
    /// Whether the SUBSCRIBE is in place.
    pub redis: RedisHealth,
    /// Finer feed state: `connecting`, `filling` or `live`.
    pub feed: &'static str,
    /// `host:port` of the Redis master subscribed to; `null` before the first.
    pub master: Option<String>,
    /// Milliseconds since the live subscription last delivered a message or
    /// answered a PING; `null` when not live.
    pub pubsub_silent_ms: Option<u64>,
    /// Whether the app takes our POSTs.
    pub app: AppHealth,
    /// Chats waiting to be posted.
    pub queue: usize,
    /// Why the status is `fail`; empty when `ok`.
    pub reasons: Vec<String>,
}

/// Judges the present condition. `since_success` is the age of the last successful POST.
pub fn evaluate(
    feed: FeedState,
    since_success: Option<Duration>,
    queue: usize,
    heartbeat: Duration,
) -> HealthReport {
    let max_age = heartbeat.saturating_mul(MISSED_HEARTBEATS);
    let mut reasons = Vec::new();
    let redis = if feed.is_subscribed() {
        RedisHealth::Subscribed
    } else {
        reasons.push("not subscribed to redis".to_string());
        RedisHealth::Connecting
    };
    let app_ok = match since_success {
        Some(age) if age <= max_age => true,
        Some(age) => {
            reasons.push(format!(
                "no successful post to the app for {} ms",
                age.as_millis()
            ));
            false
        }
        None => {
            reasons.push("no successful post to the app yet".to_string());
            false
        }
    };
    HealthReport {
        status: if reasons.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Fail
        },
        redis,
        feed: feed.as_str(),
        master: None,
        pubsub_silent_ms: None,
        app: AppHealth {
            ok: app_ok,
            last_success_ms_ago: since_success.map(|d| d.as_millis() as u64),
        },
        queue,
        reasons,
    }
}

/// Fails `report` when the live subscription was silent (no message, no
/// answer to its PING) for longer than `stall`: pub/sub is wedged.
pub fn judge_pubsub(report: &mut HealthReport, feed: FeedState, silence: Option<Duration>, stall: Duration) {
    let Some(silence) = silence.filter(|_| feed == FeedState::Live) else {
        return;
    };
    report.pubsub_silent_ms = Some(silence.as_millis() as u64);
    if silence > stall {
        report.reasons.push(format!(
            "pub/sub stalled: no message and no answer to PING for {} ms",
            silence.as_millis()
        ));
        report.status = Verdict::Fail;
    }
}

/// What the health endpoints read.
#[derive(Clone)]
pub struct HealthState {
    /// Whether the feed is live and when the app last took a POST.
    pub status: Arc<Status>,
    /// What `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// Read for the depth `/healthz` reports.
    pub queue: Arc<Queue>,
    /// `app.heartbeat`: the app counts as unreachable after three without a successful POST.
    pub heartbeat: Duration,
    /// `redis.pubsub_stall`: longest silence of a live subscription.
    pub pubsub_stall: Duration,
}

impl HealthState {
    fn report(&self) -> HealthReport {
        let since = self
            .status
            .last_app_success()
            .map(|t| Instant::now().saturating_duration_since(t));
        let feed = self.status.feed();
        let mut report = evaluate(feed, since, self.queue.len(), self.heartbeat);
        report.master = self.status.master();
        judge_pubsub(&mut report, feed, self.status.pubsub_silence(), self.pubsub_stall);
        report
    }
}

/// Serves `/healthz` and `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: HealthState) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "health listener cannot accept");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, %peer, "health connection ended");
            }
        });
    }
}

fn route(state: &HealthState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" => {
            let report = state.report();
            let code = match report.status {
                Verdict::Ok => StatusCode::OK,
                Verdict::Fail => StatusCode::SERVICE_UNAVAILABLE,
            };
            match serde_json::to_vec(&report) {
                Ok(body) => respond(code, "application/json", body),
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode health\n"),
            }
        }
        "/metrics" => match state.metrics.render() {
            Ok(text) => respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text.into_bytes(),
            ),
            Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
        },
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn plain(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    respond(code, "text/plain; charset=utf-8", text.as_bytes().to_vec())
}

fn respond(code: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_secs(1);

    #[test]
    fn healthy_when_subscribed_and_the_app_took_a_recent_post() {
        let r = evaluate(FeedState::Live, Some(Duration::from_millis(120)), 4, HB);
        assert_eq!(r.status, Verdict::Ok);
        assert!(r.reasons.is_empty());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["redis"], "subscribed");
        assert_eq!(json["app"]["ok"], true);
        assert_eq!(json["app"]["last_success_ms_ago"], 120);
        assert_eq!(json["queue"], 4);
        assert_eq!(json["status"], "ok");
    }

    #[test]
    fn a_silent_live_subscription_fails_after_the_stall_window() {
        let stall = Duration::from_secs(15);
        let mut r = evaluate(FeedState::Live, Some(Duration::ZERO), 0, HB);
        judge_pubsub(&mut r, FeedState::Live, Some(Duration::from_secs(3)), stall);
        assert_eq!((r.status, r.pubsub_silent_ms), (Verdict::Ok, Some(3000)));
        judge_pubsub(&mut r, FeedState::Live, Some(Duration::from_secs(16)), stall);
        assert_eq!(r.status, Verdict::Fail);
        assert!(r.reasons[0].starts_with("pub/sub stalled"), "{:?}", r.reasons);
        let mut r = evaluate(FeedState::Filling, Some(Duration::ZERO), 0, HB);
        judge_pubsub(&mut r, FeedState::Filling, Some(Duration::from_secs(60)), stall);
        assert_eq!((r.status, r.pubsub_silent_ms), (Verdict::Ok, None));
    }

    #[test]
    fn failing_while_connecting_to_redis() {
        let r = evaluate(FeedState::Connecting, Some(Duration::ZERO), 0, HB);
        assert_eq!(r.status, Verdict::Fail);
        assert_eq!(r.redis, RedisHealth::Connecting);
        assert_eq!(r.reasons.len(), 1);
    }

    #[test]
    fn failing_after_three_missed_heartbeats_or_before_the_first_post() {
        let r = evaluate(FeedState::Filling, Some(Duration::from_millis(3500)), 0, HB);
        assert_eq!(r.status, Verdict::Fail);
        assert!(!r.app.ok);
        assert!(r.reasons[0].contains("3500 ms"), "{:?}", r.reasons);
        let r = evaluate(FeedState::Live, None, 0, HB);
        assert_eq!(r.status, Verdict::Fail);
        assert_eq!(
            serde_json::to_value(&r).unwrap()["app"]["last_success_ms_ago"],
            serde_json::Value::Null
        );
    }
}
