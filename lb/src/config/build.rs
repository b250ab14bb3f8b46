//! Builders for lb configs as values: tests, drills, the bench and `lab up`
//! write configs with these instead of rendering text. The lb itself only
//! reads files.

use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::*;

/// A value built in code rather than read from a file; an error about it
/// points at the file's first line.
pub(super) fn unread<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

impl Admin {
    /// The admin listener on `listen`, without a token.
    pub fn new(listen: SocketAddr) -> Admin {
        Admin {
            listen: unread(listen.to_string()),
            ..Admin::default()
        }
    }
}

impl Frontend {
    /// A plain-HTTP listener on `listen` sending every request to
    /// `backend`; every other key at its default.
    pub fn new(name: &str, listen: SocketAddr, backend: &str) -> Frontend {
        Frontend {
            backend: Some(unread(backend.to_string())),
            ..Frontend::without_backend(name, listen)
        }
    }

    /// A listener on `listen` that answers every request with a 301 to
    /// `https://` on `https_port`.
    pub fn redirect(name: &str, listen: SocketAddr, https_port: u16) -> Frontend {
        Frontend {
            redirect_https_port: Some(https_port),
            ..Frontend::without_backend(name, listen)
        }
    }

    fn without_backend(name: &str, listen: SocketAddr) -> Frontend {
        Frontend {
            name: unread(name.to_string()),
            listen: unread(listen.to_string()),
            certs: Vec::new(),
            backend: None,
            redirect_https_port: None,
            hsts: String::new(),
            forwarded_headers: default_true(),
            maxconn: 0,
            deny: default_deny(),
            trusted_proxies: Vec::new(),
            proxy_protocol: ProxyProtocol::default(),
            per_source: None,
            routes: Vec::new(),
        }
    }
}

impl CertFiles {
    /// A certificate chain in `cert`, its key in `key` or, when `None`, in
    /// `cert` too.
    pub fn new(cert: &Path, key: Option<&Path>) -> CertFiles {
        let text = |p: &Path| unread(p.display().to_string());
        CertFiles {
            cert: text(cert),
            key: key.map(text),
        }
    }
}

impl Route {
    /// Requests whose path starts with `prefix` go to `backend`.
    pub fn new(prefix: &str, backend: &str) -> Route {
        Route {
            prefix: prefix.to_string(),
            backend: unread(backend.to_string()),
        }
    }
}

impl Backend {
    /// A backend of `servers` without a health check; every other key at
    /// its default.
    pub fn new(name: &str, servers: Vec<Server>) -> Backend {
        Backend {
            name: unread(name.to_string()),
            balance: Balance::default(),
            hash_key: None,
            hash_balance_factor: default_hash_balance_factor(),
            hash_stick: HashStick::default(),
            retries: default_retries(),
            pool_max_idle: default_pool_idle(),
            check: None,
            on_marked_down: OnMarkedDown::default(),
            on_error: OnError::default(),
            error_limit: default_error_limit(),
            retry_on: default_retry_on(),
            servers,
        }
    }
}

impl Server {
    /// The server `name` at `addr`; every other key at its default.
    pub fn new(name: &str, addr: SocketAddr) -> Server {
        Server {
            name: unread(name.to_string()),
            addr: unread(addr.to_string()),
            weight: default_weight(),
            maxconn: 0,
            backup: false,
            slowstart: Duration::ZERO,
            on_marked_down: None,
            on_error: None,
            error_limit: None,
        }
    }
}
