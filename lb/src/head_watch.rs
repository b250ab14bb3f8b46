//! Follows an HTTP/1 request stream as it arrives, below hyper, so the lb
//! can answer like HAProxy where hyper would just close or let a request
//! through:
//!
//! - `timeout http-request`: a head not complete in time (slowloris, or a
//!   client that connects and says nothing) gets `408`;
//! - ambiguous framing (both `Content-Length` and `Transfer-Encoding`, more
//!   than one `Content-Length`, or one that is no number) gets `400`; hyper
//!   silently keeps one `Content-Length` or lets `Transfer-Encoding` win, so
//!   the service never sees these;
//! - a head over `limits.max_header_bytes` gets `431`.
//!
//! Each refusal ends the connection. To know where the next head starts it
//! follows body framing: lengths, and chunked bodies with hyper's grammar
//! (a chunked body hyper refuses also ends the connection after hyper's
//! answer, so nothing follows it). It stops only when the connection
//! switches protocols, which its owner tells it by dropping it.
//!
//! Every received byte is looked at a bounded number of times, however the
//! head is cut into reads: the scan goes on where the last read left it,
//! and a head is copied only when it spans reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Why the watcher refuses a request; each closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The head was not complete within `timeout http-request`.
    Timeout,
    /// The body's framing is ambiguous or unreadable.
    BadFraming,
    /// The head is over `limits.max_header_bytes`.
    TooLarge,
}

impl Refusal {
    /// The response written to the client (HAProxy's texts).
    pub fn response(self) -> &'static [u8] {
        match self {
            Refusal::Timeout => b"HTTP/1.1 408 Request Time-out\r\nContent-Length: 110\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>408 Request Time-out</h1>\nYour browser didn't send a complete request in time.\n</body></html>\n",
            Refusal::BadFraming => b"HTTP/1.1 400 Bad Request\r\nContent-Length: 90\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>400 Bad Request</h1>\nYour browser sent an invalid request.\n</body></html>\n",
            Refusal::TooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 107\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>431 Request Header Fields Too Large</h1>\nYour browser sent too large a request.\n</body></html>\n",
        }
    }

    /// The error the read fails with once the response is out, so hyper stops.
    pub fn error_kind(self) -> io::ErrorKind {
        match self {
            Refusal::Timeout => io::ErrorKind::TimedOut,
            Refusal::BadFraming | Refusal::TooLarge => io::ErrorKind::InvalidData,
        }
    }
}

/// A head being received.
#[derive(Debug, Default)]
struct Head {
    /// Bytes of the head so far, empty lines before it included.
    len: usize,
    /// Whether the current line has a byte other than CR.
    line_has_content: bool,
    /// Whether the request line has begun; empty lines before it are
    /// skipped (RFC 9112 §2.2).
    started: bool,
    /// The head's bytes from earlier reads; empty while the head lies in
    /// one read, which is then read in place.
    kept: Vec<u8>,
}

impl Head {
    /// Goes on scanning with `bytes`; the index in `bytes` just past the
    /// empty line that ends the head, if it is there.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while let Some(nl) = bytes[at..].iter().position(|b| *b == b'\n') {
            let has_content = self.line_has_content || bytes[at..at + nl].iter().any(|b| *b != b'\r');
            at += nl + 1;
            self.line_has_content = false;
            if has_content {
                self.started = true;
            } else if self.started {
                self.len += at;
                return Some(at);
            }
        }
        self.line_has_content |= bytes[at..].iter().any(|b| *b != b'\r');
        self.len += bytes.len();
        None
    }
}

/// Where in a chunked body the watcher is, state for state as hyper's
/// decoder (which refuses what this refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a size line: a hex digit must come.
    Start,
    /// In the hex size.
    Size(u64),
    /// Blanks after the size.
    SizeLws(u64),
    /// A chunk extension, up to CR.
    Extension(u64),
    /// The LF of a size line.
    SizeLf(u64),
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// After the last chunk or a trailer line: CR ends the body, anything
    /// else starts a trailer line.
    EndCr,
    /// In a trailer line.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The final LF.
    EndLf,
}

/// Where in the HTTP/1 message stream the watcher is.
#[derive(Debug)]
enum Phase {
    /// Between requests, nothing of the next one seen yet.
    Idle,
    /// Inside a head.
    Head(Head),
    /// Inside a body with this many bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// After a chunked body hyper refuses: hyper answers and closes the
    /// connection, reading no further request.
    Unframed,
}

