//! Where the Redis master is. Either one fixed URL, or a set of Redis
//! Sentinels that are asked for the master of a name: every Sentinel at once
//! answers `SENTINEL get-master-addr-by-name`, and the node it names must
//! confirm with `ROLE` that it is a master before it is used. The Sentinels
//! also announce failovers (`+switch-master` on their pub/sub); `Switches`
//! listens for them so a connection can drop a demoted master at once.
//!
//! Both the app and the subscriber read the same `[redis]` keys into a
//! `Target` (see [`crate::keys`]), so the two cannot disagree on what the
//! keys mean.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, Role,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{info, warn};
use wsmesh_common::backoff::Backoff;

use crate::fence::Fence;

/// The channel on which Sentinels announce a promoted master.
const SWITCH_CHANNEL: &str = "+switch-master";
/// How often the Sentinel subscription is pinged, so a dead Sentinel is left.
const SENTINEL_PING_EVERY: Duration = Duration::from_secs(5);

/// A TCP node, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl NodeAddr {
    /// `host:port` or `[v6]:port`; `None` when it is neither.
    pub fn parse(s: &str) -> Option<NodeAddr> {
        let (host, port) = s.trim().rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok()?;
        (!host.is_empty() && port != 0).then(|| NodeAddr {
            host: host.to_string(),
            port,
        })
    }

    pub(crate) fn connection_info(&self, password: Option<&str>) -> ConnectionInfo {
        let info = ConnectionAddr::Tcp(self.host.clone(), self.port)
            .into_connection_info()
            .expect("a TCP address is always a connection info");
        match password {
            Some(p) => {
                let settings = info.redis_settings().clone().set_password(p);
                info.set_redis_settings(settings)
            }
            None => info,
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// The Sentinels to ask, and the secrets for them and for the data nodes.
#[derive(Clone)]
pub struct Sentinels {
    /// Asked all at once; the first that names a confirmed master wins.
    pub(crate) sentinels: Vec<NodeAddr>,
    /// The name the Sentinels monitor the master under.
    pub(crate) master_name: String,
    /// `AUTH` for the master and replicas.
    pub(crate) password: Option<String>,
    /// `AUTH` for the Sentinels.
    pub(crate) sentinel_password: Option<String>,
}

impl fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinels")
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The nodes of a Redis Cluster to start from, and their password.
#[derive(Clone)]
pub struct ClusterNodes {
    /// Asked for the slot map; the other nodes are found through them.
    pub(crate) nodes: Vec<NodeAddr>,
    /// `AUTH` for every node.
    pub(crate) password: Option<String>,
}

impl ClusterNodes {
    /// The seed nodes as connection infos, with the password.
    pub(crate) fn infos(&self) -> Vec<ConnectionInfo> {
        self.nodes
            .iter()
            .map(|n| n.connection_info(self.password.as_deref()))
            .collect()
    }

    /// `cluster host:port,host:port`, as `/healthz` names it.
    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(NodeAddr::to_string).collect();
        format!("cluster {}", nodes.join(","))
    }
}

impl fmt::Debug for ClusterNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNodes")
            .field("nodes", &self.nodes)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How to reach the master (or, on a cluster, the masters).
#[derive(Clone)]
pub enum Target {
    /// One fixed node (`redis.url`); it is the master by definition.
    Url(Box<ConnectionInfo>),
    /// Whatever node the Sentinels name (`redis.sentinels`).
    Sentinel(Arc<Sentinels>),
    /// A Redis Cluster (`redis.cluster`): each room's keys are on the
    /// master of the room's slot, which the `redis` crate's cluster client
    /// finds and follows (MOVED, ASK, failovers).
    Cluster(Arc<ClusterNodes>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The address only: the settings may hold a password.
            Target::Url(info) => write!(f, "Url({})", info.addr()),
            Target::Sentinel(s) => s.fmt(f),
            Target::Cluster(c) => c.fmt(f),
        }
    }
}

/// A master found: its address and a client for it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `host:port` of the master, as `/healthz` names it.
    pub addr: String,
    /// Opens connections to it.
    pub client: Client,
}

