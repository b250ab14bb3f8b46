//! The lb's TOML configuration: what the file may say, its defaults (all in
//! this file), and the checks that need more than the TOML grammar (names
//! that must exist, limits), each reported with the file and line like
//! `haproxy -c`. Building the runtime from it (certificates, sockets) is
//! `runtime.rs`'s job.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use wsmesh_common::config::{ConfigError, Source};

/// Environment variable that overrides `admin.token`.
pub const ADMIN_TOKEN_ENV: &str = "WSMESH_ADMIN_TOKEN";

/// Highest server weight accepted (HAProxy's limit).
pub const MAX_WEIGHT: u32 = 256;

/// The whole file, in HAProxy's terms; `Default` is a file with no frontend yet, to which a
/// caller adds frontends and backends as values.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Limits and shutdown timing of the whole process.
    #[serde(default)]
    pub global: Global,
    /// Timeouts shared by every frontend and backend.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The admin listener (stats page, JSON API, metrics).
    #[serde(default)]
    pub admin: Admin,
    /// Client-facing listeners.
    #[serde(default, rename = "frontend", skip_serializing_if = "Vec::is_empty")]
    pub frontends: Vec<Frontend>,
    /// Groups of servers that frontends send traffic to.
    #[serde(default, rename = "backend", skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
}

/// Process-wide settings (HAProxy `global`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// Client connections open at once over all frontends; more wait in the
    /// kernel's accept queue.
    pub maxconn: usize,
    /// On SIGTERM, how long WebSocket tunnels and in-flight requests may
    /// continue before they are closed (`hard-stop-after`).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            maxconn: 10_000,
            grace: Duration::from_secs(10),
        }
    }
}

/// Timeouts with HAProxy's meaning (`timeout connect`, …).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting to a server (TCP); on expiry the next server is tried.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Client inactivity: an idle keep-alive connection (no request in
    /// flight) is closed after this; also bounds the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub client: Duration,
    /// Waiting for a server's response headers; 504 on expiry.
    #[serde(with = "humantime_serde")]
    pub server: Duration,
    /// A request's complete headers must arrive within this, counted from
    /// the connection's start or the request's first byte; 408 on expiry.
    #[serde(with = "humantime_serde")]
    pub http_request: Duration,
    /// Inactivity in both directions of an upgraded (WebSocket) connection.
    #[serde(with = "humantime_serde")]
    pub tunnel: Duration,
    /// Once one side of a tunnel has closed its half, how long the other
    /// direction may still run.
    #[serde(with = "humantime_serde")]
    pub client_fin: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client: Duration::from_secs(30),
            server: Duration::from_secs(30),
            http_request: Duration::from_secs(10),
            tunnel: Duration::from_secs(3600),
            client_fin: Duration::from_secs(5),
        }
    }
}

/// Admin listener (HAProxy `stats` + runtime API).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin listener; keep it on loopback or a private net.
    pub listen: Spanned<String>,
    /// Bearer token required on every admin request; empty: none.
    /// Overridden by `WSMESH_ADMIN_TOKEN`.
    pub token: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: unread("127.0.0.1:8404".into()),
            token: String::new(),
        }
    }
}

impl Admin {
    /// The token in force: the environment wins over the file.
    pub fn effective_token(&self) -> Option<String> {
        wsmesh_common::config::env_override(ADMIN_TOKEN_ENV)
            .or_else(|| Some(self.token.clone()).filter(|t| !t.is_empty()))
    }
}

/// One client-facing listener (HAProxy `frontend` + `bind`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    /// Name used in logs, stats and metrics.
    pub name: Spanned<String>,
    /// Address to listen on, e.g. `127.0.0.1:8443`.
    pub listen: Spanned<String>,
    /// Certificates; any present makes this a TLS listener. The first one is
    /// the default for clients without SNI or with an unknown name.
    #[serde(default, rename = "cert", skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<CertFiles>,
    /// Backend for requests no route matches (`default_backend`). Required
    /// unless the frontend only redirects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Spanned<String>>,
    /// When set, every request is answered with a 301 to `https://` on this
    /// port, path and query kept (`redirect scheme https code 301`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https_port: Option<u16>,
    /// `Strict-Transport-Security` value added to responses on a TLS
    /// frontend, e.g. `max-age=31536000`; empty: none.
    #[serde(default)]
    pub hsts: String,
    /// Add `X-Forwarded-For/-Proto/-Host` and `Forwarded` to requests
    /// (`option forwardfor`).
    #[serde(default = "default_true")]
    pub forwarded_headers: bool,
    /// Connections open at once on this frontend; 0: only the global limit.
    #[serde(default)]
    pub maxconn: usize,
    /// Path prefixes answered with 403 (`http-request deny if { path_beg … }`).
    #[serde(default = "default_deny")]
    pub deny: Vec<String>,
    /// Path prefixes sent to another backend (`use_backend … if { path_beg … }`),
    /// first match wins.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// A certificate chain and its key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// PEM file with the leaf certificate first, then the chain; may also
    /// hold the private key (HAProxy-style combined PEM). Relative paths are
    /// resolved against the config file's directory.
    pub cert: Spanned<String>,
    /// PEM file with the private key; omit when `cert` holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Spanned<String>>,
}

