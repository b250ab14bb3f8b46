//! The server end of one upgraded WebSocket, reduced to what the chat
//! dialects need: read the next data frame (pings are answered by tungstenite,
//! protocol violations become the right close code), write JSON with a
//! deadline, and close with a code and reason.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// A WebSocket over the HTTP connection hyper upgraded; what the dialects
/// read from and write to.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// A write that takes longer than this means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a close waits for the peer's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Close code for invalid UTF-8 in a text frame (RFC 6455 7.4.1).
pub const INVALID_DATA: u16 = 1007;
/// Close code when the server cannot go on (e.g. history unreadable).
pub const INTERNAL_ERROR: u16 = 1011;

/// What the peer sent next.
#[derive(Debug)]
pub enum Inbound {
    /// A whole text message (fragments joined, valid UTF-8) for the dialect
    /// to parse.
    Text(String),
    /// A binary message (not part of any dialect).
    Binary,
    /// A violation the server answers by closing with this code and reason.
    Violation(u16, &'static str),
    /// The peer closed or the connection broke.
    Gone,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The connection broke or is closing.
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
    /// The client stopped reading.
    #[error("write timed out")]
    Timeout,
    /// The frame could not be serialized (a bug, not the peer's doing).
    #[error("serialize: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads until a data frame, a close or a violation. Cancel-safe.
pub async fn next(ws: &mut Ws) -> Inbound {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Inbound::Text(t.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => return Inbound::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Inbound::Gone,
            Some(Err(WsError::Utf8(_))) => return Inbound::Violation(INVALID_DATA, "invalid UTF-8"),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                return Inbound::Violation(wsmesh_common::protocol::close::TOO_BIG, "frame too large")
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                return Inbound::Gone;
            }
        }
    }
}

/// Writes one JSON text frame; `Timeout` if the client has not taken it
/// within `WRITE_TIMEOUT`.
pub async fn send_json<T: Serialize>(ws: &mut Ws, frame: &T) -> Result<(), WriteError> {
    send_text(ws, serde_json::to_string(frame)?.into()).await
}

/// Writes one text frame that is already rendered (possibly shared).
pub async fn send_text(ws: &mut Ws, text: Utf8Bytes) -> Result<(), WriteError> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::Text(text))).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// Writes several rendered text frames with a single flush.
pub async fn send_texts(ws: &mut Ws, texts: &[Utf8Bytes]) -> Result<(), WriteError> {
    let write_all = async {
        for text in texts {
            ws.feed(Message::Text(text.clone())).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write_all).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// Sends a close frame and waits (briefly) for the peer's answer.
pub async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    // Writing may wait for a slow reader (what is queued goes first); the
    // peer's answer then gets a short wait of its own.
    match tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(frame))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return tracing::debug!(error = %e, code, "close frame not sent"),
        Err(_) => return tracing::debug!(code, "close frame not sent in time"),
    }
    let drained = tokio::time::timeout(CLOSE_TIMEOUT, async {
        // Until the peer's close arrives, so the close handshake completes.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(code, "peer did not answer the close");
    }
}
