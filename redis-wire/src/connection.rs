//! The app's connection to Redis in any mode: a [`Master`] (one node, or
//! the node the Sentinels name, followed through failovers), or a Redis
//! Cluster client that sends each command to the master of its key's slot.
//!
//! On a cluster the `redis` crate follows `MOVED` and `ASK` redirections
//! and refreshes its slot map when a node fails or a slot moves; scripts
//! fall back from EVALSHA to EVAL on a node that does not know them (see
//! the crate root). What the Sentinel fence does for a replicated send
//! (refuse to commit on a master being replaced) a cluster does by itself:
//! a master's replica is promoted only by a majority of the masters, and
//! the send's `WAIT 1` is sent to the master that holds the room's slot, on
//! the connection that stored it. A commit that reaches a promoted replica
//! that lacks the entry is refused there (the commit script checks the
//! entry), and the client's re-send stores it again. See
//! docs/operations.md, "Redis Cluster", for the node settings that keep a
//! stale master from accepting writes.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::time::Instant;
use tracing::{info, warn};
use wsmesh_common::backoff::Backoff;

use crate::master::{Master, MasterOptions};
use crate::target::{ClusterNodes, Target};

/// How often the cluster client tries a command again after a redirection
/// or a failed node before it gives up (the caller bounds the whole call).
const CLUSTER_RETRIES: u32 = 4;

impl ClusterNodes {
    /// A cluster client builder with the seed nodes, the password and the
    /// timeouts of `options`; the subscriber adds RESP3 and a push sender.
    pub fn builder(&self, connect_timeout: Duration, response_timeout: Duration) -> ClusterClientBuilder {
        ClusterClientBuilder::new(self.infos())
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(50)
            .max_retry_wait(1000)
    }
}

/// A connection to Redis in whatever mode `[redis]` says; clones share it.
#[derive(Clone, Debug)]
pub enum Connection {
    /// One master (`url` or `sentinels`).
    Master(Master),
    /// A Redis Cluster (`cluster`).
    Cluster(Cluster),
}

impl Connection {
    /// Prepares the connection without connecting (needs a tokio runtime).
    pub fn new(target: Target, options: MasterOptions) -> RedisResult<Connection> {
        match target {
            Target::Cluster(nodes) => Ok(Connection::Cluster(Cluster::new(nodes, options)?)),
            target => Ok(Connection::Master(Master::new(target, options))),
        }
    }

    /// `host:port` of the master in use (`cluster host:port,…` for a
    /// cluster's seed nodes); `None` before the Sentinels named one.
    pub fn addr(&self) -> Option<String> {
        match self {
            Connection::Master(m) => m.addr(),
            Connection::Cluster(c) => Some(c.nodes.describe()),
        }
    }

    /// Whether Redis can serve: a master answers `PING`; a cluster says
    /// `cluster_state:ok` (every slot has a master that answers), asked of
    /// the first master that replies.
    pub async fn check(&mut self) -> Result<(), Unhealthy> {
        match self {
            Connection::Master(m) => {
                let pong: String = redis::cmd("PING").query_async(m).await?;
                match pong.as_str() {
                    "PONG" => Ok(()),
                    _ => Err(Unhealthy::Reply(pong)),
                }
            }
            Connection::Cluster(c) => {
                let mut conn = c.connection().await?;
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::OneSucceeded),
                ));
                let info = conn
                    .route_command(redis::cmd("CLUSTER").arg("INFO").clone(), routing)
                    .await?;
                let info: String = redis::from_redis_value(info).map_err(RedisError::from)?;
                match cluster_state(&info) {
                    Some("ok") => Ok(()),
                    state => Err(Unhealthy::Reply(format!(
                        "cluster_state:{}",
                        state.unwrap_or("missing")
                    ))),
                }
            }
        }
    }

    /// `WAIT 1 <timeout>` on the node that holds `key` (the master of its
    /// slot on a cluster, where WAIT counts only that node's replicas):
    /// how many replicas (0 or 1; WAIT returns as soon as one has)
    /// acknowledged every write this connection made to that node so far.
    /// WAIT blocks the connection while it waits, so run it on one of its own.
    pub async fn wait_for_replica(&mut self, key: &str, timeout: Duration) -> RedisResult<u64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(timeout.as_millis().max(1) as u64);
        match self {
            Connection::Master(m) => wait.query_async(m).await,
            Connection::Cluster(c) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let acked = c.connection().await?.route_command(wait, routing).await?;
                Ok(redis::from_redis_value(acked)?)
            }
        }
    }
}

/// The value of `cluster_state` in a `CLUSTER INFO` reply.
fn cluster_state(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("cluster_state:"))
}

/// Why `Connection::check` failed.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// Redis failed or did not answer.
    #[error("{0}")]
    Redis(#[from] RedisError),
    /// Redis answered, but not that it can serve.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// A Redis Cluster client that connects on first use (the app starts while
/// the cluster is down) and retries with backoff; once connected, the
/// `redis` crate keeps the per-node connections and the slot map current.
#[derive(Clone)]
pub struct Cluster {
    nodes: Arc<ClusterNodes>,
    client: Arc<ClusterClient>,
    state: Arc<tokio::sync::Mutex<Lazy>>,
}

/// The connection once made, and the backoff before it is.
struct Lazy {
    conn: Option<ClusterConnection>,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("nodes", &self.nodes).finish()
    }
}

impl Cluster {
    fn new(nodes: Arc<ClusterNodes>, options: MasterOptions) -> RedisResult<Cluster> {
        let client = nodes
            .builder(options.connect_timeout, options.response_timeout)
            .build()?;
        Ok(Cluster {
            nodes,
            client: Arc::new(client),
            state: Arc::new(tokio::sync::Mutex::new(Lazy {
                conn: None,
                backoff: Backoff::new(options.backoff_base, options.backoff_cap),
                retry_at: None,
            })),
        })
    }

    /// The connection, made now if there is none (at most once per backoff delay).
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Ok(conn.clone());
        }
        if let Some(at) = state.retry_at {
            tokio::time::sleep_until(at).await;
        }
        match self.client.get_async_connection().await {
            Ok(conn) => {
                info!(nodes = %self.nodes.describe(), "connected to the redis cluster");
                state.conn = Some(conn.clone());
                state.backoff.reset();
                state.retry_at = None;
                Ok(conn)
            }
            Err(e) => {
                let delay = state.backoff.next_delay();
                state.retry_at = Some(Instant::now() + delay);
                warn!(error = %e, retry_in = ?delay, "cannot reach the redis cluster");
                Err(e)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Master(m) => m.req_packed_command(cmd),
            Connection::Cluster(c) => {
                Box::pin(async move { c.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Master(m) => m.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => Box::pin(async move {
                c.connection()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Master(m) => m.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_state_is_read_from_cluster_info() {
        let info = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        assert_eq!(cluster_state(info), Some("ok"));
        assert_eq!(cluster_state("cluster_state:fail\r\n"), Some("fail"));
        assert_eq!(cluster_state("nothing"), None);
    }
}
