//! `hash_key`: what part of a request `balance = "hash"` hashes, written
//! as HAProxy's sample fetches are named (`url_param(room)`, `req.hdr(…)`,
//! `req.cook(…)`, `src`), parsed once so a typo is an error at its line.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The request part a hash-balanced backend places sessions by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum HashKey {
    /// `url_param:NAME`: the value of a query-string parameter.
    UrlParam(String),
    /// `header:NAME`: the value of a request header (the first one).
    Header(http::HeaderName),
    /// `cookie:NAME`: the value of a cookie.
    Cookie(String),
    /// `source`: the client's IP address.
    Source,
}

/// Why a `hash_key` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    #[error("hash_key {0:?}: expected \"url_param:NAME\", \"header:NAME\", \"cookie:NAME\" or \"source\"")]
    Shape(String),
    #[error("hash_key {0:?}: the name after ':' must not be empty")]
    EmptyName(String),
    #[error("hash_key {0:?}: not a valid header name")]
    BadHeader(String),
}

impl TryFrom<String> for HashKey {
    type Error = HashKeyError;

    fn try_from(text: String) -> Result<HashKey, HashKeyError> {
        if text == "source" {
            return Ok(HashKey::Source);
        }
        let Some((kind, name)) = text.split_once(':') else {
            return Err(HashKeyError::Shape(text));
        };
        if name.is_empty() {
            return Err(HashKeyError::EmptyName(text));
        }
        match kind {
            "url_param" => Ok(HashKey::UrlParam(name.to_string())),
            "cookie" => Ok(HashKey::Cookie(name.to_string())),
            "header" => match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => Ok(HashKey::Header(h)),
                Err(_) => Err(HashKeyError::BadHeader(text)),
            },
            _ => Err(HashKeyError::Shape(text)),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::UrlParam(n) => write!(f, "url_param:{n}"),
            HashKey::Header(n) => write!(f, "header:{n}"),
            HashKey::Cookie(n) => write!(f, "cookie:{n}"),
            HashKey::Source => f.write_str("source"),
        }
    }
}

impl From<HashKey> for String {
    fn from(k: HashKey) -> String {
        k.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_parses_and_writes_back() {
        for text in ["url_param:room", "header:x-room", "cookie:room", "source"] {
            let k = HashKey::try_from(text.to_string()).unwrap();
            assert_eq!(k.to_string(), text);
        }
        for bad in ["room", "url_param:", "query:room", "header:bad header", "src"] {
            assert!(HashKey::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