/// Why no master was found.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Redis (a Sentinel or the named node) failed or refused.
    #[error("{node}: {source}")]
    Redis {
        /// The node that failed.
        node: String,
        #[source]
        source: RedisError,
    },
    /// A node did not answer in time.
    #[error("{node}: no answer within {timeout:?}")]
    Timeout {
        /// The node that was silent.
        node: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The Sentinel does not know the master name.
    #[error("sentinel {sentinel} knows no master named {name:?}")]
    UnknownMaster {
        /// The Sentinel asked.
        sentinel: String,
        /// The configured `master_name`.
        name: String,
    },
    /// A cluster has no one master to find: its clients follow the slot map.
    #[error("a redis cluster has no single master")]
    Cluster,
    /// The node a Sentinel named is not (or no longer) a master.
    #[error("{node}, named by sentinel {sentinel}, is not a master")]
    NotMaster {
        /// The node named.
        node: String,
        /// The Sentinel that named it.
        sentinel: String,
    },
}

/// One command on a fresh connection to `info`, all bounded by `limit`.
async fn ask<T: redis::FromRedisValue>(
    info: &ConnectionInfo,
    cmd: &redis::Cmd,
    limit: Duration,
) -> Result<T, ResolveError> {
    let node = info.addr().to_string();
    let failed = |source| ResolveError::Redis {
        node: node.clone(),
        source,
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit));
    let work = async {
        let client = Client::open(info.clone()).map_err(failed)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(failed)?;
        cmd.query_async::<T>(&mut conn).await.map_err(failed)
    };
    timeout(limit * 2, work).await.unwrap_or_else(|_| {
        Err(ResolveError::Timeout {
            node: node.clone(),
            timeout: limit,
        })
    })
}

impl Target {
    /// The configured address for `url` mode, or the cluster's seed nodes
    /// (known without connecting); `None` with Sentinels until one is asked.
    pub fn fixed_addr(&self) -> Option<String> {
        match self {
            Target::Url(info) => Some(info.addr().to_string()),
            Target::Sentinel(_) => None,
            Target::Cluster(c) => Some(c.describe()),
        }
    }

    /// Finds the master now; every network step is bounded by `limit`.
    pub async fn resolve(&self, limit: Duration) -> Result<Resolved, ResolveError> {
        let s = match self {
            Target::Url(info) => {
                let client = Client::open((**info).clone()).map_err(|source| ResolveError::Redis {
                    node: info.addr().to_string(),
                    source,
                })?;
                return Ok(Resolved {
                    addr: info.addr().to_string(),
                    client,
                });
            }
            Target::Sentinel(s) => s,
            Target::Cluster(_) => return Err(ResolveError::Cluster),
        };
        // All at once, the first confirmed answer wins: asked one after the
        // other, a silent Sentinel (its host down) would use up the caller's
        // whole budget before the next one was asked.
        let asks = s.sentinels.iter().map(|sentinel| {
            Box::pin(async move {
                s.ask_one(sentinel, limit).await.inspect_err(|error| {
                    warn!(%sentinel, %error, "no master from this sentinel");
                })
            })
        });
        match futures_util::future::select_ok(asks).await {
            Ok((found, _)) => Ok(found),
            Err(last) => Err(last),
        }
    }

    /// The check a replicated send passes before its commit (see
    /// [`Fence`]); `None` with a fixed URL, whose node is the master by
    /// definition, and on a cluster, whose failovers the masters decide
    /// among themselves (see [`crate::connection`]).
    pub fn fence(&self, limit: Duration) -> Option<Fence> {
        match self {
            Target::Url(_) | Target::Cluster(_) => None,
            Target::Sentinel(s) => Some(Fence::new(s.clone(), limit)),
        }
    }

    /// Watches for failovers; see `Switches`.
    pub fn switches(&self, reconnect: Backoff) -> Switches {
        let (tx, rx) = watch::channel(0);
        let task = match self {
            Target::Url(_) | Target::Cluster(_) => None,
            Target::Sentinel(s) => Some(Arc::new(AbortOnDrop(tokio::spawn(watch_switches(
                s.clone(),
                tx.clone(),
                reconnect,
            ))))),
        };
        Switches {
            rx,
            _tx: Arc::new(tx),
            _task: task,
        }
    }
}

