//! The subscriber's configuration: the TOML schema of `configs/local/subscriber1.toml`
//! key for key, its defaults (in the `Default` impls, nowhere else), the
//! environment overrides and the checks that a parser cannot do. Everything a
//! running subscriber needs is resolved here, so a bad file fails at start (or
//! in `check-config`) with `FILE:LINE:COL: reason`, never later.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wsmesh_common::config::{env_override, ConfigError, Source};

/// Environment variable that replaces `redis.url`.
pub const ENV_REDIS_URL: &str = "WSMESH_REDIS_URL";
/// Environment variable that replaces `app.token` / `app.token_file`.
pub const ENV_INTERNAL_TOKEN: &str = "WSMESH_INTERNAL_TOKEN";

/// The `[redis]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis URL (`redis://` or `rediss://`).
    pub url: String,
    /// Prefix of every key and channel; must match the app's.
    pub prefix: String,
    /// First backoff ceiling after the Redis connection is lost.
    #[serde(with = "humantime_serde")]
    pub reconnect_base: Duration,
    /// Largest backoff ceiling between Redis reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_cap: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6390/".into(),
            prefix: "wsmesh:".into(),
            reconnect_base: Duration::from_millis(250),
            reconnect_cap: Duration::from_secs(10),
        }
    }
}

/// The `[app]` section as written in the file (the token is resolved later).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AppSection {
    /// Base URL of the app's internal listener; required (empty = missing).
    internal_url: String,
    /// Bearer token, inline.
    token: Option<String>,
    /// File holding the bearer token.
    token_file: Option<PathBuf>,
    /// A POST slower than this is retried.
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
    /// First backoff ceiling when the app fails.
    #[serde(with = "humantime_serde")]
    retry_base: Duration,
    /// Largest backoff ceiling when the app fails.
    #[serde(with = "humantime_serde")]
    retry_cap: Duration,
    /// An empty batch is posted when nothing was posted for this long.
    #[serde(with = "humantime_serde")]
    heartbeat: Duration,
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

/// The `[queue]` section.
#[derive(Debug, Clone, Deserialize)]
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