/// A path-prefix route to a named backend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Requests whose path starts with this (e.g. `/api/`; it must start
    /// with `/`) take the route.
    pub prefix: String,
    /// Backend that gets the matching requests.
    pub backend: Spanned<String>,
}

/// Balancing algorithm (HAProxy `balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// In turn, in proportion to weight.
    RoundRobin,
    /// Fewest current sessions per weight; for long-lived WebSockets.
    #[default]
    LeastConn,
    /// Hash of the client IP, so a client keeps its server.
    Source,
}

/// A group of servers (HAProxy `backend`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Name that frontends and routes refer to.
    pub name: Spanned<String>,
    /// How a new session picks its server.
    #[serde(default)]
    pub balance: Balance,
    /// Further servers tried after a failed connect (`retries`, with
    /// `option redispatch`: each retry goes to the next server).
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Idle keep-alive connections kept per server.
    #[serde(default = "default_pool_idle")]
    pub pool_max_idle: usize,
    /// Active health check; without it servers count as up until a connect fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// What happens to a server's open sessions when it is marked down or
    /// put in maintenance (`default-server on-marked-down`); a server may
    /// override it.
    #[serde(default)]
    pub on_marked_down: OnMarkedDown,
    /// Passive health: what a refused or timed-out connect does to the
    /// server's health (`observe layer4` + `on-error`); a server may override it.
    #[serde(default)]
    pub on_error: OnError,
    /// Consecutive refused or timed-out connects that trigger `on_error`
    /// (`error-limit`); a successful connect resets the count.
    #[serde(default = "default_error_limit")]
    pub error_limit: u32,
    /// Which failures of a request make it go to the next server (`retry-on`).
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Where the traffic goes; at least one.
    #[serde(rename = "server")]
    pub servers: Vec<Server>,
}

/// What to do with a server's open sessions when it is marked down
/// (HAProxy `on-marked-down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnMarkedDown {
    /// Leave them; they end on their own (HAProxy's default).
    #[default]
    None,
    /// Close its WebSocket tunnels and abort requests waiting for it, so
    /// clients reconnect to a healthy server at once instead of hanging on
    /// a frozen one (`shutdown-sessions`).
    ShutdownSessions,
    /// wsmesh extension: close them as `shutdown-sessions` does only when
    /// the server stopped answering (refused or timed-out connects, checks
    /// timing out) or enters maintenance; one marked down by its answers
    /// (an unexpected status or a malformed response) keeps them until it
    /// stops answering too. The wsmesh apps answer 503 while they drain
    /// (then close their WebSockets themselves with 1012, spread out) and
    /// while over their capacity threshold (established sessions stay):
    /// alive in both cases, so cutting their tunnels would only turn a
    /// spread-out reconnect into a herd.
    ShutdownUnreachable,
}

impl OnMarkedDown {
    /// The name used in the file and the admin JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMarkedDown::None => "none",
            OnMarkedDown::ShutdownSessions => "shutdown-sessions",
            OnMarkedDown::ShutdownUnreachable => "shutdown-unreachable",
        }
    }
}

/// What passive health does once `error_limit` connects in a row failed
/// (HAProxy `on-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Only count them in `connect_errors`.
    None,
    /// Count as one failed check: down after `fall` of them in a row.
    #[default]
    FailCheck,
    /// Leave the server one failed check away from down.
    SuddenDeath,
    /// Mark the server down at once; checks bring it back after `rise`.
    MarkDown,
}

impl OnError {
    /// The name used in the file and the admin JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::None => "none",
            OnError::FailCheck => "fail-check",
            OnError::SuddenDeath => "sudden-death",
            OnError::MarkDown => "mark-down",
        }
    }
}

