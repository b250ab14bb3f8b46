//! Chat load for scenarios 5, 6 and 7, speaking the `wsmesh.v1` subset every
//! chat system implements: R rooms × M clients, S of them senders. A send's
//! `body` carries the sender and the send time on this process's clock, so
//! each receiver measures publish → deliver latency itself. Senders either
//! keep a fixed offered rate (open loop) or run at saturation: each keeps a
//! small window of messages that it has sent but not yet received back
//! itself, so the offered load follows what the system actually delivers and
//! no backlog outlives a run. Also idle clients held for memory per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wsmesh_common::protocol::SUBPROTOCOL;

use super::loadgen::{histogram, per_sec, quantile_ms};
use super::net::{dial, Sources, Target};
use wsmesh_client::Io;

/// A client's WebSocket.
pub type Ws = WebSocketStream<Box<dyn Io>>;

/// How senders offer load.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// This many messages per second over all senders.
    Rate(f64),
    /// Each sender keeps this many of its messages in flight.
    Saturate(usize),
}

/// The shape of a fan-out run.
#[derive(Debug, Clone, Copy)]
pub struct FanOut {
    /// Rooms the clients are spread over.
    pub rooms: usize,
    /// Clients per room (senders included).
    pub per_room: usize,
    /// Senders, spread over the rooms.
    pub senders: usize,
    /// How they send.
    pub offer: Offer,
    /// How long the senders send.
    pub duration: Duration,
    /// Most messages sent over all senders.
    pub max_msgs: u64,
    /// Deliveries still counted after the window closes, for messages sent in it.
    pub grace: Duration,
}

/// What a fan-out run measured.
#[derive(Debug, Clone)]
pub struct FanOutRun {
    /// Messages sent in the window.
    pub sent: u64,
    /// Deliveries of those messages (to every client in the room, sender included).
    pub delivered: u64,
    /// Deliveries expected: sent × clients per room.
    pub expected: u64,
    /// Clients that could not connect, or sockets that failed.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// The sending window.
    pub elapsed: Duration,
    /// Publish → deliver latency, µs.
    pub hist: Histogram<u64>,
}

impl FanOutRun {
    /// Delivered messages per second.
    pub fn rate(&self) -> f64 {
        per_sec(self.delivered, self.elapsed)
    }

    /// Latency quantile in ms.
    pub fn ms(&self, q: f64) -> f64 {
        quantile_ms(&self.hist, q)
    }
}

/// How often an idle reader looks at the clock.
const POLL: Duration = Duration::from_millis(200);

/// A chat client joined to `room` (welcome read).
pub async fn join(
    target: &Target,
    sources: &Sources,
    room: &str,
    limit: Duration,
) -> Result<WebSocketStream<Box<dyn Io>>, String> {
    let attempt = async {
        let io = dial(target, sources.pick()).await.map_err(|e| e.to_string())?;
        let mut url = format!("{}://{}/ws?room={room}", target.ws_scheme(), target.addr);
        if let Some(token) = &target.token {
            url = format!("{url}&token={token}");
        }
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
        let (mut ws, _) = tokio_tungstenite::client_async(req, io)
            .await
            .map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"welcome\"") => Ok(ws),
            other => Err(format!("expected welcome, got {other:?}")),
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| format!("join timed out after {limit:?}"))?
}

/// Parses `b:<sender>:<micros>` bodies out of a `chat` frame.
fn chat_bodies(text: &str) -> Vec<(usize, u64)> {
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        chats: Vec<Body>,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        body: String,
    }
    let Ok(frame) = serde_json::from_str::<Frame>(text) else {
        return Vec::new();
    };
    if frame.kind != "chat" {
        return Vec::new();
    }
    frame
        .chats
        .iter()
        .filter_map(|c| {
            let mut parts = c.body.strip_prefix("b:")?.split(':');
            let sender = parts.next()?.parse().ok()?;
            let micros = parts.next()?.parse().ok()?;
            Some((sender, micros))
        })
        .collect()
}

/// Per-client results.
struct ClientPart {
    delivered: u64,
    hist: Histogram<u64>,
}

