//! Writing a client connection's records: plaintext in, records out.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
use rustls::{ContentType, ProtocolVersion};
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

use super::{Sealing, MAX_PLAIN};

/// Plaintext sealed for one write at the most: four full records.
const MAX_BATCH: usize = 4 * MAX_PLAIN;

/// Buffers of one vectored write taken at once.
const MAX_PARTS: usize = 8;

/// A warning-level `close_notify`.
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// A client connection's records, written: each write becomes records of
/// up to 16 KiB of plaintext (up to four of them), sent at once as far as
/// the socket takes them. What the socket did not take is held until it
/// has gone, and the next write waits for that.
pub struct RecordWriter<W = OwnedWriteHalf> {
    tcp: W,
    seal: Sealing,
    /// Sealed records not yet all sent, from `unsent_at`.
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

    /// Seals `payload` as one record of type `typ`.
    pub(super) fn record(&mut self, typ: ContentType, payload: OutboundChunks<'_>) -> io::Result<Vec<u8>> {
        let seq = self.seal.seq;
        if seq >= self.seal.limit {
            return Err(io::Error::other(
                "the cipher's record limit is reached and the lb cannot update the keys",
            ));
        }
        let msg = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload,
        };
        let sealed = self.seal.cipher.encrypt(msg, seq).map_err(io::Error::other)?;
        self.seal.seq = seq + 1;
        Ok(sealed.encode())
    }

    /// Seals what `parts` hold, up to `MAX_BATCH` bytes, as records of at
    /// most 16 KiB each, one after the other for one write; returns them
    /// and how many bytes they carry.
    fn seal_parts(&mut self, parts: &[&[u8]]) -> io::Result<(Vec<u8>, usize)> {
        let total: usize = parts.iter().map(|p| p.len()).sum::<usize>().min(MAX_BATCH);
        let mut wire = Vec::new();
        let mut at = 0;
        while at < total {
            let end = (at + MAX_PLAIN).min(total);
            let chunks = OutboundChunks::Multiple { chunks: parts, start: at, end };
            let record = self.record(ContentType::ApplicationData, chunks)?;
            if wire.is_empty() {
                wire = record;
            } else {
                wire.extend_from_slice(&record);
            }
            at = end;
        }
        Ok((wire, total))
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

    /// Seals what `parts` hold (up to `MAX_BATCH` bytes) once what was
    /// sealed before has gone, and sends it as far as the socket takes it.
    fn poll_seal(&mut self, cx: &mut Context<'_>, parts: &[&[u8]]) -> Poll<io::Result<usize>> {
        ready!(self.poll_unsent(cx))?;
        if self.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if parts.iter().all(|p| p.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let (wire, taken) = self.seal_parts(parts)?;
        self.send(cx, wire)?;
        Poll::Ready(Ok(taken))
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
        self.poll_seal(cx, &[data])
    }

    /// Several buffers (a response's head and body) go into the same
    /// records and one write.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        let mut n = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()).take(MAX_PARTS) {
            parts[n] = buf;
            n += 1;
        }
        self.poll_seal(cx, &parts[..n])
    }

    fn is_write_vectored(&self) -> bool {
        true
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
            let record = this.record(ContentType::Alert, OutboundChunks::Single(&CLOSE_NOTIFY))?;
            this.send(cx, record)?;
            ready!(this.poll_unsent(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
