//! The systems of the scale-out scenario (8), each with N instances behind
//! one lb of its own: wsmesh (N apps, N subscribers) balanced by fewest
//! sessions or by room, on one Redis or on a 3-master, 3-replica Redis
//! Cluster, and the node peer (N `server.mjs`, one Redis). A [`Stack`] knows
//! the pids of its server processes and of its lb, so the scenario can read
//! their CPU time around a run.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lb::config::Balance;
use wsmesh_redis_wire::keys::DEFAULT_URL;
use wsmesh_testkit::cluster::{app_spec, binary, redis_spec, subscriber_spec, Cluster, ClusterError};
use wsmesh_testkit::configs::{self, routes, AppConfig, ConfigError, SubscriberConfig};
use wsmesh_testkit::metrics;
use wsmesh_testkit::ports::{free_addr, free_loopback_port};
use wsmesh_testkit::process::{Output, ProcessSpec};
use wsmesh_testkit::redis_cluster::{self, MASTERS, REPLICAS_PER_MASTER};

use super::lbconf::{self, Certs, Route};
use super::net::Target;
use super::peers::{peer_app, peers_dir};

/// What runs behind the lb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// wsmesh, `/ws` balanced by fewest sessions: a room's members spread
    /// over every app, so every subscriber subscribes to every room and
    /// every app gets every chat, as with one channel for all rooms.
    Leastconn,
    /// wsmesh as shipped: `/ws` balanced by a hash of the room (bounded
    /// load), each subscriber subscribed to its app's rooms only; one Redis.
    Hash,
    /// [`Design::Hash`] on a Redis Cluster (sharded pub/sub, sends acked
    /// once a replica holds them).
    HashCluster,
    /// The node peer: every instance subscribes to one channel and gets
    /// every chat of every room.
    Node,
}

impl Design {
    /// In report order.
    pub const ALL: [Design; 4] = [Design::Leastconn, Design::Hash, Design::HashCluster, Design::Node];

    /// The system's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Design::Leastconn => "wsmesh leastconn",
            Design::Hash => "wsmesh hash",
            Design::HashCluster => "wsmesh hash, cluster",
            Design::Node => "node",
        }
    }
}

/// The lb's servers: name and address.
type Backends = Vec<(String, SocketAddr)>;

/// The subscriber's counter of chats posted to its app.
const FORWARDED: &str = "wsmesh_subscriber_forwarded_chats_total";

/// What a server process of a stack does, for the CPU breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A wsmesh app or a node instance: fans chats out to sockets.
    App,
    /// A wsmesh subscriber: Redis pub/sub to its app.
    Subscriber,
    /// A Redis server or cluster node.
    Redis,
}

impl Role {
    /// In report order.
    pub const ALL: [Role; 3] = [Role::App, Role::Subscriber, Role::Redis];

    /// The role of a process by the name the stack gave it.
    fn of(name: &str) -> Role {
        if name.starts_with("subscriber") {
            Role::Subscriber
        } else if name.starts_with("redis") {
            Role::Redis
        } else {
            Role::App
        }
    }

    /// The role's name in logs and the report.
    pub fn name(self) -> &'static str {
        match self {
            Role::App => "apps",
            Role::Subscriber => "subscribers",
            Role::Redis => "redis",
        }
    }
}

/// Where the Redis of a stack is, as the app and subscriber configs name it.
enum RedisAt {
    Single(SocketAddr),
    Cluster(Vec<String>),
}

/// One design with N instances running; dropping it stops everything.
#[derive(Debug)]
pub struct Stack {
    /// The lb (dropped first).
    lb: Cluster,
    /// Apps, subscribers, node instances and Redis nodes.
    servers: Cluster,
    /// The lb's TLS frontend.
    pub target: Target,
    /// Each subscriber's health listener (its `/metrics`); none for node.
    subscriber_metrics: Vec<SocketAddr>,
    /// Configs, logs and Redis data; removed after the processes (field order).
    dir: tempfile::TempDir,
}

