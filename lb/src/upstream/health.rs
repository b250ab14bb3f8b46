//! Active HTTP health checks with HAProxy's meaning: every `interval` (or
//! `fastinter` while a server is changing state, `downinter` while it is
//! down) a `GET path` whose status must equal `expect_status`; results feed
//! the server's rise/fall counter. Checks are spread with jitter so servers
//! are not all probed at the same instant. A server in maintenance is not
//! checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::check_result::{CheckResult, CheckStatus};
use super::server::{AdminState, Server};
use crate::config::Check;

/// Starts checking `server`; abort the handle to stop.
pub fn spawn(server: Arc<Server>, check: Check) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Spread the first checks over one interval.
        let first = rand::rng().random_range(0.0..1.0) * check.interval.as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(first)).await;
        loop {
            if server.admin_state() != AdminState::Maint {
                let result = probe(server.addr, &check).await;
                server.record(result);
            }
            tokio::time::sleep(jittered(next_interval(&server, &check))).await;
        }
    })
}

/// `interval`, `fastinter` or `downinter`, depending on where the server stands.
fn next_interval(server: &Server, check: &Check) -> Duration {
    let view = server.view();
    let max = check.rise + check.fall - 1;
    match view.health {
        0 => check.down_interval(),
        h if h == max => check.interval,
        _ => check.fast_interval(),
    }
}

/// Up to 10 % earlier, so checks that started together drift apart.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..=1.0))
}

/// One check against `addr`: `GET path` over HTTP/1.1, judged by the
/// response's status line alone (the body is never read).
pub async fn probe(addr: SocketAddr, check: &Check) -> CheckResult {
    let budget = check.check_timeout();
    let result = |status, code, detail: String| CheckResult { status, code, detail };
    let started = tokio::time::Instant::now();
    let stream = match tokio::time::timeout(budget, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => {
            return result(
                CheckStatus::L4Tout,
                None,
                format!("no connection within {budget:?}"),
            )
        }
        Ok(Err(e)) => return result(CheckStatus::L4Con, None, e.to_string()),
        Ok(Ok(s)) => s,
    };
    let request = match check_request(addr, &check.path) {
        Ok(r) => r,
        Err(e) => return result(CheckStatus::L7Rsp, None, e.to_string()),
    };
    let remaining = budget.saturating_sub(started.elapsed());
    let code = match tokio::time::timeout(remaining, response_status(stream, request)).await {
        Err(_) => {
            return result(
                CheckStatus::L7Tout,
                None,
                format!("no response within {budget:?}"),
            )
        }
        Ok(Err(e)) => return result(CheckStatus::L7Rsp, None, failure_detail(&e)),
        Ok(Ok(code)) => code,
    };
    match code {
        code if code == check.expect_status => result(CheckStatus::L7Ok, Some(code), String::new()),
        404 if check.disable_on_404 => result(
            CheckStatus::L7OkCond,
            Some(404),
            "404: drain (disable_on_404)".into(),
        ),
        code => result(
            CheckStatus::L7Sts,
            Some(code),
            format!("expected {}", check.expect_status),
        ),
    }
}

/// The check request: `Host` is the server's address, and the connection
/// closes after one exchange.
fn check_request(addr: SocketAddr, path: &str) -> Result<Request<Empty<Bytes>>, http::Error> {
    Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "wsmesh-lb-check")
        .header(header::CONNECTION, "close")
        .body(Empty::new())
}

/// Sends `request` on `stream` and returns the response's status code once
/// its head has arrived; the connection is dropped with the rest unread.
async fn response_status(stream: TcpStream, request: Request<Empty<Bytes>>) -> Result<u16, hyper::Error> {
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        response = sender.send_request(request) => Ok(response?.status().as_u16()),
        // A connection that fails fails the request too; one that ends
        // cleanly first leaves the request to report how it ended.
        Err(e) = &mut conn => Err(e),
    }
}

