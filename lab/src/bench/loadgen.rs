//! The load loops for the proxy scenarios: HTTP keep-alive requests, one
//! request per new TLS connection, WebSocket echo round trips, and idle
//! tunnels held open. Every loop is bounded twice, by a deadline and by a
//! shared operation budget, and stops by itself; latencies go into an HDR
//! histogram per task, merged at the end so no lock sits on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::net::{dial, Sources, Target};
use wsmesh_client::Io;

/// Highest latency the histograms hold, in microseconds (60 s).
const MAX_MICROS: u64 = 60_000_000;

/// A new histogram of microseconds, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (nothing from outside the process).
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid constant histogram bounds")
}

/// How long and how much a load loop may run.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Wall-clock limit once every connection is up.
    pub duration: Duration,
    /// Most operations over all tasks.
    pub max_ops: u64,
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct Run {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations or connections that failed.
    pub errors: u64,
    /// The first failure, for the log.
    pub first_error: Option<String>,
    /// From the start signal to the last task's end.
    pub elapsed: Duration,
    /// Latency of each successful operation, µs.
    pub hist: Histogram<u64>,
}

/// `count` per second of `elapsed`.
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Quantile `q` (0..1) of a histogram of µs, in milliseconds; 0 when it is empty.
pub fn quantile_ms(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        0.0
    } else {
        hist.value_at_quantile(q) as f64 / 1000.0
    }
}

impl Run {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        per_sec(self.ok, self.elapsed)
    }

    /// Latency quantile `q` (0..1) in milliseconds; 0 when nothing was measured.
    pub fn ms(&self, q: f64) -> f64 {
        quantile_ms(&self.hist, q)
    }
}

/// One task's share of a run.
struct Part {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

impl Part {
    fn new() -> Part {
        Part {
            ok: 0,
            errors: 0,
            first_error: None,
            hist: histogram(),
        }
    }

    fn fail(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn record(&mut self, started: Instant) {
        self.ok += 1;
        let micros = started.elapsed().as_micros().min(u128::from(MAX_MICROS)) as u64;
        let _ = self.hist.record(micros.max(1));
    }
}

/// Shared stop conditions of a run.
struct Gate {
    ops: AtomicU64,
    max_ops: u64,
}

impl Gate {
    fn take(&self) -> bool {
        self.ops.fetch_add(1, Ordering::Relaxed) < self.max_ops
    }
}

/// Runs `conns` tasks of `work`, all started together once each has done its
/// setup; merges what they measured.
async fn drive<F, Fut>(conns: usize, budget: Budget, work: F) -> Run
where
    F: Fn(usize, Arc<Barrier>, Arc<Gate>, Duration) -> Fut,
    Fut: std::future::Future<Output = Part> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(conns + 1));
    let gate = Arc::new(Gate {
        ops: AtomicU64::new(0),
        max_ops: budget.max_ops,
    });
    let tasks: Vec<_> = (0..conns)
        .map(|i| tokio::spawn(work(i, barrier.clone(), gate.clone(), budget.duration)))
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut total = Part::new();
    for task in tasks {
        match task.await {
            Ok(part) => {
                total.ok += part.ok;
                total.errors += part.errors;
                if total.first_error.is_none() {
                    total.first_error = part.first_error;
                }
                let _ = total.hist.add(&part.hist);
            }
            Err(e) => total.fail(format!("task: {e}")),
        }
    }
    Run {
        ok: total.ok,
        errors: total.errors,
        first_error: total.first_error,
        elapsed: start.elapsed(),
        hist: total.hist,
    }
}

/// A GET for `path` with the target's address as Host.
fn get(target: &Target, path: &str, close: bool) -> Result<http::Request<Empty<Bytes>>, http::Error> {
    let mut req = http::Request::get(path).header(http::header::HOST, target.addr.to_string());
    if close {
        req = req.header(http::header::CONNECTION, "close");
    }
    req.body(Empty::new())
}

