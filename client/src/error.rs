//! What can go wrong when connecting to or talking with a wsmesh server.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Error as WsError;

use crate::connection::CloseInfo;

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `ws://host:port/path` or `wss://…`.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `wss://` URL without a TLS configuration (no CA given).
    #[error("wss:// needs a CA file to trust")]
    NoTls,
    /// TCP connect or TLS failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port that was dialled.
        addr: String,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// The server answered the upgrade with a plain HTTP status (e.g. 403).
    #[error("upgrade refused with HTTP {status}")]
    Refused {
        /// HTTP status of the refusal.
        status: u16,
    },
    /// A header name or value given in the options is not valid HTTP.
    #[error("bad header {0:?}")]
    BadHeader(String),
    /// Nothing arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server sent something the caller did not expect.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// The socket is closed.
    #[error("connection closed ({0:?})")]
    Closed(Option<CloseInfo>),
    /// Any other WebSocket protocol failure.
    #[error("websocket: {0}")]
    Ws(#[from] WsError),
}
