//! The three chat systems of scenarios 5 and 6, each as two instances behind
//! one and the same lb: wsmesh (redis + app×2 + subscriber×2, through
//! `lab::cluster`), seed-python (Tornado app×2 + subscriber×2 from
//! `lab/bench/peers/seed-python`) and node (`ws` + `ioredis` ×2 from
//! `lab/bench/peers/node`). All share wsmesh's Redis (the peers use their own
//! channels), and a single lb process has one TLS frontend per system.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wsmesh_testkit::cluster::{Cluster, ClusterError, LocalCluster, LocalOptions};
use wsmesh_testkit::configs::ConfigError;
use wsmesh_testkit::ports::free_addr;
use wsmesh_testkit::process::{Health, Kind, ProcessSpec};

use super::lbconf::{self, Certs, Route};
use super::net::Target;
use crate::token::{Minter, TokenSpec};

/// Name of a chat system in the report.
pub const WSMESH: &str = "wsmesh";
/// The seed design in Python.
pub const SEED_PYTHON: &str = "seed-python";
/// Node.js ws + ioredis.
pub const NODE: &str = "node";

/// Where the peers' sources are (`lab/bench/peers`).
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peers")
}

/// Everything running for the chat scenarios; dropping it stops it all.
#[derive(Debug)]
pub struct ChatSystems {
    /// The lb in front of all three (dropped first).
    pub lb: Cluster,
    /// The peers' processes.
    pub peers: Cluster,
    /// wsmesh: Redis, apps, subscribers.
    pub wsmesh: LocalCluster,
    /// (system name, TLS target on the lb), in report order.
    pub targets: Vec<(String, Target)>,
    /// The lb's admin listener.
    pub admin: SocketAddr,
}

impl ChatSystems {
    /// pid of a process by name: `lb`, `app1`, `app2`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        if name == "lb" {
            return self.lb.get("lb-chat").ok()?.pid();
        }
        self.wsmesh.cluster.get(name).ok()?.pid()
    }
}

/// A peer's chat app `name`: `program script --port <public>
/// [--internal-port <internal>] --instance <name> --redis <redis_url>`,
/// healthy once `/healthz` on `public` answers.
pub(crate) fn peer_app(
    name: &str,
    program: PathBuf,
    script: PathBuf,
    public: SocketAddr,
    internal: Option<SocketAddr>,
    redis_url: &str,
) -> ProcessSpec {
    let mut args: Vec<OsString> = vec![script.into(), "--port".into(), public.port().to_string().into()];
    let mut listens = vec![(public, "public".to_string())];
    if let Some(internal) = internal {
        args.extend(["--internal-port".into(), internal.port().to_string().into()]);
        listens.push((internal, "internal".to_string()));
    }
    args.extend([
        "--instance".into(),
        name.into(),
        "--redis".into(),
        redis_url.into(),
    ]);
    ProcessSpec {
        name: name.to_string(),
        kind: Kind::App,
        program,
        args,
        env: vec![],
        env_remove: vec![],
        health: Health::Http(format!("http://{public}/healthz")),
        listens,
        output: Default::default(),
    }
}

/// Starts the three systems and their lb; `dir` holds the lb config.
pub async fn start(
    certs: &Certs,
    tls: Arc<rustls::ClientConfig>,
    dir: &Path,
    max_connections: u64,
    auth: Option<&Minter>,
) -> Result<ChatSystems, ClusterError> {
    // Bench load is far above a person's typing: lift the per-connection send
    // budget, and the connection cap for scenario 6.
    let jwt = auth.cloned();
    let opts = LocalOptions::default().app(move |c| {
        if let Some(minter) = &jwt {
            minter.enable(c, None);
        }
        c.limits.rate_burst = 1_000_000;
        c.limits.rate_per_sec = 1_000_000.0;
        c.limits.max_connections = usize::try_from(max_connections).unwrap_or(usize::MAX);
        c.limits.capacity_threshold = 1.0;
    });
    let wsmesh = LocalCluster::start(opts).await?;
    let redis_url = format!("redis://{}/0", wsmesh.redis);
    let peers_dir = peers_dir();
    let python = peers_dir.join("seed-python/.venv/bin/python");
    let mut peers = Cluster::new();
    let mut py_servers = Vec::new();
    let mut node_servers = Vec::new();
    for i in 1..=2 {
        let public = free_addr()?;
        let internal = free_addr()?;
        let name = format!("py{i}");
        peers.spawn(peer_app(
            &name,
            python.clone(),
            peers_dir.join("seed-python/app.py"),
            public,
            Some(internal),
            &redis_url,
        ))?;
        peers.spawn(ProcessSpec {
            name: format!("py{i}-subscriber"),
            kind: Kind::Subscriber,
            program: python.clone(),
            args: vec![
                peers_dir.join("seed-python/subscriber.py").into(),
                "--redis".into(),
                redis_url.clone().into(),
                "--app".into(),
                format!("http://{internal}").into(),
            ],
            env: vec![],
            env_remove: vec![],
            health: Health::RedisPing(wsmesh.redis),
            listens: vec![],
            output: Default::default(),
        })?;
        py_servers.push((name, public));
        let port = free_addr()?;
        let name = format!("node{i}");
        peers.spawn(peer_app(
            &name,
            "node".into(),
            peers_dir.join("node/server.mjs"),
            port,
            None,
            &redis_url,
        ))?;
        node_servers.push((name, port));
    }
    peers.wait_healthy(Duration::from_secs(30)).await?;

    let routes = vec![
        Route {
            name: WSMESH.into(),
            listen: free_addr()?,
            servers: wsmesh.apps.iter().map(|a| (a.name.clone(), a.public)).collect(),
        },
        Route {
            name: SEED_PYTHON.into(),
            listen: free_addr()?,
            servers: py_servers,
        },
        Route {
            name: NODE.into(),
            listen: free_addr()?,
            servers: node_servers,
        },
    ];
    let admin = free_addr()?;
    let config = dir.join("lb-chat.toml");
    lbconf::render(&routes, certs, admin, &config)?;
    let mut lb = Cluster::new();
    lb.spawn(lbconf::spec("lb-chat", &config, admin)?)?;
    lb.wait_healthy(Duration::from_secs(20)).await?;
    lbconf::wait_all_up(admin, Duration::from_secs(30))
        .await
        .map_err(|reason| ConfigError { path: config, reason })?;
    // One token for every wsmesh client: the bench measures load, not identities.
    let token = match auth {
        Some(minter) => Some(Arc::<str>::from(
            minter
                .mint(&TokenSpec {
                    sub: "bench".into(),
                    name: None,
                    rooms: None,
                    ttl: Duration::from_secs(24 * 3600),
                })
                .map_err(|e| ConfigError {
                    path: dir.to_path_buf(),
                    reason: format!("minting the bench token: {e}"),
                })?,
        )),
        None => None,
    };
    let targets = routes
        .iter()
        .map(|r| {
            let mut target = Target::tls(r.listen, tls.clone());
            if r.name == WSMESH {
                target.token = token.clone();
            }
            (r.name.clone(), target)
        })
        .collect();
    Ok(ChatSystems {
        lb,
        peers,
        wsmesh,
        targets,
        admin,
    })
}
