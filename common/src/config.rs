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

    /// Whether the file itself sets the key at `path` (see
    /// [`Source::error_at_path`] for the form), as opposed to leaving its
    /// default in force: for rules such as "set one key or the other".
    pub fn sets(&self, path: &str) -> bool {
        key_span(&self.text, path).is_some()
    }

    /// An error at the key that `path` leads to, for checks that run after
    /// parsing (a rule over several keys, a value the environment may
    /// replace). `path` names tables and keys from the top of the file,
    /// dotted, with the 0-based number of an element of an array of tables:
    /// `"backend.1.check.rise"` is `rise` in the second `[[backend]]`'s
    /// `[backend.check]`. When the file does not set that key (its default
    /// is in force) the error is about the file as a whole.
    pub fn error_at_path(&self, path: &str, reason: impl Into<String>) -> ConfigError {
        match key_span(&self.text, path) {
            Some(span) => self.error_at(span, reason),
            None => self.error(reason),
        }
    }
}

/// The byte span of the key at `path` (see [`Source::error_at_path`]) in the
/// parsed document, so dotted keys, inline tables and arrays of tables are
/// found as TOML sees them.
fn key_span(text: &str, path: &str) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let document = DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut steps = path.split('.').peekable();
    while let Some(name) = steps.next() {
        let (key, mut value) = table.get_key_value(name)?;
        if steps.peek().is_none() {
            return Some(key.span());
        }
        if let DeValue::Array(elements) = value.get_ref() {
            let index: usize = steps.next()?.parse().ok()?;
            value = elements.get(index)?;
            if steps.peek().is_none() {
                return Some(value.span());
            }
        }
        let DeValue::Table(next) = value.get_ref() else {
            return None;
        };
        table = next;
    }
    None
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
    fn error_at_path_finds_the_key_of_its_own_table() {
        let s = src("port = 1\n[a]\n  name = \"x\"\n  port = 3\n");
        assert_eq!(
            s.error_at_path("a.port", "too small").to_string(),
            "demo.toml:4:3: too small"
        );
        assert_eq!(s.error_at_path("port", "r").position, Some((1, 1)));
        assert_eq!(s.error_at_path("a.missing", "r").position, None);
        assert_eq!(s.error_at_path("a.name.deeper", "r").position, None);
    }

    #[test]
    fn error_at_path_counts_arrays_of_tables_and_reads_dotted_keys() {
        let s = src(
            "[[b]]\nrise = 1\n[b.check]\nrise = 2\n[[b]]\n[b.check]\nfall = 1\n  rise = 0\n\
                     [c]\nd.e = 1\nf = { g = 2 }\n",
        );
        assert_eq!(s.error_at_path("b.1.check.rise", "r").position, Some((8, 3)));
        assert_eq!(s.error_at_path("b.0.check.rise", "r").position, Some((4, 1)));
        assert_eq!(s.error_at_path("b.0.rise", "r").position, Some((2, 1)));
        assert_eq!(s.error_at_path("b.2.rise", "r").position, None);
        assert_eq!(s.error_at_path("c.d.e", "r").position, Some((10, 3)));
        assert_eq!(s.error_at_path("c.f.g", "r").position, Some((11, 7)));
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
