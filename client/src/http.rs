//! Minimal plain-HTTP requests for health checks and the internal API: the
//! harness and the tests need a status code and a body, nothing more.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a request produced no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL or a header could not be used.
    #[error("bad request: {0}")]
    Request(String),
    /// Connecting or exchanging failed.
    #[error("request failed: {0}")]
    Transport(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A response: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Body, lossily decoded as UTF-8.
    pub body: String,
}

/// `GET url`.
pub async fn get(url: &str, limit: Duration) -> Result<HttpResponse, HttpError> {
    request("GET", url, &[], String::new(), limit).await
}

/// Polls `GET url` until it answers `want`, within `limit`; the last answer
/// (or failure) comes back as the error.
pub async fn wait_status(url: &str, want: u16, limit: Duration) -> Result<HttpResponse, HttpError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = get(url, Duration::from_secs(2)).await;
        match last {
            Ok(r) if r.status == want => return Ok(r),
            _ if tokio::time::Instant::now() >= deadline => {
                let seen = match last {
                    Ok(r) => format!("HTTP {} {}", r.status, r.body.trim()),
                    Err(e) => e.to_string(),
                };
                return Err(HttpError::Transport(format!(
                    "{url} never answered {want}; last: {seen}"
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Any method with headers and a body, over a fresh connection.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
    limit: Duration,
) -> Result<HttpResponse, HttpError> {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HttpError::Request(e.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| HttpError::Timeout(limit))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn returns_status_and_body_and_sends_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            tcp.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 7\r\n\r\nno redi")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let resp = request(
            "POST",
            &format!("http://127.0.0.1:{port}/internal/events"),
            &[("authorization", "Bearer x")],
            "[]".into(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(resp.body, "no redi");
        let seen = server.await.unwrap();
        assert!(seen.starts_with("POST /internal/events"), "{seen}");
        assert!(seen.to_lowercase().contains("authorization: bearer x"), "{seen}");
    }

    #[tokio::test]
    async fn connection_refused_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = get(
            &format!("http://127.0.0.1:{port}/healthz"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HttpError::Transport(_)), "{err}");
    }
}
