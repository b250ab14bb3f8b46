//! Development tokens for a cluster in jwt mode: `lab token` mints one from
//! a config's HS256 secret; `lab up --auth` and `lab drill --auth` make a
//! fresh secret, put the apps in jwt mode with it, and mint a token per
//! client. Production tokens come from the site's identity provider; these
//! are for the lab and the tests.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use app::auth::{hs256_secrets, Claims};
use app::config::AuthMode;
use rand::Rng;
use wsmesh_testkit::configs::AppConfig;

/// Clock leeway of the lab's apps: one host, one clock, so a token's sockets
/// close (4001) about when it says.
const LAB_LEEWAY: Duration = Duration::from_secs(2);

/// What a minted token says, besides its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// `sub`: who the token is for.
    pub sub: String,
    /// `name`: the nick; `sub` when absent.
    pub name: Option<String>,
    /// `rooms`: names or `*` patterns; absent: every room.
    pub rooms: Option<Vec<String>>,
    /// How long from now until `exp`.
    pub ttl: Duration,
}

/// Signs tokens with one HS256 secret, adding the `iss`/`aud` the apps check.
#[derive(Clone)]
pub struct Minter {
    /// The secret (at least 32 characters).
    secret: String,
    /// `iss` the apps require, if any.
    issuer: Option<String>,
    /// `aud` the apps require, if any.
    audience: Option<String>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Minter {
    /// A minter with a fresh random secret (256 bits, hex).
    pub fn generate() -> Minter {
        let bytes: [u8; 32] = rand::rng().random();
        Minter {
            secret: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            issuer: None,
            audience: None,
        }
    }

    /// The minter of an app config in jwt mode: its first HS256 secret and
    /// its `issuer`/`audience`.
    pub fn from_config(path: &Path) -> anyhow::Result<Minter> {
        let loaded = app::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let auth = &loaded.config.auth;
        if auth.mode != AuthMode::Jwt {
            anyhow::bail!("{}: [auth] mode is not \"jwt\"", path.display());
        }
        let secret = hs256_secrets(auth)
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.key, e.reason))?
            .into_iter()
            .next()
            .with_context(|| {
                format!(
                    "{}: no HS256 secret (jwt_hs256_secret or jwt_hs256_secret_file); tokens for \
                     jwt_public_keys come from the holder of the private key",
                    path.display()
                )
            })?;
        Ok(Minter {
            secret,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
        })
    }

    /// Writes the secret to `file` (mode 0600), for `jwt_hs256_secret_file`.
    pub fn write_secret(&self, file: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)?;
        writeln!(f, "{}", self.secret)
    }

    /// Puts `config` in jwt mode with this minter's secret (read from
    /// `secret_file` when given, else inline) and the lab's small leeway.
    pub fn enable(&self, config: &mut AppConfig, secret_file: Option<&Path>) {
        config.auth.mode = AuthMode::Jwt;
        config.auth.leeway = LAB_LEEWAY;
        match secret_file {
            Some(file) => config.auth.jwt_hs256_secret_file = Some(file.to_path_buf()),
            None => config.auth.jwt_hs256_secret = Some(self.secret.clone()),
        }
        config.auth.issuer = self.issuer.clone();
        config.auth.audience = self.audience.clone();
    }

    /// A signed token for `spec`, valid from now.
    pub fn mint(&self, spec: &TokenSpec) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let claims = Claims {
            sub: spec.sub.clone(),
            exp: (now + spec.ttl).as_secs(),
            nbf: None,
            name: spec.name.clone(),
            rooms: spec.rooms.clone(),
        };
        claims
            .mint_hs256(
                self.secret.as_bytes(),
                self.issuer.as_deref(),
                self.audience.as_deref(),
            )
            .context("cannot sign the token")
    }
}

/// `lobby,team-*` → the `rooms` claim; empty or `*` alone → every room.
pub fn parse_rooms(list: &str) -> Option<Vec<String>> {
    let rooms: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    match rooms.as_slice() {
        [] => None,
        [only] if only == "*" => None,
        _ => Some(rooms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_list_becomes_the_claim() {
        assert_eq!(
            parse_rooms("lobby, team-*"),
            Some(vec!["lobby".to_string(), "team-*".to_string()])
        );
        assert_eq!(parse_rooms(""), None);
        assert_eq!(parse_rooms("*"), None);
    }

    #[test]
    fn a_minted_token_passes_the_apps_check() {
        let minter = Minter::generate();
        let mut config = AppConfig::new(
            "t",
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
        );
        minter.enable(&mut config, None);
        let auth = app::auth::Auth::load(&config.auth).expect("keys");
        let token = minter
            .mint(&TokenSpec {
                sub: "ana".into(),
                name: Some("Ana".into()),
                rooms: parse_rooms("lobby,team-*"),
                ttl: Duration::from_secs(3600),
            })
            .expect("mint");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        let grant = auth
            .check(&headers, None, Some("team-red"), &config.limits)
            .expect("allowed")
            .expect("a grant");
        assert_eq!(grant.nick, "Ana");
        assert!(auth.check(&headers, None, Some("ops"), &config.limits).is_err());
    }
}
