//! Connection workers: one single-threaded async runtime per CPU, each
//! driving the client connections handed to it and the server connections
//! they open. A request, its server connection's task and the wake-ups
//! between them then stay on one thread, as with HAProxy's threads or
//! Pingora's workers, instead of hopping between the threads of one
//! work-stealing runtime (a cross-thread wake-up per hop, which made a
//! keep-alive request latency-bound at half a core).
//!
//! The accept loops, the admin API, the checks and reloads stay on the
//! runtime the lb was started on.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The worker runtimes, started on first use and kept for the process.
#[derive(Debug)]
struct Workers {
    handles: Vec<Handle>,
    /// Round-robin position for the next connection.
    next: AtomicUsize,
}

thread_local! {
    /// The worker this thread is, `None` on any other thread.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

fn workers() -> &'static Workers {
    WORKERS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            match start(i) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a connection worker; fewer workers");
                    break;
                }
            }
        }
        Workers {
            handles,
            next: AtomicUsize::new(0),
        }
    })
}

/// Starts worker `i`: a thread running a current-thread runtime for ever.
fn start(i: usize) -> std::io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(format!("lb-worker-{i}"))
        .spawn(move || {
            WORKER.with(|w| w.set(Some(i)));
            rt.block_on(std::future::pending::<()>());
        })?;
    Ok(handle)
}

/// How many per-worker slots a per-worker structure needs: one per worker
/// and one shared by every other thread.
pub fn slots() -> usize {
    workers().handles.len() + 1
}

/// This thread's slot among [`slots`].
pub fn slot() -> usize {
    WORKER.with(Cell::get).unwrap_or_else(|| workers().handles.len())
}

/// Runs `serve` for an accepted connection on the next worker, its socket
/// moved to that worker's reactor; on the current runtime when there are no
/// workers or the socket cannot be moved.
pub fn spawn_connection<F, Fut>(tcp: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let w = workers();
    if w.handles.is_empty() {
        tokio::spawn(serve(tcp));
        return;
    }
    let std_tcp = match tcp.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot hand a connection to a worker");
            return;
        }
    };
    let i = w.next.fetch_add(1, Ordering::Relaxed) % w.handles.len();
    w.handles[i].spawn(async move {
        match TcpStream::from_std(std_tcp) {
            Ok(tcp) => serve(tcp).await,
            Err(e) => tracing::debug!(error = %e, "cannot register a connection with its worker"),
        }
    });
}
