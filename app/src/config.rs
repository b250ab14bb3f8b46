//! The app's configuration file (`configs/local/app1.toml` is the commented
//! reference). The structs are the schema: unknown keys are errors, every
//! default lives in one `Default` impl, and the checks that serde cannot do
//! (ranges, the token source) run in `load` so `check-config` reports them at
//! their key, like `haproxy -c`. The structs also serialize, so a tool can
//! build or change a config as values and write it with `toml::to_string`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wsmesh_common::config::{env_override, ConfigError, Source};

use crate::auth::Auth;

/// Environment variable that replaces `redis.url`.
pub const ENV_REDIS_URL: &str = "WSMESH_REDIS_URL";
/// Environment variable that replaces the internal token from the file.
pub const ENV_INTERNAL_TOKEN: &str = "WSMESH_INTERNAL_TOKEN";

/// One app instance's file: its name and listeners are required, every
/// table after them may be left out.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this instance, sent in `welcome` and used by the lb.
    pub instance: String,
    /// The two addresses the app serves on.
    pub listen: Listen,
    /// Where the rooms live and how long Redis keeps what.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Where the secret the subscriber must present comes from.
    #[serde(default)]
    pub internal: InternalConfig,
    /// Bounds that protect the instance from a client or from load.
    #[serde(default)]
    pub limits: Limits,
    /// When `/healthz` stops saying the instance is fit for traffic.
    #[serde(default)]
    pub health: HealthConfig,
    /// How a SIGTERM hands clients over to the other instances.
    #[serde(default)]
    pub drain: DrainConfig,
    /// Who may open a socket, in which rooms, under which nick.
    #[serde(default)]
    pub auth: AuthConfig,
}

/// `[listen]`: the public and the internal listener; both are required.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Public listener: page, `/ws`, `/chatsocket`, `/healthz`.
    pub public: SocketAddr,
    /// Internal listener: the subscriber's endpoints and `/metrics` (keep
    /// it on loopback or a private network).
    pub internal: SocketAddr,
    /// Serve `/metrics` on the public listener too (the lb configs deny the
    /// path; off by default, so counters are not public).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_metrics: bool,
}

wsmesh_redis_wire::redis_table! {
    /// `[redis]`: connection, key names and retention.
    #[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RedisConfig {
        /// `redis://` or `rediss://` URL of the shared Redis; `WSMESH_REDIS_URL`
        /// overrides it.
        #[serde(skip_serializing_if = "wsmesh_redis_wire::keys::is_default_url")]
        pub url: String,
        /// Prefix of every key and channel, so one Redis can hold several
        /// deployments; the subscriber's must match.
        pub prefix: String,
        /// Approximate number of messages kept per room.
        pub stream_maxlen: u64,
        /// How long a client's message id is remembered, so a re-sent message
        /// is stored once.
        #[serde(with = "humantime_serde")]
        pub cid_ttl: Duration,
        /// How long an unused session is kept.
        #[serde(with = "humantime_serde")]
        pub session_ttl: Duration,
        /// Time after which a Redis command fails (the client gets
        /// `unavailable`).
        #[serde(with = "humantime_serde")]
        pub command_timeout: Duration,
        /// When a send is acked: once a replica holds it (`replicated`) or once
        /// the master does (`local`). Unset means `replicated` with Sentinels
        /// and `local` without (see `durability()`).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub durability: Option<Durability>,
        /// How long a replicated send waits for a replica (`WAIT`) before the
        /// client gets `unavailable` and re-sends under the same cid.
        #[serde(with = "humantime_serde")]
        pub replica_ack_timeout: Duration,
    }
}

/// What a send's ack promises about where the message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A replica holds it: the ack, the broadcast and every read wait for
    /// `WAIT 1`, so a promoted replica has every message anyone saw.
    Replicated,
    /// The master holds it: acked, broadcast and readable at once; a master
    /// lost with its disk takes its last writes along.
    Local,
}

