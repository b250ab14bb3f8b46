//! The fixed fast backend behind the proxies in scenarios 1–4 and 7: a
//! small constant response on any path (3 KB on [`PAGE_PATH`]), 200 on `/healthz`, and a WebSocket echo on
//! any upgrade. It does as little as possible so the numbers measure the
//! proxy in front of it, and it is the same program behind the lb, behind
//! HAProxy and for "direct".

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// The response body of every plain request (13 bytes).
pub const BODY: &[u8] = b"hello, world\n";

/// Path of the page-sized response, about as large as the chat page (`GET /`
/// of an app): the proxies' cost per response byte shows beside the 13 bytes.
pub const PAGE_PATH: &str = "/bench/page";

/// Size of the body at [`PAGE_PATH`], bytes.
pub const PAGE_LEN: usize = 3072;

/// The body at [`PAGE_PATH`]: HTML-like filler of [`PAGE_LEN`] bytes.
fn page() -> Bytes {
    static PAGE: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| {
        let line = b"<p>wsmesh bench page: a body about the size of the chat page.</p>\n";
        let body: Vec<u8> = line.iter().copied().cycle().take(PAGE_LEN).collect();
        Bytes::from(body)
    })
    .clone()
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "backend accept");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service_fn(handle))
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "backend connection");
            }
        });
    }
}

/// Binds `addr` and serves (the `lab backend` subcommand).
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "bench backend ready");
    serve(listener).await;
    Ok(())
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Ok(status(StatusCode::BAD_REQUEST));
        };
        let protocol = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    echo(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await)
                        .await
                }
                Err(e) => tracing::debug!(error = %e, "backend upgrade"),
            }
        });
        let mut resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
        if let Some(p) = protocol.and_then(|p| {
            p.to_str()
                .ok()
                .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
        }) {
            resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        return Ok(resp
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR)));
    }
    if req.uri().path() == "/healthz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let (body, content_type) = if req.uri().path() == PAGE_PATH {
        (page(), "text/html; charset=utf-8")
    } else {
        (Bytes::from_static(BODY), "text/plain")
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    Ok(resp)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}

/// Sends every text and binary message back until the peer closes.
async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() || msg.is_binary() {
            if ws.send(msg).await.is_err() {
                return;
            }
        } else if msg.is_close() {
            return;
        }
    }
}
