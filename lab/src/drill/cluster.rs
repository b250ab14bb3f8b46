//! The cluster one drill runs against: Redis, app1/app2, subscriber1/2 (configs
//! from `configs/local` on free ports, like `LocalCluster`) and the TLS lb in
//! front (the committed `configs/local/lb.toml`, listen addresses, servers and
//! a fresh dev certificate replaced), so clients go through the path users
//! take. Each process writes to its own log file instead of our stdout: a drill
//! with a thousand clients would otherwise drown its own table (and `--json`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::bench::lbconf::{self, Route};
use wsmesh_client::http;
use wsmesh_client::{ConnectOptions, Endpoint, Scheme};
use wsmesh_testkit::cluster::{self, Cluster, ClusterError, LocalOptions};
use wsmesh_testkit::ports;
use wsmesh_testkit::process::{Output, ProcessSpec};

/// Environment overrides that would beat a rendered config.
const OVERRIDE_VARS: [&str; 3] = ["WSMESH_REDIS_URL", "WSMESH_INTERNAL_TOKEN", "WSMESH_ADMIN_TOKEN"];

/// How long a whole cluster may take to become healthy.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Why the drill cluster could not be built or driven.
#[derive(Debug, thiserror::Error)]
pub enum DrillClusterError {
    /// The harness failed (a process, a config, a binary).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A process failed.
    #[error(transparent)]
    Process(#[from] wsmesh_testkit::process::ProcessError),
    /// The CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] wsmesh_client::tls::TlsError),
    /// The lb's admin API refused or did not answer.
    #[error("lb admin: {0}")]
    Admin(String),
    /// Writing the cluster's configs or directories failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running drill cluster; dropping it kills every process.
#[derive(Debug)]
pub struct DrillCluster {
    /// The processes: `redis`, `app1`, `subscriber1`, `app2`, `subscriber2`, `lb`.
    pub cluster: Cluster,
    /// The lb's TLS listener.
    pub lb: SocketAddr,
    /// The lb's admin listener.
    pub admin: SocketAddr,
    /// TLS trust for the lb's certificate (the generated dev CA).
    pub tls: Arc<rustls::ClientConfig>,
    /// Configs, certificates, Redis data and the processes' logs.
    pub dir: PathBuf,
    /// Where each app and subscriber serves `/metrics`, by process name.
    metrics: Vec<(String, SocketAddr)>,
    /// Removes `dir` on drop unless the logs are kept (after the processes: field order).
    _temp: Option<tempfile::TempDir>,
}

/// Makes `spec` write its output to `log` (appending, so a restart adds to
/// the same file).
fn logged(mut spec: ProcessSpec, log: &Path) -> ProcessSpec {
    spec.output = Output::File(log.to_path_buf());
    spec.env_remove = OVERRIDE_VARS.iter().map(|v| v.to_string()).collect();
    spec.env.push(("NO_COLOR".into(), "1".into()));
    // Per-connection info lines of a thousand clients say nothing a drill needs;
    // the lb's server state changes (info) do, its access log does not.
    let level = if spec.kind == wsmesh_testkit::process::Kind::Lb {
        "info,access=warn"
    } else {
        "warn"
    };
    spec.env.push(("RUST_LOG".into(), level.into()));
    spec
}

impl DrillCluster {
    /// Starts everything and waits until the lb sees both apps up. With
    /// `keep_logs` the directory stays (its path is in `dir`).
    pub async fn start(opts: &LocalOptions, keep_logs: bool) -> Result<DrillCluster, DrillClusterError> {
        let temp = tempfile::Builder::new().prefix("wsmesh-drill-").tempdir()?;
        let dir = temp.path().to_path_buf();
        let layout = cluster::render_local(&dir, opts).map_err(ClusterError::from)?;
        let app_bin = cluster::binary("app")?;
        let sub_bin = cluster::binary("subscriber")?;
        let lb_bin = cluster::binary("lb")?;
        let log = |name: &str| dir.join(format!("{name}.log"));

        let mut procs = Cluster::new();
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        procs
            .spawn(logged(
                cluster::redis_spec("redis", layout.redis, &data),
                &log("redis"),
            ))?
            .wait_healthy(START_LIMIT)
            .await?;
        for (i, (app, health)) in layout.apps.iter().zip(&layout.subscribers).enumerate() {
            let config = dir.join(format!("{}.toml", app.name));
            let spec = cluster::app_spec(&app.name, app_bin.clone(), &config, app.public, app.internal);
            procs.spawn(logged(spec, &log(&app.name)))?;
            let sub = format!("subscriber{}", i + 1);
            let config = dir.join(format!("{sub}.toml"));
            let spec = cluster::subscriber_spec(&sub, sub_bin.clone(), &config, *health);
            procs.spawn(logged(spec, &log(&sub)))?;
        }
        procs.wait_healthy(START_LIMIT).await?;

        let certs = lbconf::gen_certs(&dir.join("certs"))?;
        let lb = ports::free_addr()?;
        let admin = ports::free_addr()?;
        let route = Route {
            name: "apps".into(),
            listen: lb,
            servers: layout.apps.iter().map(|a| (a.name.clone(), a.public)).collect(),
        };
        let config = dir.join("lb.toml");
        lbconf::render(&[route], &certs, admin, &config)?;
        let spec = cluster::lb_spec("lb", lb_bin, &config, vec![(lb, "https".into())], admin);
        procs
            .spawn(logged(spec, &log("lb")))?
            .wait_healthy(START_LIMIT)
            .await?;
        let tls = wsmesh_client::tls::client_config(&certs.ca)?;
        let temp = if keep_logs {
            let _ = temp.keep();
            None
        } else {
            Some(temp)
        };
        let metrics = layout
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.public))
            .chain(
                layout
                    .subscribers
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| (format!("subscriber{}", i + 1), *addr)),
            )
            .collect();
        Ok(DrillCluster {
            cluster: procs,
            lb,
            admin,
            tls,
            dir,
            metrics,
            _temp: temp,
        })
    }

    /// v1 connect options for `wss://lb/ws`, trusting the dev CA.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::for_endpoint(Endpoint {
            scheme: Scheme::Wss,
            host: self.lb.ip().to_string(),
            port: self.lb.port(),
            path: "/ws".into(),
        })
        .tls(self.tls.clone())
    }

    /// `POST /api/backends/SERVER/state` with `{"state": state}`.
    pub async fn set_server_state(&self, server: &str, state: &str) -> Result<(), DrillClusterError> {
        let url = format!("http://{}/api/backends/{server}/state", self.admin);
        let body = serde_json::json!({ "state": state }).to_string();
        let resp = http::request(
            "POST",
            &url,
            &[("content-type", "application/json")],
            body,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| DrillClusterError::Admin(format!("{url}: {e}")))?;
        if resp.status / 100 != 2 {
            return Err(DrillClusterError::Admin(format!(
                "{url}: HTTP {} {}",
                resp.status,
                resp.body.trim()
            )));
        }
        Ok(())
    }

    /// Waits until `name` is healthy again (the lb: until it sees every server up).
    pub async fn wait_healthy(&mut self, name: &str, limit: Duration) -> Result<(), DrillClusterError> {
        self.cluster.get_mut(name)?.wait_healthy(limit).await?;
        Ok(())
    }

    /// The non-zero counters (`*_total`) of each app and subscriber, `name:
    /// counter value`: which path a loss took (duplicates dropped, gap fills,
    /// retries, rejected batches…). A process that does not answer is said so.
    pub async fn counters(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, addr) in &self.metrics {
            match metrics_text(*addr).await {
                Ok(text) => out.extend(nonzero_counters(&text).map(|l| format!("{name}: {l}"))),
                Err(e) => out.push(format!("{name}: /metrics unavailable: {e}")),
            }
        }
        out
    }

    /// The last `per_file` warnings and errors of each wsmesh process (and
    /// the lb's server state changes), `name: line`, oldest first per file.
    pub fn log_excerpt(&self, per_file: usize) -> Vec<String> {
        let mut out = Vec::new();
        for name in ["app1", "app2", "subscriber1", "subscriber2", "lb"] {
            let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{name}.log"))) else {
                continue;
            };
            let picked: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("state changed"))
                .collect();
            let skip = picked.len().saturating_sub(per_file);
            out.extend(picked[skip..].iter().map(|l| format!("{name}: {l}")));
        }
        out
    }
}

/// `GET /metrics` over plain HTTP/1.0 on loopback, within 2 s.
async fn metrics_text(addr: SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: drill\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        tcp.take(1 << 20).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 2 s"))??;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, body)| body.to_string()))
}

/// The `*_total` samples of a Prometheus text page whose value is not 0.
fn nonzero_counters(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split_whitespace().next().is_some_and(|k| k.contains("_total")))
        .filter(|l| l.split_whitespace().last() != Some("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_are_read_from_a_metrics_page_and_zeros_left_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 256];
            let _ = tcp.read(&mut head).await;
            let body =
                "# HELP x_total x\nx_total 3\ny_total 0\nz_bucket{le=\"1\"} 5\nq_total{code=\"a\"} 2\n";
            let reply = format!("HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            tcp.write_all(reply.as_bytes()).await.unwrap();
        });
        let text = metrics_text(addr).await.unwrap();
        let got: Vec<&str> = nonzero_counters(&text).collect();
        assert_eq!(got, ["x_total 3", "q_total{code=\"a\"} 2"]);
    }
}