impl Sentinels {
    /// Asks one Sentinel and confirms the node it names.
    async fn ask_one(&self, sentinel: &NodeAddr, limit: Duration) -> Result<Resolved, ResolveError> {
        let info = sentinel.connection_info(self.sentinel_password.as_deref());
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(&self.master_name);
        let named: Option<(String, u16)> = ask(&info, &cmd, limit).await?;
        let Some((host, port)) = named else {
            return Err(ResolveError::UnknownMaster {
                sentinel: sentinel.to_string(),
                name: self.master_name.clone(),
            });
        };
        let node = NodeAddr { host, port };
        let info = node.connection_info(self.password.as_deref());
        let role: Role = ask(&info, &redis::cmd("ROLE"), limit).await?;
        if !matches!(role, Role::Primary { .. }) {
            return Err(ResolveError::NotMaster {
                node: node.to_string(),
                sentinel: sentinel.to_string(),
            });
        }
        let client = Client::open(info).map_err(|source| ResolveError::Redis {
            node: node.to_string(),
            source,
        })?;
        Ok(Resolved {
            addr: node.to_string(),
            client,
        })
    }
}

/// Failovers announced by the Sentinels, as a count: a connection made
/// before the count changed may be to a demoted master and must be dropped.
/// With a fixed URL the count never changes. Cloning shares one listener;
/// it stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Switches {
    /// The count, bumped on each `+switch-master` for our master name.
    rx: watch::Receiver<u64>,
    /// Kept so `changed` pends rather than fails when nothing listens (URL mode).
    _tx: Arc<watch::Sender<u64>>,
    /// The listener, aborted with the last clone.
    _task: Option<Arc<AbortOnDrop>>,
}

impl Switches {
    /// Failovers seen so far.
    pub fn count(&self) -> u64 {
        *self.rx.borrow()
    }

    /// Resolves at the next failover after the last `count`/`changed`.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Marks the current count as seen, for `changed`.
    pub fn mark_seen(&mut self) -> u64 {
        *self.rx.borrow_and_update()
    }
}

#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribes to `+switch-master` on one Sentinel after the other, forever.
async fn watch_switches(s: Arc<Sentinels>, tx: watch::Sender<u64>, mut backoff: Backoff) {
    let mut next = 0;
    loop {
        let sentinel = &s.sentinels[next % s.sentinels.len()];
        next += 1;
        let error = listen_for_switches(&s, sentinel, &tx, &mut backoff).await;
        let delay = backoff.next_delay();
        warn!(%sentinel, error, retry_in = ?delay, "sentinel subscription lost; trying the next sentinel");
        tokio::time::sleep(delay).await;
    }
}

/// Listens on one Sentinel until its connection fails; returns why.
async fn listen_for_switches(
    s: &Sentinels,
    sentinel: &NodeAddr,
    tx: &watch::Sender<u64>,
    backoff: &mut Backoff,
) -> String {
    let limit = SENTINEL_PING_EVERY;
    let info = sentinel.connection_info(s.sentinel_password.as_deref());
    let subscribed = async {
        let client = Client::open(info)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(SWITCH_CHANNEL).await?;
        Ok::<_, RedisError>(pubsub)
    };
    let (mut sink, mut stream) = match timeout(limit, subscribed).await {
        Ok(Ok(pubsub)) => pubsub.split(),
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return "no answer to SUBSCRIBE".into(),
    };
    backoff.reset();
    info!(%sentinel, "listening for failovers");
    let mut ping = tokio::time::interval(SENTINEL_PING_EVERY);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "connection closed".into() };
                let Ok(text) = msg.get_payload::<String>() else { continue };
                if let Some(to) = switched_to(&text, &s.master_name) {
                    info!(%sentinel, master = %to, "sentinel announced a new master");
                    tx.send_modify(|n| *n += 1);
                }
            }
            _ = ping.tick() => {
                match timeout(limit, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "no answer to PING".into(),
                }
            }
        }
    }
}

/// The new master's address in a `+switch-master` payload
/// (`<name> <old-ip> <old-port> <new-ip> <new-port>`) about `name`.
fn switched_to(payload: &str, name: &str) -> Option<NodeAddr> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    match parts.as_slice() {
        [n, _, _, host, port] if *n == name => Some(NodeAddr {
            host: (*host).to_string(),
            port: port.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_payloads_are_read_for_our_name_only() {
        let p = "wsmesh 127.0.0.1 6379 127.0.0.1 6380";
        assert_eq!(
            switched_to(p, "wsmesh").map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(switched_to(p, "other"), None);
        assert_eq!(switched_to("wsmesh 1 2", "wsmesh"), None);
    }
}
