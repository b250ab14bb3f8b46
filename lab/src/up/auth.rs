//! `lab up --auth`: the same cluster with its apps in jwt mode. A fresh
//! HS256 secret goes into the run directory (a temporary one, removed at
//! exit; never the committed configs), both app configs read it from there,
//! and a development token for the page goes into the ready line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wsmesh_testkit::cluster::ClusterError;
use wsmesh_testkit::configs::shift;
use wsmesh_testkit::configs::{self, AppConfig};
use wsmesh_testkit::process::{Kind, ProcessSpec};

use super::UpError;
use crate::token::{Minter, TokenSpec};

/// How long the ready line's token is valid.
const PAGE_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The apps' configs in jwt mode, and what signs their tokens.
#[derive(Debug)]
pub struct AuthRun {
    /// The directory the cluster's configs are read from now.
    pub configs: PathBuf,
    /// Signs tokens with the apps' secret.
    pub minter: Minter,
    /// The run directory when this made one (removed on drop).
    _dir: Option<tempfile::TempDir>,
}

impl AuthRun {
    /// Puts `app1.toml` and `app2.toml` of `configs` in jwt mode; edits them
    /// in place when `configs` is already a run directory (`writable`), else
    /// in a copy.
    pub fn prepare(configs: &Path, writable: bool) -> Result<AuthRun, UpError> {
        let (dir, configs) = if writable {
            (None, configs.to_path_buf())
        } else {
            let dir = tempfile::Builder::new()
                .prefix("wsmesh-up-auth-")
                .tempdir()
                .map_err(ClusterError::from)?;
            shift::render_dir(configs, dir.path(), 0)?;
            let path = dir.path().to_path_buf();
            (Some(dir), path)
        };
        let minter = Minter::generate();
        let secret = configs.join("jwt-hs256.secret");
        minter.write_secret(&secret).map_err(ClusterError::from)?;
        // Every app of the run (`--apps N` writes app1 … appN).
        let apps = (1..)
            .map(|i| configs.join(format!("app{i}.toml")))
            .take_while(|f| f.exists());
        for file in apps {
            let mut app: AppConfig = configs::load(&file).map_err(ClusterError::from)?;
            minter.enable(&mut app, Some(&secret));
            configs::write(&app, &file).map_err(ClusterError::from)?;
        }
        Ok(AuthRun {
            configs,
            minter,
            _dir: dir,
        })
    }

    /// The ready line's `chat URL` entry: the page on the lb (else on the
    /// first app) with a token for every room in its fragment (the page
    /// moves it out of the address bar).
    pub fn chat_entry(&self, specs: &[ProcessSpec]) -> Result<String, UpError> {
        let page = [(Kind::Lb, "https"), (Kind::App, "http")]
            .iter()
            .find_map(|(kind, scheme)| {
                let spec = specs.iter().find(|s| s.kind == *kind)?;
                Some(format!("{scheme}://{}", spec.listens.first()?.0))
            })
            .unwrap_or_default();
        let token = self
            .minter
            .mint(&TokenSpec {
                sub: "dev".into(),
                name: Some("dev".into()),
                rooms: None,
                ttl: PAGE_TOKEN_TTL,
            })
            .map_err(|e| UpError::CheckConfig(e.to_string()))?;
        Ok(format!("chat {page}/#token={token}"))
    }

    /// How to mint more tokens for this run.
    pub fn hint(&self) -> String {
        format!(
            "auth: jwt mode; more tokens: lab token --config {} --sub NAME --rooms 'lobby,team-*'",
            self.configs.join("app1.toml").display()
        )
    }
}
