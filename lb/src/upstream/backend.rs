//! A backend as the running lb sees it: its servers and how requests are
//! spread over them and retried.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::select::Hashing;
use super::server::Server;
use crate::config::{self, Balance};

/// A backend as configured now.
#[derive(Debug)]
pub struct Backend {
    /// Name from the configuration, used by routes, logs and the admin API.
    pub name: String,
    /// How a server is picked among the usable ones.
    pub balance: Balance,
    /// Extra attempts after a failed connect (or a `retry_on` failure).
    pub retries: usize,
    /// Failures after which a request goes to the next server (`retry-on`).
    pub retry_on: Vec<config::RetryOn>,
    /// Active check settings, if any.
    pub check: Option<config::Check>,
    /// Servers in configuration order.
    pub servers: Vec<Arc<Server>>,
    /// Rotation counter for roundrobin and leastconn ties.
    pub rotation: AtomicUsize,
    /// Key, bound and ring of a `balance = "hash"` backend.
    pub hashing: Option<Hashing>,
}

impl Backend {
    /// Finds a server by name.
    pub fn server(&self, name: &str) -> Option<&Arc<Server>> {
        self.servers.iter().find(|s| s.name == name)
    }
}
