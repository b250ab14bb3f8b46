//! The configuration turned into what the running lb uses: frontends with
//! their TLS settings and resolved backends, backends with live servers.
//! One `Runtime` is in force at a time; a reload builds a new one (reusing
//! the state of servers that kept their name and address) and each new
//! connection takes the one in force when it was accepted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use http::HeaderValue;
use tokio::sync::Semaphore;
use wsmesh_common::config::{ConfigError, Source};

use crate::config::{self, parse_addr, resolve_path, Config, Timeouts};
use crate::frontend_counters::FrontendCounters;
use crate::source_limits::SourcePolicy;
use crate::tls;
use crate::upstream::select::Hashing;
use crate::upstream::{Backend, Reactions, Server, ServerShared};

/// A frontend ready to serve.
#[derive(Debug)]
pub struct Frontend {
    /// Name for logs and stats.
    pub name: String,
    /// TLS settings; `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where requests go that no route matches; `None`: they get a 503.
    pub backend: Option<Arc<Backend>>,
    /// Redirect everything to https on this port.
    pub redirect_https_port: Option<u16>,
    /// `Strict-Transport-Security` value for TLS responses.
    pub hsts: Option<HeaderValue>,
    /// Whether requests carry `X-Forwarded-*` and `Forwarded` to servers.
    pub forwarded_headers: bool,
    /// Per-frontend connection limit; `None`: global limit only.
    pub maxconn: Option<Arc<Semaphore>>,
    /// Path prefixes answered with 403 and never forwarded.
    pub deny: Vec<String>,
    /// Path prefix routes, first match wins.
    pub routes: Vec<(String, Arc<Backend>)>,
    /// Connections, handshakes and client errors; kept across reloads.
    pub counters: Arc<FrontendCounters>,
    /// Trusted proxies, PROXY protocol and per-source limits.
    pub sources: SourcePolicy,
}

/// Everything a reload replaces.
#[derive(Debug)]
pub struct Runtime {
    /// Frontends by listening address.
    pub frontends: HashMap<SocketAddr, Arc<Frontend>>,
    /// Backends in configuration order.
    pub backends: Vec<Arc<Backend>>,
    /// Timeouts in force.
    pub timeouts: Timeouts,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Admin bearer token, if required.
    pub admin_token: Option<String>,
    /// The configuration this was built from.
    pub config: Config,
}

/// Key under which server state survives a reload.
type ServerKey = (String, String, SocketAddr);

impl Runtime {
    /// Builds from a checked configuration, loading certificates. State of
    /// servers in `previous` with the same backend, name and address is kept.
    pub fn build(
        config: Config,
        source: &Source,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, ConfigError> {
        let mut kept: HashMap<ServerKey, Arc<ServerShared>> = HashMap::new();
        if let Some(prev) = previous {
            for b in &prev.backends {
                for s in &b.servers {
                    kept.insert((b.name.clone(), s.name.clone(), s.addr), s.shared.clone());
                }
            }
        }
        let mut backends = Vec::new();
        for b in &config.backends {
            backends.push(Arc::new(build_backend(b, source, &kept)?));
        }
        let find = |name: &str| backends.iter().find(|b| b.name == name).cloned();
        let previous_of = |name: &str| previous.and_then(|p| p.frontends.values().find(|f| f.name == name));
        let counters_of = |name: &str| previous_of(name).map_or_else(Arc::default, |f| f.counters.clone());
        let mut frontends = HashMap::new();
        for f in &config.frontends {
            let listen = parse_addr(source, &f.listen)?;
            let tls = if f.certs.is_empty() {
                None
            } else {
                let mut certs = Vec::new();
                for c in &f.certs {
                    let cert = resolve_path(source, c.cert.get_ref());
                    let key = c.key.as_ref().map(|k| resolve_path(source, k.get_ref()));
                    let loaded = tls::load_cert(&cert, key.as_deref())
                        .map_err(|e| source.error_at(c.cert.span(), e.to_string()))?;
                    certs.push(loaded);
                }
                Some(tls::server_config(certs).map_err(|e| source.error_at(f.name.span(), e.to_string()))?)
            };
            let routes = f
                .routes
                .iter()
                .filter_map(|r| find(r.backend.get_ref()).map(|b| (r.prefix.clone(), b)))
                .collect();
            let frontend = Frontend {
                name: f.name.get_ref().clone(),
                tls,
                backend: f.backend.as_ref().and_then(|b| find(b.get_ref())),
                redirect_https_port: f.redirect_https_port,
                hsts: Some(f.hsts.as_str())
                    .filter(|h| !h.is_empty())
                    .and_then(|h| HeaderValue::from_str(h).ok()),
                forwarded_headers: f.forwarded_headers,
                maxconn: (f.maxconn > 0).then(|| Arc::new(Semaphore::new(f.maxconn))),
                deny: f.deny.clone(),
                routes,
                counters: counters_of(f.name.get_ref()),
                sources: SourcePolicy::new(f, previous_of(f.name.get_ref()).map(|p| &p.sources)),
            };
            frontends.insert(listen, Arc::new(frontend));
        }
        Ok(Runtime {
            frontends,
            backends,
            timeouts: config.timeouts.clone(),
            admin_listen: parse_addr(source, &config.admin.listen)?,
            admin_token: config.admin.effective_token(source)?,
            config,
        })
    }

    /// Finds a server by name in any backend.
    pub fn server(&self, name: &str) -> Option<&Arc<Server>> {
        self.backends.iter().find_map(|b| b.server(name))
    }

    /// Starts the active health checks of every backend that has them.
    pub fn start_checks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        for b in &self.backends {
            if let Some(check) = &b.check {
                for s in &b.servers {
                    handles.push(crate::upstream::health::spawn(s.clone(), check.clone()));
                }
            }
        }
        handles
    }
}

fn build_backend(
    b: &config::Backend,
    source: &Source,
    kept: &HashMap<ServerKey, Arc<ServerShared>>,
) -> Result<Backend, ConfigError> {
    let name = b.name.get_ref().clone();
    let rise = b.check.as_ref().map_or(1, |c| c.rise);
    let mut servers = Vec::new();
    for s in &b.servers {
        let addr = parse_addr(source, &s.addr)?;
        let key = (name.clone(), s.name.get_ref().clone(), addr);
        let shared = kept
            .get(&key)
            .cloned()
            .unwrap_or_else(|| ServerShared::new(rise, b.pool_max_idle));
        let mut server = Server::new(s, addr, b.check.as_ref(), shared);
        server.reactions = Reactions::of(b, s);
        servers.push(Arc::new(server));
    }
    Ok(Backend {
        name,
        balance: b.balance,
        retries: b.retries,
        retry_on: b.retry_on.clone(),
        check: b.check.clone(),
        hashing: b
            .hash_key
            .clone()
            .map(|key| Hashing::new(key, b.hash_balance_factor, b.hash_stick, &servers)),
        servers,
        rotation: AtomicUsize::new(0),
    })
}
