//! The client against a real socket on loopback that plays the server,
//! writing its answer as given (byte by byte where a test says so).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const LIMITS: HeadLimits = HeadLimits {
    bytes: 16 * 1024,
    fields: 100,
};

/// How the fake server writes its answer.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// In one write, then keeps the connection open.
    Whole,
    /// A byte per write, then keeps the connection open.
    ByteByByte,
    /// In one write, then closes.
    ThenClose,
}

/// A server that reads one request head and answers `answer`; returns its
/// address and the request head it read.
async fn server(answer: &[u8], pace: Pace) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let answer = answer.to_vec();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            if n == 0 {
                return req;
            }
            req.extend_from_slice(&b[..n]);
        }
        match pace {
            Pace::ByteByByte => {
                for byte in &answer {
                    s.write_all(&[*byte]).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            _ => s.write_all(&answer).await.unwrap(),
        }
        if pace != Pace::ThenClose {
            // Hold the connection until the client is done with it.
            let _ = s.read(&mut b).await;
        }
        req
    });
    (addr, task)
}

fn get(method: Method) -> RequestHead {
    let (mut parts, ()) = Request::builder()
        .method(method)
        .uri("/chat?room=a")
        .header("host", "chat.test")
        .body(())
        .unwrap()
        .into_parts();
    parts.headers.append("x-two", "1".parse().unwrap());
    parts.headers.append("x-two", "2".parse().unwrap());
    RequestHead {
        parts,
        replaced: &[],
        added: Vec::new(),
    }
}

/// Sends a request to a server answering `answer` and reads the body.
async fn fetch(
    answer: &[u8],
    pace: Pace,
    method: Method,
) -> (Result<(ResponseHead, Result<Bytes, std::io::Error>), ExchangeError>, Arc<Pool>) {
    let (addr, _server) = server(answer, pace).await;
    let pool = Arc::new(Pool::new(4));
    let mut conn = connect(addr, Duration::from_secs(2)).await.unwrap();
    let head = match conn.exchange(&get(method), None, LIMITS).await {
        Ok(a) => a.head,
        Err(e) => return (Err(e), pool),
    };
    let keep = head.keep_alive.then(|| pool.clone());
    let body = ServerBody::new(conn, head.framing, None, keep)
        .collect()
        .await
        .map(|b| b.to_bytes());
    (Ok((head, body)), pool)
}

#[tokio::test]
async fn the_request_head_is_written_as_http_1_1() {
    let (addr, server) = server(b"HTTP/1.1 204 No Content\r\n\r\n", Pace::ThenClose).await;
    let mut conn = connect(addr, Duration::from_secs(2)).await.unwrap();
    static REPLACED: [http::HeaderName; 1] = [http::HeaderName::from_static("x-two")];
    let mut req = get(Method::POST);
    req.replaced = &REPLACED;
    req.added = b"x-two: from the lb\r\n".to_vec();
    let head = conn.exchange(&req, None, LIMITS).await.unwrap().head;
    assert_eq!(head.parts.status, StatusCode::NO_CONTENT);
    let req = server.await.unwrap();
    assert_eq!(
        String::from_utf8(req).unwrap(),
        "POST /chat?room=a HTTP/1.1\r\nhost: chat.test\r\nx-two: from the lb\r\ncontent-length: 0\r\n\r\n"
    );
}

#[tokio::test]
async fn a_length_body_is_read_and_the_connection_goes_back_to_the_pool() {
    let (r, pool) = fetch(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nX-Empty:\r\nX-Blank:   \r\n\r\nhello", Pace::Whole, Method::GET).await;
    let (head, body) = r.unwrap();
    assert_eq!(head.framing, Framing::Length(5));
    assert_eq!(head.parts.headers["x-a"], "b");
    assert_eq!(head.parts.headers["x-empty"], "");
    assert_eq!(head.parts.headers["x-blank"], "");
    assert_eq!(body.unwrap(), "hello");
    let mut again = pool.take().expect("the connection is back in the pool");
    assert!(again.reused());
    assert!(again.is_idle_usable());
}

#[tokio::test]
async fn a_chunked_body_sent_byte_by_byte_is_decoded_and_its_trailers_dropped() {
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
    let (r, pool) = fetch(answer, Pace::ByteByByte, Method::GET).await;
    let (head, body) = r.unwrap();
    assert_eq!(head.framing, Framing::Chunked);
    assert_eq!(body.unwrap(), "hello world");
    assert!(pool.take().is_some(), "a complete chunked body leaves the connection reusable");
}

#[tokio::test]
async fn broken_chunk_framing_fails_the_body_and_drops_the_connection() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhiXX0\r\n\r\n",
    ] {
        let (r, pool) = fetch(answer, Pace::Whole, Method::GET).await;
        let (_, body) = r.unwrap();
        let e = body.expect_err("broken framing must fail the body");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(pool.take().is_none());
    }
}