/// A failure after which a request is sent to the next server (HAProxy
/// `retry-on` keywords).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The connect was refused or timed out (nothing was sent).
    ConnFailure,
    /// The server closed the connection without a response (replayable
    /// requests only).
    EmptyResponse,
    /// The server answered 503 (replayable requests only).
    #[serde(rename = "503")]
    Status503,
}

/// Active HTTP health check (`option httpchk` + `http-check expect status`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Check {
    /// Path requested with GET.
    pub path: String,
    /// Status that counts as success.
    pub expect_status: u16,
    /// Time between checks (`inter`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time between checks while a server is changing state (`fastinter`);
    /// default: `interval`.
    #[serde(with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub fastinter: Option<Duration>,
    /// Time between checks while a server is down (`downinter`); default: `interval`.
    #[serde(with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub downinter: Option<Duration>,
    /// One check's connect + response budget (`timeout check`); default: `interval`.
    #[serde(with = "humantime_serde::option", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Consecutive successes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
    /// A 404 from an up server puts it in drain (no new sessions, the open
    /// ones stay) instead of counting as a failure; a success brings it
    /// back (`http-check disable-on-404`): how a server drains itself
    /// without being marked down, so `shutdown-sessions` (and
    /// `shutdown-unreachable`) leave its sessions alone.
    pub disable_on_404: bool,
}

impl Default for Check {
    fn default() -> Self {
        Check {
            path: "/".into(),
            expect_status: 200,
            interval: Duration::from_secs(2),
            fastinter: None,
            downinter: None,
            timeout: None,
            rise: 2,
            fall: 3,
            disable_on_404: false,
        }
    }
}

/// One server of a backend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Name, unique in the whole file (the admin API addresses servers by it).
    pub name: Spanned<String>,
    /// `ip:port` of the server's plain-HTTP listener.
    pub addr: Spanned<String>,
    /// Share of traffic relative to the others, 0–256; 0 gets none.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Sessions at once on this server; 0: unlimited. A full server is skipped.
    #[serde(default)]
    pub maxconn: usize,
    /// Used only when no non-backup server is usable.
    #[serde(default)]
    pub backup: bool,
    /// After coming up, the weight ramps from 0 to full over this time.
    #[serde(default, with = "humantime_serde")]
    pub slowstart: Duration,
    /// Overrides the backend's `on_marked_down` for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_marked_down: Option<OnMarkedDown>,
    /// Overrides the backend's `on_error` for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    /// Overrides the backend's `error_limit` for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_limit: Option<u32>,
}

fn default_true() -> bool {
    true
}
fn default_deny() -> Vec<String> {
    vec!["/internal/".into()]
}
fn default_retries() -> usize {
    3
}
fn default_pool_idle() -> usize {
    32
}
fn default_weight() -> u32 {
    1
}
fn default_error_limit() -> u32 {
    1
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnFailure]
}

/// A value built in code rather than read from a file; an error about it
/// points at the file's first line.
fn unread<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

// Builders for tests and tools; the lb itself only reads files.
impl Admin {
    /// The admin listener on `listen`, without a token.
    pub fn new(listen: SocketAddr) -> Admin {
        Admin {
            listen: unread(listen.to_string()),
            ..Admin::default()
        }
    }
}

// Builders for tests and tools; the lb itself only reads files.
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
            routes: Vec::new(),
        }
    }
}

// Builders for tests and tools; the lb itself only reads files.
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

// Builders for tests and tools; the lb itself only reads files.
impl Route {
    /// Requests whose path starts with `prefix` go to `backend`.
    pub fn new(prefix: &str, backend: &str) -> Route {
        Route {
            prefix: prefix.to_string(),
            backend: unread(backend.to_string()),
        }
    }
}

