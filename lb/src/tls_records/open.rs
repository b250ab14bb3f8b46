//! Reading a client connection's records: records in, plaintext out.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::crypto::cipher::InboundOpaqueMessage;
use rustls::{ContentType, ProtocolVersion};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

use crate::thread_buffer::{self, ThreadBuffer};

use super::{Opening, HEADER, MAX_BODY, RECORD_VERSION};

/// Records carrying nothing a client may send in a row (empty ones, as
/// rustls allows, and `user_canceled` alerts): they cost work.
const MAX_EMPTY_RUN: u8 = 32;

/// Alert descriptions that matter here.
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;
/// The alert level a `user_canceled` must have.
const WARNING: u8 = 1;

/// Room for a record carried over from the last read and a full read.
const SCRATCH: usize = 2 * (HEADER + MAX_BODY);

thread_local! {
    /// The thread's buffer for records being opened, shared by every
    /// connection the thread drives and borrowed only within one poll: a
    /// waiting reader holds no buffer.
    static RECORDS: ThreadBuffer = thread_buffer::new(SCRATCH);
}

fn with_records<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_buffer::with(&RECORDS, SCRATCH, f)
}

/// How reading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The client sent `close_notify`: the end of its data.
    Closed,
    /// The stream failed; reads fail the same way.
    Failed(RecordError),
}

/// Why the client's records could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("TLS record with a malformed header")]
    BadHeader,
    #[error("TLS record failed authentication")]
    Decrypt,
    #[error("TLS record of a type not allowed here")]
    UnexpectedType,
    #[error("TLS handshake message after the hand-over from rustls (key update or renegotiation)")]
    Handshake,
    #[error("the client sent TLS alert {0}")]
    Alert(u8),
    #[error("malformed TLS alert")]
    BadAlert,
    #[error("too many TLS records carrying nothing in a row")]
    EmptyRun,
    #[error("TLS record sequence exhausted")]
    Exhausted,
    #[error("the client closed the connection without close_notify")]
    Truncated,
}

