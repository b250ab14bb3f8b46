//! The life of one joined socket, the same for every dialect: write what the
//! hub queues, hand what the client sends to the dialect, and close with the
//! right code when the hub gives up on the socket (1013), the instance drains
//! (1012) or the client breaks a rule (1009, 1007). Only the wording differs
//! between dialects, so that is the `Dialect` trait.

use std::future::Future;
use std::pin::pin;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsmesh_common::protocol::close;

use crate::drain;
use crate::hub::{Membership, Outbound};
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
    fn receive(&mut self, ws: &mut Ws, text: String) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Handles a binary message from the client.
    fn binary(&mut self, ws: &mut Ws) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// Runs until the socket is closed, by either side.
pub async fn run<D: Dialect>(shared: &Shared, ws: &mut Ws, membership: &mut Membership, dialect: &mut D) {
    let mut turn = pin!(drain::my_turn(
        shared.drain.subscribe(),
        shared.config.drain.window
    ));
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
                    return close_slow(ws, &membership.room).await;
                }
                Ok(())
            }
            () = &mut turn => {
                socket::close(ws, close::SERVICE_RESTART, "instance restarting").await;
                return;
            }
            inbound = socket::next(ws) => match inbound {
                Inbound::Text(text) => dialect.receive(ws, text).await,
                Inbound::Binary => dialect.binary(ws).await,
                Inbound::Violation(code, reason) => {
                    socket::close(ws, code, reason).await;
                    return;
                }
                Inbound::Gone => return,
            },
            out = membership.rx.recv() => match out {
                Some(out) => {
                    // Take what else is queued too: one flush for the lot.
                    frames.clear();
                    dialect.render(out, &mut frames);
                    for _ in 1..MAX_COALESCED {
                        match membership.rx.try_recv() {
                            Ok(more) => dialect.render(more, &mut frames),
                            Err(_) => break,
                        }
                    }
                    // A client that stopped reading blocks this write; a kick
                    // must still close it now, not at the write timeout.
                    tokio::select! {
                        biased;
                        written = socket::send_texts(ws, &frames) => written,
                        kick = &mut membership.kicked, if kick_pending => {
                            kick_pending = false;
                            if kick.is_ok() {
                                return close_slow(ws, &membership.room).await;
                            }
                            Ok(())
                        }
                    }
                }
                // Only a kick removes a socket from the hub, and that branch
                // returns first; be safe rather than spin.
                None => return,
            },
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "socket write failed; dropping it");
            return;
        }
    }
}

/// Closes a socket the hub gave up on (its queue was full) with 1013.
async fn close_slow(ws: &mut Ws, room: &str) {
    tracing::info!(room = %room, "closing a slow client (1013)");
    socket::close(ws, close::TRY_AGAIN_LATER, "too slow: reconnect with since").await;
}
