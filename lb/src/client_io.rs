//! The client side of a connection, below HTTP: records activity (for the
//! client inactivity timeout) and, on HTTP/1 connections, runs the head
//! watcher (`head_watch`) over every byte read, writing its refusals
//! (`408`, `400`, `431`) itself and then ending the connection, until the
//! connection switches protocols.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::frontend_counters::FrontendCounters;
use crate::head_watch::{Refusal, Watch};

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

/// Set once an HTTP/1 connection has switched protocols (its `101` is on
/// the way): what the client sends from then on is not HTTP/1.
pub type Switched = Arc<AtomicBool>;

/// The head watcher of an HTTP/1 connection, until it switches protocols.
#[derive(Debug)]
struct Watched {
    watch: Watch,
    switched: Switched,
    /// The frontend's, for its count of client errors.
    counters: Arc<FrontendCounters>,
}

/// A refusal being written.
#[derive(Debug)]
struct Refusing {
    refusal: Refusal,
    /// Bytes of the response written so far.
    written: usize,
}

/// A client stream with activity tracking and, for HTTP/1, head watching.
#[derive(Debug)]
pub struct ClientIo<T> {
    /// The TCP or TLS stream.
    inner: T,
    /// Shared with the connection task's idle timer.
    activity: Arc<Activity>,
    /// `None` for HTTP/2 and once an HTTP/1 connection switched protocols.
    watched: Option<Watched>,
    /// Set while a refusal is written; the read then fails.
    refusing: Option<Refusing>,
}

impl<T> ClientIo<T> {
    /// HTTP/1: every byte read goes through `watch` until `switched` is
    /// set; its refusals count in `counters`.
    pub fn http1(
        inner: T,
        activity: Arc<Activity>,
        watch: Watch,
        switched: Switched,
        counters: Arc<FrontendCounters>,
    ) -> Self {
        ClientIo {
            inner,
            activity,
            watched: Some(Watched {
                watch,
                switched,
                counters,
            }),
            refusing: None,
        }
    }

    /// The stream below, once the connection is no longer HTTP.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// HTTP/2 (or anything not watched): activity tracking only.
    pub fn plain(inner: T, activity: Arc<Activity>) -> Self {
        ClientIo {
            inner,
            activity,
            watched: None,
            refusing: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> ClientIo<T> {
    /// Starts writing `refusal`'s response; the connection ends after it.
    fn refuse(&mut self, refusal: Refusal, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tracing::debug!(?refusal, "request refused by the head watcher");
        if let Some(w) = self.watched.take() {
            w.counters.request_refused();
        }
        self.refusing = Some(Refusing { refusal, written: 0 });
        self.poll_refuse(cx)
    }

    /// Writes the refusal, closes, then fails the read so hyper stops.
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(Refusing { refusal, written }) = &mut self.refusing else {
            return Poll::Ready(Ok(()));
        };
        let bytes = refusal.response();
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
        Poll::Ready(Err(io::Error::new(
            refusal.error_kind(),
            "request refused by the lb",
        )))
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
        if let Some(w) = &mut this.watched {
            if w.switched.load(Ordering::Relaxed) {
                this.watched = None;
            } else if w.watch.poll_expired(cx) {
                return this.refuse(Refusal::Timeout, cx);
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.activity.touch();
            if let Some(w) = &mut this.watched {
                if let Err(refusal) = w.watch.feed(new) {
                    buf.set_filled(before);
                    return this.refuse(refusal, cx);
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