impl RedisConfig {
    /// `durability`, or its default: `replicated` when Sentinels or a
    /// cluster are configured (there is a replica to promote), `local` otherwise.
    pub fn durability(&self) -> Durability {
        match (
            self.durability,
            self.sentinels.is_empty() && self.cluster.is_empty(),
        ) {
            (Some(d), _) => d,
            (None, false) => Durability::Replicated,
            (None, true) => Durability::Local,
        }
    }
}

/// `[internal]`: where the subscriber's bearer token comes from; set one of
/// the two (or `WSMESH_INTERNAL_TOKEN`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InternalConfig {
    /// The secret written inline; fine for a laptop, not for production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the secret (surrounding whitespace ignored), so the
    /// config itself can be shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// `[limits]`: sizes, rates and queue lengths.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket frame (and message); larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest chat body; larger gets `too_large`.
    pub max_body_bytes: usize,
    /// Longest nick, in characters.
    pub max_nick_chars: usize,
    /// Concurrent WebSockets accepted; more get 503.
    pub max_connections: usize,
    /// Share of `max_connections` above which `/healthz` is 503.
    pub capacity_threshold: f64,
    /// Messages a client may send in a burst before the refill rate applies.
    pub rate_burst: u32,
    /// Messages per second a client may send once its burst is spent.
    pub rate_per_sec: f64,
    /// Frames queued for one client before it is closed with 1013.
    pub send_queue: usize,
    /// Messages in `history` when the client gives no `since`.
    pub history_limit: usize,
    /// Allowed browser origins; empty means the request's own host.
    pub allowed_origins: Vec<String>,
    /// Error frames (or refused seed-format messages) a client may earn
    /// within `error_window`; one more closes it with 1008.
    pub max_errors: u32,
    /// The window `max_errors` counts over.
    #[serde(with = "humantime_serde")]
    pub error_window: Duration,
}

/// `[auth]`: how WebSocket requests are authenticated (docs/security.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` (anyone, any room, any nick) or `jwt` (a signed token).
    pub mode: AuthMode,
    /// HS256 secret written inline (at least 32 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_hs256_secret: Option<String>,
    /// A file of HS256 secrets, one per line, all accepted (a rotation);
    /// tools sign with the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// RS256/ES256 public keys: a PEM file of one or more `PUBLIC KEY`
    /// blocks, or a JWKS file (`{"keys":[…]}`, matched by `kid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_keys: Option<PathBuf>,
    /// Required `iss`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`; a socket closes with 4001 this
    /// long after its token's `exp`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Where the page gets a fresh token after a 4001 (a GET answering the
    /// token as text or as `{"token":…}`, with the browser's cookies);
    /// unset: the page reloads itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_url: Option<String>,
}

/// Whether a token is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: today's open chat.
    #[default]
    None,
    /// A JWT on every WebSocket request.
    Jwt,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            jwt_hs256_secret: None,
            jwt_hs256_secret_file: None,
            jwt_public_keys: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            refresh_url: None,
        }
    }
}

/// `[health]`: what `/healthz` checks besides capacity.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Longest silence from the subscriber that still counts as healthy.
    #[serde(with = "humantime_serde")]
    pub subscriber_max_age: Duration,
    /// How long `/healthz` waits for Redis' PING. Keep it under the lb's
    /// check timeout: a master that stops answering (frozen, or failing
    /// over) must make `/healthz` answer 503, not go silent, or the lb takes
    /// the app for unreachable and cuts every session on it.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

/// `[drain]`: the steps after SIGTERM.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Time between "healthz says 503" and the first client close.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Window over which clients are closed with 1012.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: wsmesh_redis_wire::keys::DEFAULT_URL.into(),
            prefix: "wsmesh:".into(),
            stream_maxlen: 10_000,
            cid_ttl: Duration::from_secs(600),
            session_ttl: Duration::from_secs(24 * 3600),
            command_timeout: Duration::from_secs(2),
            sentinels: Vec::new(),
            cluster: Vec::new(),
            master_name: None,
            password: None,
            password_file: None,
            sentinel_password: None,
            sentinel_password_file: None,
            durability: None,
            replica_ack_timeout: Duration::from_secs(2),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 65_536,
            max_body_bytes: 4096,
            max_nick_chars: 32,
            max_connections: 10_000,
            capacity_threshold: 0.8,
            rate_burst: 50,
            rate_per_sec: 20.0,
            send_queue: 1024,
            history_limit: 50,
            allowed_origins: Vec::new(),
            max_errors: 20,
            error_window: Duration::from_secs(10),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            subscriber_max_age: Duration::from_secs(5),
            redis_timeout: Duration::from_millis(500),
        }
    }
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            grace: Duration::from_secs(2),
            window: Duration::from_secs(3),
        }
    }
}

