//! Config sets moved to other loopback ports, for `lab up --port-offset N`: a
//! second cluster (the browser tests, a demo next to a running `lab up`) runs
//! from the committed `configs/local/*.toml` as they are, moved by one number,
//! instead of from hand-edited copies that drift from them.
//!
//! Each file is loaded into its binary's config type (`app*.toml`,
//! `subscriber*.toml`, `lb*.toml`) and every address field is moved by name:
//! - listen addresses, the lb's server `addr`s and its `redirect_https_port`;
//! - the port of each of `redis.sentinels`, or of `redis.url` without them; the
//!   subscriber's `app.internal_url` and the
//!   app's `allowed_origins`;
//! - relative lb `cert`/`key` paths (which the lb resolves against its
//!   config's directory) become absolute against the original directory,
//!   since the moved copy lives elsewhere.
//!
//! Only `127.0.0.1` addresses move; port 0 ("any free port") stays 0.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{load, write, AppConfig, ConfigError, LbConfig, SubscriberConfig};

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
    /// A file whose name says no binary (`app*`, `subscriber*`, `lb*`).
    #[error("{0}: not an app, subscriber or lb config (by its name)")]
    Unknown(PathBuf),
    /// A file could not be read, parsed or written.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A port that would not fit, with the key holding it.
#[derive(Debug, PartialEq, Eq)]
pub struct TooBig {
    /// The dotted key holding it.
    pub key: String,
    /// The port as it was.
    pub port: u16,
}

/// The move of one config: by how much, and where relative paths come from.
#[derive(Debug, Clone, Copy)]
pub struct Shift<'a> {
    /// Ports are moved by this much.
    pub offset: u16,
    /// The (absolute) directory the config came from.
    pub base: &'a Path,
}

impl Shift<'_> {
    /// `port + offset`, or `None` past 65535. Port 0 stays 0 (it means "any").
    fn port(&self, port: u16, key: &str) -> Result<u16, TooBig> {
        if port == 0 {
            return Ok(0);
        }
        port.checked_add(self.offset).ok_or_else(|| TooBig {
            key: key.to_string(),
            port,
        })
    }

    /// A loopback socket address with its port moved.
    fn addr(&self, addr: &mut SocketAddr, key: &str) -> Result<(), TooBig> {
        if addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
            addr.set_port(self.port(addr.port(), key)?);
        }
        Ok(())
    }

    /// An `ip:port` kept as text (the lb's fields); other text stays.
    fn addr_text(&self, text: &mut String, key: &str) -> Result<(), TooBig> {
        if let Ok(mut addr) = text.parse::<SocketAddr>() {
            self.addr(&mut addr, key)?;
            *text = addr.to_string();
        }
        Ok(())
    }

    /// A URL on `127.0.0.1` with an explicit port, moved; its form (a
    /// trailing `/` or not) is kept. Other text stays.
    fn url(&self, text: &mut String, key: &str) -> Result<(), TooBig> {
        let Ok(mut url) = url::Url::parse(text) else {
            return Ok(());
        };
        let Some(port) = url.port().filter(|_| url.host_str() == Some("127.0.0.1")) else {
            return Ok(());
        };
        // Setting a port on a URL that has one cannot fail.
        let _ = url.set_port(Some(self.port(port, key)?));
        let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
        let mut moved = String::from(url);
        if bare && !text.ends_with('/') {
            moved.pop();
        }
        *text = moved;
        Ok(())
    }

    /// Where `[redis]` finds the master: each of `redis.sentinels` (an
    /// `ip:port`) when set, else `redis.url`, which is not used then and so
    /// stays as written (and unwritten, when it is the default).
    fn redis(&self, url: &mut String, sentinels: &mut [String]) -> Result<(), TooBig> {
        if sentinels.is_empty() {
            return self.url(url, "redis.url");
        }
        for (i, s) in sentinels.iter_mut().enumerate() {
            self.addr_text(s, &format!("redis.sentinels[{i}]"))?;
        }
        Ok(())
    }

    /// A relative path made absolute against `base`.
    fn path(&self, text: &mut String) {
        if Path::new(text.as_str()).is_relative() {
            *text = self.base.join(text.as_str()).display().to_string();
        }
    }

    /// Moves an app's config.
    pub fn app(&self, c: &mut AppConfig) -> Result<(), TooBig> {
        self.addr(&mut c.listen.public, "listen.public")?;
        self.addr(&mut c.listen.internal, "listen.internal")?;
        self.redis(&mut c.redis.url, &mut c.redis.sentinels)?;
        for (i, origin) in c.limits.allowed_origins.iter_mut().enumerate() {
            self.url(origin, &format!("limits.allowed_origins[{i}]"))?;
        }
        Ok(())
    }

    /// Moves a subscriber's config.
    pub fn subscriber(&self, c: &mut SubscriberConfig) -> Result<(), TooBig> {
        self.redis(&mut c.redis.url, &mut c.redis.sentinels)?;
        self.url(&mut c.app.internal_url, "app.internal_url")?;
        self.addr(&mut c.listen.health, "listen.health")
    }

    /// Moves the lb's config.
    pub fn lb(&self, c: &mut LbConfig) -> Result<(), TooBig> {
        self.addr_text(c.admin.listen.get_mut(), "admin.listen")?;
        for (i, f) in c.frontends.iter_mut().enumerate() {
            self.addr_text(f.listen.get_mut(), &format!("frontend[{i}].listen"))?;
            if let Some(port) = &mut f.redirect_https_port {
                *port = self.port(*port, &format!("frontend[{i}].redirect_https_port"))?;
            }
            for files in &mut f.certs {
                self.path(files.cert.get_mut());
                if let Some(key) = &mut files.key {
                    self.path(key.get_mut());
                }
            }
        }
        for (i, b) in c.backends.iter_mut().enumerate() {
            for (j, s) in b.servers.iter_mut().enumerate() {
                self.addr_text(s.addr.get_mut(), &format!("backend[{i}].server[{j}].addr"))?;
            }
        }
        Ok(())
    }
}