/// The reason for the log: the socket error when there was one, else the
/// answer was not an HTTP response (malformed or cut short).
fn failure_detail(e: &hyper::Error) -> String {
    match std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        Some(io) => io.to_string(),
        None => "not an HTTP response".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn interval_is_fastinter_while_changing_and_downinter_while_down() {
        let check = Check {
            interval: Duration::from_secs(2),
            fastinter: Some(Duration::from_millis(500)),
            downinter: Some(Duration::from_secs(5)),
            ..Check::default()
        };
        let cfg: crate::config::Server = toml::from_str("name = \"s\"\naddr = \"127.0.0.1:1\"\n").unwrap();
        let shared = crate::upstream::ServerShared::new(check.rise, 1);
        let server = Server::new(&cfg, "127.0.0.1:1".parse().unwrap(), Some(&check), shared);
        let ok = || CheckResult {
            status: CheckStatus::L7Ok,
            code: Some(200),
            detail: String::new(),
        };
        let bad = || CheckResult {
            status: CheckStatus::L4Con,
            code: None,
            detail: String::new(),
        };
        // Started up at health = rise: not yet steady.
        assert_eq!(next_interval(&server, &check), check.fast_interval());
        server.record(ok());
        assert_eq!(next_interval(&server, &check), check.interval, "fully up");
        server.record(bad());
        assert_eq!(
            next_interval(&server, &check),
            check.fast_interval(),
            "going down"
        );
        for _ in 0..2 {
            server.record(bad());
        }
        assert_eq!(next_interval(&server, &check), check.down_interval(), "down");
    }

    async fn answer_once(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn expected_status_is_l7ok_and_other_is_l7sts() {
        let check = Check::default();
        let ok = probe(
            answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await,
            &check,
        )
        .await;
        assert_eq!(ok.status, CheckStatus::L7Ok);
        let bad = probe(answer_once(b"HTTP/1.1 503 Busy\r\n\r\n").await, &check).await;
        assert_eq!((bad.status, bad.code), (CheckStatus::L7Sts, Some(503)));
        let not_found = b"HTTP/1.1 404 Not Found\r\n\r\n";
        let plain = probe(answer_once(not_found).await, &check).await;
        assert_eq!(plain.status, CheckStatus::L7Sts, "404 is a failure by default");
        let soft = Check {
            disable_on_404: true,
            ..Check::default()
        };
        let cond = probe(answer_once(not_found).await, &soft).await;
        assert_eq!(cond.status, CheckStatus::L7OkCond);
    }

    #[tokio::test]
    async fn status_line_is_parsed() {
        let check = Check::default();
        let busy = probe(
            answer_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await,
            &check,
        )
        .await;
        assert_eq!(busy.code, Some(503));
        let old = probe(answer_once(b"HTTP/1.0 200\r\n\r\n").await, &check).await;
        assert_eq!((old.status, old.code), (CheckStatus::L7Ok, Some(200)));
        let ssh = probe(answer_once(b"SSH-2.0-OpenSSH\r\n").await, &check).await;
        assert_eq!((ssh.status, ssh.code), (CheckStatus::L7Rsp, None));
        assert_eq!(ssh.detail, "not an HTTP response");
    }

    #[tokio::test]
    async fn request_names_the_server_and_closes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short");
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let check = Check {
            path: "/healthz?full=1".into(),
            ..Check::default()
        };
        assert_eq!(probe(addr, &check).await.status, CheckStatus::L7Ok);
        let head = seen.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /healthz?full=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
        assert!(head.contains("user-agent: wsmesh-lb-check\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
    }

    #[tokio::test]
    async fn silence_after_connect_is_l7tout() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let conn = l.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        let check = Check {
            timeout: Some(Duration::from_millis(200)),
            ..Check::default()
        };
        assert_eq!(probe(addr, &check).await.status, CheckStatus::L7Tout);
    }

    #[tokio::test]
    async fn refused_connect_is_l4con() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert_eq!(probe(addr, &Check::default()).await.status, CheckStatus::L4Con);
    }
}
