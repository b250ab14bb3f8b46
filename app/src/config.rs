//! The app's configuration file (`configs/local/app1.toml` is the commented
//! reference). The structs are the schema: unknown keys are errors, every
//! default lives in one `Default` impl, and the checks that serde cannot do
//! (ranges, the token source) run in `load` so `check-config` reports them with
//! their line, like `haproxy -c`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wsmesh_common::config::{env_override, ConfigError, Source};

/// Environment variable that replaces `redis.url`.
pub const ENV_REDIS_URL: &str = "WSMESH_REDIS_URL";
/// Environment variable that replaces the internal token from the file.
pub const ENV_INTERNAL_TOKEN: &str = "WSMESH_INTERNAL_TOKEN";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this instance, sent in `welcome` and used by the lb.
    pub instance: String,
    /// Where to listen.
    pub listen: Listen,
    /// Redis connection and key settings.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Internal listener's shared token source.
    #[serde(default)]
    pub internal: InternalConfig,
    /// Per-connection and per-instance limits.
    #[serde(default)]
    pub limits: Limits,
    /// `/healthz` thresholds.
    #[serde(default)]
    pub health: HealthConfig,
    /// Shutdown behaviour.
    #[serde(default)]
    pub drain: DrainConfig,
}

/// `[listen]`: both addresses are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Public listener: page, `/ws`, `/chatsocket`, `/healthz`, `/metrics`.
    pub public: SocketAddr,
    /// Internal listener for the subscriber (keep it on loopback).
    pub internal: SocketAddr,
}

/// `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis URL; `WSMESH_REDIS_URL` overrides it.
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Approximate number of messages kept per room.
    pub stream_maxlen: u64,
    /// How long a `cid` is remembered.
    #[serde(with = "humantime_serde")]
    pub cid_ttl: Duration,
    /// How long an unused session is kept.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Upper bound for every Redis command.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

/// `[internal]`: where the subscriber's bearer token comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalConfig {
    /// The token itself.
    pub token: Option<String>,
    /// A file holding the token (trailing whitespace ignored).
    pub token_file: Option<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
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
    /// Token bucket size for sends.
    pub rate_burst: u32,
    /// Token bucket refill per second.
    pub rate_per_sec: f64,
    /// Frames queued for one client before it is closed with 1013.
    pub send_queue: usize,
    /// Messages in `history` when the client gives no `since`.
    pub history_limit: usize,
    /// Allowed browser origins; empty means the request's own host.
    pub allowed_origins: Vec<String>,
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Longest silence from the subscriber that still counts as healthy.
    #[serde(with = "humantime_serde")]
    pub subscriber_max_age: Duration,
}

/// `[drain]`.
#[derive(Debug, Clone, Deserialize)]
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
            url: "redis://127.0.0.1:6390/".into(),
            prefix: "wsmesh:".into(),
            stream_maxlen: 10_000,
            cid_ttl: Duration::from_secs(600),
            session_ttl: Duration::from_secs(24 * 3600),
            command_timeout: Duration::from_secs(2),
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
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            subscriber_max_age: Duration::from_secs(5),
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

/// Reads, parses and checks `path`, applies the environment overrides and
/// resolves the internal token.
pub fn load(path: &Path) -> Result<(Config, InternalToken), ConfigError> {
    let source = Source::read(path)?;
    let mut config: Config = source.parse()?;
    if let Some(url) = env_override(ENV_REDIS_URL) {
        config.redis.url = url;
    }
    config.check(&source)?;
    let token = config.internal.resolve(&source)?;
    Ok((config, token))
}

