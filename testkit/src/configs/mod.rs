//! Configs of the app, the subscriber and the lb as typed values: the
//! committed `configs/local/*.toml` are loaded into each binary's own config
//! structs, fields are changed as values, and the result is written with
//! `toml::to_string`. No config text is ever edited, so a test, a drill or
//! `lab up --port-offset` runs what the committed files say except for the
//! fields it sets.

pub mod local;
pub mod routes;
pub mod shift;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The app's config as its file says.
pub type AppConfig = app::config::Config;
/// The subscriber's config as its file says.
pub type SubscriberConfig = subscriber::config::FileConfig;
/// The lb's config as its file says.
pub type LbConfig = lb::config::Config;

/// A config file that could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {reason}")]
pub struct ConfigError {
    /// The file concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl ConfigError {
    /// `reason` about `path`.
    pub fn new(path: &Path, reason: impl ToString) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// The directory holding `local/` and `ha/`: `configs/` of the checkout the
/// binary was built from, or `WSMESH_CONFIGS_DIR` (binaries run away from
/// their checkout, or kept while the checkout moves on).
fn configs_root() -> PathBuf {
    match wsmesh_common::config::env_override("WSMESH_CONFIGS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs"),
    }
}

/// The committed local configs (`configs/local`).
pub fn configs_dir() -> PathBuf {
    configs_root().join("local")
}

/// The committed configs of the HA layout on one machine (`configs/ha`):
/// the same apps, subscribers and lb, Redis found through three Sentinels.
pub fn ha_configs_dir() -> PathBuf {
    configs_root().join("ha")
}

/// Reads `path` into the config type `T`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, e))?;
    toml::from_str(&text).map_err(|e| ConfigError::new(path, e))
}

/// Writes `config` to `path` as TOML.
pub fn write<T: Serialize>(config: &T, path: &Path) -> Result<(), ConfigError> {
    let text = toml::to_string(config).map_err(|e| ConfigError::new(path, e))?;
    std::fs::write(path, text).map_err(|e| ConfigError::new(path, e))
}

/// `configs/local/<file>`, loaded as `T`.
pub fn committed<T: DeserializeOwned>(file: &str) -> Result<T, ConfigError> {
    load(&configs_dir().join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_configs_round_trip_through_their_types() {
        let dir = tempfile::tempdir().unwrap();
        let app: AppConfig = committed("app1.toml").unwrap();
        write(&app, &dir.path().join("app1.toml")).unwrap();
        assert_eq!(load::<AppConfig>(&dir.path().join("app1.toml")).unwrap(), app);
        let sub: SubscriberConfig = committed("subscriber2.toml").unwrap();
        write(&sub, &dir.path().join("s.toml")).unwrap();
        assert_eq!(load::<SubscriberConfig>(&dir.path().join("s.toml")).unwrap(), sub);
        let lb: LbConfig = committed("lb.toml").unwrap();
        write(&lb, &dir.path().join("lb.toml")).unwrap();
        let again: LbConfig = load(&dir.path().join("lb.toml")).unwrap();
        assert_eq!(toml::to_string(&again).unwrap(), toml::to_string(&lb).unwrap());
    }

    #[test]
    fn a_missing_or_bad_file_is_an_error_naming_it() {
        let err = load::<AppConfig>(Path::new("/nonexistent/x.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.toml"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "instance = 1\n").unwrap();
        let err = load::<AppConfig>(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }
}
