//! The client side of a connection, below HTTP: records activity (for the
//! client inactivity timeout) and, on HTTP/1 connections, watches each
//! request head as it arrives so the lb can answer like HAProxy where hyper
//! would just close:
//!
//! - `timeout http-request`: a head not complete in time (slowloris, or a
//!   client that connects and says nothing) gets `408` and the connection
//!   closes;
//! - ambiguous framing (both `Content-Length` and `Transfer-Encoding`, or
//!   more than one `Content-Length`) gets `400`; hyper silently keeps one
//!   `Content-Length` or lets `Transfer-Encoding` win, so the service never
//!   sees these.
//!
//! To find where the next head starts it follows body framing (length and
//! chunked). It stops watching after a request that asks for an upgrade or
//! `CONNECT`: what follows is not HTTP/1.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Longest head followed; longer ones are left to hyper (431).
const MAX_HEAD: usize = 64 * 1024;

/// Sent when the head did not arrive in time (HAProxy's text).
const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Time-out\r\nContent-Length: 110\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>408 Request Time-out</h1>\nYour browser didn't send a complete request in time.\n</body></html>\n";

/// Sent for ambiguous framing.
const RESPONSE_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 90\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>400 Bad Request</h1>\nYour browser sent an invalid request.\n</body></html>\n";

/// When the connection last moved a byte either way.
#[derive(Debug)]
pub struct Activity {
    /// Reference point for `last_ms`.
    start: Instant,
    /// Milliseconds from `start` to the last activity.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Marks activity now.
    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last activity.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// How the current request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size line.
    Size { size: u64, in_ext: bool },
    /// Inside chunk data.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines after the last chunk; `line_len` of the current one.
    Trailer { line_len: usize },
}

/// Where in the HTTP/1 message stream the watcher is.
#[derive(Debug)]
enum Phase {
    /// Between requests, nothing of the next one seen yet.
    Idle,
    /// Inside a head; the bytes so far.
    Head(Vec<u8>),
    /// Inside a body with this many bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not HTTP/1 any more (upgrade, CONNECT) or not followable.
    Off,
}

/// Why a head is refused.
#[derive(Debug, PartialEq, Eq)]
struct Ambiguous;

/// The watcher's bookkeeping.
#[derive(Debug)]
struct Watch {
    /// Position in the stream.
    phase: Phase,
    /// `timeout http-request`.
    limit: Duration,
    /// Running while a head is incomplete.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// A client stream with activity tracking and, for HTTP/1, head watching.
#[derive(Debug)]
pub struct ClientIo<T> {
    /// The TCP or TLS stream.
    inner: T,
    /// Shared with the connection task's idle timer.
    activity: Arc<Activity>,
    /// Head watcher; `None` for HTTP/2.
    watch: Option<Watch>,
    /// A refusal being written: response bytes, how many went out, and the
    /// error to return once done.
    refusing: Option<(&'static [u8], usize, io::ErrorKind)>,
}

impl<T> ClientIo<T> {
    /// HTTP/1: heads must be complete within `http_request`, counted from now
    /// for the first request.
    pub fn http1(inner: T, activity: Arc<Activity>, http_request: Duration) -> Self {
        ClientIo {
            inner,
            activity,
            watch: Some(Watch {
                phase: Phase::Head(Vec::new()),
                limit: http_request,
                deadline: Some(Box::pin(tokio::time::sleep(http_request))),
            }),
            refusing: None,
        }
    }

    /// HTTP/2 (or anything not watched): activity tracking only.
    pub fn plain(inner: T, activity: Arc<Activity>) -> Self {
        ClientIo {
            inner,
            activity,
            watch: None,
            refusing: None,
        }
    }
}

impl Watch {
    /// Follows `bytes`; `Err` when a head is ambiguous.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Ambiguous> {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Off => return Ok(()),
                Phase::Idle => {
                    self.phase = Phase::Head(Vec::new());
                    self.deadline = Some(Box::pin(tokio::time::sleep(self.limit)));
                }
                Phase::Head(buf) => {
                    let before = buf.len();
                    buf.extend_from_slice(bytes);
                    // Empty lines before a request line are allowed (RFC 9112 §2.2).
                    let lead = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                    let end = find_head_end(&buf[lead..]).map(|e| e + lead);
                    match end {
                        None if buf.len() > MAX_HEAD => {
                            self.phase = Phase::Off;
                            self.deadline = None;
                            return Ok(());
                        }
                        None => return Ok(()),
                        Some(end) => {
                            let next = analyse_head(&buf[lead..end])?;
                            let used = end - before;
                            bytes = &bytes[used..];
                            self.deadline = None;
                            self.phase = next;
                        }
                    }
                }
                Phase::Length(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.phase = Phase::Idle;
                    }
                }
                Phase::Chunked(state) => {
                    let (used, next) = step_chunk(*state, bytes);
                    bytes = &bytes[used..];
                    self.phase = next;
                }
            }
        }
        // A body of zero length ends where its head ends.
        if matches!(self.phase, Phase::Length(0)) {
            self.phase = Phase::Idle;
        }
        Ok(())
    }
}

