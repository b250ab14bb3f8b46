//! The cluster one drill runs against: Redis (one server, a Sentinel-watched
//! master with replicas, or a Redis Cluster), app1/app2 (or more),
//! subscriber1/2 (configs
//! from `configs/local` on free ports, like `LocalCluster`) and the TLS lb in
//! front (the committed `configs/local/lb.toml`, listen addresses, servers and
//! a fresh dev certificate replaced), so clients go through the path users
//! take. Each process writes to its own log file instead of our stdout: a drill
//! with a thousand clients would otherwise drown its own table (and `--json`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::store::{self, StoreReadError, Stored};
use crate::bench::lbconf::{self, Route};
use crate::up::ha;
use wsmesh_client::http;
use wsmesh_client::{ConnectOptions, Endpoint, Scheme};
use wsmesh_redis_wire::keys::DEFAULT_URL;
use wsmesh_testkit::cluster::{self, Cluster, ClusterError, LocalOptions};
use wsmesh_testkit::ports;
use wsmesh_testkit::process::{Output, ProcessSpec};
use wsmesh_testkit::redis_cluster;
use wsmesh_testkit::sentinel;

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
    /// The replicas did not sync or the Sentinels did not find each other.
    #[error("the Sentinels were not ready for a failover within {0:?}")]
    NotFailoverReady(Duration),
    /// No Sentinel named a master.
    #[error("no Sentinel names a master")]
    NoMaster,
    /// The Sentinels kept the lost master.
    #[error("the Sentinels promoted no replica within {0:?}")]
    NoFailover(Duration),
    /// The old master came back and stayed a master.
    #[error("{0} was not made a replica within {1:?}")]
    NotDemoted(String, Duration),
    /// The Redis Cluster could not be made.
    #[error("the Redis Cluster: {0}")]
    ClusterSetup(String),
    /// No replica took over a lost Redis Cluster master's slots.
    #[error("no replica of {0} was promoted within {1:?}")]
    NoPromotion(SocketAddr, Duration),
    /// The Redis Cluster did not say `cluster_state:ok` on every live node.
    #[error("the Redis Cluster was not whole within {0:?}: {1}")]
    ClusterNotOk(Duration, String),
    /// A room's channel got no subscriber on its slot's new master.
    #[error("{0}: no subscriber on its new master {1} within {2:?}")]
    NotResubscribed(String, SocketAddr, Duration),
    /// A Redis command of the drill itself failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The store could not be read at the end.
    #[error(transparent)]
    Store(#[from] StoreReadError),
    /// Writing the cluster's configs or directories failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Which Redis a drill runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisLayout {
    /// One redis-server (`redis`), local durability.
    Single,
    /// `redis1` master, `redis2`/`redis3` replicas, `sentinel1…3` (quorum 2),
    /// apps and subscribers following the Sentinels, replicated durability:
    /// the `lab up --ha` layout on free ports.
    Sentinel,
    /// `redis-node1…6`, a Redis Cluster of three masters with a replica
    /// each, the apps and subscribers on it through sharded pub/sub
    /// (replicated durability: `WAIT 1` on the room's master).
    Cluster,
}

/// Where the drill's Redis is.
#[derive(Debug, Clone)]
pub enum RedisAt {
    /// The one redis-server.
    Single(SocketAddr),
    /// Data nodes by process name, and the Sentinels that say which is master.
    Sentinels {
        /// `(redis1, addr)`, …
        nodes: Vec<(String, SocketAddr)>,
        /// The Sentinels.
        sentinels: Vec<SocketAddr>,
    },
    /// A Redis Cluster's nodes by process name (masters first, as created).
    Cluster {
        /// `(redis-node1, addr)`, …
        nodes: Vec<(String, SocketAddr)>,
    },
}

/// A running drill cluster; dropping it kills every process.
#[derive(Debug)]
pub struct DrillCluster {
    /// Where Redis is.
    pub redis: RedisAt,
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
    /// The apps' process names, `app1`….
    pub apps: Vec<String>,
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
    // The apps' line per ended socket (debug) is what explains a loss.
    let level = match spec.kind {
        wsmesh_testkit::process::Kind::Lb => "info,access=warn",
        wsmesh_testkit::process::Kind::App => "warn,wsmesh_app::socket_end=debug",
        _ => "warn",
    };
    spec.env.push(("RUST_LOG".into(), level.into()));
    spec
}