/// Which binary a config file is for, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    App,
    Subscriber,
    Lb,
}

fn kind(file: &Path) -> Option<Kind> {
    let stem = file.file_stem()?.to_str()?;
    [
        ("subscriber", Kind::Subscriber),
        ("app", Kind::App),
        ("lb", Kind::Lb),
    ]
    .into_iter()
    .find(|(prefix, _)| stem.starts_with(prefix))
    .map(|(_, kind)| kind)
}

/// Moves one file `from` into `to`.
fn shift_file(from: &Path, to: &Path, shift: &Shift<'_>) -> Result<(), ShiftError> {
    let overflow = |TooBig { key, port }| ShiftError::Overflow {
        file: from.to_path_buf(),
        key,
        port,
        offset: shift.offset,
    };
    match kind(from).ok_or_else(|| ShiftError::Unknown(from.to_path_buf()))? {
        Kind::App => {
            let mut c: AppConfig = load(from)?;
            shift.app(&mut c).map_err(overflow)?;
            write(&c, to)?;
        }
        Kind::Subscriber => {
            let mut c: SubscriberConfig = load(from)?;
            shift.subscriber(&mut c).map_err(overflow)?;
            write(&c, to)?;
        }
        Kind::Lb => {
            let mut c: LbConfig = load(from)?;
            shift.lb(&mut c).map_err(overflow)?;
            write(&c, to)?;
        }
    }
    Ok(())
}

/// Writes every `*.toml` of `from` into `to`, moved by `offset` ports, and
/// returns the files written. Comments are not kept: the copies are for
/// running, the committed files stay the documentation.
pub fn render_dir(from: &Path, to: &Path, offset: u16) -> Result<Vec<PathBuf>, ShiftError> {
    // Absolute, so the moved `cert`/`key` paths work from any directory.
    let base = std::fs::canonicalize(from).map_err(|e| ConfigError::new(from, e))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&base)
        .map_err(|e| ConfigError::new(&base, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ShiftError::NoConfigs(from.to_path_buf()));
    }
    let shift = Shift { offset, base: &base };
    let mut written = Vec::new();
    for file in files {
        let Some(name) = file.file_name() else { continue };
        let out = to.join(name);
        shift_file(&file, &out, &shift)?;
        written.push(out);
    }
    Ok(written)
}

#[cfg(test)]
#[path = "shift_tests.rs"]
mod tests;