/// Index just past the `\r\n\r\n` (or bare `\n\n`) that ends a head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// What follows a complete head, or `Ambiguous`.
fn analyse_head(head: &[u8]) -> Result<Phase, Ambiguous> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next().unwrap_or_default();
    if request_line.starts_with("CONNECT ") {
        return Ok(Phase::Off);
    }
    let mut lengths = 0usize;
    let mut length = None;
    let mut chunked = false;
    let mut upgrade = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            for v in value.split(',') {
                lengths += 1;
                length = v.trim().parse::<u64>().ok();
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if lengths > 1 || (lengths == 1 && chunked) {
        return Err(Ambiguous);
    }
    Ok(if upgrade {
        Phase::Off
    } else if chunked {
        Phase::Chunked(Chunk::Size {
            size: 0,
            in_ext: false,
        })
    } else {
        match length {
            Some(n) => Phase::Length(n),
            // No length: no body (requests are never delimited by close).
            None if lengths == 0 => Phase::Idle,
            // Unparseable length: hyper refuses it; stop following.
            None => Phase::Off,
        }
    })
}

/// Follows a chunked body over `bytes`: how many were consumed and the phase after.
fn step_chunk(mut state: Chunk, bytes: &[u8]) -> (usize, Phase) {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match &mut state {
            Chunk::Size { size, in_ext } => {
                i += 1;
                match b {
                    b'\n' => {
                        state = if *size == 0 {
                            Chunk::Trailer { line_len: 0 }
                        } else {
                            Chunk::Data(*size)
                        };
                    }
                    b'\r' => {}
                    b';' => *in_ext = true,
                    _ if *in_ext => {}
                    _ => match (b as char).to_digit(16) {
                        Some(d) if *size < (1 << 56) => *size = *size * 16 + u64::from(d),
                        _ => return (i, Phase::Off),
                    },
                }
            }
            Chunk::Data(left) => {
                let n = (*left).min((bytes.len() - i) as u64);
                *left -= n;
                i += n as usize;
                if *left == 0 {
                    state = Chunk::DataEnd;
                }
            }
            Chunk::DataEnd => {
                i += 1;
                if b == b'\n' {
                    state = Chunk::Size {
                        size: 0,
                        in_ext: false,
                    };
                }
            }
            Chunk::Trailer { line_len } => {
                i += 1;
                match b {
                    b'\n' if *line_len == 0 => return (i, Phase::Idle),
                    b'\n' => *line_len = 0,
                    b'\r' => {}
                    _ => *line_len += 1,
                }
            }
        }
    }
    (i, Phase::Chunked(state))
}

impl<T: AsyncWrite + Unpin> ClientIo<T> {
    /// Writes the refusal, closes, then fails the read so hyper stops.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((bytes, written, kind)) = &mut self.refusing else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                break;
            }
            *written += n;
        }
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        // Best effort: a client that vanished must not keep us here.
        let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        let kind = *kind;
        Poll::Ready(Err(io::Error::new(kind, "request refused by the lb")))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refusing.is_some() {
            return this.poll_refuse(cx);
        }
        if let Some(watch) = &mut this.watch {
            if let Some(deadline) = &mut watch.deadline {
                if deadline.as_mut().poll(cx).is_ready() {
                    watch.deadline = None;
                    watch.phase = Phase::Off;
                    tracing::debug!("request head not complete within timeout http-request");
                    this.refusing = Some((RESPONSE_408, 0, io::ErrorKind::TimedOut));
                    return this.poll_refuse(cx);
                }
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.activity.touch();
            if let Some(watch) = &mut this.watch {
                if watch.feed(new).is_err() {
                    buf.set_filled(before);
                    watch.phase = Phase::Off;
                    watch.deadline = None;
                    tracing::debug!("ambiguous request framing refused");
                    this.refusing = Some((RESPONSE_400, 0, io::ErrorKind::InvalidData));
                    return this.poll_refuse(cx);
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        if n > 0 {
            self.activity.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            self.activity.touch();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            phase: Phase::Head(Vec::new()),
            limit: Duration::from_secs(10),
            deadline: None,
        }
    }

    #[tokio::test]
    async fn heads_and_bodies_are_followed_across_keep_alive() {
        let mut w = watch();
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\n";
        // Byte by byte, so every split point is exercised.
        for b in stream.iter() {
            w.feed(std::slice::from_ref(b)).unwrap();
        }
        match &w.phase {
            Phase::Head(buf) => assert_eq!(buf.as_slice(), b"GET /c HTTP/1.1\r\n"),
            other => panic!("unexpected phase {other:?}"),
        }
        assert!(w.deadline.is_some(), "a started head runs the http-request timer");
    }

    #[tokio::test]
    async fn ambiguous_framing_is_detected() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
        ] {
            assert_eq!(watch().feed(head.as_bytes()), Err(Ambiguous), "{head:?}");
        }
    }

    #[tokio::test]
    async fn upgrade_stops_watching() {
        let mut w = watch();
        w.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
            .unwrap();
        assert!(matches!(w.phase, Phase::Off));
    }

    #[tokio::test]
    async fn idle_between_requests_runs_no_timer() {
        let mut w = watch();
        w.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(matches!(w.phase, Phase::Idle));
        assert!(w.deadline.is_none());
    }
}
