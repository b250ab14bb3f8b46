//! The wsmesh lb as a library: a TLS-terminating HTTP/WebSocket load
//! balancer configured like HAProxy. `main.rs` wires it into the `lb`
//! binary; tests start it in-process with [`Lb::start`] on sockets they
//! bound themselves.
//!
//! A connection's path reads through the modules: `listener` (accept within
//! `maxconn`, TLS, HTTP/1.1 or HTTP/2) builds a `conn` context → `proxy`
//! (rules, a server from `upstream`, forwarding with retries) → `tunnel`
//! (after a WebSocket `101`). `lifecycle` runs the whole: start, reload,
//! graceful stop (`drain`).

mod access_log;
mod admin;
pub mod certgen;
mod client_io;
pub mod config;
mod conn;
mod drain;
mod frontend_counters;
mod head_watch;
mod lifecycle;
mod listener;
mod metrics;
mod proxy;
pub mod proxy_protocol;
mod runtime;
mod source_limits;
mod stats_page;
mod thread_buffer;
mod tls;
mod tls_records;
mod tunnel;
mod upstream;
mod workers;

pub use lifecycle::{check, run, Addresses, Lb, LifecycleError, Prebound};

/// The request-stream watcher, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::head_watch::{Refusal, Watch};
}
