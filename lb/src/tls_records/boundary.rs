//! Following the record framing of what rustls reads, so that the record
//! layer can be handed over only between records.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::HEADER;

/// A stream under rustls that tells whether the bytes read so far end on
/// a record boundary. rustls takes every whole record out of its buffer
/// right after reading, so on a boundary it holds no part of one.
///
/// The framing is followed, not checked: rustls checks it (and ends the
/// connection on anything malformed).
#[derive(Debug)]
pub struct RecordWatch<T> {
    inner: T,
    /// Header bytes of the record being read, when its header is not
    /// complete yet.
    header: [u8; HEADER],
    header_len: u8,
    /// Body bytes of the current record still to come.
    body_left: u16,
}

impl<T> RecordWatch<T> {
    pub fn new(inner: T) -> RecordWatch<T> {
        RecordWatch {
            inner,
            header: [0; HEADER],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Whether everything read so far is whole records.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.body_left == 0
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Moves the framing over `bytes`.
    fn follow(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.body_left > 0 {
                let n = rest.len().min(usize::from(self.body_left));
                // n ≤ body_left, a u16.
                self.body_left -= n as u16;
                rest = &rest[n..];
                continue;
            }
            let at = usize::from(self.header_len);
            let n = (HEADER - at).min(rest.len());
            self.header[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            if at + n == HEADER {
                self.header_len = 0;
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]);
            } else {
                // at + n < HEADER = 5.
                self.header_len = (at + n) as u8;
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RecordWatch<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.follow(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RecordWatch<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: u16) -> Vec<u8> {
        let mut r = vec![23, 3, 3];
        r.extend_from_slice(&len.to_be_bytes());
        r.extend(std::iter::repeat_n(0xAB, usize::from(len)));
        r
    }

    #[test]
    fn boundaries_are_found_at_any_split() {
        let mut stream = record(300);
        stream.extend(record(0));
        stream.extend(record(16_400));
        stream.extend(record(1));
        let ends = [305, 310, 305 + 5 + 16_405, stream.len()];
        for cut in [1, 2, 4, 5, 6, 300, 4096, 17_000] {
            let mut w = RecordWatch::new(());
            let mut at = 0;
            assert!(w.at_boundary());
            for piece in stream.chunks(cut) {
                w.follow(piece);
                at += piece.len();
                assert_eq!(w.at_boundary(), ends.contains(&at), "cut {cut}, at {at}");
            }
        }
    }
}
