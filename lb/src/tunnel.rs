//! An upgraded connection (WebSocket after `101`): the client's and the
//! server's streams are spliced byte for byte, no frame parsing, so
//! subprotocols and extensions pass untouched. `timeout tunnel` closes it
//! after inactivity in both directions; once one side has closed its half,
//! `timeout client-fin` bounds the other; on shutdown it gets the grace
//! period, then closes. When its server is marked down or put in
//! maintenance with `on_marked_down = "shutdown-sessions"` (with
//! `"shutdown-unreachable"`: only once the server stopped answering), it
//! closes at once, so the client reconnects to a healthy server instead of
//! waiting on a frozen one (a stopped process or a cut link keeps TCP open
//! forever).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::Exchange;
use crate::client_io::Activity;
use crate::drain::{Drain, Running};
use crate::upstream::SessionGuard;

/// Everything a tunnel needs besides its two streams.
#[derive(Debug)]
pub struct TunnelCtx {
    /// The request's record; logged when the tunnel ends.
    pub exchange: Exchange,
    /// The server session, held for the tunnel's life.
    pub session: SessionGuard,
    /// Inactivity limit.
    pub tunnel_timeout: Duration,
    /// Half-closed limit.
    pub client_fin: Duration,
    /// Grace after a stop signal.
    pub grace: Duration,
    /// Stop signal.
    pub drain: Drain,
    /// Counts this tunnel as running.
    pub _running: Running,
    /// Keeps the client connection's limit slots while the tunnel lives.
    pub _permits: std::sync::Arc<crate::listener::Permits>,
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

/// Copies one direction until EOF, counting bytes and marking activity.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    bytes: &std::sync::atomic::AtomicU64,
    activity: &Activity,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on, as TCP would.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        activity.touch();
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Runs the tunnel to its end and logs it.
pub async fn splice(client: Upgraded, server: Upgraded, mut ctx: TunnelCtx) {
    let started = Instant::now();
    let activity = Activity::new();
    let up = std::sync::atomic::AtomicU64::new(0);
    let down = std::sync::atomic::AtomicU64::new(0);
    let (client_r, client_w) = tokio::io::split(TokioIo::new(client));
    let (server_r, server_w) = tokio::io::split(TokioIo::new(server));
    let to_server = pump(client_r, server_w, &up, &activity);
    let to_client = pump(server_r, client_w, &down, &activity);
    tokio::pin!(to_server, to_client);
    let (mut up_done, mut down_done) = (false, false);
    let mut fin_deadline: Option<tokio::time::Instant> = None;
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let stopping = ctx.drain.stopping();
    tokio::pin!(stopping);
    let server = ctx.session.server.clone();
    let server_down = ctx.session.shut_down();
    tokio::pin!(server_down);
    let end = loop {
        let idle_deadline = tokio::time::Instant::now() + ctx.tunnel_timeout.saturating_sub(activity.idle());
        tokio::select! {
            r = &mut to_server, if !up_done => {
                up_done = true;
                if r.is_err() { break End::Error; }
                if down_done { break End::Closed; }
                fin_deadline = Some(tokio::time::Instant::now() + ctx.client_fin);
            }
            r = &mut to_client, if !down_done => {
                down_done = true;
                if r.is_err() { break End::Error; }
                if up_done { break End::Closed; }
                fin_deadline = Some(tokio::time::Instant::now() + ctx.client_fin);
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                if activity.idle() >= ctx.tunnel_timeout { break End::Idle; }
            }
            _ = tokio::time::sleep_until(fin_deadline.unwrap_or_else(far)), if fin_deadline.is_some() => {
                break End::HalfClosed;
            }
            _ = &mut stopping, if grace_deadline.is_none() => {
                grace_deadline = Some(tokio::time::Instant::now() + ctx.grace);
            }
            _ = tokio::time::sleep_until(grace_deadline.unwrap_or_else(far)), if grace_deadline.is_some() => {
                break End::Shutdown;
            }
            _ = &mut server_down => {
                break End::ServerDown;
            }
        }
    };
    let (bytes_in, bytes_out) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    let counters = &server.shared.counters;
    counters.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    counters.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    ctx.exchange
        .log_tunnel(bytes_in, bytes_out, started.elapsed(), end.as_str());
}
