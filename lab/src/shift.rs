//! Config sets moved to other loopback ports, for `lab up --port-offset N`: a
//! second cluster (the browser tests, a demo next to a running `lab up`) runs
//! from the committed `configs/local/*.toml` as they are, moved by one number,
//! instead of from hand-edited copies that drift from them.
//!
//! The move is a walk over the TOML values, not a list of known keys, so a key
//! added to a committed config later is moved too:
//! - every `127.0.0.1:PORT` inside a string (listen addresses, backend server
//!   `addr`s, `redis://127.0.0.1:6390/`, `http://127.0.0.1:9101`, origins);
//! - every integer under a key named `port` or `*_port` (the lb's
//!   `redirect_https_port`);
//! - relative paths under `cert` and `key` (the lb's TLS files, which the lb
//!   resolves against its config's directory) become absolute against the
//!   original directory, since the moved copy lives elsewhere.
//!
//! Port 0 ("any free port") stays 0; anything else is left exactly as it was.

use std::path::{Path, PathBuf};

use crate::cluster::{self, ClusterError};

/// The loopback host whose ports are moved.
const LOOPBACK: &str = "127.0.0.1:";

/// Keys whose relative string values are file paths the lb resolves against
/// its config's directory.
const PATH_KEYS: [&str; 2] = ["cert", "key"];

/// Why a config set could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    /// A moved port would be past 65535.
    #[error(
        "{file}: `{key}` has port {port}, which moved by {offset} is past 65535; use a smaller --port-offset"
    )]
    Overflow {
        /// The config file.
        file: PathBuf,
        /// The dotted key holding the port.
        key: String,
        /// The port as committed.
        port: u16,
        /// The requested offset.
        offset: u16,
    },
    /// The source directory has no `*.toml` file.
    #[error("{0}: no *.toml config files to move")]
    NoConfigs(PathBuf),
    /// A file could not be read, parsed or written.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A port that would not fit, found somewhere inside one value.
#[derive(Debug, PartialEq, Eq)]
struct TooBig {
    /// The dotted key holding it.
    key: String,
    /// The port as it was.
    port: u16,
}

/// `port + offset`, or `None` past 65535. Port 0 stays 0 (it means "any").
fn moved(port: u16, offset: u16) -> Option<u16> {
    if port == 0 {
        Some(0)
    } else {
        port.checked_add(offset)
    }
}

