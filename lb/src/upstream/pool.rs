//! Connections to servers: connecting with a deadline (so a refused or slow
//! connect is known before anything is sent and the request can go to the
//! next server) and a small per-server pool of idle HTTP/1.1 keep-alive
//! connections.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::workers;

/// Body type of requests sent to servers.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// A sender for requests on one server connection.
pub type Sender = SendRequest<UpstreamBody>;

/// Why a server connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Idle keep-alive connections of one server, kept per connection worker:
/// a server connection is driven on the worker that opened it, so a
/// request from another worker would cross threads on every wake-up.
#[derive(Debug)]
pub struct Pool {
    /// Senders per worker slot, oldest first; some may still be busy
    /// finishing a response.
    idle: Box<[Mutex<Vec<Sender>>]>,
    /// Most senders kept per slot.
    max_idle: usize,
}

impl Pool {
    pub fn new(max_idle: usize) -> Pool {
        Pool {
            idle: (0..workers::slots()).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle,
        }
    }

    /// This thread's idle connections.
    fn here(&self) -> std::sync::MutexGuard<'_, Vec<Sender>> {
        let slot = workers::slot().min(self.idle.len() - 1);
        self.idle[slot].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection ready for a new request, if one is idle. Closed ones are dropped.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.here();
        idle.retain(|s| !s.is_closed());
        let pos = idle.iter().rposition(|s| s.is_ready())?;
        Some(idle.remove(pos))
    }

    /// Gives a connection back once its response head arrived; it becomes
    /// ready again when the response body has been read.
    pub fn put(&self, sender: Sender) {
        if self.max_idle == 0 || sender.is_closed() {
            return;
        }
        let mut idle = self.here();
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(sender);
    }

    /// Drops every idle connection (the server was marked down).
    pub fn clear(&self) {
        for slot in &*self.idle {
            slot.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

/// Opens a TCP connection within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    // Small request/response writes must not wait for Nagle.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Starts HTTP/1.1 on a connected stream; the connection is driven by a
/// spawned task and may be upgraded (WebSocket).
pub async fn handshake(stream: TcpStream, addr: SocketAddr) -> Result<Sender, ConnectError> {
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(server = %addr, error = %e, "server connection ended with an error");
        }
    });
    Ok(sender)
}
