//! The lb's TOML configuration: what the file may say, its defaults (all in
//! this file), and the checks that need more than the TOML grammar (names
//! that must exist, limits), each reported with the file and line like
//! `haproxy -c`. Building the runtime from it (certificates, sockets) is
//! `runtime.rs`'s job.
//! Over 600 lines because every key, its doc and its default live here, one
//! place for the whole grammar of the file.

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

/// Bounds of a non-zero `hash_balance_factor` (HAProxy's): below 100 the
/// servers' bounds would not hold every session.
pub const HASH_BALANCE_FACTOR_RANGE: std::ops::RangeInclusive<u32> = 100..=65535;

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
    /// Request size limits shared by every frontend.
    #[serde(default)]
    pub limits: Limits,
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

/// How large a request head may be, the same for HTTP/1 and HTTP/2
/// (HAProxy's `tune.bufsize` and `tune.http.maxhdr`). A request over either
/// limit is answered `431` and never reaches a server; on HTTP/1 the
/// connection is closed, since the rest of its stream cannot be followed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head in bytes. HTTP/1: the request line and header
    /// lines as received (chunked trailers too); HTTP/2: the decoded header
    /// list as RFC 9113 counts it (each field's name and value plus 32),
    /// announced to clients as `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
}

/// Bounds of `limits.max_header_bytes`: below the smallest useful head,
/// above what one connection should hold in memory for a head.
pub const HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=256 * 1024;

/// Bounds of `limits.max_headers`.
pub const HEADERS_RANGE: std::ops::RangeInclusive<usize> = 8..=1000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// Admin listener (HAProxy `stats` + runtime API).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin listener. Without a token it must be a
    /// loopback address: the lb refuses to start otherwise.
    pub listen: Spanned<String>,
    /// Bearer token required on every admin request; empty: none.
    /// Overridden by `WSMESH_ADMIN_TOKEN`.
    pub token: String,
    /// File holding the token (surrounding whitespace ignored), read at
    /// start and on every reload: the way to keep it out of the config.
    /// Relative paths are resolved against the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<Spanned<String>>,
    /// Names, besides the listener's own address (and `localhost` on
    /// loopback), that requests may carry in `Host` and `Origin`: `name`
    /// on the listener's port, or `name:port`. Anything else is refused
    /// with 403, which stops DNS-rebinding and cross-site requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: unread("127.0.0.1:8404".into()),
            token: String::new(),
            token_file: None,
            hosts: Vec::new(),
        }
    }
}

impl Admin {
    /// Whether a token is configured (in the environment, the file or a
    /// token file), without reading the token file.
    fn has_token(&self) -> bool {
        wsmesh_common::config::env_override(ADMIN_TOKEN_ENV).is_some()
            || !self.token.is_empty()
            || self.token_file.is_some()
    }

    /// The token in force: the environment wins over the file's `token`,
    /// then `token_file` is read.
    pub fn effective_token(&self, source: &Source) -> Result<Option<String>, ConfigError> {
        if let Some(t) = wsmesh_common::config::env_override(ADMIN_TOKEN_ENV) {
            return Ok(Some(t));
        }
        if !self.token.is_empty() {
            return Ok(Some(self.token.clone()));
        }
        let Some(file) = &self.token_file else {
            return Ok(None);
        };
        let path = resolve_path(source, file.get_ref());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| source.error_at(file.span(), format!("token_file {}: {e}", path.display())))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(source.error_at(file.span(), format!("token_file {} is empty", path.display())));
        }
        Ok(Some(token.to_string()))
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
    /// Path prefixes answered with 403 (`http-request deny if { path_beg … }`);
    /// by default the apps' internal endpoints and their metrics.
    #[serde(default = "default_deny")]
    pub deny: Vec<String>,
    /// Peers whose `X-Forwarded-For` (and PROXY header) is believed: the
    /// per-source limits then apply to the address they name (the
    /// rightmost one not in this list). Address blocks, e.g. `10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<Cidr>,
    /// `"v2"`: every connection starts with a PROXY protocol v2 header
    /// whose source address becomes the client's; only `trusted_proxies`
    /// may connect. Default `"none"`.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Limits per client address (`[frontend.per_source]`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_source: Option<PerSource>,
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
    /// Consistent hash of `hash_key` with bounded loads, so every session
    /// with the same key (a chat room's members) meets on one server.
    Hash,
}

