//! A request on its way to a server: its head, then its body frame by
//! frame (as it is, or chunk-coded when its length is unknown). It is
//! driven by polling, so the same upload goes on inside the response body
//! when the server answers before the request body is over (an echo, a
//! stream both ways), all within the client connection's task.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Body;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// Body of requests sent to servers.
pub type RequestBody = BoxBody<Bytes, hyper::Error>;

/// Why an upload stopped.
#[derive(Debug)]
pub(super) enum UploadError {
    /// Writing to the server failed (it closed or reset the connection).
    Write(io::Error),
    /// Reading the client's body failed (malformed or cut).
    Client(hyper::Error),
}

/// What is left to send of one request.
#[derive(Debug)]
pub struct Upload {
    /// Bytes ready to write (the head, a chunk with its framing).
    out: Vec<u8>,
    /// How much of `out` is written.
    written: usize,
    /// The body, until its end was read.
    body: Option<RequestBody>,
    /// The body goes chunk-coded.
    chunked: bool,
}

/// Body bytes gathered before a write: frames that are ready go out
/// together (the first with the head), up to this much.
const GATHER: usize = 16 * 1024;

impl Upload {
    /// `head` (already encoded), then `body` if any.
    pub fn new(head: Vec<u8>, body: Option<RequestBody>, chunked: bool) -> Upload {
        Upload {
            out: head,
            written: 0,
            body,
            chunked,
        }
    }

    /// Takes the body frames that are ready and writes, until all of the
    /// request is sent (`Ready(Ok)`) or something fails.
    pub(super) fn poll_send(&mut self, io: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), UploadError>> {
        loop {
            while self.out.len() - self.written < GATHER {
                let Some(body) = self.body.as_mut() else { break };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => {
                        self.body = None;
                        if self.chunked {
                            self.out.extend_from_slice(b"0\r\n\r\n");
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.body = None;
                        return Poll::Ready(Err(UploadError::Client(e)));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.push(&data);
                        }
                    }
                }
            }
            if self.written < self.out.len() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.written..]))
                    .map_err(UploadError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(UploadError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.written += n;
                if self.written == self.out.len() {
                    self.out.clear();
                    self.written = 0;
                }
                continue;
            }
            return match self.body {
                None => Poll::Ready(Ok(())),
                // Waiting for the client's next frame (its waker is set).
                Some(_) => Poll::Pending,
            };
        }
    }

    /// Queues one body frame with its framing.
    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.chunked {
            self.out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        self.out.extend_from_slice(data);
        if self.chunked {
            self.out.extend_from_slice(b"\r\n");
        }
    }
}
