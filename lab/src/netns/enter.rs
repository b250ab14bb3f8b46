//! Running code *inside* one of the lab's namespaces without a helper
//! process: a fresh thread joins the namespace with setns(2) (network
//! namespaces are per thread), so every socket it opens — and every socket of
//! a current-thread tokio runtime it drives — lives there. That is how the
//! client namespace talks to the lb, and how the lb's and the subscribers'
//! loopback-only listeners are reached from their own host.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::NetnsError;

/// Runs `f` on a new thread inside namespace `ns` (as `ip netns exec` would)
/// and returns its result. A panic in `f` becomes an error.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetnsError> + Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    let handle = std::thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            let file = File::open(&path).map_err(|e| NetnsError::Setup(format!("{path}: {e}")))?;
            // SAFETY: setns(2) on an fd we own; affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Setup(format!(
                    "setns {path}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            f()
        })
        .map_err(|e| NetnsError::Setup(format!("thread: {e}")))?;
    handle
        .join()
        .map_err(|_| NetnsError::Check(format!("code running in {ns} panicked")))?
}

/// Runs an async job on a two-worker runtime inside `ns`: its worker and
/// blocking threads are started from the thread that joined `ns`, so they
/// live there too (a thread inherits its creator's namespaces), and a
/// thousand clients get both cores.
pub fn block_in_netns<T, F, Fut>(ns: &str, job: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, NetnsError>>,
{
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| NetnsError::Setup(format!("tokio runtime: {e}")))?;
        rt.block_on(job())
    })
}

/// A plain-HTTP GET from inside `ns`: status and body, bounded by `limit`.
pub fn http_get_in(ns: &str, url: &str, limit: Duration) -> Result<(u16, String), NetnsError> {
    let url = url.to_string();
    block_in_netns(ns, move || async move {
        wsmesh_client::http::get(&url, limit)
            .await
            .map(|r| (r.status, r.body))
            .map_err(|e| NetnsError::Check(format!("GET {url}: {e}")))
    })
}