/// With `balance = "hash"`: whether a key's open sessions hold it on their
/// server past the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HashStick {
    /// To the usable server holding most of the key's open sessions,
    /// whatever its load: a room's members stay on one server and the
    /// bound only places keys that have no open session (new rooms).
    #[default]
    OpenSessions,
    /// Ring and bound alone, as HAProxy's `hash-balance-factor`: past the
    /// bound, further sessions of a key go to its next server.
    Off,
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
    /// With `balance = "hash"`: the request part hashed (required there,
    /// refused elsewhere). A request without it is placed by leastconn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKey>,
    /// With `balance = "hash"`: a server takes a new session only while its
    /// sessions stay below this percentage of its weighted share of the
    /// backend's (`hash-balance-factor`), else the key goes on to the next
    /// server on the ring; 0: no bound.
    #[serde(default = "default_hash_balance_factor")]
    pub hash_balance_factor: u32,
    /// With `balance = "hash"`: where a session goes whose key already has
    /// open sessions.
    #[serde(default)]
    pub hash_stick: HashStick,
    /// Further servers tried after a failed connect (`retries`, with
    /// `option redispatch`: each retry goes to the next server).
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Idle keep-alive connections kept per server and lb worker thread.
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
    vec!["/internal/".into(), "/metrics".into()]
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
fn default_hash_balance_factor() -> u32 {
    125
}
fn default_error_limit() -> u32 {
    1
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnFailure]
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
        let limits = &self.limits;
        if !HEADER_BYTES_RANGE.contains(&limits.max_header_bytes) {
            return Err(source.error_at_path(
                "limits.max_header_bytes",
                format!(
                    "max_header_bytes must be between {} and {}",
                    HEADER_BYTES_RANGE.start(),
                    HEADER_BYTES_RANGE.end()
                ),
            ));
        }
        if !HEADERS_RANGE.contains(&limits.max_headers) {
            return Err(source.error_at_path(
                "limits.max_headers",
                format!(
                    "max_headers must be between {} and {}",
                    HEADERS_RANGE.start(),
                    HEADERS_RANGE.end()
                ),
            ));
        }
        let mut listens = HashSet::new();
        let admin = parse_addr(source, &self.admin.listen)?;
        if !admin.ip().is_loopback() && !self.admin.has_token() {
            return Err(source.error_at(
                self.admin.listen.span(),
                format!(
                    "admin.listen {admin} is not a loopback address: set admin.token, \
                     admin.token_file or {ADMIN_TOKEN_ENV} so the admin API needs a bearer token"
                ),
            ));
        }
        if !self.admin.token.is_empty() && self.admin.token_file.is_some() {
            return Err(source.error_at_path(
                "admin.token_file",
                "set admin.token or admin.token_file, not both",
            ));
        }
        for (i, h) in self.admin.hosts.iter().enumerate() {
            if h.parse::<http::uri::Authority>().is_err() || h.contains('@') {
                return Err(source.error_at_path(
                    "admin.hosts",
                    format!("admin.hosts[{i}] {h:?} is not a host name or host:port"),
                ));
            }
        }
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
            match (b.balance, &b.hash_key) {
                (Balance::Hash, None) => {
                    return Err(at("balance", "balance = \"hash\" needs a hash_key"));
                }
                (Balance::Hash, Some(_)) | (_, None) => {}
                (_, Some(_)) => {
                    return Err(at("hash_key", "hash_key is only used with balance = \"hash\""));
                }
            }
            if b.hash_balance_factor != 0 && !HASH_BALANCE_FACTOR_RANGE.contains(&b.hash_balance_factor) {
                return Err(at(
                    "hash_balance_factor",
                    &format!(
                        "hash_balance_factor must be 0 (no bound) or between {} and {}",
                        HASH_BALANCE_FACTOR_RANGE.start(),
                        HASH_BALANCE_FACTOR_RANGE.end()
                    ),
                ));
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
            if f.proxy_protocol == ProxyProtocol::V2 && f.trusted_proxies.is_empty() {
                return Err(source.error_at_path(
                    &format!("frontend.{i}.proxy_protocol"),
                    "proxy_protocol = \"v2\" needs trusted_proxies (the balancers allowed to send it)",
                ));
            }
            if let Some((key, reason)) = f.per_source.as_ref().and_then(PerSource::problem) {
                return Err(source.error_at_path(&format!("frontend.{i}.per_source.{key}"), reason));
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

mod build;
mod hash_key;
mod sources;
use build::unread;
pub use hash_key::{HashKey, HashKeyError};
pub use sources::{mask, Cidr, PerSource, ProxyProtocol, Rate};
#[cfg(test)]
mod tests;
