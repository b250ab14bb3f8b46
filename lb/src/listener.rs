//! Client connections: binding the frontends' addresses, accepting within
//! the global and per-frontend `maxconn` (a full lb stops accepting, as
//! HAProxy does, and the kernel queues), the PROXY header and per-source
//! connection limits (a refused connection is closed before TLS), the TLS
//! handshake, and serving
//! HTTP/1.1 or HTTP/2 (by ALPN) on each connection until it ends, idles out
//! (`timeout client`) or the lb stops.
//!
//! Listening sockets survive reloads: each accept loop looks up its
//! frontend in the configuration in force for every new connection, and a
//! reload only opens addresses that are new and closes ones that are gone.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::access_log;
use crate::client_io::{Activity, ClientIo, Switched};
use crate::tls_records::{RecordWatch, TlsConn};
use crate::config::ProxyProtocol;
use crate::conn::{ConnCtx, Permits};
use crate::drain::Drain;
use crate::head_watch::Watch;
use crate::proxy;
use crate::proxy_protocol::{self, Header, ProxyRefusal};
use crate::runtime::{Frontend, Runtime};
use crate::source_limits::SourceConn;
use crate::workers;

/// What every accept loop shares; lives for the whole process.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force.
    pub runtime: watch::Receiver<Arc<Runtime>>,
    /// Global `maxconn`.
    pub global: Arc<Semaphore>,
    /// Stop signal and running count.
    pub drain: Drain,
}

/// A listening address that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The frontend address from the configuration, for the message.
    pub addr: SocketAddr,
    /// The system's refusal (in use, not permitted, no such address).
    pub source: io::Error,
}

/// The open listening sockets, by address.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Accept loop per address.
    tasks: HashMap<SocketAddr, JoinHandle<()>>,
}

impl Listeners {
    /// Opens the addresses of `rt` not open yet, taking a socket from
    /// `prebound` where it has one for the address. Nothing changes until
    /// [`Listeners::apply`], so a failure leaves the running set intact.
    pub async fn bind_new(
        &self,
        rt: &Runtime,
        prebound: &mut HashMap<SocketAddr, TcpListener>,
    ) -> Result<Vec<(SocketAddr, TcpListener)>, BindError> {
        let mut opened = Vec::new();
        for addr in rt.frontends.keys() {
            if !self.tasks.contains_key(addr) {
                let l = match prebound.remove(addr) {
                    Some(l) => l,
                    None => TcpListener::bind(addr)
                        .await
                        .map_err(|source| BindError { addr: *addr, source })?,
                };
                opened.push((*addr, l));
            }
        }
        Ok(opened)
    }

    /// Starts accepting on `opened` and closes addresses `rt` no longer has.
    pub fn apply(&mut self, opened: Vec<(SocketAddr, TcpListener)>, rt: &Runtime, shared: &Arc<Shared>) {
        self.tasks.retain(|addr, task| {
            let keep = rt.frontends.contains_key(addr);
            if !keep {
                tracing::info!(%addr, "listener closed");
                task.abort();
            }
            keep
        });
        for (addr, l) in opened {
            if let Some(fe) = rt.frontends.get(&addr) {
                tracing::info!(frontend = %fe.name, %addr, tls = fe.tls.is_some(), "listening");
                self.tasks
                    .insert(addr, tokio::spawn(accept_loop(l, addr, shared.clone())));
            }
        }
    }

    /// Closes every listening socket (on stop).
    pub fn close_all(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }
}

/// Accepts connections for the frontend configured at `addr`.
async fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    loop {
        let global = tokio::select! {
            p = shared.global.clone().acquire_owned() => p,
            _ = shared.drain.stopping() => return,
        };
        let Ok(global) = global else { return };
        let limit = shared
            .runtime
            .borrow()
            .frontends
            .get(&addr)
            .and_then(|f| f.maxconn.clone());
        let frontend = match limit {
            Some(sem) => match sem.acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => continue,
            },
            None => None,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.drain.stopping() => return,
        };
        let rt = shared.runtime.borrow().clone();
        let Some(fe) = rt.frontends.get(&addr).cloned() else {
            continue;
        };
        let permits = Permits::new(global, frontend, shared.drain.track());
        let drain = shared.drain.clone();
        workers::spawn_connection(tcp, move |tcp| serve(tcp, peer, fe, rt, permits, drain));
    }
}