// Builders for tests and tools; the lb itself only reads files.
impl Backend {
    /// A backend of `servers` without a health check; every other key at
    /// its default.
    pub fn new(name: &str, servers: Vec<Server>) -> Backend {
        Backend {
            name: unread(name.to_string()),
            balance: Balance::default(),
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

// Builders for tests and tools; the lb itself only reads files.
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

impl Check {
    /// `fastinter`, defaulting to `interval`.
    pub fn fast_interval(&self) -> Duration {
        self.fastinter.unwrap_or(self.interval)
    }
    /// `downinter`, defaulting to `interval`.
    pub fn down_interval(&self) -> Duration {
        self.downinter.unwrap_or(self.interval)
    }
    /// `timeout`, defaulting to `interval`.
    pub fn check_timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.interval)
    }
}

/// Parses an `ip:port` that sits at `span` of the file.
pub fn parse_addr(source: &Source, value: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    value.get_ref().parse().map_err(|_| {
        source.error_at(
            value.span(),
            format!("{:?} is not an ip:port address", value.get_ref()),
        )
    })
}

/// Resolves a path from the file against the file's directory.
pub fn resolve_path(source: &Source, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    source.file.parent().unwrap_or(Path::new(".")).join(p)
}

impl Config {
    /// Reads, parses and checks the file; certificates are checked later,
    /// when they are loaded.
    pub fn load(path: &Path) -> Result<(Config, Source), ConfigError> {
        let (config, source): (Config, Source) = wsmesh_common::config::load(path)?;
        config.validate(&source)?;
        Ok((config, source))
    }

    /// Checks what the grammar cannot: references, uniqueness, ranges.
    fn validate(&self, source: &Source) -> Result<(), ConfigError> {
        if self.frontends.is_empty() {
            return Err(source.error("no [[frontend]] defined"));
        }
        if self.global.maxconn == 0 {
            return Err(source.error_at_path("global.maxconn", "global maxconn must be at least 1"));
        }
        let mut listens = HashSet::new();
        let admin = parse_addr(source, &self.admin.listen)?;
        listens.insert(admin);
        let mut backend_names = HashSet::new();
        let mut server_names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            if !backend_names.insert(b.name.get_ref().as_str()) {
                return Err(
                    source.error_at(b.name.span(), format!("duplicate backend {:?}", b.name.get_ref()))
                );
            }
            if b.servers.is_empty() {
                return Err(source.error_at(
                    b.name.span(),
                    format!("backend {:?} has no [[backend.server]]", b.name.get_ref()),
                ));
            }
            let at = |key: &str, reason: &str| source.error_at_path(&format!("backend.{i}.{key}"), reason);
            if let Some(check) = &b.check {
                if check.rise == 0 || check.fall == 0 {
                    return Err(at(
                        if check.rise == 0 {
                            "check.rise"
                        } else {
                            "check.fall"
                        },
                        "rise and fall must be at least 1",
                    ));
                }
                if !check.path.starts_with('/') {
                    return Err(at("check.path", "check path must start with '/'"));
                }
                if check.interval.is_zero() {
                    return Err(at("check.interval", "check interval must not be 0"));
                }
            }
            if b.error_limit == 0 {
                return Err(at("error_limit", "error_limit must be at least 1"));
            }
            for (j, s) in b.servers.iter().enumerate() {
                if s.error_limit == Some(0) {
                    return Err(at(
                        &format!("server.{j}.error_limit"),
                        &format!("server {:?}: error_limit must be at least 1", s.name.get_ref()),
                    ));
                }
                if !server_names.insert(s.name.get_ref().as_str()) {
                    return Err(source.error_at(
                        s.name.span(),
                        format!(
                            "duplicate server name {:?} (names are unique across backends)",
                            s.name.get_ref()
                        ),
                    ));
                }
                parse_addr(source, &s.addr)?;
                if s.weight > MAX_WEIGHT {
                    return Err(at(
                        &format!("server.{j}.weight"),
                        &format!(
                            "server {:?}: weight {} is over {MAX_WEIGHT}",
                            s.name.get_ref(),
                            s.weight
                        ),
                    ));
                }
            }
        }
        let mut frontend_names = HashSet::new();
        for (i, f) in self.frontends.iter().enumerate() {
            if !frontend_names.insert(f.name.get_ref().as_str()) {
                return Err(source.error_at(
                    f.name.span(),
                    format!("duplicate frontend {:?}", f.name.get_ref()),
                ));
            }
            let addr = parse_addr(source, &f.listen)?;
            if !listens.insert(addr) {
                return Err(source.error_at(f.listen.span(), format!("address {addr} is used twice")));
            }
            let known = |name: &Spanned<String>| -> Result<(), ConfigError> {
                if backend_names.contains(name.get_ref().as_str()) {
                    Ok(())
                } else {
                    Err(source.error_at(name.span(), format!("unknown backend {:?}", name.get_ref())))
                }
            };
            match (&f.backend, f.redirect_https_port) {
                (Some(b), _) => known(b)?,
                (None, Some(_)) => {}
                (None, None) => {
                    return Err(source.error_at(
                        f.name.span(),
                        format!(
                            "frontend {:?} needs a backend (or redirect_https_port)",
                            f.name.get_ref()
                        ),
                    ))
                }
            }
            for (k, r) in f.routes.iter().enumerate() {
                known(&r.backend)?;
                if !r.prefix.starts_with('/') {
                    return Err(source.error_at_path(
                        &format!("frontend.{i}.route.{k}.prefix"),
                        "route prefix must start with '/'",
                    ));
                }
            }
            if !f.hsts.is_empty() && http::HeaderValue::from_str(&f.hsts).is_err() {
                return Err(
                    source.error_at_path(&format!("frontend.{i}.hsts"), "hsts is not a valid header value")
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let source = Source {
            file: PathBuf::from("/etc/lb/lb.toml"),
            text: text.into(),
        };
        let config: Config = source.parse()?;
        config.validate(&source)?;
        Ok(config)
    }

    const MINIMAL: &str = r#"
[[frontend]]
name = "web"
listen = "127.0.0.1:8080"
backend = "apps"

[[backend]]
name = "apps"
[[backend.server]]
name = "app1"
addr = "127.0.0.1:9001"
"#;

    #[test]
    fn minimal_config_gets_haproxy_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.backends[0].balance, Balance::LeastConn);
        assert_eq!(c.backends[0].retries, 3);
        assert_eq!(c.frontends[0].deny, vec!["/internal/".to_string()]);
        assert_eq!(c.admin.listen.get_ref(), "127.0.0.1:8404");
        let check = Check::default();
        assert_eq!(
            (check.interval, check.rise, check.fall),
            (Duration::from_secs(2), 2, 3)
        );
        assert_eq!(check.fast_interval(), check.interval);
    }