/// The `[listen]` section.
#[derive(Debug, Clone, Deserialize)]
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

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// `[redis]`.
    #[serde(default)]
    redis: RedisConfig,
    /// `[app]`.
    #[serde(default)]
    app: AppSection,
    /// `[queue]`.
    #[serde(default)]
    queue: QueueConfig,
    /// `[listen]`.
    #[serde(default)]
    listen: ListenConfig,
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
    /// Bearer token (file, `token_file` or `WSMESH_INTERNAL_TOKEN`).
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
            None => check_redis_url(&redis.url).map_err(|r| source.error_at_key("url", r))?,
        }
        if redis.prefix.is_empty() {
            return Err(source.error_at_key("prefix", "must not be empty"));
        }
        check_backoff(
            source,
            ("reconnect_base", redis.reconnect_base),
            redis.reconnect_cap,
        )?;

        let app = file.app;
        if app.internal_url.is_empty() {
            return Err(source.error("app.internal_url is required"));
        }
        let endpoint = AppEndpoint::parse(&app.internal_url)
            .map_err(|r| source.error_at_key("internal_url", format!("internal_url {r}")))?;
        let token = resolve_token(source, &app, env)?;
        for (key, value) in [
            ("request_timeout", app.request_timeout),
            ("heartbeat", app.heartbeat),
        ] {
            if value.is_zero() {
                return Err(source.error_at_key(key, format!("{key} must be more than 0")));
            }
        }
        check_backoff(source, ("retry_base", app.retry_base), app.retry_cap)?;

        let queue = file.queue;
        if queue.capacity == 0 {
            return Err(source.error_at_key("capacity", "capacity must be at least 1"));
        }
        if queue.batch_max == 0 || queue.batch_max > queue.capacity {
            return Err(source.error_at_key("batch_max", "batch_max must be between 1 and queue.capacity"));
        }
        Ok(Config {
            redis,
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

fn check_backoff(
    source: &Source,
    (base_key, base): (&str, Duration),
    cap: Duration,
) -> Result<(), ConfigError> {
    if base.is_zero() {
        return Err(source.error_at_key(base_key, format!("{base_key} must be more than 0")));
    }
    if cap < base {
        return Err(source.error_at_key(base_key, format!("{base_key} must not exceed its cap")));
    }
    Ok(())
}

/// The token, by precedence: environment, then `token_file`, then `token`.
fn resolve_token(source: &Source, app: &AppSection, env: &Env) -> Result<Token, ConfigError> {
    if app.token.is_some() && app.token_file.is_some() {
        return Err(source.error_at_key("token_file", "set only one of token and token_file"));
    }
    let (value, key) = if let Some(t) = &env.token {
        (t.trim().to_string(), None)
    } else if let Some(path) = &app.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            source.error_at_key(
                "token_file",
                format!("cannot read token_file {}: {e}", path.display()),
            )
        })?;
        (text.trim().to_string(), Some("token_file"))
    } else if let Some(t) = &app.token {
        (t.clone(), Some("token"))
    } else {
        return Err(source.error(format!(
            "no internal token: set app.token, app.token_file or {ENV_INTERNAL_TOKEN}"
        )));
    };
    let bad = |reason: &str| match key {
        Some(key) => source.error_at_key(key, format!("token {reason}")),
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
mod tests {
    use super::*;

    const FULL: &str = include_str!("../../configs/local/subscriber1.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_env(text, Env::default())
    }

    fn parse_env(text: &str, env: Env) -> Result<Config, ConfigError> {
        let source = Source {
            file: PathBuf::from("sub.toml"),
            text: text.into(),
        };
        Config::from_source(&source, &env)
    }

    fn minimal(extra: &str) -> String {
        format!("[app]\ninternal_url = \"http://127.0.0.1:9101\"\ntoken = \"t\"\n{extra}")
    }

    #[test]
    fn the_shipped_local_config_is_valid_and_matches_the_defaults() {
        let c = parse(FULL).unwrap();
        let d = parse(&minimal("")).unwrap();
        assert_eq!(c.redis.url, d.redis.url);
        assert_eq!(c.redis.prefix, d.redis.prefix);
        assert_eq!(c.redis.reconnect_base, d.redis.reconnect_base);
        assert_eq!(c.redis.reconnect_cap, d.redis.reconnect_cap);
        assert_eq!(c.app.request_timeout, d.app.request_timeout);
        assert_eq!(c.app.retry_base, d.app.retry_base);
        assert_eq!(c.app.retry_cap, d.app.retry_cap);
        assert_eq!(c.app.heartbeat, d.app.heartbeat);
        assert_eq!(c.queue.capacity, d.queue.capacity);
        assert_eq!(c.queue.batch_max, d.queue.batch_max);
        assert_eq!(c.listen.health, d.listen.health);
        assert_eq!(c.app.endpoint.authority, "127.0.0.1:9101");
        assert_eq!(c.app.token.bearer(), "Bearer local-dev-internal-token");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = parse(&minimal("[queue]\ncapacity = 5\nbogus = 1\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
        assert!(e.to_string().starts_with("sub.toml:6:"), "{e}");
    }

    #[test]
    fn internal_url_must_be_plain_http() {
        let e = parse("[app]\ntoken = \"t\"\ninternal_url = \"https://127.0.0.1:9101\"\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert!(e.reason.contains("http://"), "{e}");
    }

    #[test]
    fn internal_url_is_required() {
        let e = parse("[app]\ntoken = \"t\"\n").unwrap_err();
        assert!(e.reason.contains("internal_url is required"), "{e}");
    }

    #[test]
    fn a_token_is_required_from_somewhere() {
        let e = parse("[app]\ninternal_url = \"http://127.0.0.1:1\"\n").unwrap_err();
        assert!(e.reason.contains("WSMESH_INTERNAL_TOKEN"), "{e}");
        let env = Env {
            token: Some("from-env".into()),
            ..Env::default()
        };
        let c = parse_env("[app]\ninternal_url = \"http://127.0.0.1:1\"\n", env).unwrap();
        assert_eq!(c.app.token.bearer(), "Bearer from-env");
    }

    #[test]
    fn token_and_token_file_together_are_an_error() {
        let e = parse(&minimal("token_file = \"/x\"\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "s3cret\n").unwrap();
        let text = format!(
            "[app]\ninternal_url = \"http://localhost:9101/\"\ntoken_file = \"{}\"\n",
            path.display()
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.app.token.bearer(), "Bearer s3cret");
        assert_eq!(c.app.endpoint.host, "localhost");
        assert_eq!(c.app.endpoint.path("/internal/events"), "/internal/events");
        let e =
            parse("[app]\ninternal_url = \"http://a:1\"\ntoken_file = \"/nonexistent/tok\"\n").unwrap_err();
        assert!(e.reason.contains("cannot read"), "{e}");
    }

    #[test]
    fn env_redis_url_overrides_and_is_checked() {
        let env = Env {
            redis_url: Some("redis://127.0.0.1:6402/".into()),
            ..Env::default()
        };
        assert_eq!(
            parse_env(&minimal(""), env).unwrap().redis.url,
            "redis://127.0.0.1:6402/"
        );
        let env = Env {
            redis_url: Some("http://nope".into()),
            ..Env::default()
        };
        let e = parse_env(&minimal(""), env).unwrap_err();
        assert!(e.reason.contains(ENV_REDIS_URL), "{e}");
    }

    #[test]
    fn durations_are_humantime_and_checked() {
        let c = parse(&minimal("heartbeat = \"250ms\"\n")).unwrap();
        assert_eq!(c.app.heartbeat, Duration::from_millis(250));
        let e = parse(&minimal("heartbeat = \"soon\"\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
        let e = parse(&minimal("retry_base = \"5s\"\nretry_cap = \"1s\"\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
    }

    #[test]
    fn queue_bounds_are_checked() {
        let e = parse(&minimal("[queue]\ncapacity = 10\nbatch_max = 11\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
        let e = parse(&minimal("[queue]\ncapacity = 0\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
    }

    #[test]
    fn the_token_is_never_printed() {
        let c = parse(&minimal("")).unwrap();
        assert!(!format!("{c:?}").contains("\"t\""));
    }
}
