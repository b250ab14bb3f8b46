//! Clients from chosen loopback source addresses (127.0.0.x bound before
//! connecting), for the per-source limits: one source is limited while a
//! bystander from another is not. Optionally with bytes (a PROXY header)
//! sent before the TLS handshake.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use super::{empty, Body, Certs, Duration};

/// A TCP connection from `source` (port chosen by the system) to the
/// lb's `port` on 127.0.0.1.
pub async fn tcp_from(source: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// A TLS connection from `source`, `before` sent ahead of the handshake;
/// an error when the lb closes it instead (within 5 s).
pub async fn tls_from(
    certs: &Certs,
    source: [u8; 4],
    port: u16,
    before: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut tcp = tcp_from(source, port).await?;
    if !before.is_empty() {
        tcp.write_all(before).await?;
    }
    let connector = tokio_rustls::TlsConnector::from(certs.client_config(&[b"http/1.1"]));
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// Sends `req` over a fresh TLS connection from `source`: the status and
/// headers; `None` when the lb closed the connection.
pub async fn request_from(
    certs: &Certs,
    source: [u8; 4],
    port: u16,
    before: &[u8],
    req: Request<Body>,
) -> Option<(StatusCode, http::HeaderMap)> {
    let tls = tls_from(certs, source, port, before).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await.ok()?;
    let (parts, body) = resp.into_parts();
    let _ = body.collect().await;
    Some((parts.status, parts.headers))
}

/// Sends `reqs` one after the other over one keep-alive TLS connection
/// from `source`: their statuses; empty when the lb closed the connection.
pub async fn requests_from(
    certs: &Certs,
    source: [u8; 4],
    port: u16,
    reqs: Vec<Request<Body>>,
) -> Vec<StatusCode> {
    let Ok(tls) = tls_from(certs, source, port, &[]).await else {
        return Vec::new();
    };
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await else {
        return Vec::new();
    };
    tokio::spawn(conn);
    let mut statuses = Vec::new();
    for req in reqs {
        let Ok(resp) = send.send_request(req).await else {
            break;
        };
        statuses.push(resp.status());
        let _ = resp.into_body().collect().await;
    }
    statuses
}

/// `GET path` from `source`: the status, `None` when refused.
pub async fn get_from(certs: &Certs, source: [u8; 4], port: u16, path: &str) -> Option<StatusCode> {
    let req = Request::get(path)
        .header("host", "localhost")
        .body(empty())
        .ok()?;
    request_from(certs, source, port, &[], req).await.map(|r| r.0)
}

/// A WebSocket upgrade request for `/ws` (answered 101 when it goes through).
pub fn upgrade_request() -> Request<Body> {
    Request::get("/ws")
        .header("host", "localhost")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .expect("request")
}

/// The value of the metric line starting with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The entry named `name` of the `frontends` list of an admin answer.
pub fn frontend_named(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["frontends"]
        .as_array()
        .and_then(|l| l.iter().find(|f| f["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no frontend {name} in {v}"))
}
