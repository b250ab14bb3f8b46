//! Who may open a socket, and in which rooms (`[auth]`, docs/security.md).
//! In `jwt` mode every WebSocket request carries a signed token (query
//! `token`, `Authorization: Bearer` or the cookie `wsmesh_token`); it is
//! checked before the upgrade, and what it grants travels with the socket as
//! a `Grant`: the nick (`name`), the rooms and the moment it runs out.
//!
//! Tokens are read by the `jsonwebtoken` crate. The keys are loaded once, at
//! config load, so a bad key file is a config error with its key's line.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, AuthMode, Limits};
use crate::limits::check_nick;

/// The cookie a browser may carry its token in.
pub const COOKIE_NAME: &str = "wsmesh_token";

/// The claims wsmesh reads from a token (others, such as `iat`, are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the token was issued to; logged with the socket.
    pub sub: String,
    /// Unix seconds after which the token is refused and its sockets closed
    /// (4001).
    pub exp: u64,
    /// Unix seconds before which the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The nick, fixed for the token's sockets; `sub` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Rooms the token may join: names, or patterns where `*` stands for any
    /// run of characters; absent means every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

/// A token's claims plus the optional `iss`/`aud` a minter adds.
#[derive(Debug, Serialize)]
struct Minted<'a> {
    /// The wsmesh claims.
    #[serde(flatten)]
    claims: &'a Claims,
    /// `iss`, when the config checks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    /// `aud`, when the config checks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

impl Claims {
    /// Signs the claims with an HS256 secret, adding `iss`/`aud` when given:
    /// the development tokens of `lab token` and the tests.
    pub fn mint_hs256(
        &self,
        secret: &[u8],
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let minted = Minted {
            claims: self,
            iss: issuer,
            aud: audience,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &minted,
            &EncodingKey::from_secret(secret)?,
        )
    }
}

/// What a checked token allows one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's `sub`.
    pub sub: String,
    /// The nick every message of the socket is stored under.
    pub nick: String,
    /// When the socket must be closed with 4001 (`exp` plus the leeway).
    pub expires: SystemTime,
    /// `rooms`, when the token limits them.
    rooms: Option<Vec<String>>,
}

impl Grant {
    /// Whether the token lets its holder into `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| glob_match(p, room)))
    }

    /// Time left before the socket must close; zero once it passed.
    pub fn remaining(&self) -> Duration {
        self.expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

/// `*` matches any run of characters (none included); everything else
/// matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why a request gets no socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token, or one that is not valid now: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token that does not allow the room: 403.
    #[error("token does not allow room {0:?}")]
    RoomNotAllowed(String),
}

/// One verification key and the algorithm it is for.
struct Key {
    /// `kid` of a JWKS entry, matched against the token header's.
    kid: Option<String>,
    /// The key itself.
    key: DecodingKey,
    /// Checks of this key: its algorithm, the required claims, issuer and
    /// audience.
    validation: Validation,
}

/// How requests are checked: not at all, or by signed tokens.
pub enum Auth {
    /// `mode = "none"`: anyone, any room, any nick.
    Open,
    /// `mode = "jwt"`: the keys any valid token is signed with.
    Jwt(Verifier),
}

/// The loaded keys of `jwt` mode; several keys make a rotation possible.
pub struct Verifier {
    /// Every accepted key, tried in order.
    keys: Vec<Key>,
    /// How far `exp`/`nbf` may be off, for clock skew.
    leeway: Duration,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Open => f.write_str("Auth::Open"),
            Auth::Jwt(v) => write!(f, "Auth::Jwt({} keys)", v.keys.len()),
        }
    }
}

/// A key problem, with the config key it belongs to.
#[derive(Debug)]
pub struct KeyError {
    /// Dotted config key, e.g. `auth.jwt_public_keys`.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Auth {
    /// Loads the keys `config` names.
    pub fn load(config: &AuthConfig) -> Result<Auth, KeyError> {
        if config.mode == AuthMode::None {
            return Ok(Auth::Open);
        }
        let validation = |alg: Algorithm| {
            let mut v = Validation::new(alg);
            let mut required = vec!["exp", "sub"];
            v.validate_nbf = true;
            v.leeway = config.leeway.as_secs();
            if let Some(iss) = &config.issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            if let Some(aud) = &config.audience {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            v
        };
        let mut keys = Vec::new();
        for secret in hs256_secrets(config)? {
            let key = DecodingKey::from_secret(secret.as_bytes()).map_err(|e| KeyError {
                key: "auth.jwt_hs256_secret",
                reason: format!("unusable secret: {e}"),
            })?;
            keys.push(Key {
                kid: None,
                key,
                validation: validation(Algorithm::HS256),
            });
        }
        if let Some(path) = &config.jwt_public_keys {
            for (kid, key, alg) in public_keys(path)? {
                keys.push(Key {
                    kid,
                    key,
                    validation: validation(alg),
                });
            }
        }
        if keys.is_empty() {
            return Err(KeyError {
                key: "auth.mode",
                reason: "mode = \"jwt\" needs jwt_hs256_secret, jwt_hs256_secret_file or jwt_public_keys"
                    .into(),
            });
        }
        Ok(Auth::Jwt(Verifier {
            keys,
            leeway: config.leeway,
        }))
    }

    /// Checks a WebSocket request: `Ok(None)` in open mode, the token's grant
    /// in jwt mode, refused when it does not allow `room` (unchecked when
    /// `None`).
    pub fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        room: Option<&str>,
        limits: &Limits,
    ) -> Result<Option<Grant>, Denied> {
        let Auth::Jwt(verifier) = self else {
            return Ok(None);
        };
        let token =
            token_of(headers, query).ok_or_else(|| Denied::Unauthenticated("a token is required".into()))?;
        let grant = verifier.verify(&token, limits)?;
        if let Some(room) = room.filter(|r| !grant.allows(r)) {
            return Err(Denied::RoomNotAllowed(room.to_string()));
        }
        Ok(Some(grant))
    }
}