/// The connection's source (from its PROXY header when the frontend takes
/// one) and its slot within the per-source limits; `None`: the connection
/// is to be closed, before any TLS, and has been counted (and logged).
async fn admit(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    fe: &Frontend,
    rt: &Runtime,
) -> Option<(SocketAddr, Option<SourceConn>)> {
    let policy = &fe.sources;
    let source = match policy.proxy_protocol {
        ProxyProtocol::None => peer,
        ProxyProtocol::V2 => {
            let header = if policy.is_trusted(peer.ip()) {
                proxy_protocol::read(tcp, rt.timeouts.http_request)
                    .await
                    .map_err(|e| (e.reason(), e.to_string()))
            } else {
                Err((ProxyRefusal::Untrusted, "not a trusted proxy".into()))
            };
            match header {
                Ok(Header::Proxied { source }) => source,
                Ok(Header::Local | Header::Unaddressed) => peer,
                Err((reason, detail)) => {
                    fe.counters.proxy_refused(reason);
                    tracing::debug!(client = %peer, frontend = %fe.name, reason = reason.as_str(), %detail, "PROXY header refused");
                    return None;
                }
            }
        }
    };
    match policy.admit_connection(source.ip()) {
        Ok(slot) => Some((source, slot)),
        Err(refused) => {
            fe.counters.limited(refused.kind);
            if let Some(unlogged) = refused.log {
                access_log::connection_refused(source, &fe.name, refused.kind, unlogged);
            }
            None
        }
    }
}

/// One client connection, from TLS handshake to close.
async fn serve(
    mut tcp: TcpStream,
    peer: SocketAddr,
    fe: Arc<Frontend>,
    rt: Arc<Runtime>,
    permits: Permits,
    drain: Drain,
) {
    let _ = tcp.set_nodelay(true);
    fe.counters.connection_accepted();
    let Some((peer, slot)) = admit(&mut tcp, peer, &fe, &rt).await else {
        return;
    };
    let accepted = Instant::now();
    let permits = Arc::new(permits.with_source(slot));
    let activity = Activity::new();
    let switched = Switched::default();
    let ctx = |th: Duration| {
        Arc::new(ConnCtx {
            peer,
            frontend: fe.clone(),
            runtime: rt.clone(),
            th,
            in_flight: Arc::new(AtomicUsize::new(0)),
            permits: permits.clone(),
            drain: drain.clone(),
            switched: switched.clone(),
        })
    };
    match &fe.tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            let stream = match tokio::time::timeout(rt.timeouts.client, acceptor.accept(RecordWatch::new(tcp))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, frontend = %fe.name, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, frontend = %fe.name, "TLS handshake timed out");
                    return;
                }
            };
            fe.counters.tls_handshake_done();
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            serve_http(TlsConn::new(stream), h2, ctx(accepted.elapsed()), activity).await;
        }
        None => serve_http(tcp, false, ctx(Duration::ZERO), activity).await,
    }
}

/// How many header fields hyper's HTTP/1 parser takes without being told
/// (its default); the proxy refuses more than `limits.max_headers`.
const HYPER_MAX_HEADERS: usize = 100;

/// Drives a hyper server connection until it ends; asks it to finish
/// gracefully when the lb stops or the connection idles out (`timeout
/// client` with no request in flight), and drops it when it stays idle for
/// another `timeout client` after that: an HTTP/2 client that never answers
/// the shutdown PING would otherwise keep it open for ever.
macro_rules! drive {
    ($conn:expr, $ctx:expr, $activity:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let stopping = $ctx.drain.stopping();
        tokio::pin!(stopping);
        let idle_limit = $ctx.runtime.timeouts.client;
        let mut closing = false;
        let mut next_check = tokio::time::Instant::now() + idle_limit;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(client = %$ctx.peer, error = %e, "client connection ended with an error");
                    }
                    break;
                }
                _ = &mut stopping, if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(next_check) => {
                    let idle = $activity.idle();
                    let now = tokio::time::Instant::now();
                    if idle < idle_limit {
                        next_check = now + (idle_limit - idle);
                    } else if $ctx.in_flight.load(Ordering::Relaxed) > 0 {
                        next_check = now + idle_limit;
                    } else if closing {
                        tracing::debug!(client = %$ctx.peer, "client connection idle after its graceful close began; dropped");
                        break;
                    } else {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        next_check = now + idle_limit;
                    }
                }
            }
        }
    }};
}

async fn serve_http<T>(io: T, h2: bool, ctx: Arc<ConnCtx>, activity: Arc<Activity>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| proxy::handle(req, svc_ctx.clone()));
    let limits = &ctx.runtime.config.limits;
    if h2 {
        let io = TokioIo::new(ClientIo::plain(io, activity.clone()));
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            // WebSocket over HTTP/2 (RFC 8441): browsers use it only when
            // the connection advertises it.
            .enable_connect_protocol()
            .serve_connection(io, svc);
        drive!(conn, ctx, activity);
    } else {
        let io = TokioIo::new(ClientIo::http1(
            io,
            activity.clone(),
            Watch::new(ctx.runtime.timeouts.http_request, limits.max_header_bytes),
            ctx.switched.clone(),
            ctx.frontend.counters.clone(),
        ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            // Heads are bounded by the watcher; this bounds chunked trailers.
            .max_header_size(limits.max_header_bytes);
        // hyper's own count is on the stack up to its default; a larger one
        // costs an allocation per request, so it is asked for only when needed.
        if limits.max_headers > HYPER_MAX_HEADERS {
            builder.max_headers(limits.max_headers);
        }
        let conn = builder.serve_connection(io, svc).with_upgrades();
        drive!(conn, ctx, activity);
    }
}
