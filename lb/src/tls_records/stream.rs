//! A client's TLS connection as the listener serves it: rustls' stream
//! until the first moment rustls holds nothing but keys and state (as a
//! rule, when the first request has been read), the lb's own record layer
//! from then on. Past the handshake, rustls' buffers, its connection
//! state and its per-record bookkeeping are not needed, and an idle
//! keep-alive connection or a tunnel then holds no TLS buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{ready, take, ClientTls, Handover, Kept, RecordReader, RecordWriter};

/// A client's TLS connection, in whichever hands its records are.
pub enum TlsConn {
    /// Boxed: once the records are handed over, the connection keeps only
    /// the small variant.
    Rustls(Box<ClientTls>),
    /// rustls', for good: the lb has sent `close_notify` or a read failed,
    /// so nothing may be handed over (a writer of the lb's own would let
    /// data follow the `close_notify`).
    Closing(Box<ClientTls>),
    Records(RecordReader, RecordWriter),
    /// The hand-over failed half way; the connection is gone.
    Lost,
}

impl TlsConn {
    pub fn new(stream: ClientTls) -> TlsConn {
        TlsConn::Rustls(Box::new(stream))
    }

    /// The record layer, for a tunnel: already the lb's own, or handed over
    /// now if rustls can let it go.
    pub fn hand_over(self) -> io::Result<Handover> {
        match self {
            TlsConn::Records(r, w) => Ok(Handover::Records(r, w)),
            TlsConn::Rustls(tls) => super::hand_over(*tls),
            TlsConn::Closing(tls) => Ok(Handover::Kept(tls, Kept::Closing)),
            TlsConn::Lost => Err(lost()),
        }
    }

    /// rustls keeps the connection for good.
    fn close(&mut self) {
        *self = match std::mem::replace(self, TlsConn::Lost) {
            TlsConn::Rustls(tls) => TlsConn::Closing(tls),
            other => other,
        };
    }

    /// Takes the records over from rustls if it holds nothing else now.
    fn try_take(&mut self) -> io::Result<()> {
        let TlsConn::Rustls(tls) = self else {
            return Ok(());
        };
        if ready(tls).is_err() {
            return Ok(());
        }
        let TlsConn::Rustls(tls) = std::mem::replace(self, TlsConn::Lost) else {
            return Ok(());
        };
        let (r, w) = take(*tls)?;
        *self = TlsConn::Records(r, w);
        Ok(())
    }
}

fn lost() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the TLS connection was lost in its hand-over")
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A read is where a connection waits: the moment to let rustls go.
        if let Err(e) = this.try_take() {
            return Poll::Ready(Err(e));
        }
        let read = match this {
            TlsConn::Rustls(tls) | TlsConn::Closing(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
            TlsConn::Records(r, _) => return Pin::new(r).poll_read(cx, buf),
            TlsConn::Lost => return Poll::Ready(Err(lost())),
        };
        if let Poll::Ready(Err(_)) = read {
            this.close();
        }
        read
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TlsConn::Rustls(tls) | TlsConn::Closing(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
            TlsConn::Records(_, w) => Pin::new(w).poll_write(cx, buf),
            TlsConn::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TlsConn::Rustls(tls) | TlsConn::Closing(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
            TlsConn::Records(_, w) => Pin::new(w).poll_write_vectored(cx, bufs),
            TlsConn::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsConn::Rustls(tls) | TlsConn::Closing(tls) => Pin::new(&mut **tls).poll_flush(cx),
            TlsConn::Records(_, w) => Pin::new(w).poll_flush(cx),
            TlsConn::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.close();
        match this {
            TlsConn::Rustls(tls) | TlsConn::Closing(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
            TlsConn::Records(_, w) => Pin::new(w).poll_shutdown(cx),
            TlsConn::Lost => Poll::Ready(Err(lost())),
        }
    }
}
