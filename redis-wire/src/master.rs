//! A connection to whatever node is the master now. It connects on first
//! use, and drops its connection (re-resolving the master on the next call,
//! with backoff between failed attempts) when the connection fails, when the
//! node answers `READONLY` (it was demoted), and when a Sentinel announces a
//! failover. The failover check runs before every command, so once a switch
//! is known nothing more is written to the old master. A command refused with
//! `READONLY` was not executed, so it is sent once more to the new master;
//! any other failure is returned, since the command may or may not have run.
//!
//! It is a `ConnectionLike`, so scripts, commands and pipelines run on it
//! as on any redis connection; clones share one connection (it multiplexes).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::time::Instant;
use tracing::{info, warn};
use wsmesh_common::backoff::Backoff;

use crate::target::{Switches, Target};

/// Timeouts and backoff of a `Master`.
#[derive(Debug, Clone, Copy)]
pub struct MasterOptions {
    /// Bound on every step of finding the master and connecting to it.
    pub connect_timeout: Duration,
    /// Bound on one answer; a late answer drops the connection.
    pub response_timeout: Duration,
    /// First backoff ceiling between failed attempts to reach the master.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
}

/// A following connection to the master; see the module comment.
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    options: MasterOptions,
    /// Held while connecting, so concurrent callers wait for one attempt.
    state: tokio::sync::Mutex<State>,
    /// `host:port` of the master in use (or last used), for `/healthz`.
    addr: Mutex<Option<String>>,
}

struct State {
    /// The connection and the number it was made under.
    conn: Option<(u64, MultiplexedConnection)>,
    /// Bumped for every new connection.
    made: u64,
    /// Announced failovers.
    switches: Switches,
    /// Failovers already acted on.
    switches_seen: u64,
    /// Delays between failed attempts.
    backoff: Backoff,
    /// No new attempt before this, after a failed one.
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("target", &self.inner.target)
            .field("addr", &self.addr())
            .finish()
    }
}

/// Whether `e` means this node must not be used again: the connection is
/// broken or late, or the node is a replica now.
fn drops_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || is_readonly(e)
}

fn is_readonly(e: &RedisError) -> bool {
    e.code() == Some("READONLY") || e.to_string().contains("READONLY")
}

impl Master {
    /// Prepares the connection without connecting (needs a tokio runtime:
    /// with Sentinels a task listens for failovers).
    pub fn new(target: Target, options: MasterOptions) -> Master {
        let backoff = Backoff::new(options.backoff_base, options.backoff_cap);
        let switches = target.switches(backoff.clone());
        let switches_seen = switches.count();
        Master {
            inner: Arc::new(Inner {
                addr: Mutex::new(target.fixed_addr()),
                target,
                options,
                state: tokio::sync::Mutex::new(State {
                    conn: None,
                    made: 0,
                    switches,
                    switches_seen,
                    backoff,
                    retry_at: None,
                }),
            }),
        }
    }

    /// `host:port` of the master in use, or last used; `None` before the
    /// Sentinels were first asked.
    pub fn addr(&self) -> Option<String> {
        self.inner
            .addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current connection, after dropping one a failover made stale;
    /// connects (at most once per backoff delay) when there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut state = self.inner.state.lock().await;
        let announced = state.switches.count();
        if announced != state.switches_seen {
            state.switches_seen = announced;
            if state.conn.take().is_some() {
                info!("a sentinel announced a failover; dropped the connection to the old master");
            }
            state.retry_at = None;
        }
        if let Some((made, conn)) = &state.conn {
            return Ok((*made, conn.clone()));
        }
        if let Some(at) = state.retry_at {
            tokio::time::sleep_until(at).await;
        }
        match self.connect().await {
            Ok(conn) => {
                state.made += 1;
                state.conn = Some((state.made, conn.clone()));
                state.backoff.reset();
                state.retry_at = None;
                Ok((state.made, conn))
            }
            Err(e) => {
                let delay = state.backoff.next_delay();
                state.retry_at = Some(Instant::now() + delay);
                warn!(error = %e, retry_in = ?delay, "cannot reach the redis master");
                Err(e)
            }
        }
    }

    async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let o = &self.inner.options;
        let resolved = self
            .inner
            .target
            .resolve(o.connect_timeout)
            .await
            .map_err(|e| RedisError::from((redis::ErrorKind::Io, "no redis master", e.to_string())))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(o.connect_timeout))
            .set_response_timeout(Some(o.response_timeout));
        let conn = resolved
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut addr = self.inner.addr.lock().unwrap_or_else(PoisonError::into_inner);
        if addr.as_deref() != Some(resolved.addr.as_str()) {
            info!(master = %resolved.addr, "using redis master");
        }
        *addr = Some(resolved.addr);
        Ok(conn)
    }

    /// Drops connection number `made` if it is still the current one.
    async fn drop_connection(&self, made: u64, error: &RedisError) {
        let mut state = self.inner.state.lock().await;
        if state.conn.as_ref().is_some_and(|(m, _)| *m == made) {
            state.conn = None;
            warn!(%error, "dropped the redis connection; the master is looked up again");
        }
    }

    /// Runs `call` on the current connection; see the module comment for
    /// when it is sent twice.
    async fn run<'a, T>(&self, call: impl Fn(MultiplexedConnection) -> RedisFuture<'a, T>) -> RedisResult<T> {
        let (made, conn) = self.connection().await?;
        match call(conn).await {
            Err(e) if drops_connection(&e) => {
                self.drop_connection(made, &e).await;
                if !is_readonly(&e) {
                    return Err(e);
                }
                let (_, conn) = self.connection().await?;
                call(conn).await
            }
            other => other,
        }
    }
}

impl ConnectionLike for Master {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.run(move |mut c| Box::pin(async move { c.req_packed_command(cmd).await })))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(
            self.run(move |mut c| {
                Box::pin(async move { c.req_packed_commands(pipeline, offset, count).await })
            }),
        )
    }

    fn get_db(&self) -> i64 {
        match &self.inner.target {
            Target::Url(info) => info.redis_settings().db(),
            Target::Sentinel(_) | Target::Cluster(_) => 0,
        }
    }
}
