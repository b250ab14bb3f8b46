//! The subscriber's configuration: the TOML schema of `configs/local/subscriber1.toml`
//! key for key, its defaults (in the `Default` impls, nowhere else), the
//! environment overrides and the checks that a parser cannot do. Everything a
//! running subscriber needs is resolved here, so a bad file fails at start (or
//! in `check-config`) with `FILE:LINE:COL: reason`, never later. The file's
//! own structs ([`FileConfig`]) also serialize, so a tool can build or change
//! a config as values and write it with `toml::to_string`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wsmesh_common::config::{env_override, ConfigError, Source};
use wsmesh_redis_wire::target::Target;

/// Environment variable that replaces `redis.url`.
pub const ENV_REDIS_URL: &str = "WSMESH_REDIS_URL";
/// Environment variable that replaces `app.token` / `app.token_file`.
pub const ENV_INTERNAL_TOKEN: &str = "WSMESH_INTERNAL_TOKEN";

wsmesh_redis_wire::redis_table! {
    /// `[redis]`: where the chats are published and how to get back to them.
    #[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct RedisConfig {
        /// Redis URL (`redis://` or `rediss://`).
        #[serde(skip_serializing_if = "wsmesh_redis_wire::keys::is_default_url")]
        pub url: String,
        /// Prefix of every key and channel; must match the app's.
        pub prefix: String,
        /// First backoff ceiling after the Redis connection is lost.
        #[serde(with = "humantime_serde")]
        pub reconnect_base: Duration,
        /// Largest backoff ceiling between Redis reconnect attempts.
        #[serde(with = "humantime_serde")]
        pub reconnect_cap: Duration,
        /// `/healthz` fails when the live subscription has seen no message and
        /// no answer to its PING for this long (pub/sub wedged).
        #[serde(with = "humantime_serde")]
        pub pubsub_stall: Duration,
        /// How long a room's channel stays subscribed after the app's last
        /// socket in it left, so sockets that leave and come back (a
        /// reconnect, a page reload) do not make it SUBSCRIBE and fill again.
        #[serde(with = "humantime_serde")]
        pub unsubscribe_grace: Duration,
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: wsmesh_redis_wire::keys::DEFAULT_URL.into(),
            prefix: "wsmesh:".into(),
            reconnect_base: Duration::from_millis(250),
            reconnect_cap: Duration::from_secs(10),
            pubsub_stall: Duration::from_secs(15),
            unsubscribe_grace: Duration::from_secs(30),
            sentinels: Vec::new(),
            cluster: Vec::new(),
            master_name: None,
            password: None,
            password_file: None,
            sentinel_password: None,
            sentinel_password_file: None,
        }
    }
}

/// `[app]` as written in the file: the app to forward to and how hard to
/// try (its URL and token are checked and resolved into [`AppConfig`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSection {
    /// Base URL of the app's internal listener, `http://host:port`;
    /// required (empty counts as missing).
    pub internal_url: String,
    /// The bearer secret written inline; fine for a laptop, not for
    /// production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the bearer secret (surrounding whitespace ignored), so
    /// the config itself can be shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A POST slower than this is abandoned and retried.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First backoff ceiling when the app fails.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Largest backoff ceiling when the app fails.
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
    /// Silence after which an empty batch is posted, so the app can tell a
    /// live subscriber from a dead one.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for AppSection {
    fn default() -> Self {
        AppSection {
            internal_url: String::new(),
            token: None,
            token_file: None,
            request_timeout: Duration::from_secs(2),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// `[queue]`: how much is held while the app cannot take it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Chats held while the app is unreachable before the queue overflows.
    pub capacity: usize,
    /// Most chats in one POST (and in one XRANGE page of a gap fill).
    pub batch_max: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 100_000,
            batch_max: 500,
        }
    }
}

/// `[listen]`: the subscriber's own listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Address of the own `/healthz` and `/metrics` listener.
    pub health: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            health: SocketAddr::from(([127, 0, 0, 1], 9201)),
        }
    }
}

/// The file as written: every table may be left out, but `[app]` needs
/// `internal_url` and a token source (see [`Config`] for the checked,
/// resolved form).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The Redis whose channels are forwarded.
    #[serde(default)]
    pub redis: RedisConfig,
    /// The app instance the chats are posted to.
    #[serde(default)]
    pub app: AppSection,
    /// Bounds of the backlog kept while the app is unreachable.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Where `/healthz` and `/metrics` are served.
    #[serde(default)]
    pub listen: ListenConfig,
}

/// The shared secret sent as `Authorization: Bearer …`; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The value of the `Authorization` header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The app's internal listener, from `app.internal_url` (plain `http://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEndpoint {
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// `host:port` as sent in the `Host` header.
    pub authority: String,
    /// Path prefix of the URL without a trailing `/` (usually empty).
    pub base_path: String,
}

impl AppEndpoint {
    /// Request path for one of the internal API paths (`/internal/…`).
    pub fn path(&self, api_path: &str) -> String {
        format!("{}{}", self.base_path, api_path)
    }

