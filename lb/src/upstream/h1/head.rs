//! Heads on a server connection: the request head as the lb writes it, and
//! the response head parsed with `httparse` together with how its body is
//! framed (RFC 9112 §6.3) and whether the connection can carry another
//! request after it.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use super::ExchangeError;

/// What the lb adds to a request head about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHeader {
    /// Nothing: the head says it already (`Content-Length`) or there is none.
    AsIs,
    /// `Transfer-Encoding: chunked`: a body of unknown length follows.
    Chunked,
    /// `Content-Length: 0`: a `POST`-like request without a body.
    ZeroLength,
}

/// Bounds of a response head, the same as the request heads' (as
/// HAProxy's `tune.bufsize` bounds both).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head, in bytes.
    pub bytes: usize,
    /// Most header fields.
    pub fields: usize,
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// None: `HEAD`, `1xx`, `204`, `304`.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
    /// A `101` to an upgrade: what follows is the new protocol.
    Upgrade,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and headers as received.
    pub parts: http::response::Parts,
    /// How its body is delimited.
    pub framing: Framing,
    /// The connection can carry another request once the body is read.
    pub keep_alive: bool,
}

/// Header fields parsed on the stack; a head with more is parsed again
/// into room for the configured most. Kept small: httparse wants the
/// array initialised, and a response has a handful of fields.
const STACK_FIELDS: usize = 32;

/// A request head as it goes to a server.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target (its path and query are sent) and header fields.
    pub parts: http::request::Parts,
    /// Fields of `parts` left out: `added` has their replacements.
    pub replaced: &'static [HeaderName],
    /// Header lines (`name: value\r\n`) written after the fields.
    pub added: Vec<u8>,
}

/// Writes the request head: request line, headers, and what `body` adds.
pub fn encode_request(head: &RequestHead, body: BodyHeader, out: &mut Vec<u8>) {
    let parts = &head.parts;
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if head.replaced.contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&head.added);
    match body {
        BodyHeader::AsIs => {}
        BodyHeader::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyHeader::ZeroLength => out.extend_from_slice(b"content-length: 0\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses a response head from the start of `buf` and consumes it;
/// `None` while it is incomplete. `is_head`: the request was a `HEAD`;
/// `upgrade`: it asked to switch protocols.
pub fn parse_response(
    buf: &mut BytesMut,
    limits: HeadLimits,
    is_head: bool,
    upgrade: bool,
) -> Result<Option<ResponseHead>, ExchangeError> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_FIELDS];
    let mut heap = Vec::new();
    let mut resp = httparse::Response::new(&mut stack[..limits.fields.min(STACK_FIELDS)]);
    let mut parsed = resp.parse(buf);
    if matches!(parsed, Err(httparse::Error::TooManyHeaders)) && limits.fields > STACK_FIELDS {
        heap.resize(limits.fields, httparse::EMPTY_HEADER);
        resp = httparse::Response::new(&mut heap);
        parsed = resp.parse(buf);
    }
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= limits.bytes => len,
        Ok(httparse::Status::Partial) if buf.len() < limits.bytes => return Ok(None),
        Ok(_) => return Err(ExchangeError::Malformed("response head too large")),
        Err(httparse::Error::TooManyHeaders) => return Err(ExchangeError::Malformed("too many header fields")),
        Err(_) => return Err(ExchangeError::Malformed("not an HTTP/1.x response head")),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ExchangeError::Malformed("invalid status code"))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Values are views into the received head, not copies of it.
    let base = buf.as_ptr() as usize;
    let mut framing_fields = FramingFields::default();
    let fields: Vec<(HeaderName, std::ops::Range<usize>)> = resp
        .headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| ExchangeError::Malformed("invalid header name"))?;
            framing_fields.see(&name, h.value);
            if h.value.is_empty() {
                return Ok((name, 0..0));
            }
            let start = (h.value.as_ptr() as usize)
                .checked_sub(base)
                .filter(|start| start + h.value.len() <= len)
                .ok_or(ExchangeError::Malformed("header value outside the head"))?;
            Ok((name, start..start + h.value.len()))
        })
        .collect::<Result<_, ExchangeError>>()?;
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(range))
            .map_err(|_| ExchangeError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let (framing, mut keep_alive) = framing(status, &framing_fields, &mut headers, is_head, upgrade)?;
    keep_alive &= version == Version::HTTP_11 && !framing_fields.close;
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(ResponseHead {
        parts,
        framing,
        keep_alive,
    }))
}

/// What the fields say about the body's framing and the connection,
/// gathered in the pass that parses them (no lookups by name afterwards).
#[derive(Debug, Default)]
struct FramingFields {
    /// `Transfer-Encoding` present: whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// `Content-Length`, or why it is unusable.
    length: Option<Result<u64, &'static str>>,
    /// `Connection: close`.
    close: bool,
}

impl FramingFields {
    fn see(&mut self, name: &HeaderName, value: &[u8]) {
        if name == header::TRANSFER_ENCODING {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            for part in value.split(|b| *b == b',') {
                self.length = Some(match (parse_length(part.trim_ascii()), self.length) {
                    (None, _) => Err("invalid content-length"),
                    (Some(_), Some(Err(e))) => Err(e),
                    (Some(n), Some(Ok(l))) if l != n => Err("conflicting content-length values"),
                    (Some(n), _) => Ok(n),
                });
            }
        } else if name == header::CONNECTION {
            self.close |= value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
}

/// The body's framing (RFC 9112 §6.3), and `false` when it leaves the
/// connection unusable for another request. A response with both
/// `Transfer-Encoding` and `Content-Length` is read by the former, as the
/// RFC says, with the length removed and the connection closed after it.
fn framing(
    status: StatusCode,
    fields: &FramingFields,
    headers: &mut HeaderMap,
    is_head: bool,
    upgrade: bool,
) -> Result<(Framing, bool), ExchangeError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return match upgrade {
            true => Ok((Framing::Upgrade, false)),
            false => Err(ExchangeError::Malformed("101 to a request that did not ask to switch")),
        };
    }
    if status.is_informational() || is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    if let Some(chunked) = fields.chunked {
        let had_length = fields.length.is_some();
        if had_length {
            headers.remove(header::CONTENT_LENGTH);
        }
        return Ok(match chunked {
            true => (Framing::Chunked, !had_length),
            false => (Framing::UntilClose, false),
        });
    }
    match fields.length {
        Some(Ok(n)) => Ok((Framing::Length(n), true)),
        Some(Err(why)) => Err(ExchangeError::Malformed(why)),
        None => Ok((Framing::UntilClose, false)),
    }
}

/// A `Content-Length` value: digits only, within `u64`.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}