/// `text` with the port of every `127.0.0.1:PORT` in it moved; on overflow,
/// the port that does not fit.
fn shift_text(text: &str, offset: u16) -> Result<String, u16> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(LOOPBACK) {
        // "1127.0.0.1:" or "10.127.0.0.1:" is not the loopback address.
        let part_of_more = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_digit() || c == '.');
        let (head, tail) = rest.split_at(at + LOOPBACK.len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let (number, tail) = tail.split_at(digits);
        match number.parse::<u16>() {
            Ok(port) if !part_of_more => out.push_str(&moved(port, offset).ok_or(port)?.to_string()),
            _ => out.push_str(number),
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Moves one value found under `key` (its last name) at `dotted`.
fn shift_value(
    value: &mut toml::Value,
    key: &str,
    dotted: &str,
    offset: u16,
    base: &Path,
) -> Result<(), TooBig> {
    let too_big = |port| TooBig {
        key: dotted.to_string(),
        port,
    };
    match value {
        toml::Value::String(s) if PATH_KEYS.contains(&key) && Path::new(s.as_str()).is_relative() => {
            *s = base.join(s.as_str()).display().to_string();
        }
        toml::Value::String(s) => *s = shift_text(s, offset).map_err(too_big)?,
        toml::Value::Integer(i) if key == "port" || key.ends_with("_port") => {
            if let Ok(port) = u16::try_from(*i) {
                *i = moved(port, offset).ok_or_else(|| too_big(port))?.into();
            }
        }
        toml::Value::Array(items) => {
            for (n, item) in items.iter_mut().enumerate() {
                shift_value(item, key, &format!("{dotted}[{n}]"), offset, base)?;
            }
        }
        toml::Value::Table(table) => shift_entries(table, dotted, offset, base)?,
        _ => {}
    }
    Ok(())
}

/// Moves every entry of `table`, which sits at `prefix` (empty at the top).
fn shift_entries(table: &mut toml::Table, prefix: &str, offset: u16, base: &Path) -> Result<(), TooBig> {
    for (key, value) in table.iter_mut() {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        shift_value(value, key, &dotted, offset, base)?;
    }
    Ok(())
}

/// Moves the config `table` read from `file` by `offset` ports; relative
/// `cert`/`key` paths are joined to `base`, the (absolute) directory `file`
/// came from.
pub fn shift_table(table: &mut toml::Table, file: &Path, base: &Path, offset: u16) -> Result<(), ShiftError> {
    shift_entries(table, "", offset, base).map_err(|TooBig { key, port }| ShiftError::Overflow {
        file: file.to_path_buf(),
        key,
        port,
        offset,
    })
}

/// Writes every `*.toml` of `from` into `to`, moved by `offset` ports, and
/// returns the files written. Comments are not kept: the copies are for
/// running, the committed files stay the documentation.
pub fn render_dir(from: &Path, to: &Path, offset: u16) -> Result<Vec<PathBuf>, ShiftError> {
    let io = |path: &Path, e: std::io::Error| ClusterError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // Absolute, so the moved `cert`/`key` paths work from any directory.
    let base = std::fs::canonicalize(from).map_err(|e| io(from, e))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&base)
        .map_err(|e| io(&base, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ShiftError::NoConfigs(from.to_path_buf()));
    }
    let mut written = Vec::new();
    for file in files {
        let mut table = cluster::read_table(&file)?;
        shift_table(&mut table, &file, &base, offset)?;
        let Some(name) = file.file_name() else { continue };
        let out = to.join(name);
        let text = toml::to_string(&table).map_err(|e| ClusterError::Config {
            path: out.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&out, text).map_err(|e| io(&out, e))?;
        written.push(out);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn every_loopback_port_moves_and_nothing_else_changes() {
        let mut t = table(
            r#"
            instance = "app1"
            weight = 1
            maxconn = 10000
            timeout = "2s"
            other = "10.0.0.1:9001 and 10.127.0.0.1:9001 and localhost:9001"
            any = "127.0.0.1:0"
            [listen]
            public = "127.0.0.1:9001"
            [redis]
            url = "redis://127.0.0.1:6390/"
            [app]
            internal_url = "http://127.0.0.1:9101"
            origins = ["http://127.0.0.1:9001", "https://127.0.0.1:8443/x?y=127.0.0.1:1"]
            [[frontend]]
            listen = "127.0.0.1:8080"
            redirect_https_port = 8443
            [[backend]]
            [[backend.server]]
            addr = "127.0.0.1:9001"
            weight = 3
            "#,
        );
        shift_table(&mut t, Path::new("x.toml"), Path::new("/cfg"), 10000).unwrap();
        let want = table(
            r#"
            instance = "app1"
            weight = 1
            maxconn = 10000
            timeout = "2s"
            other = "10.0.0.1:9001 and 10.127.0.0.1:9001 and localhost:9001"
            any = "127.0.0.1:0"
            [listen]
            public = "127.0.0.1:19001"
            [redis]
            url = "redis://127.0.0.1:16390/"
            [app]
            internal_url = "http://127.0.0.1:19101"
            origins = ["http://127.0.0.1:19001", "https://127.0.0.1:18443/x?y=127.0.0.1:10001"]
            [[frontend]]
            listen = "127.0.0.1:18080"
            redirect_https_port = 18443
            [[backend]]
            [[backend.server]]
            addr = "127.0.0.1:19001"
            weight = 3
            "#,
        );
        assert_eq!(t, want);
    }

    #[test]
    fn relative_cert_and_key_paths_become_absolute_against_the_original_dir() {
        let mut t = table(
            r#"
            [[frontend]]
            [[frontend.cert]]
            cert = "../../certs/server.pem"
            key = "../../certs/server.key"
            [[frontend.cert]]
            cert = "/etc/lb/other.pem"
            [admin]
            token = "certs/not-a-path"
            "#,
        );
        shift_table(&mut t, Path::new("lb.toml"), Path::new("/repo/configs/local"), 1).unwrap();
        let certs = t["frontend"][0]["cert"].as_array().unwrap();
        assert_eq!(
            certs[0]["cert"].as_str(),
            Some("/repo/configs/local/../../certs/server.pem")
        );
        assert_eq!(
            certs[0]["key"].as_str(),
            Some("/repo/configs/local/../../certs/server.key")
        );
        assert_eq!(certs[1]["cert"].as_str(), Some("/etc/lb/other.pem"));
        assert_eq!(t["admin"]["token"].as_str(), Some("certs/not-a-path"));
    }

    #[test]
    fn a_port_past_65535_is_an_error_naming_file_key_and_port() {
        let mut t = table("[listen]\npublic = \"127.0.0.1:9001\"\n");
        let err = shift_table(&mut t, Path::new("app1.toml"), Path::new("/"), 60000).unwrap_err();
        let text = err.to_string();
        for part in ["app1.toml", "listen.public", "9001", "60000", "--port-offset"] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        let mut t = table("[[frontend]]\nredirect_https_port = 8443\n");
        let err = shift_table(&mut t, Path::new("lb.toml"), Path::new("/"), 60000).unwrap_err();
        assert!(
            err.to_string().contains("frontend[0].redirect_https_port"),
            "{err}"
        );
        let mut t = table("p = \"127.0.0.1:65535\"\n");
        assert!(shift_table(&mut t, Path::new("x.toml"), Path::new("/"), 1).is_err());
        let mut t = table("p = \"127.0.0.1:65534\"\n");
        shift_table(&mut t, Path::new("x.toml"), Path::new("/"), 1).unwrap();
        assert_eq!(t["p"].as_str(), Some("127.0.0.1:65535"));
    }

    #[test]
    fn committed_configs_move_completely() {
        let out = tempfile::tempdir().unwrap();
        let written = render_dir(&cluster::configs_dir(), out.path(), 10000).unwrap();
        let names: Vec<_> = written.iter().filter_map(|p| p.file_name()?.to_str()).collect();
        assert_eq!(
            names,
            [
                "app1.toml",
                "app2.toml",
                "lb.toml",
                "subscriber1.toml",
                "subscriber2.toml"
            ]
        );
        for file in &written {
            let text = std::fs::read_to_string(file).unwrap();
            for port in [6390, 8080, 8404, 8443, 9001, 9002, 9101, 9102, 9201, 9202] {
                assert!(
                    !text.contains(&format!("127.0.0.1:{port}\"")),
                    "{file:?} keeps {port}"
                );
                assert!(
                    !text.contains(&format!("127.0.0.1:{port}/")),
                    "{file:?} keeps {port}"
                );
            }
        }
        let lb = cluster::read_table(&out.path().join("lb.toml")).unwrap();
        let cert = lb["frontend"][0]["cert"][0]["cert"].as_str().unwrap();
        assert!(Path::new(cert).is_absolute(), "{cert}");
        assert_eq!(lb["frontend"][1]["redirect_https_port"].as_integer(), Some(18443));
    }

    #[test]
    fn a_directory_without_configs_is_refused() {
        let empty = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = render_dir(empty.path(), out.path(), 1).unwrap_err();
        assert!(matches!(err, ShiftError::NoConfigs(_)), "{err}");
    }
}