#[tokio::test]
async fn a_body_without_length_runs_until_the_server_closes() {
    let (r, pool) = fetch(b"HTTP/1.1 200 OK\r\n\r\nall of it", Pace::ThenClose, Method::GET).await;
    let (head, body) = r.unwrap();
    assert_eq!(head.framing, Framing::UntilClose);
    assert!(!head.keep_alive);
    assert_eq!(body.unwrap(), "all of it");
    assert!(pool.take().is_none());
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let (r, pool) = fetch(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", Pace::ThenClose, Method::GET).await;
    let (_, body) = r.unwrap();
    assert_eq!(body.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(pool.take().is_none());
}

#[tokio::test]
async fn head_responses_and_informational_ones_have_no_body() {
    let (r, _) = fetch(b"HTTP/1.1 200 OK\r\ncontent-length: 300\r\n\r\n", Pace::Whole, Method::HEAD).await;
    let (head, body) = r.unwrap();
    assert_eq!(head.framing, Framing::Empty);
    assert_eq!(head.parts.headers["content-length"], "300");
    assert!(body.unwrap().is_empty());

    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
    let (r, _) = fetch(answer, Pace::ByteByByte, Method::GET).await;
    let (head, body) = r.unwrap();
    assert_eq!(head.parts.status, StatusCode::CREATED);
    assert_eq!(body.unwrap(), "ok");
}

#[tokio::test]
async fn connection_close_and_http_1_0_are_not_kept() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 1\r\n\r\nx"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
    ] {
        let (r, pool) = fetch(answer, Pace::Whole, Method::GET).await;
        let (head, body) = r.unwrap();
        assert!(!head.keep_alive);
        assert_eq!(body.unwrap(), "x");
        assert!(pool.take().is_none());
    }
}

#[tokio::test]
async fn chunked_with_a_length_is_read_chunked_and_not_kept() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
    let (r, _) = fetch(answer, Pace::Whole, Method::GET).await;
    let (head, body) = r.unwrap();
    assert_eq!(head.framing, Framing::Chunked);
    assert!(!head.keep_alive);
    assert!(!head.parts.headers.contains_key("content-length"));
    assert_eq!(body.unwrap(), "x");
}

#[tokio::test]
async fn malformed_heads_are_refused() {
    let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes();
    for answer in [
        &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        &big,
    ] {
        let (r, _) = fetch(answer, Pace::Whole, Method::GET).await;
        assert!(matches!(r, Err(ExchangeError::Malformed(_))), "{:?}", String::from_utf8_lossy(&answer[..40.min(answer.len())]));
    }
}

#[tokio::test]
async fn a_server_that_closes_without_answering_is_told_apart_from_a_cut_head() {
    let (r, _) = fetch(b"", Pace::ThenClose, Method::GET).await;
    assert!(matches!(r, Err(ExchangeError::Closed)));
    let (r, _) = fetch(b"HTTP/1.1 200 O", Pace::ThenClose, Method::GET).await;
    assert!(matches!(r, Err(ExchangeError::Read(_))));
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_not_taken_from_the_pool() {
    let (r, pool) = fetch(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx", Pace::ThenClose, Method::GET).await;
    assert!(r.unwrap().0.keep_alive);
    // The server closed after answering: the pooled connection sees it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pool.take().is_none());
}

#[tokio::test]
async fn after_101_what_the_server_sent_next_stays_with_the_connection() {
    let (addr, _server) = server(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n\x81\x02hi", Pace::Whole).await;
    let mut conn = connect(addr, Duration::from_secs(2)).await.unwrap();
    let mut req = get(Method::GET);
    req.parts.headers.insert("upgrade", "websocket".parse().unwrap());
    let head = conn.exchange(&req, None, LIMITS).await.unwrap().head;
    assert_eq!(head.framing, Framing::Upgrade);
    let (_, ahead) = conn.into_parts();
    assert_eq!(&ahead[..], b"\x81\x02hi");
    // Only those bytes: a tunnel keeps them for its whole life.
    assert_eq!(ahead.capacity(), ahead.len());
}

#[tokio::test]
async fn trailers_past_their_bound_fail_the_body() {
    // Short lines, so that one ends just past the 16 KiB the client reads
    // of trailers: the bound must hold there too, not underflow.
    let answer = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n{}\r\n",
        "t:1\r\n".repeat(3300)
    );
    let (r, pool) = fetch(answer.as_bytes(), Pace::Whole, Method::GET).await;
    let (_, body) = r.unwrap();
    assert_eq!(body.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    assert!(pool.take().is_none());
}
