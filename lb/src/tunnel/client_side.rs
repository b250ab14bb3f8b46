//! The client's side of a tunnel, held as cheaply as its connection
//! allows: an HTTP/1 connection leaves hyper and the head watcher behind,
//! a plain one becomes its bare socket, and a TLS one hands its record
//! layer over from rustls (`tls_records`), so an idle tunnel holds no
//! buffer. Anything else (a stream of an HTTP/2 connection, or TLS that
//! rustls keeps) stays as hyper hands it over.

use std::io;
use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Chain, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::client_io::ClientIo;
use crate::tls_records::{ClientTls, Handover, RecordReader, RecordWriter, TlsConn};

/// An HTTP/1 connection over TLS, as the listener builds it.
type Http1Tls = TokioIo<ClientIo<TlsConn>>;
/// A plain HTTP/1 connection, as the listener builds it.
type Http1Tcp = TokioIo<ClientIo<TcpStream>>;

/// The client's side, read; what the client sent past its request head
/// (hyper read it ahead) comes first.
pub type ClientReader = Chain<Cursor<Bytes>, Reader>;

/// The ways the client's side is held.
pub enum Reader {
    Records(RecordReader),
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<ClientTls>),
    Other(ReadHalf<TokioIo<Upgraded>>),
}

/// The client's side, written.
pub enum Writer {
    Records(RecordWriter),
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<ClientTls>),
    Other(WriteHalf<TokioIo<Upgraded>>),
}

/// Splits the upgraded client connection into its two directions, in the
/// cheapest form it can take. Fails only when rustls, after agreeing that
/// the connection could be handed over, did not give its keys.
pub fn split(upgraded: Upgraded) -> io::Result<(ClientReader, Writer)> {
    let upgraded = match upgraded.downcast::<Http1Tls>() {
        Ok(parts) => {
            let ahead = read_ahead(parts.read_buf);
            let tls = parts.io.into_inner().into_inner();
            return Ok(match tls.hand_over()? {
                Handover::Records(r, w) => (ahead.chain(Reader::Records(r)), Writer::Records(w)),
                Handover::Kept(tls, why) => {
                    tracing::debug!(?why, "the tunnel's TLS stays with rustls");
                    let (r, w) = tokio::io::split(*tls);
                    (ahead.chain(Reader::Tls(r)), Writer::Tls(w))
                }
            });
        }
        Err(upgraded) => upgraded,
    };
    let upgraded = match upgraded.downcast::<Http1Tcp>() {
        Ok(parts) => {
            let ahead = read_ahead(parts.read_buf);
            let (r, w) = parts.io.into_inner().into_inner().into_split();
            return Ok((ahead.chain(Reader::Tcp(r)), Writer::Tcp(w)));
        }
        Err(upgraded) => upgraded,
    };
    let (r, w) = tokio::io::split(TokioIo::new(upgraded));
    Ok((Cursor::new(Bytes::new()).chain(Reader::Other(r)), Writer::Other(w)))
}

/// What the client sent past its request head, out of hyper's read
/// buffer: a view would keep all of its 8 KiB for the tunnel's life.
fn read_ahead(bytes: Bytes) -> Cursor<Bytes> {
    Cursor::new(if bytes.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&bytes)
    })
}

impl Reader {
    /// Which form the side took, for the log.
    pub fn form(&self) -> &'static str {
        match self {
            Reader::Records(_) => "tls-records",
            Reader::Tcp(_) => "tcp",
            Reader::Tls(_) => "rustls",
            Reader::Other(_) => "stream",
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Records(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Tls(r) => Pin::new(r).poll_read(cx, buf),
            Reader::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Records(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Other(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Records(w) => Pin::new(w).poll_flush(cx),
            Writer::Tcp(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls(w) => Pin::new(w).poll_flush(cx),
            Writer::Other(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Records(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Other(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_read_ahead_is_copied_out_of_the_read_buffer() {
        let buffer = Bytes::from(vec![7u8; 8192]);
        let start = buffer.as_ptr() as usize;
        let inside = start..start + buffer.len();
        let view = buffer.slice(100..120);
        let ahead = read_ahead(view.clone());
        assert_eq!(ahead.get_ref(), &view);
        assert!(!inside.contains(&(ahead.get_ref().as_ptr() as usize)), "still a view");
        let none = read_ahead(buffer.slice(8192..));
        assert!(none.get_ref().is_empty());
    }
}