/// The watcher of one HTTP/1 connection.
#[derive(Debug)]
pub struct Watch {
    /// Position in the stream.
    phase: Phase,
    /// `timeout http-request`.
    http_request: Duration,
    /// `limits.max_header_bytes`.
    max_head: usize,
    /// When the head in progress must be complete.
    due: Instant,
    /// The timer for `due`: one for the connection, set to `due` only when
    /// a read finds a head incomplete (almost every head arrives whole in
    /// one read, and then the timer is never touched).
    deadline: Pin<Box<Sleep>>,
    /// Whether `deadline` applies (a head is in progress).
    armed: bool,
    /// Head bytes looked at so far: the scan's cost, which tests bound.
    examined: usize,
}

impl Watch {
    /// A watcher for a new connection: its first head must be complete
    /// within `http_request` from now.
    pub fn new(http_request: Duration, max_head: usize) -> Watch {
        let due = Instant::now() + http_request;
        Watch {
            phase: Phase::Head(Head::default()),
            http_request,
            max_head,
            due,
            deadline: Box::pin(tokio::time::sleep_until(due)),
            armed: true,
            examined: 0,
        }
    }

    /// Whether the head in progress missed its deadline (registers `cx`
    /// to be woken when it does).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            return false;
        }
        if self.deadline.deadline() != self.due {
            self.deadline.as_mut().reset(self.due);
        }
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// Follows `bytes`, the next ones the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Unframed => return Ok(()),
                Phase::Idle => {
                    self.phase = Phase::Head(Head::default());
                    self.due = Instant::now() + self.http_request;
                    self.armed = true;
                }
                Phase::Head(head) => {
                    let end = head.scan(bytes);
                    self.examined += end.unwrap_or(bytes.len());
                    if head.len > self.max_head {
                        return Err(Refusal::TooLarge);
                    }
                    let Some(end) = end else {
                        head.kept.extend_from_slice(bytes);
                        return Ok(());
                    };
                    let next = if head.kept.is_empty() {
                        analyse_head(&bytes[..end])
                    } else {
                        head.kept.extend_from_slice(&bytes[..end]);
                        analyse_head(&head.kept)
                    };
                    self.examined += head.len;
                    self.phase = next?;
                    self.armed = false;
                    bytes = &bytes[end..];
                }
                Phase::Length(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.phase = Phase::Idle;
                    }
                }
                Phase::Chunked(state) => {
                    let (used, next) = step_chunk(*state, bytes);
                    bytes = &bytes[used..];
                    self.phase = next;
                }
            }
        }
        // A body of zero length ends where its head ends.
        if matches!(self.phase, Phase::Length(0)) {
            self.phase = Phase::Idle;
        }
        Ok(())
    }
}

