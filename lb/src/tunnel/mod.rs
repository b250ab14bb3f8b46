//! An upgraded connection (WebSocket after `101`, or on an HTTP/2 stream
//! after an extended CONNECT): the client's and the server's streams are
//! spliced byte for byte, no frame parsing, so subprotocols and extensions
//! pass untouched. `timeout tunnel` closes it after inactivity in both
//! directions. Once one side has closed, failed or vanished, the other
//! direction goes on delivering what was already sent (a server's close
//! frame behind a backlog reaches a slow client), bounded by `timeout
//! client-fin`; a direction whose destination is gone keeps reading its
//! source and discards it, so closing that socket later does not reset it
//! and lose what the other direction still has queued for its peer. On
//! shutdown it gets the grace period, then closes. When its server is
//! marked down or put in maintenance with `on_marked_down =
//! "shutdown-sessions"` (with `"shutdown-unreachable"`: only once the
//! server stopped answering), it closes at once, so the client reconnects
//! to a healthy server instead of waiting on a frozen one (a stopped
//! process or a cut link keeps TCP open forever).

mod client_side;
mod pump;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use crate::access_log::{Exchange, InFlight};
use crate::client_io::Activity;
use crate::conn::Permits;
use crate::drain::{ActiveGuard, Drain};
use crate::upstream::h1::ServerConn;
use crate::upstream::SessionGuard;
use pump::{pump, Direction, EndProbe};

/// Everything a tunnel needs besides its two streams.
#[derive(Debug)]
pub struct TunnelCtx {
    /// The request's record; logged when the tunnel ends.
    pub exchange: Exchange,
    /// The server session, held for the tunnel's life.
    pub session: SessionGuard,
    /// Closes the tunnel after this long with no byte in either direction.
    pub tunnel_timeout: Duration,
    /// Half-closed limit.
    pub client_fin: Duration,
    /// Grace after a stop signal.
    pub grace: Duration,
    /// Starts the grace period when the lb stops.
    pub drain: Drain,
    /// Keeps a graceful stop waiting for this tunnel.
    pub _active: ActiveGuard,
    /// Keeps the client connection's limit slots while the tunnel lives.
    pub _permits: std::sync::Arc<Permits>,
    /// Counts the tunnel as a request in flight on its client connection,
    /// so an HTTP/2 connection carrying it is not closed as idle.
    pub _in_flight: InFlight,
}

/// Why a tunnel ended, for the log.
#[derive(Debug, Clone, Copy)]
enum End {
    Closed,
    Idle,
    HalfClosed,
    Shutdown,
    ServerDown,
    Error,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "timeout-tunnel",
            End::HalfClosed => "timeout-client-fin",
            End::Shutdown => "shutdown",
            End::ServerDown => "server-down",
            End::Error => "error",
        }
    }
}

/// Runs the tunnel, once both sides have switched protocols, to its end
/// and logs it.
///
/// This future is what an idle tunnel costs besides its sockets and TLS
/// state, so it is kept small: the context is boxed (an async fn would
/// otherwise hold it twice, as argument and as local), the sides are
/// awaited here rather than by the caller, and one timer serves every
/// deadline.
pub async fn splice(client: OnUpgrade, server: ServerConn, ctx: Box<TunnelCtx>) {
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade failed after 101");
            return;
        }
    };
    let mut ctx = ctx;
    let started = Instant::now();
    let activity = Activity::new();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let held = AtomicUsize::new(0);
    // The server side is the lb's own connection, with whatever the
    // server sent past its 101 (almost always nothing).
    let (tcp, read_ahead) = server.into_parts();
    let probe = EndProbe::of(&tcp);
    let (server_r, server_w) = tcp.into_split();
    let server_r = std::io::Cursor::new(read_ahead).chain(server_r);
    let (client_r, client_w) = match client_side::split(client) {
        Ok(sides) => sides,
        Err(e) => {
            tracing::warn!(error = %e, "the client's TLS could not be taken over after 101");
            return;
        }
    };
    let client_form = client_r.get_ref().1.form();
    let (up_ended, down_ended) = (Notify::new(), Notify::new());
    let up_dir = Direction::new(&up, &activity, &held, &up_ended);
    let down_dir = Direction {
        source_end: Some(probe),
        ..Direction::new(&down, &activity, &held, &down_ended)
    };
    let to_server = pump(client_r, server_w, &up_dir);
    let to_client = pump(server_r, client_w, &down_dir);
    tokio::pin!(to_server, to_client);
    let (mut up_done, mut down_done, mut failed) = (false, false, false);
    let mut fin_deadline: Option<tokio::time::Instant> = None;
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let timer = tokio::time::sleep(ctx.tunnel_timeout);
    tokio::pin!(timer);
    let stopping = ctx.drain.stopping();
    tokio::pin!(stopping);
    let server = ctx.session.server.clone();
    let server_down = ctx.session.shut_down();
    tokio::pin!(server_down);
    let end = loop {
        let idle_deadline = tokio::time::Instant::now() + ctx.tunnel_timeout.saturating_sub(activity.idle());
        let next = [fin_deadline, grace_deadline]
            .into_iter()
            .flatten()
            .fold(idle_deadline, Ord::min);
        timer.as_mut().reset(next);
        tokio::select! {
            r = &mut to_server, if !up_done => {
                up_done = true;
                failed |= r.is_err();
            }
            r = &mut to_client, if !down_done => {
                down_done = true;
                failed |= r.is_err();
            }
            _ = up_ended.notified(), if fin_deadline.is_none() => {
                fin_deadline = Some(tokio::time::Instant::now() + ctx.client_fin);
            }
            _ = down_ended.notified(), if fin_deadline.is_none() => {
                fin_deadline = Some(tokio::time::Instant::now() + ctx.client_fin);
            }
            () = &mut timer => {
                let now = tokio::time::Instant::now();
                if fin_deadline.is_some_and(|d| d <= now) { break End::HalfClosed; }
                if grace_deadline.is_some_and(|d| d <= now) { break End::Shutdown; }
                if activity.idle() >= ctx.tunnel_timeout { break End::Idle; }
            }
            _ = &mut stopping, if grace_deadline.is_none() => {
                grace_deadline = Some(tokio::time::Instant::now() + ctx.grace);
            }
            _ = &mut server_down => {
                break End::ServerDown;
            }
        }
        if up_done && down_done {
            break if failed { End::Error } else { End::Closed };
        }
    };
    let (bytes_in, bytes_out) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    let counters = &server.shared.counters;
    counters.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    counters.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    ctx.exchange
        .log_tunnel(bytes_in, bytes_out, started.elapsed(), end.as_str(), client_form);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_tunnel_task_stays_small() {
        // Every open tunnel holds one for its whole life, so its size is a
        // good part of what an idle tunnel costs (it was 3.3 KiB with the
        // context held twice and a timer per deadline). It holds the
        // client's TLS record state too (sequence numbers, the boxed
        // keys), which rustls' connection held before at 7 KiB.
        let size = future_size(splice);
        assert!(size < 2560, "{size} bytes");
    }
}