impl Limits {
    /// Connection count at which `/healthz` turns 503.
    pub fn threshold(&self) -> usize {
        (self.max_connections as f64 * self.capacity_threshold).floor() as usize
    }
}

/// The shared secret of the internal listener. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct InternalToken(String);

impl InternalToken {
    #[cfg(test)]
    pub(crate) fn new(token: String) -> Self {
        InternalToken(token)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InternalToken(<redacted>)")
    }
}

/// A config file and what it points at, loaded.
#[derive(Debug)]
pub struct Loaded {
    /// The file's values, environment overrides applied.
    pub config: Config,
    /// The internal listener's token.
    pub token: InternalToken,
    /// The `[auth]` keys, read from their files.
    pub auth: Auth,
}

/// Reads, parses and checks `path`, applies the environment overrides and
/// resolves the internal token and the auth keys.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let source = Source::read(path)?;
    let mut config: Config = source.parse()?;
    let url_from_env = env_override(ENV_REDIS_URL);
    let url_in_file = url_from_env.is_none();
    if let Some(url) = url_from_env {
        config.redis.url = url;
    }
    config.check(&source, url_in_file)?;
    let token = config.internal.resolve(&source)?;
    let auth = Auth::load(&config.auth).map_err(|e| source.error_at_path(e.key, e.reason))?;
    Ok(Loaded { config, token, auth })
}

impl Config {
    /// A config with every default, serving on `public` and `internal`.
    pub fn new(instance: &str, public: SocketAddr, internal: SocketAddr) -> Config {
        Config {
            instance: instance.to_string(),
            listen: Listen {
                public,
                internal,
                public_metrics: false,
            },
            redis: RedisConfig::default(),
            internal: InternalConfig::default(),
            limits: Limits::default(),
            health: HealthConfig::default(),
            drain: DrainConfig::default(),
            auth: AuthConfig::default(),
        }
    }

