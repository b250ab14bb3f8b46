//! Loading a TOML config file so that every mistake names the file, the line
//! and the reason, like `haproxy -c`. Each binary defines its own config
//! struct (with `deny_unknown_fields`); this only reads and reports.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line and column of the offending spot, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong, in words.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.file.display(), line, col, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

/// The source text of a config file, kept so later checks can point at lines.
#[derive(Debug)]
pub struct Source {
    /// Path as given on the command line.
    pub file: PathBuf,
    /// File contents.
    pub text: String,
}

impl Source {
    /// Reads `path`; an unreadable file is a `ConfigError` naming it.
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            position: None,
            reason: format!("cannot read: {e}"),
        })?;
        Ok(Source {
            file: path.to_path_buf(),
            text,
        })
    }

    /// Parses the text into `T`. Syntax errors, unknown keys and wrongly typed
    /// values come back with their line.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let reason = e.message().trim().to_string();
            match e.span() {
                Some(span) => self.error_at(span, reason),
                None => self.error(reason),
            }
        })
    }

    /// An error pointing at a byte span of the file (e.g. from `toml::Spanned`).
    pub fn error_at(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: Some(line_col(&self.text, span.start)),
            reason: reason.into(),
        }
    }

    /// An error about the file as a whole (e.g. a missing required section).
    pub fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: None,
            reason: reason.into(),
        }
    }

    /// An error about the line on which `key = ` first appears; falls back to
    /// the whole file. For checks that run after parsing, on plain fields.
    pub fn error_at_key(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let found = self
            .text
            .lines()
            .scan(0usize, |off, line| {
                let start = *off;
                *off += line.len() + 1;
                Some((start, line))
            })
            .find(|(_, line)| {
                let t = line.trim_start();
                t.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
        match found {
            Some((start, line)) => {
                let indent = line.len() - line.trim_start().len();
                self.error_at(start + indent..start + indent + key.len(), reason)
            }
            None => self.error(reason),
        }
    }
}

/// Reads and parses `path` in one go.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<(T, Source), ConfigError> {
    let source = Source::read(path)?;
    let value = source.parse()?;
    Ok((value, source))
}

/// Environment override: `Some(value)` when the variable is set and not empty.
pub fn env_override(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// A URL fit for logs: the password of `scheme://user:password@host` is
/// replaced by `***` (Redis URLs carry `requirepass` that way).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority
        .rsplit_once('@')
        .and_then(|(userinfo, host)| Some((userinfo.split_once(':')?.0, host)))
    {
        Some((user, host)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_string(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        name: String,
        port: u16,
    }

    fn src(text: &str) -> Source {
        Source {
            file: PathBuf::from("demo.toml"),
            text: text.into(),
        }
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let e = src("name = \"a\"\nport = 1\nbogus = 2\n")
            .parse::<Demo>()
            .unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert!(e.to_string().starts_with("demo.toml:3:"), "{e}");
        assert!(e.reason.contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = src("name = \"a\"\nport = 70000\n").parse::<Demo>().unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let e = src("name = \"a\"\n\nport = = 1\n").parse::<Demo>().unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    }

    #[test]
    fn error_at_key_finds_the_line() {
        let s = src("[a]\n  name = \"x\"\nport = 3\n");
        let e = s.error_at_key("port", "too small");
        assert_eq!(e.to_string(), "demo.toml:3:1: too small");
        assert_eq!(s.error_at_key("missing", "r").position, None);
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://app:s3cret@h/"), "redis://app:***@h/");
        assert_eq!(redact_url("redis://127.0.0.1:6390/"), "redis://127.0.0.1:6390/");
        assert_eq!(redact_url("redis://app@h/"), "redis://app@h/");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn missing_file_is_an_error_not_a_panic() {
        let e = load::<Demo>(Path::new("/nonexistent/wsmesh.toml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
