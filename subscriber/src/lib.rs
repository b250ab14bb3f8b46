//! The wsmesh subscriber as a library: it forwards the chats published on
//! Redis to the local app's internal API, losing nothing across Redis, app or
//! own restarts. `main.rs` parses the command line and calls `run`; tests run
//! a `Subscriber` in-process on a port-0 health listener.
//!
//! A chat travels `feed` (pub/sub on the channels of the app's rooms,
//! plain or sharded as `pubsub` runs it; reconnect, gap fill) → `queue` (bounded hand-over) → `forward` (batches,
//! retries, heartbeat) → `app_client` (one keep-alive connection to the
//! app); `interest` long-polls the app for its rooms, `rooms` keeps which
//! are subscribed, `fill` reads gaps from the streams; `health` serves
//! `/healthz` and `/metrics`.

mod app_client;
pub mod config;
mod feed;
mod fill;
mod forward;
mod health;
mod interest;
mod metrics;
mod pubsub;
mod queue;
mod rooms;
mod status;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use wsmesh_common::backoff::Backoff;
use wsmesh_redis_wire::Keys;

use crate::app_client::AppClient;
pub use crate::config::Config;
use crate::feed::Feed;
use crate::fill::GapFill;
use crate::forward::Forwarder;
use crate::health::HealthState;
use crate::interest::Poller;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::status::Status;

/// How long a stopping subscriber keeps posting what is queued.
const FLUSH_WINDOW: Duration = Duration::from_secs(2);

/// Why the subscriber could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The health listener could not be bound.
    #[error("cannot listen on {addr} (listen.health): {source}")]
    Listen {
        /// The configured `listen.health`.
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The shutdown future failed (e.g. signal handlers could not be installed).
    #[error("cannot install signal handlers: {0}")]
    Shutdown(#[source] io::Error),
    /// The forwarding task ended although nothing asked it to.
    #[error("the forwarder stopped unexpectedly: {0}")]
    ForwarderStopped(String),
}

/// A subscriber whose health listener is bound, ready to `run`.
#[derive(Debug)]
pub struct Subscriber {
    /// What to connect to and how to forward.
    config: Config,
    /// Where `/healthz` and `/metrics` are served.
    health: TcpListener,
}

impl Subscriber {
    /// Binds `listen.health` (port 0: any free port, see `health_addr`).
    pub async fn bind(config: Config) -> Result<Subscriber, Error> {
        let addr = config.listen.health;
        let health = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        Ok(Subscriber { config, health })
    }

    /// The address `/healthz` and `/metrics` are served on.
    pub fn health_addr(&self) -> io::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// Subscribes, fills and forwards until `shutdown` resolves; then stops
    /// reading Redis and flushes the queue for up to `FLUSH_WINDOW`. An error
    /// from `shutdown` ends it at once. Dropping the future stops everything
    /// without a flush, as a crash would.
    pub async fn run(self, shutdown: impl Future<Output = io::Result<()>>) -> Result<(), Error> {
        let Subscriber { config, health } = self;
        let metrics = Arc::new(Metrics::default());
        let status = Arc::new(Status::default());
        let queue = Arc::new(Queue::new(config.queue.capacity, metrics.clone()));
        let keys = Keys::for_target(config.redis.prefix.clone(), &config.target);
        let app_retry = || Backoff::new(config.app.retry_base, config.app.retry_cap);
        let health_addr = health.local_addr().unwrap_or(config.listen.health);

        let serving = Task::spawn(health::serve(
            health,
            HealthState {
                status: status.clone(),
                metrics: metrics.clone(),
                queue: queue.clone(),
                heartbeat: config.app.heartbeat,
                pubsub_stall: config.redis.pubsub_stall,
            },
        ));

        let (stop, stopped) = watch::channel(false);
        let forwarder = Forwarder::new(
            AppClient::new(config.app.clone()),
            queue.clone(),
            status.clone(),
            metrics.clone(),
            config.queue.batch_max,
            config.app.heartbeat,
            app_retry(),
        );
        let mut forwarding = Task::spawn(forwarder.run(stopped));

        let gap = GapFill::new(
            AppClient::new(config.app.clone()),
            keys.clone(),
            config.queue.batch_max,
            app_retry(),
            queue.clone(),
            metrics.clone(),
        );
        let (poller, interest) = Poller::new(AppClient::new(config.app.clone()), app_retry());
        let polling = Task::spawn(poller.run());
        let feed = Feed::new(
            config.target.clone(),
            config.redis.pubsub_stall,
            keys,
            gap,
            queue.clone(),
            status,
            metrics,
            Backoff::new(config.redis.reconnect_base, config.redis.reconnect_cap),
            interest,
            config.redis.unsubscribe_grace,
        );
        let feeding = Task::spawn(feed.run());
        info!(
            health = %health_addr,
            app = %config.app.endpoint.authority,
            "subscriber started"
        );

        tokio::select! {
            result = shutdown => result.map_err(Error::Shutdown)?,
            ended = &mut forwarding.0 => return Err(Error::ForwarderStopped(format!("{ended:?}"))),
        }
        info!("stopping: no more reading from redis, flushing the queue");
        drop((feeding, polling));
        stop.send_replace(true);
        match tokio::time::timeout(FLUSH_WINDOW, &mut forwarding.0).await {
            Ok(_) => info!("stopped"),
            Err(_) => warn!(
                left = queue.len(),
                "flush window over; the rest is refilled from the streams at the next start"
            ),
        }
        drop(serving);
        Ok(())
    }
}

/// Binds (`Subscriber::bind`) and runs (`Subscriber::run`) until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = io::Result<()>>) -> Result<(), Error> {
    Subscriber::bind(config).await?.run(shutdown).await
}

/// A spawned task that is aborted when dropped, so however `run` ends (or is
/// dropped) it leaves nothing running behind.
struct Task<T>(JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    fn spawn(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        Task(tokio::spawn(future))
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fixtures shared by the unit tests.
#[cfg(test)]
mod test_support {
    use wsmesh_common::chat::Chat;

    /// A chat with `id` in `room`; the other fields fixed.
    pub fn chat(room: &str, id: &str) -> Chat {
        Chat {
            id: id.into(),
            room: room.into(),
            nick: "n".into(),
            body: "b".into(),
            ts: 0,
            cid: None,
        }
    }
}