    /// Semantic checks that the types alone cannot express. `url_in_file`:
    /// `redis.url` is the file's own, not the environment's.
    fn check(&self, src: &Source, url_in_file: bool) -> Result<(), ConfigError> {
        let l = &self.limits;
        let r = &self.redis;
        let checks: [(bool, &str, &str); 20] = [
            (self.instance.trim().is_empty(), "instance", "must not be empty"),
            (
                !(l.capacity_threshold > 0.0 && l.capacity_threshold <= 1.0),
                "limits.capacity_threshold",
                "must be in (0, 1]",
            ),
            (
                l.max_connections == 0,
                "limits.max_connections",
                "must be at least 1",
            ),
            (
                l.max_frame_bytes < 128,
                "limits.max_frame_bytes",
                "must be at least 128",
            ),
            (
                l.max_body_bytes == 0,
                "limits.max_body_bytes",
                "must be at least 1",
            ),
            (
                l.max_body_bytes >= l.max_frame_bytes,
                "limits.max_body_bytes",
                "must be smaller than max_frame_bytes (the body travels inside one frame)",
            ),
            (
                l.max_nick_chars == 0,
                "limits.max_nick_chars",
                "must be at least 1",
            ),
            (l.rate_burst == 0, "limits.rate_burst", "must be at least 1"),
            (
                !(l.rate_per_sec.is_finite() && l.rate_per_sec > 0.0),
                "limits.rate_per_sec",
                "must be a positive number",
            ),
            (l.send_queue == 0, "limits.send_queue", "must be at least 1"),
            (l.history_limit == 0, "limits.history_limit", "must be at least 1"),
            (l.max_errors == 0, "limits.max_errors", "must be at least 1"),
            (
                l.error_window.is_zero(),
                "limits.error_window",
                "must be more than 0",
            ),
            (
                self.auth.mode == AuthMode::None
                    && (self.auth.jwt_hs256_secret.is_some()
                        || self.auth.jwt_hs256_secret_file.is_some()
                        || self.auth.jwt_public_keys.is_some()),
                "auth.mode",
                "is \"none\": keys are set but unused (set mode = \"jwt\", or remove them)",
            ),
            (r.prefix.is_empty(), "redis.prefix", "must not be empty"),
            (r.stream_maxlen == 0, "redis.stream_maxlen", "must be at least 1"),
            (
                r.cid_ttl < Duration::from_secs(1),
                "redis.cid_ttl",
                "must be at least 1s",
            ),
            (
                r.session_ttl < Duration::from_secs(1),
                "redis.session_ttl",
                "must be at least 1s",
            ),
            (
                r.command_timeout.is_zero(),
                "redis.command_timeout",
                "must be more than 0",
            ),
            (
                r.replica_ack_timeout.is_zero(),
                "redis.replica_ack_timeout",
                "must be more than 0",
            ),
        ];
        if let Some((_, path, reason)) = checks.iter().find(|(bad, _, _)| *bad) {
            let key = path.rsplit('.').next().unwrap_or(path);
            return Err(src.error_at_path(path, format!("{key} {reason}")));
        }
        if self.listen.public == self.listen.internal {
            return Err(src.error_at_path(
                "listen.internal",
                "listen.internal must differ from listen.public",
            ));
        }
        if self.health.subscriber_max_age.is_zero() {
            return Err(src.error_at_path(
                "health.subscriber_max_age",
                "subscriber_max_age must be more than 0",
            ));
        }
        if self.health.redis_timeout.is_zero() {
            return Err(src.error_at_path("health.redis_timeout", "redis_timeout must be more than 0"));
        }
        if let Some(bad) = l
            .allowed_origins
            .iter()
            .find(|o| crate::origin::parse(o).is_none())
        {
            return Err(src.error_at_path(
                "limits.allowed_origins",
                format!("allowed_origins: {bad:?} is not an origin like \"https://host[:port]\""),
            ));
        }
        if let Some(url) = &self.auth.refresh_url {
            let ok = url.starts_with('/') || url.starts_with("https://") || url.starts_with("http://");
            if !ok || url.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(src.error_at_path(
                    "auth.refresh_url",
                    format!("refresh_url: {url:?} is not a path (/…) or an http(s) URL"),
                ));
            }
        }
        let url_given = !url_in_file || src.sets("redis.url");
        if let Err(e) = r.target(url_given) {
            let reason = match e.key {
                "url" => format!("redis {}", e.reason),
                _ => e.reason,
            };
            return Err(match (e.key, url_in_file) {
                ("url", false) => src.error(reason),
                (key, _) => src.error_at_path(&format!("redis.{key}"), reason),
            });
        }
        Ok(())
    }
}

impl InternalConfig {
    /// The token from `WSMESH_INTERNAL_TOKEN`, else `token`, else `token_file`.
    fn resolve(&self, src: &Source) -> Result<InternalToken, ConfigError> {
        if let Some(t) = env_override(ENV_INTERNAL_TOKEN) {
            return Ok(InternalToken(t.trim().to_string()));
        }
        let (token, path) = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(
                    src.error_at_path("internal.token_file", "set either token or token_file, not both")
                )
            }
            (Some(t), None) => (t.trim().to_string(), "internal.token"),
            (None, Some(file)) => (
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        src.error_at_path(
                            "internal.token_file",
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?
                    .trim()
                    .to_string(),
                "internal.token_file",
            ),
            (None, None) => {
                return Err(src.error(format!(
                    "no internal token: set [internal] token or token_file, or {ENV_INTERNAL_TOKEN}"
                )))
            }
        };
        if token.is_empty() {
            return Err(src.error_at_path(path, "the internal token is empty"));
        }
        Ok(InternalToken(token))
    }
}

#[cfg(test)]
mod tests;