impl DrillCluster {
    /// Starts everything and waits until the lb sees both apps up. With
    /// `keep_logs` the directory stays (its path is in `dir`).
    pub async fn start(
        opts: &LocalOptions,
        keep_logs: bool,
        redis: RedisLayout,
    ) -> Result<DrillCluster, DrillClusterError> {
        let temp = tempfile::Builder::new().prefix("wsmesh-drill-").tempdir()?;
        let dir = temp.path().to_path_buf();
        let log = |name: &str| dir.join(format!("{name}.log"));
        let mut procs = Cluster::new();
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let (opts, store) = match redis {
            RedisLayout::Single => (opts.clone(), None),
            RedisLayout::Sentinel => {
                let nodes = (0..3)
                    .map(|_| ports::free_addr())
                    .collect::<Result<Vec<_>, _>>()?;
                let sentinels = (0..3)
                    .map(|_| ports::free_addr())
                    .collect::<Result<Vec<_>, _>>()?;
                for spec in ha::specs_at(&nodes, &sentinels, ha::TIMING, &data)? {
                    let name = spec.name.clone();
                    procs.spawn(logged(spec, &log(&name)))?;
                }
                procs.wait_healthy(START_LIMIT).await?;
                let deadline = tokio::time::Instant::now() + START_LIMIT;
                while !sentinel::ready_for_failover(&nodes[1..], &sentinels).await {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(DrillClusterError::NotFailoverReady(START_LIMIT));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let names: Vec<String> = sentinels.iter().map(SocketAddr::to_string).collect();
                let (app_names, sub_names) = (names.clone(), names);
                let opts = opts
                    .clone()
                    .app(move |c| {
                        c.redis.url = DEFAULT_URL.into();
                        c.redis.sentinels = app_names.clone();
                        c.redis.master_name = Some(sentinel::MASTER_NAME.into());
                    })
                    .subscriber(move |c| {
                        c.redis.url = DEFAULT_URL.into();
                        c.redis.sentinels = sub_names.clone();
                        c.redis.master_name = Some(sentinel::MASTER_NAME.into());
                    });
                let nodes = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("redis{}", i + 1), *a))
                    .collect();
                (opts, Some(RedisAt::Sentinels { nodes, sentinels }))
            }
            RedisLayout::Cluster => {
                let count = redis_cluster::MASTERS * (1 + redis_cluster::REPLICAS_PER_MASTER);
                let mut nodes = Vec::with_capacity(count);
                for i in 1..=count {
                    let name = format!("redis-node{i}");
                    let (addr, bus) = (ports::free_addr()?, ports::free_loopback_port()?);
                    let node_dir = data.join(&name);
                    std::fs::create_dir_all(&node_dir)?;
                    let spec = redis_cluster::node_spec(&name, addr, bus, &node_dir);
                    procs.spawn(logged(spec, &log(&name)))?;
                    nodes.push((name, addr));
                }
                procs.wait_healthy(START_LIMIT).await?;
                let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
                redis_cluster::create(&addrs, redis_cluster::REPLICAS_PER_MASTER)
                    .await
                    .map_err(|e| DrillClusterError::ClusterSetup(e.to_string()))?;
                let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
                let sub_list = list.clone();
                let opts = opts
                    .clone()
                    .app(move |c| {
                        c.redis.url = DEFAULT_URL.into();
                        c.redis.cluster = list.clone();
                    })
                    .subscriber(move |c| {
                        c.redis.url = DEFAULT_URL.into();
                        c.redis.cluster = sub_list.clone();
                    });
                (opts, Some(RedisAt::Cluster { nodes }))
            }
        };
        let layout = cluster::render_local(&dir, &opts).map_err(ClusterError::from)?;
        let app_bin = cluster::binary("app")?;
        let sub_bin = cluster::binary("subscriber")?;
        let lb_bin = cluster::binary("lb")?;
        let store = match store {
            Some(at) => at,
            None => {
                procs
                    .spawn(logged(
                        cluster::redis_spec("redis", layout.redis, &data),
                        &log("redis"),
                    ))?
                    .wait_healthy(START_LIMIT)
                    .await?;
                RedisAt::Single(layout.redis)
            }
        };
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
            .map(|a| (a.name.clone(), a.internal))
            .chain(
                layout
                    .subscribers
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| (format!("subscriber{}", i + 1), *addr)),
            )
            .collect();
        Ok(DrillCluster {
            redis: store,
            cluster: procs,
            lb,
            admin,
            tls,
            dir,
            apps: layout.apps.iter().map(|a| a.name.clone()).collect(),
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

    /// `GET /api/backends` of the lb: every server with its sessions and
    /// the hash keys they were placed by.
    async fn backends(&self) -> Result<serde_json::Value, DrillClusterError> {
        let url = format!("http://{}/api/backends", self.admin);
        let resp = http::request("GET", &url, &[], String::new(), Duration::from_secs(5))
            .await
            .map_err(|e| DrillClusterError::Admin(format!("{url}: {e}")))?;
        serde_json::from_str(&resp.body).map_err(|e| DrillClusterError::Admin(format!("{url}: {e}")))
    }

    /// The app with the most sessions in the lb now (the lb's admin API):
    /// the one whose loss moves the most clients. With room-affinity
    /// balancing a room's members share one app, so a fixed victim could
    /// hold no room at all.
    pub async fn busiest_app(&self) -> Result<String, DrillClusterError> {
        let json = self.backends().await?;
        servers(&json)
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["sessions"].as_u64()?)))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(name, _)| name)
            .ok_or_else(|| DrillClusterError::Admin("/api/backends: no server listed".into()))
    }

    /// Where the lb placed each room's open sessions (by the hash key it
    /// shows per server): room → server → sessions.
    pub async fn room_servers(&self) -> Result<RoomServers, DrillClusterError> {
        let json = self.backends().await?;
        let mut rooms = RoomServers::new();
        for server in servers(&json) {
            let Some(name) = server["name"].as_str() else {
                continue;
            };
            for key in server["hash_keys"].as_array().into_iter().flatten() {
                let (Some(room), Some(n)) = (key["key"].as_str(), key["sessions"].as_u64()) else {
                    continue;
                };
                if n > 0 {
                    rooms
                        .entry(room.to_string())
                        .or_default()
                        .insert(name.to_string(), n);
                }
            }
        }
        Ok(rooms)
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
        let names = self.metrics.iter().map(|(n, _)| n.as_str()).chain(["lb"]);
        for name in names {
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

impl DrillCluster {
    /// The master now: the one redis-server, or the one the Sentinels name
    /// (the first that answers).
    pub async fn master(&self) -> Result<SocketAddr, DrillClusterError> {
        match &self.redis {
            RedisAt::Single(addr) => Ok(*addr),
            RedisAt::Sentinels { sentinels, .. } => {
                for s in sentinels {
                    if let Some(addr) = sentinel::master_named_at(*s).await.and_then(|m| m.parse().ok()) {
                        return Ok(addr);
                    }
                }
                Err(DrillClusterError::NoMaster)
            }
            // Each slot has its own master: see `slot_master`.
            RedisAt::Cluster { .. } => Err(DrillClusterError::NoMaster),
        }
    }

    /// `ROLE` of the Redis node at `addr` (`master`, `slave`), `None` when
    /// it does not answer within a second.
    pub async fn role(&self, addr: SocketAddr) -> Option<String> {
        let ask = async {
            let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.ok()?;
            match role.first()? {
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                redis::Value::SimpleString(s) => Some(s.clone()),
                _ => None,
            }
        };
        tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .ok()
            .flatten()
    }

    /// The process name of the data node at `addr` (`redis` with one server).
    pub fn node_name(&self, addr: SocketAddr) -> Option<String> {
        match &self.redis {
            RedisAt::Single(a) => (*a == addr).then(|| "redis".to_string()),
            RedisAt::Sentinels { nodes, .. } | RedisAt::Cluster { nodes } => {
                nodes.iter().find(|(_, a)| *a == addr).map(|(n, _)| n.clone())
            }
        }
    }

    /// Every committed entry of `rooms`, read from the master now.
    pub async fn stored(&self, rooms: &[String]) -> Result<Stored, DrillClusterError> {
        let prefix = self.key_prefix();
        if let RedisAt::Cluster { nodes } = &self.redis {
            let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
            return Ok(store::read_cluster(&addrs, &prefix, rooms).await?);
        }
        let master = self.master().await?;
        Ok(store::read(master, None, &prefix, rooms).await?)
    }

    /// The master that owns `key`'s slot now, as the first Redis Cluster
    /// node that answers sees it.
    pub async fn slot_master(&self, key: &str) -> Result<SocketAddr, DrillClusterError> {
        let RedisAt::Cluster { nodes } = &self.redis else {
            return self.master().await;
        };
        let mut last = None;
        for (_, addr) in nodes {
            match redis_cluster::master_of(*addr, key).await {
                Ok(master) => return Ok(master),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(DrillClusterError::NoMaster, DrillClusterError::Redis))
    }

    /// The Redis Cluster's nodes (none on the other layouts).
    pub fn redis_nodes(&self) -> Vec<SocketAddr> {
        match &self.redis {
            RedisAt::Cluster { nodes } => nodes.iter().map(|(_, a)| *a).collect(),
            RedisAt::Single(_) | RedisAt::Sentinels { .. } => Vec::new(),
        }
    }

    /// A room's pub/sub channel, as the apps name it.
    pub fn channel(&self, room: &str) -> String {
        wsmesh_redis_wire::Keys::new(self.key_prefix()).channel(room)
    }

    /// `redis.prefix` of the apps' configs (as written for this cluster).
    fn key_prefix(&self) -> String {
        std::fs::read_to_string(self.dir.join("app1.toml"))
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("redis")?.get("prefix")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "wsmesh:".to_string())
    }

    /// The apps' `socket ended` lines that contain `needle`, `app: line`.
    pub fn socket_ends(&self, needle: &str) -> Vec<String> {
        let mut out = Vec::new();
        for name in &self.apps {
            let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{name}.log"))) else {
                continue;
            };
            out.extend(
                text.lines()
                    .filter(|l| l.contains("socket ended") && l.contains(needle))
                    .map(|l| format!("{name}: {l}")),
            );
        }
        out
    }
}

/// Room → lb server → open sessions (see `DrillCluster::room_servers`).
pub type RoomServers = BTreeMap<String, BTreeMap<String, u64>>;

/// Every server of every backend in a `/api/backends` answer.
fn servers(json: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    json["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["servers"].as_array().into_iter().flatten())
}

/// `GET /metrics` on loopback, within 2 s: the page's text.
async fn metrics_text(addr: SocketAddr) -> Result<String, wsmesh_client::http::HttpError> {
    let page = wsmesh_client::http::get(&format!("http://{addr}/metrics"), Duration::from_secs(2)).await?;
    Ok(page.body)
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
