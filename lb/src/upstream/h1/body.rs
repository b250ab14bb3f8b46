//! A response body read from its server connection as the client takes it:
//! by length, chunk by chunk, or until the server closes. Once it is read
//! to its end, a keep-alive connection goes back to its pool.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};

use super::head::Framing;
use super::pool::Pool;
use super::upload::{Upload, UploadError};
use super::ServerConn;

/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Most bytes of trailer fields after the last chunk (they are dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes to go.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes to go.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk; bytes of them seen so far.
    Trailers(usize),
    /// Everything until the server closes.
    UntilClose,
    /// Complete.
    Done,
}

/// The body of a response from a server connection.
#[derive(Debug)]
pub struct ServerBody {
    /// The connection, until the body is complete.
    conn: Option<ServerConn>,
    state: State,
    /// The rest of the request body, when the server answered before it
    /// was all sent.
    upload: Option<Upload>,
    /// Where the connection goes once the body is complete; `None` when it
    /// cannot carry another request.
    pool: Option<Arc<Pool>>,
}

impl ServerBody {
    /// The body framed as `framing` on `conn`, sending the rest of the
    /// request (`upload`) meanwhile; `pool` takes the connection back once
    /// both are done.
    pub fn new(conn: ServerConn, framing: Framing, upload: Option<Upload>, pool: Option<Arc<Pool>>) -> ServerBody {
        let state = match framing {
            Framing::Empty | Framing::Upgrade => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = ServerBody {
            conn: Some(conn),
            state,
            upload,
            pool,
        };
        if matches!(body.state, State::Done | State::Length(0)) {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to its pool when it
    /// can carry another request (the request was all sent, nothing more
    /// arrived).
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            if conn.buf.is_empty() && self.upload.is_none() {
                pool.put(conn);
            }
        }
    }

    /// Fails the body: the connection is dropped.
    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.upload = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(e)))
    }

    /// Goes on sending the rest of the request, as far as it can now.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        let (Some(upload), Some(conn)) = (self.upload.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        match upload.poll_send(&mut conn.io, cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => {
                self.upload = None;
                Ok(())
            }
            Poll::Ready(Err(UploadError::Write(e))) => {
                // The server stopped reading; its response may still be whole.
                tracing::debug!(error = %e, "the server stopped taking the request body");
                self.upload = None;
                self.pool = None;
                Ok(())
            }
            Poll::Ready(Err(UploadError::Client(e))) => Err(io::Error::other(e)),
        }
    }

    /// The next step of decoding with what is buffered: a frame, a state
    /// change (`None`: decode again), or what stopped it.
    fn step(&mut self) -> Result<Option<Bytes>, Need> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        match self.state {
            State::Done => Ok(None),
            State::Length(left) | State::ChunkData(left) => {
                if buf.is_empty() {
                    return Err(Need::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                match self.state {
                    State::Length(_) if left == 0 => self.finish(),
                    State::Length(_) => self.state = State::Length(left),
                    _ if left == 0 => self.state = State::ChunkEnd,
                    _ => self.state = State::ChunkData(left),
                }
                Ok(Some(data))
            }
            State::UntilClose => match buf.is_empty() {
                true => Err(Need::More),
                false => Ok(Some(buf.split().freeze())),
            },
            State::ChunkSize => {
                let Some(end) = line_end(buf, MAX_CHUNK_LINE)? else {
                    return Err(Need::More);
                };
                let size = chunk_size(&buf[..end]).ok_or(Need::Invalid("invalid chunk size"))?;
                buf.advance(end + 2);
                self.state = match size {
                    0 => State::Trailers(0),
                    n => State::ChunkData(n),
                };
                Ok(None)
            }
            State::ChunkEnd => {
                if buf.len() < 2 {
                    return Err(Need::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Need::Invalid("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                self.state = State::ChunkSize;
                Ok(None)
            }
            State::Trailers(seen) => {
                let Some(end) = line_end(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                    return Err(Need::More);
                };
                buf.advance(end + 2);
                match end {
                    0 => self.finish(),
                    n => self.state = State::Trailers(seen + n + 2),
                }
                Ok(None)
            }
        }
    }
}

/// Why decoding stopped.
#[derive(Debug)]
enum Need {
    /// More bytes from the server.
    More,
    /// The server's framing is broken.
    Invalid(&'static str),
}

/// Position of the CRLF ending the line at the start of `buf`; `None` when
/// it has not arrived, an error when the line is longer than `max` or ends
/// in a bare LF.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, Need> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|b| *b == b'\n') {
        Some(0) => Err(Need::Invalid("bare LF in chunk framing")),
        Some(i) if window[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(Need::Invalid("bare LF in chunk framing")),
        None if window.len() >= max.saturating_add(2) => Err(Need::Invalid("chunk framing line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line's size (hex, within `u64`), extensions ignored.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let v = (*d as char).to_digit(16)?;
        Some(n << 4 | u64::from(v))
    })
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Err(e) = self.poll_upload(cx) {
            return self.fail(e);
        }
        loop {
            match self.step() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if self.state == State::Done => return Poll::Ready(None),
                Ok(None) => continue,
                Err(Need::Invalid(why)) => return self.fail(io::Error::new(io::ErrorKind::InvalidData, why)),
                Err(Need::More) => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.state == State::UntilClose => {
                    self.conn = None;
                    self.upload = None;
                    self.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before the end of the body",
                    ))
                }
                Ok(_) => {}
                Err(e) => return self.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
