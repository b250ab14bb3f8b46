//! `app`: one wsmesh chat server instance. Parses the command line, loads the
//! config, binds both listeners and wires the parts; on SIGTERM/SIGINT it
//! drains and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use app::shared::Shared;
use app::{config, internal, routes, server};

/// wsmesh chat server.
#[derive(Debug, Parser)]
#[command(name = "app", version, about)]
struct Cli {
    /// Config file to run with (e.g. configs/local/app1.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A subcommand instead of running.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file: exit 0, or print FILE:LINE:COL: reason and exit 1.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match (&cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), _) => {
            return wsmesh_common::cli::check_config(file, config::load)
        }
        (None, Some(path)) => path,
        (None, None) => {
            eprintln!("usage: app --config FILE | app check-config FILE");
            return ExitCode::from(2);
        }
    };
    wsmesh_common::cli::load_and_serve(&path, config::load, run)
}

async fn run(loaded: config::Loaded) -> anyhow::Result<()> {
    let config = &loaded.config;
    let public = TcpListener::bind(config.listen.public)
        .await
        .with_context(|| format!("cannot listen on {} (public)", config.listen.public))?;
    let internal = TcpListener::bind(config.listen.internal)
        .await
        .with_context(|| format!("cannot listen on {} (internal)", config.listen.internal))?;
    let shared = Shared::new(loaded).context("redis settings")?;
    tracing::info!(
        instance = %shared.config.instance,
        public = %public.local_addr()?,
        internal = %internal.local_addr()?,
        redis = %wsmesh_common::config::redact_url(&shared.config.redis.url),
        sentinels = ?shared.config.redis.sentinels,
        auth = ?shared.config.auth.mode,
        "app listening: public http://{} internal http://{}",
        public.local_addr()?,
        internal.local_addr()?,
    );
    // Not fatal: the app serves (and says "unavailable") until Redis is back.
    match shared.store.ping().await {
        Ok(rtt) => tracing::info!(rtt_ms = rtt.as_secs_f64() * 1000.0, "redis reachable"),
        Err(e) => {
            tracing::warn!(error = %e, "redis not reachable yet; clients get \"unavailable\" until it is")
        }
    }
    let presence = tokio::spawn(shared.presence.clone().run());
    let s = shared.clone();
    let public_task = tokio::spawn(server::serve("public", public, move |req| {
        routes::handle(s.clone(), req)
    }));
    let s = shared.clone();
    let internal_task = tokio::spawn(server::serve("internal", internal, move |req| {
        internal::handle(s.clone(), req)
    }));
    wsmesh_common::signal::terminate()
        .await
        .context("cannot install signal handlers")?;
    tracing::info!("signal received");
    shared.drain.run(&shared.config.drain, &shared.slots).await;
    presence.abort();
    public_task.abort();
    internal_task.abort();
    Ok(())
}