impl Stack {
    /// Starts `design` with `instances` apps (with as many subscribers) or
    /// node instances, and its lb; returns once the lb sees every server up.
    pub async fn start(
        design: Design,
        instances: usize,
        certs: &Certs,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Stack, ClusterError> {
        let dir = tempfile::Builder::new().prefix("wsmesh-scale-").tempdir()?;
        let mut servers = Cluster::new();
        let redis = match design {
            Design::HashCluster => RedisAt::Cluster(start_redis_cluster(&mut servers, dir.path()).await?),
            _ => {
                let addr = free_addr()?;
                let data = dir.path().join("redis");
                std::fs::create_dir_all(&data)?;
                servers.spawn(quiet(redis_spec("redis", addr, &data), dir.path()))?;
                servers.wait_healthy(Duration::from_secs(10)).await?;
                RedisAt::Single(addr)
            }
        };
        let (backends, subscriber_metrics) = match design {
            Design::Node => (start_node(&mut servers, instances, &redis, dir.path())?, Vec::new()),
            _ => start_wsmesh(&mut servers, instances, &redis, dir.path())?,
        };
        servers.wait_healthy(Duration::from_secs(60)).await?;

        let route = Route {
            name: "scale".into(),
            listen: free_addr()?,
            servers: backends,
        };
        let admin = free_addr()?;
        let mut config = routes::lb_config(std::slice::from_ref(&route), &certs.cert, &certs.key, admin)?;
        if design == Design::Leastconn {
            for backend in &mut config.backends {
                backend.balance = Balance::LeastConn;
                backend.hash_key = None;
            }
        }
        let file = dir.path().join("lb.toml");
        configs::write(&config, &file)?;
        let mut lb = Cluster::new();
        lb.spawn(quiet(lbconf::spec("lb-scale", &file, admin)?, dir.path()))?;
        lb.wait_healthy(Duration::from_secs(20)).await?;
        lbconf::wait_all_up(admin, Duration::from_secs(30))
            .await
            .map_err(|reason| ConfigError { path: file, reason })?;
        Ok(Stack {
            lb,
            servers,
            target: Target::tls(route.listen, tls),
            subscriber_metrics,
            dir,
        })
    }

    /// Pids of the server processes of one role.
    pub fn role_pids(&self, role: Role) -> Vec<u32> {
        self.servers
            .processes()
            .iter()
            .filter(|p| Role::of(p.name()) == role)
            .filter_map(|p| p.pid())
            .collect()
    }

    /// The lb's pid.
    pub fn lb_pids(&self) -> Vec<u32> {
        self.lb.processes().iter().filter_map(|p| p.pid()).collect()
    }

    /// Chats the subscribers have forwarded to their apps so far, summed
    /// (`wsmesh_subscriber_forwarded_chats_total`); `None` for node, which
    /// has no subscribers, or when a subscriber does not answer.
    pub async fn forwarded_chats(&self) -> Option<u64> {
        if self.subscriber_metrics.is_empty() {
            return None;
        }
        let mut sum = 0;
        for addr in &self.subscriber_metrics {
            sum += metrics::scrape(*addr, FORWARDED, Duration::from_secs(2)).await? as u64;
        }
        Some(sum)
    }

    /// Where the processes' logs are.
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A process of the bench with its output in `<dir>/<name>.log` (so N
/// instances do not flood the terminal) and warnings only, as the lb runs.
fn quiet(mut spec: ProcessSpec, dir: &Path) -> ProcessSpec {
    spec.output = Output::File(dir.join(format!("{}.log", spec.name)));
    spec.env.push(("RUST_LOG".into(), "warn".into()));
    spec.env.push(("NO_COLOR".into(), "1".into()));
    spec.env_remove
        .extend(["WSMESH_REDIS_URL".into(), "WSMESH_INTERNAL_TOKEN".into()]);
    spec
}

/// Six cluster nodes made a cluster with `redis-cli --cluster create`;
/// returns their addresses for `redis.cluster`.
async fn start_redis_cluster(servers: &mut Cluster, dir: &Path) -> Result<Vec<String>, ClusterError> {
    let mut addrs = Vec::new();
    for i in 1..=MASTERS * (1 + REPLICAS_PER_MASTER) {
        let addr = free_addr()?;
        let spec = redis_cluster::node_spec(&format!("redis-node{i}"), addr, free_loopback_port()?, dir);
        servers.spawn(quiet(spec, dir))?;
        addrs.push(addr);
    }
    servers.wait_healthy(Duration::from_secs(10)).await?;
    redis_cluster::create(&addrs, REPLICAS_PER_MASTER)
        .await
        .map_err(|e| ConfigError::new(dir, e))?;
    Ok(addrs.iter().map(SocketAddr::to_string).collect())
}

/// N apps and their subscribers from the committed app1 and subscriber1
/// configs, on free ports, with the bench's limits; returns the lb's servers
/// and the subscribers' metrics listeners.
fn start_wsmesh(
    servers: &mut Cluster,
    n: usize,
    redis: &RedisAt,
    dir: &Path,
) -> Result<(Backends, Vec<SocketAddr>), ClusterError> {
    let (app_bin, sub_bin) = (binary("app")?, binary("subscriber")?);
    let app_template: AppConfig = configs::committed("app1.toml")?;
    let sub_template: SubscriberConfig = configs::committed("subscriber1.toml")?;
    let (mut backends, mut metrics) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let name = format!("app{i}");
        let (public, internal, health) = (free_addr()?, free_addr()?, free_addr()?);
        let mut app = app_template.clone();
        app.instance = name.clone();
        app.listen.public = public;
        app.listen.internal = internal;
        // Bench load is far above a person's typing: lift the per-connection send budget.
        app.limits.rate_burst = 1_000_000;
        app.limits.rate_per_sec = 1_000_000.0;
        app.limits.capacity_threshold = 1.0;
        let mut sub = sub_template.clone();
        sub.app.internal_url = format!("http://{internal}");
        sub.listen.health = health;
        match redis {
            RedisAt::Single(addr) => {
                app.redis.url = format!("redis://{addr}/");
                sub.redis.url = app.redis.url.clone();
            }
            RedisAt::Cluster(nodes) => {
                app.redis.url = DEFAULT_URL.into();
                app.redis.cluster = nodes.clone();
                sub.redis.url = DEFAULT_URL.into();
                sub.redis.cluster = nodes.clone();
            }
        }
        let app_file = dir.join(format!("{name}.toml"));
        configs::write(&app, &app_file)?;
        let sub_name = format!("subscriber{i}");
        let sub_file = dir.join(format!("{sub_name}.toml"));
        configs::write(&sub, &sub_file)?;
        let spec = app_spec(&name, app_bin.clone(), &app_file, public, internal);
        servers.spawn(quiet(spec, dir))?;
        let spec = subscriber_spec(&sub_name, sub_bin.clone(), &sub_file, health);
        servers.spawn(quiet(spec, dir))?;
        backends.push((name, public));
        metrics.push(health);
    }
    Ok((backends, metrics))
}

/// N node instances on one Redis; returns the lb's servers.
fn start_node(servers: &mut Cluster, n: usize, redis: &RedisAt, dir: &Path) -> Result<Backends, ClusterError> {
    let RedisAt::Single(addr) = redis else {
        return Err(ConfigError::new(dir, "the node peer runs on one Redis").into());
    };
    let url = format!("redis://{addr}/0");
    let script = peers_dir().join("node/server.mjs");
    let mut backends = Vec::new();
    for i in 1..=n {
        let name = format!("node{i}");
        let port = free_addr()?;
        servers.spawn(quiet(
            peer_app(&name, "node".into(), script.clone(), port, None, &url),
            dir,
        ))?;
        backends.push((name, port));
    }
    Ok(backends)
}
