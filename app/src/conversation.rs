//! The life of one joined socket, the same for every dialect: write what the
//! hub queues, hand what the client sends to the dialect, and close with the
//! right code when the hub gives up on the socket (1013), the instance drains
//! (1012), the client breaks a rule (1009, 1007) or keeps earning refusals
//! (1008), or its token expires (4001). Only the wording differs between
//! dialects, so that is the `Dialect` trait.

use std::future::Future;
use std::pin::pin;
use std::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsmesh_common::protocol::close;
use wsmesh_common::stream_id::StreamId;

use crate::auth::Grant;
use crate::drain;
use crate::hub::{Membership, Outbound};
use crate::limits::Strikes;
use crate::shared::Shared;
use crate::socket::{self, Inbound, WriteError, Ws};

/// Most queued items written with one flush.
const MAX_COALESCED: usize = 64;

/// What differs between the wire formats (v1, simple-chat, CloudChat);
/// `run` does everything else.
pub trait Dialect: Send {
    /// Renders what the hub queued into text frames (none for what the
    /// dialect does not show).
    fn render(&mut self, out: Outbound, frames: &mut Vec<Utf8Bytes>);
    /// Handles one text message from the client.
    fn receive(
        &mut self,
        ws: &mut Ws,
        text: String,
    ) -> impl Future<Output = Result<Handled, WriteError>> + Send;
    /// Handles a binary message from the client.
    fn binary(&mut self, ws: &mut Ws) -> impl Future<Output = Result<Handled, WriteError>> + Send;
}

/// What became of one client message: the refusals are what `Strikes`
/// counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Taken (stored, acted on, or harmlessly ignored).
    Done,
    /// Refused: an `error` frame, or a seed-format message dropped.
    Refused,
}

/// Live chats a socket was given (written and flushed), for the line its
/// end logs at debug level: set beside what the client counted, it tells a
/// chat the server never wrote from one lost on the way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// Chats written in live frames.
    pub chats: u64,
    /// The newest of them.
    pub last: Option<StreamId>,
}

impl Written {
    fn add(&mut self, other: Written) {
        self.chats += other.chats;
        self.last = self.last.max(other.last);
    }

    fn count(&mut self, out: &Outbound) {
        if let Outbound::Chats(batch) = out {
            self.add(Written {
                chats: batch.chats().len() as u64,
                last: batch.chats().last().and_then(|c| c.stream_id()),
            });
        }
    }
}

/// Runs until the socket is closed, by either side; returns what it wrote.
/// `grant`: the socket's token, which closes it when it runs out.
pub async fn run<D: Dialect>(
    shared: &Shared,
    ws: &mut Ws,
    membership: &mut Membership,
    dialect: &mut D,
    grant: Option<&Grant>,
) -> Written {
    let mut written = Written::default();
    let mut turn = pin!(drain::my_turn(
        shared.drain.subscribe(),
        shared.config.drain.window
    ));
    let remaining = grant.map(Grant::remaining);
    let mut expired = pin!(async move {
        match remaining {
            Some(left) => tokio::time::sleep(left).await,
            None => std::future::pending().await,
        }
    });
    let mut strikes = Strikes::new(&shared.config.limits);
    let mut kick_pending = true;
    let mut frames = Vec::new();
    loop {
        // Kick and drain first; then the client's frames before the queue, so
        // a busy room cannot starve reading (pings, sends) of a socket.
        let result = tokio::select! {
            biased;
            kick = &mut membership.kicked, if kick_pending => {
                kick_pending = false;
                if kick.is_ok() {
                    close_slow(ws, &membership.room).await;
                    return written;
                }
                Ok(None)
            }
            () = &mut turn => {
                socket::close(ws, close::SERVICE_RESTART, "instance restarting").await;
                return written;
            }
            () = &mut expired => {
                shared.metrics.token_expiries.inc();
                socket::close(ws, close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token").await;
                return written;
            }
            inbound = socket::next(ws) => match inbound {
                Inbound::Text(text) => dialect.receive(ws, text).await.map(Some),
                Inbound::Binary => dialect.binary(ws).await.map(Some),
                Inbound::Violation(code, reason) => {
                    socket::close(ws, code, reason).await;
                    return written;
                }
                Inbound::Gone => return written,
            },
            out = membership.rx.recv() => match out {
                Some(out) => {
                    // Take what else is queued too: one flush for the lot.
                    frames.clear();
                    let mut flushing = Written::default();
                    flushing.count(&out);
                    dialect.render(out, &mut frames);
                    for _ in 1..MAX_COALESCED {
                        match membership.rx.try_recv() {
                            Ok(more) => {
                                flushing.count(&more);
                                dialect.render(more, &mut frames);
                            }
                            Err(_) => break,
                        }
                    }
                    // A client that stopped reading blocks this write; a kick
                    // must still close it now, not at the write timeout.
                    tokio::select! {
                        biased;
                        sent = socket::send_texts(ws, &frames) => {
                            if sent.is_ok() {
                                written.add(flushing);
                            }
                            sent.map(|()| None)
                        }
                        kick = &mut membership.kicked, if kick_pending => {
                            kick_pending = false;
                            if kick.is_ok() {
                                close_slow(ws, &membership.room).await;
                                return written;
                            }
                            Ok(None)
                        }
                    }
                }
                // Only a kick removes a socket from the hub, and that branch
                // returns first; be safe rather than spin.
                None => return written,
            },
        };
        match result {
            Err(e) => {
                tracing::debug!(error = %e, "socket write failed; dropping it");
                return written;
            }
            Ok(Some(Handled::Refused)) if strikes.record(Instant::now()) => {
                close_erring(shared, ws, &membership.room, grant).await;
                return written;
            }
            Ok(_) => {}
        }
    }
}

/// Closes a client that earned more refusals than `limits.max_errors`
/// within `limits.error_window` with 1008: counted and logged once.
async fn close_erring(shared: &Shared, ws: &mut Ws, room: &str, grant: Option<&Grant>) {
    shared.metrics.error_closes.inc();
    let limits = &shared.config.limits;
    tracing::info!(
        room = %room,
        sub = grant.map_or("", |g| g.sub.as_str()),
        max_errors = limits.max_errors,
        window = ?limits.error_window,
        "closing a client that keeps erring (1008)"
    );
    socket::close(ws, close::POLICY, "too many errors").await;
}

/// Closes a socket the hub gave up on (its queue was full) with 1013.
async fn close_slow(ws: &mut Ws, room: &str) {
    tracing::info!(room = %room, "closing a slow client (1013)");
    socket::close(ws, close::TRY_AGAIN_LATER, "too slow: reconnect with since").await;
}
