//! The wsmesh lb as the bench runs it: a config rendered from the committed
//! `configs/local/lb.toml` (same timeouts, balance, checks, limits), with
//! only listen addresses, certificates and servers replaced, so what is
//! measured is the configuration users start from. Also the dev
//! certificates (`lb gen-cert`) that the lb and HAProxy both serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::{binary, configs_dir, read_table, ClusterError};
use crate::process::{Health, Kind, ProcessSpec};

/// One frontend → backend pair of a rendered lb config.
#[derive(Debug, Clone)]
pub struct Route {
    /// Frontend and backend name.
    pub name: String,
    /// TLS listen address.
    pub listen: SocketAddr,
    /// Servers (name, address).
    pub servers: Vec<(String, SocketAddr)>,
}

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
        return Err(ClusterError::Config {
            path: dir.to_path_buf(),
            reason: format!("lb gen-cert: {}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(Certs {
        ca: dir.join("dev-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

fn config_error(reason: impl Into<String>) -> ClusterError {
    ClusterError::Config {
        path: configs_dir().join("lb.toml"),
        reason: reason.into(),
    }
}

/// Renders an lb config with one frontend and backend per route into `out`;
/// the admin listener goes to `admin`.
pub fn render(routes: &[Route], certs: &Certs, admin: SocketAddr, out: &Path) -> Result<(), ClusterError> {
    let mut table = read_table(&configs_dir().join("lb.toml"))?;
    let first = |key: &str| -> Result<toml::Table, ClusterError> {
        table
            .get(key)
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .and_then(|v| v.as_table())
            .cloned()
            .ok_or_else(|| config_error(format!("no [[{key}]]")))
    };
    let frontend = first("frontend")?;
    let backend = first("backend")?;
    let server = backend
        .get("server")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_table())
        .cloned()
        .ok_or_else(|| config_error("no [[backend.server]]"))?;
    let mut frontends = Vec::new();
    let mut backends = Vec::new();
    for route in routes {
        let mut f = frontend.clone();
        f.insert("name".into(), route.name.clone().into());
        f.insert("listen".into(), route.listen.to_string().into());
        f.insert("backend".into(), route.name.clone().into());
        let mut cert = toml::Table::new();
        cert.insert("cert".into(), certs.cert.display().to_string().into());
        cert.insert("key".into(), certs.key.display().to_string().into());
        f.insert("cert".into(), toml::Value::Array(vec![toml::Value::Table(cert)]));
        frontends.push(toml::Value::Table(f));
        let mut b = backend.clone();
        b.insert("name".into(), route.name.clone().into());
        let servers = route
            .servers
            .iter()
            .map(|(name, addr)| {
                let mut s = server.clone();
                s.insert("name".into(), name.clone().into());
                s.insert("addr".into(), addr.to_string().into());
                toml::Value::Table(s)
            })
            .collect();
        b.insert("server".into(), toml::Value::Array(servers));
        backends.push(toml::Value::Table(b));
    }
    table.insert("frontend".into(), toml::Value::Array(frontends));
    table.insert("backend".into(), toml::Value::Array(backends));
    if let Some(a) = table.get_mut("admin").and_then(|v| v.as_table_mut()) {
        a.insert("listen".into(), admin.to_string().into());
        a.insert("token".into(), "".into());
    }
    let text = toml::to_string(&table).map_err(|e| config_error(e.to_string()))?;
    std::fs::write(out, text)?;
    Ok(())
}

/// Worker threads the lb runs with (tokio's default: one per CPU), which
/// HAProxy's `nbthread` is set to.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The lb on `config`; access log off (`RUST_LOG=warn`), as HAProxy runs without `log`.
pub fn spec(name: &str, config: &Path, admin: SocketAddr) -> Result<ProcessSpec, ClusterError> {
    Ok(ProcessSpec {
        name: name.to_string(),
        kind: Kind::Lb,
        program: binary("lb")?,
        args: vec!["--config".into(), config.into()],
        env: vec![("RUST_LOG".into(), "warn".into())],
        env_remove: vec!["WSMESH_ADMIN_TOKEN".into()],
        health: Health::Http(format!("http://{admin}/api/backends")),
        listens: vec![(admin, "admin".into())],
    })
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