    #[test]
    fn unknown_backend_names_its_line() {
        let text = MINIMAL.replace("backend = \"apps\"", "backend = \"nope\"");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
        assert!(e.reason.contains("unknown backend \"nope\""), "{e}");
    }

    #[test]
    fn bad_server_address_names_its_line() {
        let e = parse(&MINIMAL.replace("127.0.0.1:9001", "localhost")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(11), "{e}");
    }

    #[test]
    fn duplicate_server_names_are_refused() {
        let text = format!("{MINIMAL}[[backend.server]]\nname = \"app1\"\naddr = \"127.0.0.1:9002\"\n");
        let e = parse(&text).unwrap_err();
        assert!(e.reason.contains("duplicate server"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(13), "{e}");
    }

    #[test]
    fn failover_keys_parse_and_a_zero_error_limit_is_refused() {
        let text = MINIMAL.replace(
            "name = \"apps\"\n",
            "name = \"apps\"\non_marked_down = \"shutdown-sessions\"\non_error = \"mark-down\"\n\
             retry_on = [\"conn-failure\", \"empty-response\", \"503\"]\n",
        );
        let c = parse(&text).unwrap();
        let b = &c.backends[0];
        assert_eq!(b.on_marked_down, OnMarkedDown::ShutdownSessions);
        assert_eq!(b.on_error, OnError::MarkDown);
        assert_eq!(b.error_limit, 1);
        assert_eq!(
            b.retry_on,
            [RetryOn::ConnFailure, RetryOn::EmptyResponse, RetryOn::Status503]
        );
        let unreachable = parse(&text.replace("shutdown-sessions", "shutdown-unreachable")).unwrap();
        assert_eq!(
            unreachable.backends[0].on_marked_down,
            OnMarkedDown::ShutdownUnreachable
        );
        let defaults = parse(MINIMAL).unwrap();
        assert_eq!(defaults.backends[0].on_marked_down, OnMarkedDown::None);
        assert_eq!(defaults.backends[0].on_error, OnError::FailCheck);
        assert_eq!(defaults.backends[0].retry_on, [RetryOn::ConnFailure]);
        let e = parse(&format!("{MINIMAL}error_limit = 0\n")).unwrap_err();
        assert!(e.reason.contains("error_limit"), "{e}");
        let e = parse(&MINIMAL.replace("name = \"apps\"\n", "name = \"apps\"\nretry_on = [\"404\"]\n"))
            .unwrap_err();
        assert!(e.reason.contains("404"), "{e}");
    }

    /// Parses `text`, writes it back and parses that: the same value.
    fn round_trip(text: &str) -> String {
        let config: Config = toml::from_str(text).unwrap();
        let written = toml::to_string(&config).unwrap();
        let again: Config = toml::from_str(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(again, config, "{written}");
        written
    }

    #[test]
    fn committed_configs_write_back_to_the_same_value() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
        for dir in ["local", "vagrant"] {
            let text = std::fs::read_to_string(format!("{root}/{dir}/lb.toml")).unwrap();
            let written = round_trip(&text);
            assert!(written.contains("tunnel = \"1h\""), "{dir}: {written}");
            assert!(written.contains("interval = \"1s\""), "{dir}: {written}");
            parse(&written).unwrap_or_else(|e| panic!("{dir}: {e}"));
        }
    }

    #[test]
    fn a_config_built_as_values_is_valid_once_written() {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut https = Frontend::new("https", addr(8443), "apps");
        https.certs.push(CertFiles::new(
            Path::new("server.pem"),
            Some(Path::new("server.key")),
        ));
        https.routes.push(Route::new("/api/", "apps"));
        let mut apps = Backend::new("apps", vec![Server::new("app1", addr(9001))]);
        apps.check = Some(Check::default());
        apps.servers.push(Server::new("app2", addr(9002)));
        let config = Config {
            admin: Admin::new(addr(8404)),
            frontends: vec![https, Frontend::redirect("http", addr(8080), 8443)],
            backends: vec![apps],
            ..Config::default()
        };
        let written = toml::to_string(&config).unwrap();
        assert_eq!(parse(&written).unwrap(), config, "{written}");
        assert_eq!(parse(&round_trip(MINIMAL)).unwrap(), parse(MINIMAL).unwrap());
    }

    /// Two backends and two frontends, so a check that found the first
    /// key of a name would point at the wrong table.
    const TWO_OF_EACH: &str = r#"[[frontend]]
name = "a"
listen = "127.0.0.1:8080"
backend = "one"
hsts = "max-age=1"

[[frontend]]
name = "b"
listen = "127.0.0.1:8081"
backend = "two"
hsts = "max-age=2"

[[backend]]
name = "one"
error_limit = 1
[backend.check]
interval = "1s"
rise = 2
fall = 3
[[backend.server]]
name = "s1"
addr = "127.0.0.1:9001"

[[backend]]
name = "two"
  error_limit = 1
[backend.check]
  interval = "1s"
  rise = 2
  fall = 3
  path = "/healthz"
[[backend.server]]
name = "s2"
addr = "127.0.0.1:9002"
"#;

    #[test]
    fn a_bad_key_in_the_second_table_names_that_table_s_line_and_column() {
        parse(TWO_OF_EACH).unwrap();
        let cases = [
            (
                "  rise = 2\n  fall",
                "  rise = 0\n  fall",
                "lb.toml:29:3: rise and fall must be at least 1",
            ),
            (
                "  fall = 3\n  path",
                "  fall = 0\n  path",
                "lb.toml:30:3: rise and fall must be at least 1",
            ),
            (
                "  interval = \"1s\"\n  rise",
                "  interval = \"0s\"\n  rise",
                "lb.toml:28:3: check interval must not be 0",
            ),
            (
                "\"/healthz\"",
                "\"healthz\"",
                "lb.toml:31:3: check path must start with '/'",
            ),
            (
                "  error_limit = 1",
                "  error_limit = 0",
                "lb.toml:26:3: error_limit must be at least 1",
            ),
            (
                "\"max-age=2\"",
                "\"max-age=2\\n\"",
                "lb.toml:11:1: hsts is not a valid header value",
            ),
        ];
        for (from, to, expected) in cases {
            let text = TWO_OF_EACH.replace(from, to);
            assert_ne!(text, TWO_OF_EACH, "{from:?}");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.to_string(), format!("/etc/lb/{expected}"));
        }
        let text = format!(
            "{}[global]\nmaxconn = 0\n",
            TWO_OF_EACH.replace("hsts", "maxconn = 1\nhsts")
        );
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            "/etc/lb/lb.toml:38:1: global maxconn must be at least 1"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let source = Source {
            file: PathBuf::from("/etc/lb/lb.toml"),
            text: String::new(),
        };
        assert_eq!(
            resolve_path(&source, "certs/a.pem"),
            PathBuf::from("/etc/lb/certs/a.pem")
        );
        assert_eq!(resolve_path(&source, "/x.pem"), PathBuf::from("/x.pem"));
    }
}
