//! The lb watcher's chunked-body follower against a whole-buffer reading
//! of the same grammar (hyper's: hex size, blanks, `;` extension without
//! LF, CRLF after size and data, trailer lines, final CRLF).
//!
//! - A body the reference reads as complete ends, for the watcher, at the
//!   same byte: what follows is taken as the next head, neither earlier
//!   nor later, however the stream is cut into reads.
//! - A body the reference refuses makes the watcher stop following the
//!   connection (hyper closes it after its answer), so nothing after it is
//!   refused.
#![no_main]

use std::time::Duration;

use lb::fuzzing::{Refusal, Watch};
use libfuzzer_sys::fuzz_target;
use wsmesh_fuzz::{in_runtime, pieces};

const HEAD: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
/// A head that is refused for its framing and fills the head limit exactly:
/// a watcher that ended the body early sees a longer head (`431`).
const PROBE: &[u8] = b"GET /probe-probe-probe HTTP/1.1\r\nContent-Length: x\r\n\r\n";
const _: () = assert!(HEAD.len() <= PROBE.len());

#[derive(Debug, PartialEq, Eq)]
enum Reading {
    /// The body ends just before this index.
    Complete(usize),
    Invalid,
    Incomplete,
}

/// Reads a chunked body from the start of `b`.
fn reference(b: &[u8]) -> Reading {
    let mut i = 0;
    loop {
        // Size line.
        let digits = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let mut size: u64 = 0;
        for c in &b[i..i + digits] {
            let d = u64::from((*c as char).to_digit(16).unwrap_or(0));
            match size.checked_mul(16).and_then(|s| s.checked_add(d)) {
                Some(s) => size = s,
                None => return Reading::Invalid,
            }
        }
        i += digits;
        if i == b.len() {
            return Reading::Incomplete;
        }
        if digits == 0 {
            return Reading::Invalid;
        }
        i += b[i..].iter().take_while(|c| matches!(c, b' ' | b'\t')).count();
        match b.get(i) {
            None => return Reading::Incomplete,
            Some(b';') => match b[i..].iter().position(|c| matches!(c, b'\r' | b'\n')) {
                None => return Reading::Incomplete,
                Some(at) if b[i + at] == b'\n' => return Reading::Invalid,
                Some(at) => i += at,
            },
            Some(b'\r') => {}
            Some(_) => return Reading::Invalid,
        }
        // At the CR that ends the size line.
        match b.get(i + 1) {
            None => return Reading::Incomplete,
            Some(b'\n') => i += 2,
            Some(_) => return Reading::Invalid,
        }
        if size == 0 {
            break;
        }
        // Data, then CRLF.
        let left = (b.len() - i) as u64;
        if left < size {
            return Reading::Incomplete;
        }
        i += size as usize;
        for expected in [b'\r', b'\n'] {
            match b.get(i) {
                None => return Reading::Incomplete,
                Some(c) if *c == expected => i += 1,
                Some(_) => return Reading::Invalid,
            }
        }
    }
    // Trailer lines (anything but CR, then CRLF), then the final CRLF.
    loop {
        let line = b[i..].iter().take_while(|c| **c != b'\r').count();
        i += line;
        match (b.get(i), b.get(i + 1)) {
            (None, _) | (Some(_), None) => return Reading::Incomplete,
            (Some(_), Some(b'\n')) => i += 2,
            (Some(_), Some(_)) => return Reading::Invalid,
        }
        if line == 0 {
            return Reading::Complete(i);
        }
    }
}

/// Feeds `stream` in `reads`; the first refusal, if any.
fn follow<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> Result<(), Refusal> {
    let mut w = Watch::new(Duration::from_secs(3600), PROBE.len());
    reads.into_iter().try_for_each(|r| w.feed(r))
}

fuzz_target!(|body: &[u8]| {
    in_runtime(|| {
        let reading = reference(body);
        let (stream, expected) = match reading {
            Reading::Complete(end) => ([HEAD, &body[..end], PROBE].concat(), Err(Refusal::BadFraming)),
            Reading::Invalid => ([HEAD, body, PROBE].concat(), Ok(())),
            Reading::Incomplete => ([HEAD, body].concat(), Ok(())),
        };
        for (how, got) in [
            ("one read", follow([&stream[..]])),
            ("one byte per read", follow(stream.chunks(1))),
            ("reads of 1 to 16 bytes", follow(pieces(&stream))),
        ] {
            assert_eq!(got, expected, "{how}: reference says {reading:?}");
        }
    });
});
