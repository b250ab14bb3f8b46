//! `subscriber`: forwards the chats published on Redis to the local app's
//! internal API, losing nothing across Redis, app or own restarts. This file
//! only parses the command line and wires the parts together.

mod app_client;
mod config;
mod feed;
mod forward;
mod health;
mod metrics;
mod queue;
mod status;
#[cfg(test)]
mod test_support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use wsmesh_common::backoff::Backoff;
use wsmesh_redis_wire::Keys;

use crate::app_client::AppClient;
use crate::config::Config;
use crate::feed::{Feed, GapFill};
use crate::forward::Forwarder;
use crate::health::HealthState;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::status::Status;

/// How long a stopping subscriber keeps posting what is queued.
const FLUSH_WINDOW: Duration = Duration::from_secs(2);

/// wsmesh subscriber: Redis pub/sub → HTTP forwarder for its local app.
#[derive(Debug, Parser)]
#[command(version, about, subcommand_negates_reqs = true)]
struct Cli {
    /// Config file (TOML), e.g. configs/local/subscriber1.toml.
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Something other than running.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file; prints FILE:LINE:COL: reason and exits non-zero when it is bad.
    CheckConfig {
        /// Config file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), _) => wsmesh_common::cli::check_config(&file, Config::load),
        (None, Some(file)) => wsmesh_common::cli::load_and_serve(&file, Config::load, serve),
        // clap requires --config unless a subcommand is given.
        (None, None) => ExitCode::FAILURE,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let status = Arc::new(Status::default());
    let queue = Arc::new(Queue::new(config.queue.capacity, metrics.clone()));
    let keys = Keys::new(config.redis.prefix.clone());
    let redis = redis::Client::open(config.redis.url.as_str()).context("redis.url")?;
    let app_retry = || Backoff::new(config.app.retry_base, config.app.retry_cap);

    let listener = TcpListener::bind(config.listen.health)
        .await
        .with_context(|| format!("cannot listen on {} (listen.health)", config.listen.health))?;
    let health = tokio::spawn(health::serve(
        listener,
        HealthState {
            status: status.clone(),
            metrics: metrics.clone(),
            queue: queue.clone(),
            heartbeat: config.app.heartbeat,
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
    let mut forwarding = tokio::spawn(forwarder.run(stopped));

    let gap = GapFill::new(
        AppClient::new(config.app.clone()),
        keys.clone(),
        config.queue.batch_max,
        app_retry(),
        queue.clone(),
        metrics.clone(),
    );
    let feed = Feed::new(
        redis,
        keys,
        gap,
        queue.clone(),
        status,
        metrics,
        Backoff::new(config.redis.reconnect_base, config.redis.reconnect_cap),
    );
    let feeding = tokio::spawn(feed.run());
    info!(
        health = %config.listen.health,
        app = %config.app.endpoint.authority,
        "subscriber started"
    );

    let signal = wsmesh_common::signal::terminate();
    tokio::select! {
        result = signal => result.context("cannot install signal handlers")?,
        ended = &mut forwarding => anyhow::bail!("the forwarder stopped unexpectedly: {ended:?}"),
    }
    info!("stopping: no more reading from redis, flushing the queue");
    feeding.abort();
    stop.send_replace(true);
    match tokio::time::timeout(FLUSH_WINDOW, forwarding).await {
        Ok(_) => info!("stopped"),
        Err(_) => warn!(
            left = queue.len(),
            "flush window over; the rest is refilled from the streams at the next start"
        ),
    }
    health.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_takes_config_or_check_config() {
        let run = Cli::try_parse_from(["subscriber", "--config", "a.toml"]).unwrap();
        assert_eq!(run.config, Some(PathBuf::from("a.toml")));
        let check = Cli::try_parse_from(["subscriber", "check-config", "b.toml"]).unwrap();
        assert!(
            matches!(check.command, Some(Command::CheckConfig { file }) if file == std::path::Path::new("b.toml"))
        );
        assert!(Cli::try_parse_from(["subscriber"]).is_err());
    }
}