/// The phase after a complete head, or why it is refused.
fn analyse_head(head: &[u8]) -> Result<Phase, Refusal> {
    let mut lengths = 0usize;
    let mut length = None;
    let mut chunked = false;
    let lines = head
        .split(|b| *b == b'\n')
        .skip_while(|l| l.iter().all(|b| *b == b'\r'))
        .skip(1);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = &line[colon + 1..];
        if name.eq_ignore_ascii_case(b"content-length") {
            for v in value.split(|b| *b == b',') {
                lengths += 1;
                // Digits only: `parse` would take a sign, which hyper refuses.
                length = std::str::from_utf8(v.trim_ascii())
                    .ok()
                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok());
                if length.is_none() {
                    return Err(Refusal::BadFraming);
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
    }
    if lengths > 1 || (lengths == 1 && chunked) {
        return Err(Refusal::BadFraming);
    }
    Ok(match (chunked, length) {
        (true, _) => Phase::Chunked(Chunk::Start),
        (false, Some(n)) => Phase::Length(n),
        // No length: no body (requests are never delimited by close).
        (false, None) => Phase::Idle,
    })
}

/// Hex value of an ASCII digit.
fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// Follows a chunked body over `bytes`: how many were consumed and the phase after.
fn step_chunk(mut state: Chunk, bytes: &[u8]) -> (usize, Phase) {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        let size_digit = |size: u64| {
            let d = hex(b)?;
            size.checked_mul(16)?.checked_add(d)
        };
        state = match state {
            Chunk::Start => match size_digit(0) {
                Some(size) => Chunk::Size(size),
                None => return (i, Phase::Unframed),
            },
            Chunk::Size(size) => match b {
                b'\t' | b' ' => Chunk::SizeLws(size),
                b';' => Chunk::Extension(size),
                b'\r' => Chunk::SizeLf(size),
                _ => match size_digit(size) {
                    Some(size) => Chunk::Size(size),
                    None => return (i, Phase::Unframed),
                },
            },
            Chunk::SizeLws(size) => match b {
                b'\t' | b' ' => Chunk::SizeLws(size),
                b';' => Chunk::Extension(size),
                b'\r' => Chunk::SizeLf(size),
                _ => return (i, Phase::Unframed),
            },
            Chunk::Extension(size) => match b {
                b'\r' => Chunk::SizeLf(size),
                b'\n' => return (i, Phase::Unframed),
                _ => Chunk::Extension(size),
            },
            Chunk::SizeLf(size) => match (b, size) {
                (b'\n', 0) => Chunk::EndCr,
                (b'\n', size) => Chunk::Data(size),
                _ => return (i, Phase::Unframed),
            },
            Chunk::Data(left) => {
                // This byte and as many more as the chunk has.
                let n = (left - 1).min((bytes.len() - i) as u64);
                i += n as usize;
                match left - 1 - n {
                    0 => Chunk::DataCr,
                    left => Chunk::Data(left),
                }
            }
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataLf if b == b'\n' => Chunk::Start,
            Chunk::DataCr | Chunk::DataLf => return (i, Phase::Unframed),
            Chunk::EndCr | Chunk::Trailer if b != b'\r' => Chunk::Trailer,
            Chunk::EndCr => Chunk::EndLf,
            Chunk::Trailer => Chunk::TrailerLf,
            Chunk::TrailerLf if b == b'\n' => Chunk::EndCr,
            Chunk::EndLf if b == b'\n' => return (i, Phase::Idle),
            Chunk::TrailerLf | Chunk::EndLf => return (i, Phase::Unframed),
        };
    }
    (i, Phase::Chunked(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch::new(Duration::from_secs(10), 64 * 1024)
    }

    #[tokio::test]
    async fn heads_and_bodies_are_followed_across_keep_alive() {
        let stream = b"\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\nHost: x\n\nGET /d HTTP/1.1\r\n";
        // Byte by byte, so every split point is exercised; and whole.
        for step in [1, stream.len()] {
            let mut w = watch();
            for part in stream.chunks(step) {
                w.feed(part).unwrap();
            }
            match &w.phase {
                Phase::Head(head) => assert_eq!(head.len, "GET /d HTTP/1.1\r\n".len()),
                other => panic!("unexpected phase {other:?}"),
            }
            assert!(w.armed, "a started head runs the http-request timer");
        }
    }

    #[tokio::test]
    async fn ambiguous_framing_is_refused() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: three\r\n\r\n",
        ] {
            assert_eq!(
                watch().feed(head.as_bytes()),
                Err(Refusal::BadFraming),
                "{head:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_content_length_with_a_sign_is_refused() {
        // Caught by the `head_watch` fuzz target's framing check: `+5`
        // was read as 5, while hyper refuses it.
        let input = include_bytes!("../../fuzz/regressions/head_watch/content-length-with-a-sign");
        assert_eq!(watch().feed(input), Err(Refusal::BadFraming));
    }

    #[tokio::test]
    async fn an_upgrade_header_alone_changes_nothing() {
        let mut w = watch();
        w.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .unwrap();
        assert!(matches!(w.phase, Phase::Idle));
        assert_eq!(
            w.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            Err(Refusal::BadFraming)
        );
    }

    #[tokio::test]
    async fn idle_between_requests_runs_no_timer() {
        let mut w = watch();
        w.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(matches!(w.phase, Phase::Idle));
        assert!(!w.armed);
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_whether_whole_or_in_pieces() {
        let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(2000));
        let mut whole = Watch::new(Duration::from_secs(10), 1024);
        assert_eq!(whole.feed(head.as_bytes()), Err(Refusal::TooLarge));
        let mut pieces = Watch::new(Duration::from_secs(10), 1024);
        let refused = head
            .as_bytes()
            .chunks(100)
            .map(|p| pieces.feed(p))
            .find(Result::is_err);
        assert_eq!(refused, Some(Err(Refusal::TooLarge)));
        assert!(pieces.examined <= 1024 + 100, "stopped at the limit");
    }

    #[tokio::test]
    async fn malformed_chunked_bodies_end_following() {
        for body in [
            // Over 2^64.
            "1ffffffffffffffff\r\n",
            // Bare LF after the size, after data, in an extension.
            "5\nhello\r\n0\r\n\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "5;a\nhello\r\n",
            "\r\n",
            "x\r\n",
        ] {
            let mut w = watch();
            let request =
                format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET / HTTP/1.1\r\n");
            w.feed(request.as_bytes()).unwrap();
            assert!(matches!(w.phase, Phase::Unframed), "{body:?}: {:?}", w.phase);
        }
    }

    #[tokio::test]
    async fn a_head_fed_one_byte_at_a_time_is_scanned_once() {
        let mut w = watch();
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        while head.len() < 60 * 1024 {
            head.extend_from_slice(b"X-Filler: 0123456789abcdef0123456789abcdef\r\n");
        }
        head.extend_from_slice(b"\r\n");
        for b in &head {
            w.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(matches!(w.phase, Phase::Idle), "the head was complete");
        // Each byte is looked at a bounded number of times, not once per read.
        assert!(
            w.examined <= 2 * head.len(),
            "{} bytes examined for a head of {}",
            w.examined,
            head.len()
        );
    }
}