impl From<RecordError> for io::Error {
    fn from(e: RecordError) -> io::Error {
        let kind = match e {
            RecordError::Truncated => io::ErrorKind::UnexpectedEof,
            RecordError::Alert(_) => io::ErrorKind::ConnectionAborted,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// A client connection's records, read: opens records as they arrive and
/// hands out their plaintext. Holds no buffer between records, except for
/// a record that arrived in part or plaintext its reader had no room for.
pub struct RecordReader<R = OwnedReadHalf> {
    tcp: R,
    open: Opening,
    /// What a read left over, rarely anything: kept out of line, so the
    /// reader a connection holds for its whole life stays small.
    left: Option<Box<Left>>,
    empty_run: u8,
    state: ReadState,
}

/// Bytes a read left for the next.
#[derive(Default)]
struct Left {
    /// Plaintext opened but not yet taken, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// A record not yet complete: its first `partial_len` bytes. Once its
    /// header is there, the buffer has the whole record's size and the
    /// rest is read straight into it (a record trickling in is not copied
    /// again at every read).
    partial: Vec<u8>,
    partial_len: usize,
}

impl Left {
    fn is_empty(&self) -> bool {
        self.plain_at == self.plain.len() && self.partial_len == 0
    }

    /// Keeps `bytes`, the start of a record.
    fn keep_partial(&mut self, bytes: &[u8]) {
        let size = match bytes.get(..HEADER) {
            Some(h) => HEADER + usize::from(u16::from_be_bytes([h[3], h[4]])),
            None => bytes.len(),
        };
        self.partial = vec![0; size.max(bytes.len())];
        self.partial[..bytes.len()].copy_from_slice(bytes);
        self.partial_len = bytes.len();
    }

    /// Whether a record's header is there and the rest is not.
    fn record_in_progress(&self) -> bool {
        self.partial_len >= HEADER && self.partial_len < self.partial.len()
    }
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    pub(crate) fn new(tcp: R, open: Opening) -> RecordReader<R> {
        RecordReader {
            tcp,
            open,
            left: None,
            empty_run: 0,
            state: ReadState::Open,
        }
    }

    /// Reads once from the socket and opens every whole record there is;
    /// their plaintext goes to `out` as far as it has room, the rest to
    /// `left`, as does the start of a record not yet complete.
    fn poll_fill(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.left.as_ref().is_some_and(|l| l.record_in_progress()) {
            return self.poll_rest_of_record(cx, out);
        }
        with_records(|scratch| {
            let partial = self.left.as_ref().map_or(&[][..], |l| &l.partial[..l.partial_len]);
            let carried = partial.len();
            scratch[..carried].copy_from_slice(partial);
            let mut rb = ReadBuf::new(&mut scratch[carried..]);
            ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Err(self.fail(RecordError::Truncated)));
            }
            // What was left is now in the scratch buffer; plaintext was
            // all taken before a read.
            self.left = None;
            let end = carried + n;
            let mut at = 0;
            while self.state == ReadState::Open {
                // A record that cannot be taken ends the reading, but only
                // after what the records before it carried: that was
                // authenticated and is handed out first.
                let opened = match record_len(&scratch[at..end]) {
                    Ok(Some(len)) => self.open_record(&mut scratch[at..at + HEADER + len], out).map(|()| len),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(len) => at += HEADER + len,
                    Err(e) => self.state = ReadState::Failed(e),
                }
            }
            if self.state == ReadState::Open && at < end {
                self.left.get_or_insert_default().keep_partial(&scratch[at..end]);
            }
            Poll::Ready(Ok(()))
        })
    }

    /// Reads the rest of the record in progress into its own buffer, and
    /// opens it once it is whole.
    fn poll_rest_of_record(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some(left) = self.left.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut rb = ReadBuf::new(&mut left.partial[left.partial_len..]);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Err(self.fail(RecordError::Truncated)));
        }
        left.partial_len += n;
        if left.partial_len < left.partial.len() {
            return Poll::Ready(Ok(()));
        }
        // Whole: plaintext was all taken before a read, so nothing else is
        // left.
        let mut record = std::mem::take(&mut left.partial);
        self.left = None;
        if let Err(e) = self.open_record(&mut record, out) {
            self.state = ReadState::Failed(e);
        }
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self, e: RecordError) -> io::Error {
        self.state = ReadState::Failed(e);
        self.left = None;
        e.into()
    }

    /// Counts a record that carried nothing (an empty one, a
    /// `user_canceled`): they cost work, so only so many in a row.
    fn nothing_carried(&mut self) -> Result<(), RecordError> {
        self.empty_run += 1;
        if self.empty_run > MAX_EMPTY_RUN {
            return Err(RecordError::EmptyRun);
        }
        Ok(())
    }

    /// Opens one whole record (header included) and passes on what it
    /// carries.
    fn open_record(&mut self, record: &mut [u8], out: &mut ReadBuf<'_>) -> Result<(), RecordError> {
        let typ = ContentType::from(record[0]);
        let version = ProtocolVersion::from(u16::from_be_bytes([record[1], record[2]]));
        // TLS 1.3 hides the real type inside; TLS 1.2 shows it.
        let outer_ok = match typ {
            ContentType::ApplicationData => true,
            ContentType::Alert | ContentType::Handshake => !self.open.tls13,
            _ => false,
        };
        if !outer_ok {
            return Err(RecordError::UnexpectedType);
        }
        let seq = self.open.seq;
        let msg = InboundOpaqueMessage::new(typ, version, &mut record[HEADER..]);
        let plain = self.open.cipher.decrypt(msg, seq).map_err(|_| RecordError::Decrypt)?;
        self.open.seq = seq.checked_add(1).ok_or(RecordError::Exhausted)?;
        match plain.typ {
            ContentType::ApplicationData if plain.payload.is_empty() => self.nothing_carried()?,
            ContentType::ApplicationData => {
                self.empty_run = 0;
                let data = plain.payload;
                // `out` fills first and only what it has no room for waits
                // in `left`, so the order holds.
                let n = data.len().min(out.remaining());
                out.put_slice(&data[..n]);
                if n < data.len() {
                    self.left.get_or_insert_default().plain.extend_from_slice(&data[n..]);
                }
            }
            ContentType::Alert => match *plain.payload {
                [_, CLOSE_NOTIFY] => self.state = ReadState::Closed,
                [WARNING, USER_CANCELED] => self.nothing_carried()?,
                [_, description] => return Err(RecordError::Alert(description)),
                _ => return Err(RecordError::BadAlert),
            },
            ContentType::Handshake => return Err(RecordError::Handshake),
            _ => return Err(RecordError::UnexpectedType),
        }
        Ok(())
    }
}

/// The body length of the record `buf` starts with, once it is all there;
/// a header that cannot start a record here is an error as soon as it is
/// complete.
fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(header) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let version = u16::from_be_bytes([header[1], header[2]]);
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if version != RECORD_VERSION || len == 0 || len > MAX_BODY {
        return Err(RecordError::BadHeader);
    }
    Ok((buf.len() >= HEADER + len).then_some(len))
}

impl<R: AsyncRead + Unpin> AsyncRead for RecordReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(left) = this.left.as_mut().filter(|l| l.plain_at < l.plain.len()) {
                let n = out.remaining().min(left.plain.len() - left.plain_at);
                out.put_slice(&left.plain[left.plain_at..left.plain_at + n]);
                left.plain_at += n;
                if left.plain_at == left.plain.len() {
                    left.plain = Vec::new();
                    left.plain_at = 0;
                }
                if left.is_empty() {
                    this.left = None;
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                ReadState::Open => {}
                ReadState::Closed => return Poll::Ready(Ok(())),
                ReadState::Failed(e) => return Poll::Ready(Err(e.into())),
            }
            let before = out.filled().len();
            ready!(this.poll_fill(cx, out))?;
            if out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}
