//! The lb's HTTP/1 request-stream watcher on arbitrary client bytes.
//!
//! - The first refusal, and the state the stream leaves the watcher in,
//!   do not depend on how the bytes are cut into reads.
//! - A head that httparse (hyper's parser) reads completely ends, for the
//!   watcher, exactly where httparse says; its framing is judged as the
//!   watcher documents it (ambiguous or non-numeric lengths refused).
#![no_main]

use std::time::Duration;

use lb::fuzzing::{Refusal, Watch};
use libfuzzer_sys::fuzz_target;
use wsmesh_fuzz::{in_runtime, pieces};

/// A head whose framing is refused: fed after a stream, its answer tells
/// where the watcher is (between requests, inside a head, inside a body).
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nContent-Length: x\r\n\r\n";

/// A limit small enough that inputs reach the `431` path.
const MAX_HEAD: usize = 512;

fn watch(max_head: usize) -> Watch {
    Watch::new(Duration::from_secs(3600), max_head)
}

/// The first refusal while feeding `reads`, else the answer to `PROBE`.
fn outcome<'a>(max_head: usize, reads: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut w = watch(max_head);
    for read in reads {
        if let Err(r) = w.feed(read) {
            return Outcome::Refused(r);
        }
    }
    Outcome::Probe(w.feed(PROBE).err())
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused(Refusal),
    Probe(Option<Refusal>),
}

/// How hyper would frame the body after `headers`, as the watcher must.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Refused,
    NoBody,
    Body,
}

fn framing(headers: &[httparse::Header<'_>]) -> Framing {
    let mut lengths = Vec::new();
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|b| *b == b',') {
                let v = v.trim_ascii();
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || std::str::from_utf8(v).ok().and_then(|v| v.parse::<u64>().ok()).is_none() {
                    return Framing::Refused;
                }
                lengths.push(v);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    match (lengths.len(), chunked) {
        (n, _) if n > 1 => Framing::Refused,
        (1, true) => Framing::Refused,
        (0, true) => Framing::Body,
        (1, false) if lengths[0].iter().any(|b| *b != b'0') => Framing::Body,
        _ => Framing::NoBody,
    }
}

fuzz_target!(|data: &[u8]| {
    in_runtime(|| {
        let whole = outcome(MAX_HEAD, [data]);
        let bytewise = outcome(MAX_HEAD, data.chunks(1));
        assert_eq!(whole, bytewise, "one read vs one byte per read");
        let cut = outcome(MAX_HEAD, pieces(data));
        assert_eq!(whole, cut, "one read vs reads of 1 to 16 bytes");

        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(end)) = request.parse(data) else {
            return;
        };
        let head = &data[..end];
        let shown = String::from_utf8_lossy(head);
        let framing = framing(request.headers);
        // One byte under the limit: the head is too large, so it did not end earlier.
        assert_eq!(
            watch(end - 1).feed(head),
            Err(Refusal::TooLarge),
            "the head ends before httparse's end {end}"
        );
        let mut w = watch(end.max(PROBE.len()));
        let fed = w.feed(head);
        if framing == Framing::Refused {
            assert_eq!(fed, Err(Refusal::BadFraming), "framing of {shown:?}");
            return;
        }
        assert_eq!(fed, Ok(()), "framing of {shown:?}");
        if framing == Framing::NoBody {
            // Between requests: the probe is a head of its own, not the rest of this one.
            assert_eq!(w.feed(PROBE), Err(Refusal::BadFraming), "after {shown:?}");
        }
    });
});