impl Verifier {
    /// The grant of a token signed by one of the keys and valid now.
    pub fn verify(&self, token: &str, limits: &Limits) -> Result<Grant, Denied> {
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|e| Denied::Unauthenticated(format!("malformed token: {e}")))?
            .kid;
        let mut outcome = None;
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.kid.is_none() || kid.is_none() || k.kid == kid);
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                Ok(data) => {
                    outcome = Some(Ok(data.claims));
                    break;
                }
                // Not this key's signature or algorithm: try the next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm
                    ) => {}
                // The key fits, the claims do not: that is the answer.
                Err(e) => {
                    outcome = Some(Err(e));
                    break;
                }
            }
        }
        let claims = match outcome {
            Some(Ok(claims)) => claims,
            Some(Err(e)) => return Err(Denied::Unauthenticated(format!("token refused: {e}"))),
            None => return Err(Denied::Unauthenticated("token refused: bad signature".into())),
        };
        let nick = claims.name.unwrap_or_else(|| claims.sub.clone());
        check_nick(limits, &nick)
            .map_err(|r| Denied::Unauthenticated(format!("name claim: {}", r.message)))?;
        Ok(Grant {
            expires: UNIX_EPOCH + Duration::from_secs(claims.exp) + self.leeway,
            sub: claims.sub,
            nick,
            rooms: claims.rooms,
        })
    }
}

/// The token of a request: query `token`, else `Authorization: Bearer`,
/// else the `wsmesh_token` cookie.
fn token_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_query = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .last();
    let from_header = || {
        headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    };
    let from_cookie = || {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE_NAME)
            .map(|(_, value)| value.trim().to_string())
    };
    from_query
        .or_else(from_header)
        .or_else(from_cookie)
        .filter(|t| !t.is_empty())
}

/// The HS256 secrets: the inline one, or one per non-empty line of the file
/// (several lines: a rotation; `lab token` signs with the first).
pub fn hs256_secrets(config: &AuthConfig) -> Result<Vec<String>, KeyError> {
    let (text, key) = match (&config.jwt_hs256_secret, &config.jwt_hs256_secret_file) {
        (Some(_), Some(_)) => {
            return Err(KeyError {
                key: "auth.jwt_hs256_secret_file",
                reason: "set either jwt_hs256_secret or jwt_hs256_secret_file, not both".into(),
            })
        }
        (Some(secret), None) => (secret.clone(), "auth.jwt_hs256_secret"),
        (None, Some(file)) => (
            std::fs::read_to_string(file).map_err(|e| KeyError {
                key: "auth.jwt_hs256_secret_file",
                reason: format!("cannot read {}: {e}", file.display()),
            })?,
            "auth.jwt_hs256_secret_file",
        ),
        (None, None) => return Ok(Vec::new()),
    };
    let secrets: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if secrets.is_empty() {
        return Err(KeyError {
            key,
            reason: "the HS256 secret is empty".into(),
        });
    }
    if secrets.iter().any(|s| s.len() < 32) {
        return Err(KeyError {
            key,
            reason: "an HS256 secret must be at least 32 characters".into(),
        });
    }
    Ok(secrets)
}

/// The keys of a PEM file (one or more `PUBLIC KEY` blocks, RSA → RS256,
/// EC P-256 → ES256) or of a JWKS file (`{"keys":[…]}`).
fn public_keys(path: &Path) -> Result<Vec<(Option<String>, DecodingKey, Algorithm)>, KeyError> {
    let bad = |reason: String| KeyError {
        key: "auth.jwt_public_keys",
        reason: format!("{}: {reason}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut keys = Vec::new();
    if text.trim_start().starts_with('{') {
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| bad(format!("not a JWKS: {e}")))?;
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => return Err(bad("only RSA and EC keys are supported".into())),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("bad JWK: {e}")))?;
            keys.push((jwk.common.key_id.clone(), key, alg));
        }
    } else {
        for block in pem_blocks(&text) {
            let rsa = DecodingKey::from_rsa_pem(block.as_bytes()).map(|k| (k, Algorithm::RS256));
            let key = rsa
                .or_else(|_| DecodingKey::from_ec_pem(block.as_bytes()).map(|k| (k, Algorithm::ES256)))
                .map_err(|e| bad(format!("not an RSA or EC public key: {e}")))?;
            keys.push((None, key.0, key.1));
        }
    }
    if keys.is_empty() {
        return Err(bad("no public key in the file".into()));
    }
    Ok(keys)
}

/// Each `-----BEGIN …-----` … `-----END …-----` block of a PEM text.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END ") {
            blocks.extend(current.take());
        }
    }
    blocks
}

#[cfg(test)]
mod tests;
