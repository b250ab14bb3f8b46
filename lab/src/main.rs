//! `lab`: start the local cluster (`lab up`) or chat from a terminal (`lab chat`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lab::line_chat::{self, ChatOptions};
use lab::up::{self, UpOptions};

#[derive(Parser)]
#[command(name = "lab", about = "wsmesh lab: local cluster and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start redis-server, app1/app2 and subscriber1/subscriber2 on the fixed local ports.
    Up {
        /// Directory with the committed configs.
        #[arg(long, default_value = "configs/local")]
        configs: PathBuf,
        /// Redis data directory (AOF persistence).
        #[arg(long, default_value = "target/lab/redis")]
        redis_dir: PathBuf,
        /// Give up when not everything is healthy after this many seconds.
        #[arg(long, default_value_t = 60)]
        start_timeout: u64,
    },
    /// Interactive chat: stdin lines are sent, chats printed.
    Chat {
        /// WebSocket URL, e.g. ws://127.0.0.1:9001/ws or wss://127.0.0.1:8443/ws.
        #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
        url: String,
        /// Room.
        #[arg(long, default_value = "lobby")]
        room: String,
        /// Nick.
        #[arg(long, default_value = "lab")]
        nick: String,
        /// CA certificate to trust for wss:// (e.g. certs/dev-ca.pem).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// The 4-host Vagrant lab in network namespaces: chat check and failover drill (needs root).
    Netns(lab::netns::NetnsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wsmesh_common::logging::init();
    match Cli::parse().command {
        Command::Up {
            configs,
            redis_dir,
            start_timeout,
        } => up::run(UpOptions {
            configs,
            redis_dir,
            start_timeout: Duration::from_secs(start_timeout),
        })
        .await
        .context("lab up")?,
        Command::Chat { url, room, nick, ca } => line_chat::run(ChatOptions { url, room, nick, ca })
            .await
            .context("lab chat")?,
        Command::Netns(args) => std::process::exit(lab::netns::cli(args)),
    }
    Ok(())
}
