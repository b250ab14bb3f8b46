//! The wsmesh lb as the bench and the drills run it: the committed
//! `configs/local/lb.toml` with one TLS frontend and backend per route
//! (`wsmesh_testkit::configs::routes`), so what is measured is the
//! configuration users start from. Also the dev certificates (`lb
//! gen-cert`) that the lb and HAProxy both serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wsmesh_testkit::cluster::{binary, ClusterError};
use wsmesh_testkit::configs::{self, routes, ConfigError};
use wsmesh_testkit::process::{Health, Kind, ProcessSpec};

pub use wsmesh_testkit::configs::routes::Route;

/// Dev certificates made by `lb gen-cert`.
#[derive(Debug, Clone)]
pub struct Certs {
    /// CA to trust.
    pub ca: PathBuf,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Private key of the server certificate.
    pub key: PathBuf,
}

/// Runs `lb gen-cert --dir dir`.
pub fn gen_certs(dir: &Path) -> Result<Certs, ClusterError> {
    let out = std::process::Command::new(binary("lb")?)
        .args(["gen-cert", "--dir"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        let reason = format!("lb gen-cert: {}", String::from_utf8_lossy(&out.stderr));
        return Err(ConfigError::new(dir, reason).into());
    }
    Ok(Certs {
        ca: dir.join("dev-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

/// Writes the lb config with one frontend and backend per route to `out`;
/// the admin listener goes to `admin`.
pub fn render(routes: &[Route], certs: &Certs, admin: SocketAddr, out: &Path) -> Result<(), ClusterError> {
    let config = routes::lb_config(routes, &certs.cert, &certs.key, admin)?;
    Ok(configs::write(&config, out)?)
}

/// Worker threads the lb runs with (tokio's default: one per CPU), which
/// HAProxy's `nbthread` is set to.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The lb on `config`; access log off (`RUST_LOG=warn`), as HAProxy runs without `log`.
pub fn spec(name: &str, config: &Path, admin: SocketAddr) -> Result<ProcessSpec, ClusterError> {
    let health = Health::Http(format!("http://{admin}/api/backends"));
    let args = vec!["--config".into(), config.into()];
    let mut spec = ProcessSpec::new(name, Kind::Lb, binary("lb")?, args, health);
    spec.env = vec![("RUST_LOG".into(), "warn".into())];
    spec.env_remove = vec!["WSMESH_ADMIN_TOKEN".into()];
    spec.listens = vec![(admin, "admin".into())];
    Ok(spec)
}

/// Waits until the lb at `admin` reports every server `up`.
pub async fn wait_all_up(admin: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let url = format!("http://{admin}/api/backends");
    loop {
        let last = match wsmesh_client::http::get(&url, Duration::from_secs(2)).await {
            Ok(r) => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                let states: Vec<String> = v["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|b| b["servers"].as_array().cloned().unwrap_or_default())
                    .map(|s| format!("{}={}", s["name"], s["state"]))
                    .collect();
                if !states.is_empty() && states.iter().all(|s| s.ends_with("=\"up\"")) {
                    return Ok(());
                }
                states.join(" ")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("lb servers not all up after {limit:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