/// One request on an HTTP/1.1 connection; Ok when the status is 200 and the body was read.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    req: http::Request<Empty<Bytes>>,
) -> Result<(), String> {
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    if status == http::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Opens an HTTP/1.1 client connection; the connection task runs in the background.
async fn http_conn(
    target: &Target,
    sources: &Sources,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let io = dial(target, sources.pick()).await.map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Scenario 1: `conns` keep-alive connections (spread over `targets`), each
/// sending one GET of `path` after the other.
pub async fn http_keepalive(
    targets: &[Target],
    sources: Arc<Sources>,
    conns: usize,
    path: &'static str,
    budget: Budget,
) -> Run {
    let targets: Arc<Vec<Target>> = Arc::new(targets.to_vec());
    drive(conns, budget, move |i, barrier, gate, duration| {
        let target = targets[i % targets.len()].clone();
        let sources = sources.clone();
        async move {
            let mut part = Part::new();
            let conn = http_conn(&target, &sources).await;
            barrier.wait().await;
            let mut sender = match conn {
                Ok(s) => s,
                Err(e) => {
                    part.fail(e);
                    return part;
                }
            };
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline && gate.take() {
                let started = Instant::now();
                let outcome = match get(&target, path, false) {
                    Ok(req) => exchange(&mut sender, req).await,
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => part.record(started),
                    Err(e) => {
                        part.fail(e);
                        // The connection may be gone: open a new one, bounded by the loop.
                        match http_conn(&target, &sources).await {
                            Ok(s) => sender = s,
                            Err(e) => {
                                part.fail(e);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            }
            part
        }
    })
    .await
}

/// Scenario 2: `concurrency` loops of "connect, full handshake, one request,
/// close"; the latency is the whole of it.
pub async fn http_new_conns(
    targets: &[Target],
    sources: Arc<Sources>,
    concurrency: usize,
    budget: Budget,
) -> Run {
    let targets: Arc<Vec<Target>> = Arc::new(targets.to_vec());
    drive(concurrency, budget, move |i, barrier, gate, duration| {
        let target = targets[i % targets.len()].clone();
        let sources = sources.clone();
        async move {
            let mut part = Part::new();
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline && gate.take() {
                let started = Instant::now();
                let outcome = async {
                    let mut sender = http_conn(&target, &sources).await?;
                    let req = get(&target, "/bench/small", true).map_err(|e| e.to_string())?;
                    exchange(&mut sender, req).await
                }
                .await;
                match outcome {
                    Ok(()) => part.record(started),
                    Err(e) => {
                        part.fail(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            part
        }
    })
    .await
}

/// An upgraded WebSocket to `target`'s `/echo`.
pub async fn ws_connect(target: &Target, sources: &Sources) -> Result<WebSocketStream<Box<dyn Io>>, String> {
    let io = dial(target, sources.pick()).await.map_err(|e| e.to_string())?;
    let url = format!("{}://{}/echo", target.ws_scheme(), target.addr);
    let (ws, _) = tokio_tungstenite::client_async(url, io)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Scenario 3: `conns` WebSockets, each sending a 32-byte text message and
/// waiting for its echo before the next.
pub async fn ws_echo(targets: &[Target], sources: Arc<Sources>, conns: usize, budget: Budget) -> Run {
    let targets: Arc<Vec<Target>> = Arc::new(targets.to_vec());
    drive(conns, budget, move |i, barrier, gate, duration| {
        let target = targets[i % targets.len()].clone();
        let sources = sources.clone();
        async move {
            let mut part = Part::new();
            let ws = tokio::time::timeout(Duration::from_secs(20), ws_connect(&target, &sources)).await;
            barrier.wait().await;
            let mut ws = match ws {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    part.fail(e);
                    return part;
                }
                Err(_) => {
                    part.fail("websocket connect timed out");
                    return part;
                }
            };
            let payload = "0123456789abcdef0123456789abcdef";
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline && gate.take() {
                let started = Instant::now();
                if let Err(e) = ws.send(Message::text(payload)).await {
                    part.fail(e);
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
                match tokio::time::timeout(left, ws.next()).await {
                    Ok(Some(Ok(m))) if m.is_text() => part.record(started),
                    Ok(other) => {
                        part.fail(format!("echo: {other:?}"));
                        break;
                    }
                    Err(_) => {
                        part.fail("echo timed out");
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            part
        }
    })
    .await
}

/// Scenario 4: opens `n` WebSockets to `target` (`concurrency` at a time,
/// within `limit`) and returns the ones that are up plus the failure count.
pub async fn idle_tunnels(
    target: &Target,
    sources: Arc<Sources>,
    n: usize,
    concurrency: usize,
    limit: Duration,
) -> (Vec<WebSocketStream<Box<dyn Io>>>, u64) {
    let deadline = Instant::now() + limit;
    let target = Arc::new(target.clone());
    let results = futures_util::stream::iter(0..n)
        .map(|_| {
            let target = target.clone();
            let sources = sources.clone();
            async move {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::timeout(left, ws_connect(&target, &sources)).await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for r in results {
        match r {
            Ok(Ok(ws)) => open.push(ws),
            _ => failed += 1,
        }
    }
    (open, failed)
}
