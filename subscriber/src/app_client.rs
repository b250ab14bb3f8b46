//! One keep-alive HTTP/1.1 connection to the local app's internal API
//! (`POST /internal/events`, `GET /internal/cursors`, `GET /internal/rooms`).
//! A chat stream is a
//! steady trickle of small requests to one peer on loopback, so one reused
//! connection is all it takes; it is re-opened lazily after any failure.
//! Answers are turned into `AppError`s whose `Failure` tells the caller
//! whether retrying can help.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;
use wsmesh_common::chat::Chat;
use wsmesh_common::events::{
    Cursors, CursorsQuery, Interest, RoomsQuery, CURSORS_PATH, EVENTS_PATH, ROOMS_PATH,
};

use crate::config::AppConfig;

/// Most bytes of an error body kept for the log.
const ERROR_BODY_MAX: usize = 200;

/// A request to the app that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot connect to the app at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("HTTP error talking to the app: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the app refused the internal token (401): check app.token / WSMESH_INTERNAL_TOKEN")]
    Unauthorized,
    #[error("the app refused the batch as malformed (400): {0}")]
    Malformed(String),
    #[error("the app refused the batch as too large (413)")]
    TooLarge,
    #[error("the app answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("the app's answer is not the JSON expected: {0}")]
    BadJson(#[from] serde_json::Error),
}

/// What a failed request means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Down, slow or overloaded: the same request may succeed later.
    Transient,
    /// Misconfigured token: retrying is right, but someone must be told.
    Unauthorized,
    /// The request itself is refused: retrying the same one will not help.
    Rejected,
    /// The body is over the app's size limit: smaller requests will do.
    TooLarge,
}

impl AppError {
    pub fn failure(&self) -> Failure {
        match self {
            AppError::Unauthorized => Failure::Unauthorized,
            AppError::Malformed(_) => Failure::Rejected,
            AppError::TooLarge => Failure::TooLarge,
            _ => Failure::Transient,
        }
    }
}

/// A lazily (re)connected HTTP/1.1 client for the app's internal API.
pub struct AppClient {
    /// Where and how to reach the app.
    config: AppConfig,
    /// The kept-alive connection; `None` until the first request and after
    /// an error, so the next request connects again.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl AppClient {
    pub fn new(config: AppConfig) -> AppClient {
        AppClient { config, sender: None }
    }

    /// Posts a batch (empty = heartbeat); `Ok` when the app answered 2xx.
    pub async fn post_events(&mut self, batch: &[Chat]) -> Result<(), AppError> {
        let body = serde_json::to_vec(batch)?;
        let path = self.config.endpoint.path(EVENTS_PATH);
        let timeout = self.config.request_timeout;
        self.request(Method::POST, &path, Bytes::from(body), timeout)
            .await
            .map(drop)
    }

    /// The app's per-room delivery cursors: of `query`'s rooms, or of all.
    pub async fn cursors(&mut self, query: &CursorsQuery) -> Result<Cursors, AppError> {
        let path = with_query(self.config.endpoint.path(CURSORS_PATH), &query.encode());
        let timeout = self.config.request_timeout;
        let body = self.request(Method::GET, &path, Bytes::new(), timeout).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// The app's room set, long-polled: the app may hold the answer for
    /// `query.wait`, so that much is added to the request timeout.
    pub async fn rooms(&mut self, query: &RoomsQuery) -> Result<Interest, AppError> {
        let path = with_query(self.config.endpoint.path(ROOMS_PATH), &query.encode());
        let timeout = self.config.request_timeout + query.wait;
        let body = self.request(Method::GET, &path, Bytes::new(), timeout).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, AppError> {
        let result = tokio::time::timeout(timeout, self.exchange(method, path, body))
            .await
            .unwrap_or(Err(AppError::Timeout(timeout)));
        if matches!(
            result,
            Err(AppError::Connect { .. } | AppError::Http(_) | AppError::Timeout(_))
        ) {
            // The connection is in an unknown state: start afresh next time.
            self.sender = None;
        }
        result
    }

    async fn exchange(&mut self, method: Method, path: &str, body: Bytes) -> Result<Bytes, AppError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.config.endpoint.authority)
            .header(header::AUTHORIZATION, self.config.token.bearer());
        if method == Method::POST {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body))?;
        let sender = self.ready_sender().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        match status {
            s if s.is_success() => Ok(body),
            StatusCode::UNAUTHORIZED => Err(AppError::Unauthorized),
            StatusCode::BAD_REQUEST => Err(AppError::Malformed(excerpt(&body))),
            StatusCode::PAYLOAD_TOO_LARGE => Err(AppError::TooLarge),
            status => Err(AppError::Status {
                status,
                body: excerpt(&body),
            }),
        }
    }

    /// The open connection once it can take a request, connecting if needed.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, AppError> {
        if let Some(mut sender) = self.sender.take() {
            if sender.ready().await.is_ok() {
                self.sender = Some(sender);
            }
        }
        let sender = match self.sender.take() {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        Ok(self.sender.insert(sender))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, AppError> {
        let endpoint = &self.config.endpoint;
        let connect_error = |source| AppError::Connect {
            addr: endpoint.authority.clone(),
            source,
        };
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "connection to the app ended");
            }
        });
        debug!(app = %endpoint.authority, "connected to the app");
        Ok(sender)
    }
}

/// `path?query`, or `path` for an empty query.
fn with_query(path: String, query: &str) -> String {
    match query {
        "" => path,
        query => format!("{path}?{query}"),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(ERROR_BODY_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_malformed_request_is_not_worth_retrying() {
        assert_eq!(AppError::Malformed("x".into()).failure(), Failure::Rejected);
        assert_eq!(AppError::Unauthorized.failure(), Failure::Unauthorized);
        assert_eq!(AppError::TooLarge.failure(), Failure::TooLarge);
        let unavailable = AppError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: String::new(),
        };
        assert_eq!(unavailable.failure(), Failure::Transient);
        assert_eq!(
            AppError::Timeout(Duration::from_secs(1)).failure(),
            Failure::Transient
        );
    }

    #[test]
    fn error_bodies_are_cut_for_the_log() {
        assert_eq!(excerpt(&[b'a'; 1000]).len(), ERROR_BODY_MAX);
    }
}
