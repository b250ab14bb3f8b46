//! The lb's own HTTP/1.1 client towards servers, on `httparse`.
//!
//! A request is written and its response head read by the task that serves
//! the client's connection, on the server connection itself: no connection
//! task, no channel between the request and its connection, and no wake-up
//! of one task by another on the way (what a general-purpose client such as
//! hyper's needs, and what showed in the per-request profile). The response
//! body is read the same way, by the client connection polling
//! [`ServerBody`], which also goes on sending a request body the server
//! answered before its end. Once both are complete, a keep-alive connection
//! goes back to its server's [`Pool`]. After a `101`, the connection and
//! whatever was read past the head become the server side of a tunnel.

mod body;
mod head;
mod pool;
mod upload;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header;
use http::Method;
use hyper::body::Body as _;
use tokio::net::TcpStream;

pub use body::ServerBody;
pub use head::{Framing, HeadLimits, RequestHead, ResponseHead};
pub use pool::Pool;
pub use upload::{RequestBody, Upload};
use upload::UploadError;

/// Why a server connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
}

/// How an exchange with a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection ended (closed or reset) before the first byte of a
    /// response: on a reused connection, usually the server closing it
    /// while idle as the request went out.
    #[error("the server closed the connection without answering")]
    Closed,
    /// The response head is not HTTP/1.x, too large, or frames its body
    /// ambiguously.
    #[error("invalid response head: {0}")]
    Malformed(&'static str),
    /// The connection failed after part of a response head arrived.
    #[error("reading the response: {0}")]
    Read(io::Error),
    /// Reading the client's request body failed (malformed or cut).
    #[error("reading the client's request body: {0}")]
    ClientBody(hyper::Error),
}

/// One HTTP/1.1 connection to a server.
#[derive(Debug)]
pub struct ServerConn {
    io: TcpStream,
    /// Read from the server and not consumed yet.
    buf: BytesMut,
    /// It carried a request before this one.
    reused: bool,
}

/// Read buffer size: a response head and a small body arrive in one read.
const READ_SIZE: usize = 8 * 1024;

/// Opens a TCP connection within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<ServerConn, ConnectError> {
    let io = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    // Small request/response writes must not wait for Nagle.
    io.set_nodelay(true)?;
    Ok(ServerConn {
        io,
        buf: BytesMut::new(),
        reused: false,
    })
}

/// A response head that arrived, and the rest of the request when the
/// server answered before its body was over (it goes on in the body).
#[derive(Debug)]
pub struct Answer {
    pub head: ResponseHead,
    pub upload: Option<Upload>,
}

/// What a response head is read against.
#[derive(Debug, Clone, Copy)]
struct HeadRead {
    limits: HeadLimits,
    /// The request was a `HEAD`: no body follows whatever the head says.
    is_head: bool,
    /// The request asked to switch protocols: a `101` is expected.
    upgrade: bool,
    /// Some of a response arrived.
    received: bool,
}

impl ServerConn {
    /// It carried a request before: a failure before any response byte is
    /// then most likely the server having closed it while idle.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Whether an idle connection can take a request: nothing arrived on
    /// it since its last response (neither data nor the server's close).
    /// Costs a system call only when the socket was seen readable.
    pub fn is_idle_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// The TCP stream and what was read past the response head, for a
    /// tunnel after `101`. Those bytes (almost always none) are copied out
    /// so the tunnel does not keep the whole read buffer for its life.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.io, self.buf.to_vec())
    }

    /// Reads more from the server into the buffer; `Ok(0)` at its close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Sends `head` (and `body`, when the request has one) and reads the
    /// response head; informational responses (`1xx` other than `101`) are
    /// skipped. The request body is sent while the head is awaited, so a
    /// server may answer first: the rest of the body then comes back in the
    /// [`Answer`]. A server that answers and stops reading (a `413`) has
    /// its answer taken, and the connection is not reused.
    pub async fn exchange(
        &mut self,
        request: &RequestHead,
        body: Option<RequestBody>,
        limits: HeadLimits,
    ) -> Result<Answer, ExchangeError> {
        let head = &request.parts;
        let has_length = head.headers.contains_key(header::CONTENT_LENGTH);
        let body = body.filter(|b| has_length || !b.is_end_stream());
        let chunked = body.is_some() && !has_length;
        let framing = if chunked {
            head::BodyHeader::Chunked
        } else if body.is_none()
            && !has_length
            && matches!(head.method, Method::POST | Method::PUT | Method::PATCH)
        {
            // Without a body these still say so, as clients do.
            head::BodyHeader::ZeroLength
        } else {
            head::BodyHeader::AsIs
        };
        let mut out = Vec::with_capacity(512);
        head::encode_request(request, framing, &mut out);
        let mut upload = Some(Upload::new(out, body, chunked));
        let mut read = HeadRead {
            limits,
            is_head: head.method == Method::HEAD,
            upgrade: head.headers.contains_key(header::UPGRADE),
            received: false,
        };
        let mut write_failed = false;
        let mut head = poll_fn(|cx| {
            if let Some(u) = upload.as_mut() {
                match u.poll_send(&mut self.io, cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => upload = None,
                    Poll::Ready(Err(UploadError::Client(e))) => return Poll::Ready(Err(ExchangeError::ClientBody(e))),
                    Poll::Ready(Err(UploadError::Write(_))) => {
                        // The server may have answered, then closed: that
                        // answer is read before giving up.
                        upload = None;
                        write_failed = true;
                    }
                }
            }
            self.poll_head(cx, &mut read)
        })
        .await?;
        if write_failed {
            head.keep_alive = false;
        }
        Ok(Answer { head, upload })
    }

    /// Reads until a complete response head (skipping `1xx` other than `101`).
    fn poll_head(&mut self, cx: &mut Context<'_>, read: &mut HeadRead) -> Poll<Result<ResponseHead, ExchangeError>> {
        loop {
            if !self.buf.is_empty() {
                read.received = true;
                match head::parse_response(&mut self.buf, read.limits, read.is_head, read.upgrade)? {
                    Some(resp) if resp.parts.status.is_informational() && resp.framing != Framing::Upgrade => continue,
                    Some(resp) => return Poll::Ready(Ok(resp)),
                    None => {}
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if read.received => {
                    return Poll::Ready(Err(ExchangeError::Read(io::ErrorKind::UnexpectedEof.into())))
                }
                Ok(0) => return Poll::Ready(Err(ExchangeError::Closed)),
                Ok(_) => {}
                Err(_) if !read.received => return Poll::Ready(Err(ExchangeError::Closed)),
                Err(e) => return Poll::Ready(Err(ExchangeError::Read(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests;