impl Config {
    /// Semantic checks that the types alone cannot express.
    fn check(&self, src: &Source) -> Result<(), ConfigError> {
        let l = &self.limits;
        let r = &self.redis;
        let checks: [(bool, &str, &str); 16] = [
            (self.instance.trim().is_empty(), "instance", "must not be empty"),
            (
                !(l.capacity_threshold > 0.0 && l.capacity_threshold <= 1.0),
                "capacity_threshold",
                "must be in (0, 1]",
            ),
            (l.max_connections == 0, "max_connections", "must be at least 1"),
            (l.max_frame_bytes < 128, "max_frame_bytes", "must be at least 128"),
            (l.max_body_bytes == 0, "max_body_bytes", "must be at least 1"),
            (
                l.max_body_bytes >= l.max_frame_bytes,
                "max_body_bytes",
                "must be smaller than max_frame_bytes (the body travels inside one frame)",
            ),
            (l.max_nick_chars == 0, "max_nick_chars", "must be at least 1"),
            (l.rate_burst == 0, "rate_burst", "must be at least 1"),
            (
                !(l.rate_per_sec.is_finite() && l.rate_per_sec > 0.0),
                "rate_per_sec",
                "must be a positive number",
            ),
            (l.send_queue == 0, "send_queue", "must be at least 1"),
            (l.history_limit == 0, "history_limit", "must be at least 1"),
            (r.prefix.is_empty(), "prefix", "must not be empty"),
            (r.stream_maxlen == 0, "stream_maxlen", "must be at least 1"),
            (
                r.cid_ttl < Duration::from_secs(1),
                "cid_ttl",
                "must be at least 1s",
            ),
            (
                r.session_ttl < Duration::from_secs(1),
                "session_ttl",
                "must be at least 1s",
            ),
            (
                r.command_timeout.is_zero(),
                "command_timeout",
                "must be more than 0",
            ),
        ];
        if let Some((_, key, reason)) = checks.iter().find(|(bad, _, _)| *bad) {
            return Err(src.error_at_key(key, format!("{key} {reason}")));
        }
        if self.listen.public == self.listen.internal {
            return Err(src.error_at_key("internal", "listen.internal must differ from listen.public"));
        }
        if self.health.subscriber_max_age.is_zero() {
            return Err(src.error_at_key("subscriber_max_age", "subscriber_max_age must be more than 0"));
        }
        if let Some(bad) = l
            .allowed_origins
            .iter()
            .find(|o| crate::origin::parse(o).is_none())
        {
            return Err(src.error_at_key(
                "allowed_origins",
                format!("allowed_origins: {bad:?} is not an origin like \"https://host[:port]\""),
            ));
        }
        if let Err(e) = redis::Client::open(r.url.as_str()) {
            return Err(src.error_at_key("url", format!("redis url is not usable: {e}")));
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
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(src.error_at_key("token_file", "set either token or token_file, not both"))
            }
            (Some(t), None) => t.trim().to_string(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| src.error_at_key("token_file", format!("cannot read {}: {e}", file.display())))?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(src.error(format!(
                    "no internal token: set [internal] token or token_file, or {ENV_INTERNAL_TOKEN}"
                )))
            }
        };
        if token.is_empty() {
            return Err(src.error_at_key("token", "the internal token is empty"));
        }
        Ok(InternalToken(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MINIMAL: &str = "instance = \"app9\"\n[listen]\npublic = \"127.0.0.1:1\"\n\
                           internal = \"127.0.0.1:2\"\n[internal]\ntoken = \"t\"\n";

    fn load_text(text: &str) -> Result<(Config, InternalToken), ConfigError> {
        let mut f = tempfile::NamedTempFile::new().expect("tempfile");
        f.write_all(text.as_bytes()).expect("write");
        load(f.path())
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let (c, token) = load_text(MINIMAL).expect("minimal config loads");
        assert_eq!(token, InternalToken("t".into()));
        assert_eq!(c.limits.history_limit, 50);
        assert_eq!(c.limits.threshold(), 8000);
        assert_eq!(c.redis.cid_ttl, Duration::from_secs(600));
        assert_eq!(c.drain.window, Duration::from_secs(3));
        assert_eq!(c.redis.prefix, "wsmesh:");
    }

    #[test]
    fn shipped_local_configs_are_valid() {
        for f in ["app1.toml", "app2.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../configs/local")
                .join(f);
            let (c, _) = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(c.instance.starts_with("app"));
        }
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let e = load_text(&format!("{MINIMAL}[limits]\nbogus = 1\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    }

    #[test]
    fn capacity_threshold_out_of_range_names_the_line() {
        let e = load_text(&format!("{MINIMAL}[limits]\ncapacity_threshold = 1.5\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
        assert!(e.reason.contains("(0, 1]"), "{e}");
    }

    #[test]
    fn missing_token_source_is_an_error() {
        let text = MINIMAL.replace("[internal]\ntoken = \"t\"\n", "");
        let e = load_text(&text).unwrap_err();
        assert!(e.reason.contains("no internal token"), "{e}");
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let mut tf = tempfile::NamedTempFile::new().expect("tempfile");
        tf.write_all(b"secret\n").expect("write");
        let text = MINIMAL.replace(
            "token = \"t\"",
            &format!("token_file = {:?}", tf.path().display().to_string()),
        );
        let (_, token) = load_text(&text).expect("loads");
        assert_eq!(token, InternalToken("secret".into()));
    }

    #[test]
    fn one_address_for_both_listeners_is_an_error() {
        let e = load_text(&MINIMAL.replace("127.0.0.1:2", "127.0.0.1:1")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let e = load_text(&format!("{MINIMAL}[drain]\ngrace = \"soon\"\n")).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    }

    #[test]
    fn bad_origin_is_an_error() {
        let e = load_text(&format!("{MINIMAL}[limits]\nallowed_origins = [\"nope\"]\n")).unwrap_err();
        assert!(e.reason.contains("nope"), "{e}");
    }
}