/// Where a fan-out run is, for whoever measures the servers over exactly
/// the sending window (scenario 7 reads their CPU time at both ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Clients are connecting and joining.
    Joining,
    /// Every client has joined; the senders send.
    Sending,
    /// Sending stopped and the grace for late deliveries is over.
    Settled,
}

/// Scenario 5: connects the clients, runs the senders, collects the deliveries.
pub async fn fan_out(target: &Target, sources: Arc<Sources>, shape: FanOut, tag: &str) -> FanOutRun {
    let (phase, _) = watch::channel(Phase::Joining);
    fan_out_watched(target, sources, shape, tag, &phase).await
}

/// [`fan_out`], announcing each [`Phase`] on `phase` as it begins.
pub async fn fan_out_watched(
    target: &Target,
    sources: Arc<Sources>,
    shape: FanOut,
    tag: &str,
    phase: &watch::Sender<Phase>,
) -> FanOutRun {
    let clients = shape.rooms * shape.per_room;
    let connect_limit = Duration::from_secs(30);
    // Room by room (client i is in room i % rooms), so that a balancer by
    // fewest sessions spreads each room's members over every server.
    let order = (0..clients).map(|k| (k % shape.per_room) * shape.rooms + k / shape.per_room);
    let joined: Vec<(usize, Result<Ws, String>)> = futures_util::stream::iter(order)
        .map(|i| {
            let target = target.clone();
            let sources = sources.clone();
            let room = format!("{tag}-r{}", i % shape.rooms);
            async move { (i, join(&target, &sources, &room, connect_limit).await) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut errors = 0;
    let mut first_error = None;
    let epoch = Instant::now();
    let start_micros = Arc::new(AtomicU64::new(u64::MAX));
    let end_micros = Arc::new(AtomicU64::new(u64::MAX));
    let sent = Arc::new(AtomicU64::new(0));
    let budget = Arc::new(AtomicU64::new(0));
    let per_sender_rate = match shape.offer {
        Offer::Rate(r) => r / shape.senders.max(1) as f64,
        Offer::Saturate(_) => 0.0,
    };
    let grace = shape.grace;
    let max_run = shape.duration + shape.grace + Duration::from_secs(30);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    // Client i is in room i % rooms; the first `senders` clients send, so
    // senders spread over the rooms.
    for (i, ws) in joined {
        let ws = match ws {
            Ok(ws) => ws,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
                continue;
            }
        };
        let (mut sink, mut stream) = ws.split();
        let is_sender = i < shape.senders;
        let window = Arc::new(Semaphore::new(match shape.offer {
            Offer::Saturate(w) => w,
            Offer::Rate(_) => 0,
        }));
        let (start, end) = (start_micros.clone(), end_micros.clone());
        let own_window = window.clone();
        readers.push(tokio::spawn(async move {
            let mut part = ClientPart {
                delivered: 0,
                hist: histogram(),
            };
            // Never past the window, the grace and a margin, whatever happens.
            let hard_stop = Instant::now() + max_run;
            loop {
                let now = epoch.elapsed().as_micros() as u64;
                let end_at = end.load(Ordering::Relaxed);
                let left = if end_at == u64::MAX {
                    POLL
                } else {
                    Duration::from_micros((end_at + grace.as_micros() as u64).saturating_sub(now))
                };
                if left.is_zero() || Instant::now() >= hard_stop {
                    break;
                }
                let msg = match tokio::time::timeout(left.min(POLL), stream.next()).await {
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                        return (
                            part,
                            Some(format!("closed by the server: {}", why.unwrap_or_default())),
                        );
                    }
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => return (part, Some(format!("socket error: {e}"))),
                    Ok(None) => return (part, Some("socket closed without a close frame".to_string())),
                    Err(_) => continue,
                };
                let Message::Text(text) = msg else { continue };
                let now = epoch.elapsed().as_micros() as u64;
                for (sender, sent_at) in chat_bodies(text.as_str()) {
                    if is_sender && sender == i {
                        own_window.add_permits(1);
                    }
                    if sent_at >= start.load(Ordering::Relaxed) && sent_at <= end.load(Ordering::Relaxed) {
                        part.delivered += 1;
                        let _ = part.hist.record(now.saturating_sub(sent_at).max(1));
                    }
                }
            }
            (part, None)
        }));
        if !is_sender {
            // Dropping the write half leaves the socket open; the reader keeps it.
            drop(sink);
            continue;
        }
        let (sent, budget) = (sent.clone(), budget.clone());
        let (start, end) = (start_micros.clone(), end_micros.clone());
        let offer = shape.offer;
        let max_msgs = shape.max_msgs;
        writers.push(tokio::spawn(async move {
            // Wait for the start signal.
            while start.load(Ordering::Relaxed) == u64::MAX {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let period = Duration::from_secs_f64(1.0 / per_sender_rate.max(1e-3));
            let mut next = Instant::now() + period.mul_f64(i as f64 / 97.0 % 1.0);
            loop {
                let now_m = epoch.elapsed().as_micros() as u64;
                if now_m >= end.load(Ordering::Relaxed) {
                    break;
                }
                match offer {
                    Offer::Rate(_) => {
                        tokio::time::sleep_until(next.into()).await;
                        next += period;
                    }
                    Offer::Saturate(_) => {
                        let left = Duration::from_micros(end.load(Ordering::Relaxed).saturating_sub(now_m));
                        match tokio::time::timeout(left, window.acquire()).await {
                            Ok(Ok(p)) => p.forget(),
                            _ => break,
                        }
                    }
                }
                if budget.fetch_add(1, Ordering::Relaxed) >= max_msgs {
                    break;
                }
                let at = epoch.elapsed().as_micros() as u64;
                if at >= end.load(Ordering::Relaxed) {
                    break;
                }
                let frame = format!("{{\"type\":\"send\",\"body\":\"b:{i}:{at}\"}}");
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // No close frame: the server's reply to it would reach the reader
            // before its deadline and count as an error. Dropping this half
            // leaves the socket open until the reader is done too.
            drop(sink);
        }));
    }
    let window_start = epoch.elapsed().as_micros() as u64;
    start_micros.store(window_start, Ordering::Relaxed);
    end_micros.store(
        window_start + shape.duration.as_micros() as u64,
        Ordering::Relaxed,
    );
    phase.send_replace(Phase::Sending);
    let mut hist = histogram();
    let mut delivered = 0;
    for r in readers {
        match r.await {
            Ok((part, err)) => {
                delivered += part.delivered;
                let _ = hist.add(&part.hist);
                if let Some(e) = err {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    phase.send_replace(Phase::Settled);
    for w in writers {
        let _ = w.await;
    }
    let sent = sent.load(Ordering::Relaxed);
    FanOutRun {
        sent,
        delivered,
        expected: sent * shape.per_room as u64,
        errors,
        first_error,
        elapsed: shape.duration,
        hist,
    }
}

/// Scenario 6: opens up to `n` idle clients (10 per room, so presence
/// updates stay small), `concurrency` at a time, until `limit`; returns the
/// open ones and the failure count.
pub async fn idle_clients(
    target: &Target,
    sources: Arc<Sources>,
    n: usize,
    concurrency: usize,
    limit: Duration,
) -> (Vec<WebSocketStream<Box<dyn Io>>>, u64) {
    let deadline = Instant::now() + limit;
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| {
            let target = target.clone();
            let sources = sources.clone();
            async move {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("time budget spent".to_string());
                }
                join(&target, &sources, &format!("idle-{}", i / 10), left).await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut open = Vec::new();
    let mut failed = 0;
    for r in results {
        match r {
            Ok(ws) => open.push(ws),
            Err(_) => failed += 1,
        }
    }
    (open, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_from_chat_frames_only() {
        let chat =
            r#"{"type":"chat","chats":[{"id":"1-0","room":"r","nick":"n","body":"b:3:12345","ts":1}]}"#;
        assert_eq!(chat_bodies(chat), vec![(3, 12345)]);
        assert!(chat_bodies(r#"{"type":"presence","room":"r","online":2}"#).is_empty());
        assert!(chat_bodies(r#"{"type":"chat","chats":[{"body":"hello"}]}"#).is_empty());
    }
}
