//! Writing a tunnel's client side: plaintext in, records out.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
use rustls::{ContentType, ProtocolVersion};
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

use super::{Sealing, MAX_PLAIN};

/// A warning-level `close_notify`.
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// The client's side of a tunnel, written: each write becomes one record
/// (up to 16 KiB of plaintext), sent at once as far as the socket takes
/// it. A record the socket did not take whole is held until it has gone,
/// and the next write waits for that.
pub struct RecordWriter<W = OwnedWriteHalf> {
    tcp: W,
    seal: Sealing,
    /// A sealed record not yet all sent, from `unsent_at`.
    unsent: Vec<u8>,
    unsent_at: usize,
    /// `close_notify` is sealed: nothing may follow it.
    closed: bool,
}

impl<W: AsyncWrite + Unpin> RecordWriter<W> {
    pub(crate) fn new(tcp: W, seal: Sealing) -> RecordWriter<W> {
        RecordWriter {
            tcp,
            seal,
            unsent: Vec::new(),
            unsent_at: 0,
            closed: false,
        }
    }

    fn record(&mut self, typ: ContentType, data: &[u8]) -> io::Result<Vec<u8>> {
        let seq = self.seal.seq;
        if seq >= self.seal.limit {
            return Err(io::Error::other(
                "the cipher's record limit is reached and the keys cannot be updated on a tunnel",
            ));
        }
        let msg = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(data),
        };
        let sealed = self.seal.cipher.encrypt(msg, seq).map_err(io::Error::other)?;
        self.seal.seq = seq + 1;
        Ok(sealed.encode())
    }

    /// Sends what is left of the last record.
    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unsent_at < self.unsent.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.unsent[self.unsent_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unsent_at += n;
        }
        self.unsent = Vec::new();
        self.unsent_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends `record`, keeping what the socket does not take now.
    fn send(&mut self, cx: &mut Context<'_>, record: Vec<u8>) -> io::Result<()> {
        let sent = match Pin::new(&mut self.tcp).poll_write(cx, &record) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => 0,
        };
        if sent < record.len() {
            self.unsent = record;
            self.unsent_at = sent;
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for RecordWriter<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_unsent(cx))?;
        if this.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = data.len().min(MAX_PLAIN);
        let record = this.record(ContentType::ApplicationData, &data[..take])?;
        this.send(cx, record)?;
        Poll::Ready(Ok(take))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_unsent(cx)
    }

    /// Ends the client's side as TLS asks: `close_notify`, then the TCP
    /// half-close.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_unsent(cx))?;
        if !this.closed {
            this.closed = true;
            let record = this.record(ContentType::Alert, &CLOSE_NOTIFY)?;
            this.send(cx, record)?;
            ready!(this.poll_unsent(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