    fn parse(url: &str) -> Result<AppEndpoint, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("must be an http:// URL (the internal listener speaks plain HTTP)".into());
        }
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry user info; use token or token_file".into());
        }
        if uri.query().is_some() {
            return Err("must not have a query".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(AppEndpoint {
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// The `[app]` section, resolved.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the app's internal API listens.
    pub endpoint: AppEndpoint,
    /// Bearer token (from `token`, `token_file` or `WSMESH_INTERNAL_TOKEN`).
    pub token: Token,
    /// A request slower than this is abandoned and retried.
    pub request_timeout: Duration,
    /// First backoff ceiling when the app fails.
    pub retry_base: Duration,
    /// Largest backoff ceiling when the app fails.
    pub retry_cap: Duration,
    /// An empty batch is posted when nothing was posted for this long.
    pub heartbeat: Duration,
}

/// A validated configuration with the environment applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// Redis connection and key prefix.
    pub redis: RedisConfig,
    /// Where the master is (`redis.url` or the Sentinels).
    pub target: Target,
    /// The local app's internal API.
    pub app: AppConfig,
    /// Queue bounds and batch size.
    pub queue: QueueConfig,
    /// Own listeners.
    pub listen: ListenConfig,
}

impl Config {
    /// Reads, parses and checks `path`, applying the environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = Source::read(path)?;
        Config::from_source(&source, &Env::process())
    }

    fn from_source(source: &Source, env: &Env) -> Result<Config, ConfigError> {
        let file: FileConfig = source.parse()?;
        let mut redis = file.redis;
        match &env.redis_url {
            Some(url) => {
                check_redis_url(url).map_err(|r| source.error(format!("{ENV_REDIS_URL}: redis url {r}")))?;
                redis.url = url.clone();
            }
            None => check_redis_url(&redis.url).map_err(|r| source.error_at_path("redis.url", r))?,
        }
        let target = redis
            .target(env.redis_url.is_some() || source.sets("redis.url"))
            .map_err(|e| source.error_at_path(&format!("redis.{}", e.key), e.reason))?;
        if redis.pubsub_stall.is_zero() {
            return Err(source.error_at_path("redis.pubsub_stall", "pubsub_stall must be more than 0"));
        }
        if redis.prefix.is_empty() {
            return Err(source.error_at_path("redis.prefix", "must not be empty"));
        }
        check_backoff(
            source,
            ("redis.reconnect_base", redis.reconnect_base),
            redis.reconnect_cap,
        )?;

        let app = file.app;
        if app.internal_url.is_empty() {
            return Err(source.error("app.internal_url is required"));
        }
        let endpoint = AppEndpoint::parse(&app.internal_url)
            .map_err(|r| source.error_at_path("app.internal_url", format!("internal_url {r}")))?;
        let token = resolve_token(source, &app, env)?;
        for (key, value) in [
            ("request_timeout", app.request_timeout),
            ("heartbeat", app.heartbeat),
        ] {
            if value.is_zero() {
                return Err(source.error_at_path(&format!("app.{key}"), format!("{key} must be more than 0")));
            }
        }
        check_backoff(source, ("app.retry_base", app.retry_base), app.retry_cap)?;

        let queue = file.queue;
        if queue.capacity == 0 {
            return Err(source.error_at_path("queue.capacity", "capacity must be at least 1"));
        }
        if queue.batch_max == 0 || queue.batch_max > queue.capacity {
            return Err(source.error_at_path(
                "queue.batch_max",
                "batch_max must be between 1 and queue.capacity",
            ));
        }
        Ok(Config {
            redis,
            target,
            app: AppConfig {
                endpoint,
                token,
                request_timeout: app.request_timeout,
                retry_base: app.retry_base,
                retry_cap: app.retry_cap,
                heartbeat: app.heartbeat,
            },
            queue,
            listen: file.listen,
        })
    }
}

/// The environment overrides, read once (tests pass their own).
#[derive(Debug, Default)]
struct Env {
    /// `WSMESH_REDIS_URL`.
    redis_url: Option<String>,
    /// `WSMESH_INTERNAL_TOKEN`.
    token: Option<String>,
}

impl Env {
    fn process() -> Env {
        Env {
            redis_url: env_override(ENV_REDIS_URL),
            token: env_override(ENV_INTERNAL_TOKEN),
        }
    }
}

fn check_redis_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
        return Err("must be a redis://, rediss:// or unix:// URL".into());
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("is not usable: {e}"))
}

/// A backoff's first ceiling (at `base_path`, e.g. `app.retry_base`) must
/// be more than 0 and at most its cap.
fn check_backoff(
    source: &Source,
    (base_path, base): (&str, Duration),
    cap: Duration,
) -> Result<(), ConfigError> {
    let base_key = base_path.rsplit('.').next().unwrap_or(base_path);
    if base.is_zero() {
        return Err(source.error_at_path(base_path, format!("{base_key} must be more than 0")));
    }
    if cap < base {
        return Err(source.error_at_path(base_path, format!("{base_key} must not exceed its cap")));
    }
    Ok(())
}

/// The token, by precedence: environment, then `token_file`, then `token`.
fn resolve_token(source: &Source, app: &AppSection, env: &Env) -> Result<Token, ConfigError> {
    if app.token.is_some() && app.token_file.is_some() {
        return Err(source.error_at_path("app.token_file", "set only one of token and token_file"));
    }
    let (value, key) = if let Some(t) = &env.token {
        (t.trim().to_string(), None)
    } else if let Some(path) = &app.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            source.error_at_path(
                "app.token_file",
                format!("cannot read token_file {}: {e}", path.display()),
            )
        })?;
        (text.trim().to_string(), Some("app.token_file"))
    } else if let Some(t) = &app.token {
        (t.clone(), Some("app.token"))
    } else {
        return Err(source.error(format!(
            "no internal token: set app.token, app.token_file or {ENV_INTERNAL_TOKEN}"
        )));
    };
    let bad = |reason: &str| match key {
        Some(path) => source.error_at_path(path, format!("token {reason}")),
        None => source.error(format!("{ENV_INTERNAL_TOKEN}: token {reason}")),
    };
    if value.is_empty() {
        return Err(bad("is empty"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("must be printable ASCII without spaces"));
    }
    Ok(Token(value))
}

#[cfg(test)]
mod tests;
