//! `lab`: start the local cluster (`lab up`), chat from a terminal (`lab chat`),
//! mint a development token (`lab token`), run drills and benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lab::token::{self, Minter, TokenSpec};
use lab::up::{self, Layout, UpOptions};
use wsmesh_client::line_chat::{self, ChatOptions};

#[derive(Parser)]
#[command(name = "lab", about = "wsmesh lab: local cluster and tools")]
struct Cli {
    /// The lab job to run.
    #[command(subcommand)]
    command: Command,
}

/// `lab up --redis`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum RedisArg {
    /// One redis-server.
    Single,
    /// A master, two replicas and three Sentinels.
    Ha,
    /// A Redis Cluster of three masters and three replicas.
    Cluster,
}

#[derive(Subcommand)]
enum Command {
    /// Start redis-server, app1/app2, subscriber1/subscriber2 and the lb on the fixed local ports
    /// (or N apps, a Sentinel-watched Redis or a Redis Cluster).
    Up {
        /// Directory with the committed configs [default: configs/local; configs/ha with --ha].
        #[arg(long)]
        configs: Option<PathBuf>,
        /// The HA layout: a Redis master and two replicas (ports 6390-6392) and three
        /// redis-sentinels (26390-26392, master name wsmesh, quorum 2, down after 2 s), the
        /// apps and subscribers finding the master through them. Sends are acked once a replica
        /// holds them, so two replicas: a promoted master keeps one to ack. Redis data is fresh
        /// each run unless --redis-dir is given.
        #[arg(long, conflicts_with = "redis")]
        ha: bool,
        /// Which Redis: single, ha (the same as --ha) or cluster: six redis-servers on 7001-7006
        /// (cluster bus 17001-17006, moved by --port-offset) made a 3-master, 3-replica Redis
        /// Cluster with redis-cli --cluster create (fresh each run); the apps and subscribers use
        /// it through sharded pub/sub, and the ready line ends with `cluster ip:port,…`.
        #[arg(long, value_enum)]
        redis: Option<RedisArg>,
        /// Run N apps and N subscribers (1-9): app i on 127.0.0.1:900i (internal 910i),
        /// subscriber i on 920i, the lb balancing over all N. Other than 2 (or with
        /// --redis cluster) the configs are written into the run directory from the committed
        /// app1.toml, subscriber1.toml and lb.toml.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=9))]
        apps: u8,
        /// Redis data directory (AOF persistence) [default: target/lab/redis; with
        /// --port-offset, the temporary directory].
        #[arg(long)]
        redis_dir: Option<PathBuf>,
        /// Give up when not everything is healthy after this many seconds.
        #[arg(long, default_value_t = 60)]
        start_timeout: u64,
        /// Run with every loopback port of the configs moved by N (typed configs written into a
        /// temporary directory, removed at exit), next to a cluster on the fixed ports.
        #[arg(long, value_name = "N")]
        port_offset: Option<u16>,
        /// Write DIR/<name>.pid for every process (each removed when its process exits).
        #[arg(long, value_name = "DIR")]
        pid_dir: Option<PathBuf>,
        /// Run the apps in jwt mode with a secret generated into the run directory; the ready
        /// line then carries a chat URL with a token (mint more with the `lab token` line it prints).
        #[arg(long)]
        auth: bool,
    },
    /// Mint a development token (HS256) from an app config's secret.
    Token {
        /// `sub` claim: who the token is for.
        #[arg(long)]
        sub: String,
        /// `name` claim: the nick [default: the sub].
        #[arg(long)]
        name: Option<String>,
        /// Allowed rooms, comma-separated names or `*` patterns [default: every room].
        #[arg(long, default_value = "")]
        rooms: String,
        /// Validity from now, e.g. 90s, 30m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// App config in jwt mode whose first HS256 secret signs the token.
        #[arg(long, default_value = "configs/local/app1.toml")]
        config: PathBuf,
    },
    /// Interactive chat: stdin lines are sent, chats printed.
    Chat {
        /// WebSocket URL, e.g. ws://127.0.0.1:9001/ws or wss://127.0.0.1:8443/ws.
        #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
        url: String,
        /// Room to join (letters, digits, `_` and `-`).
        #[arg(long, default_value = "lobby")]
        room: String,
        /// Nick to ask for once welcomed.
        #[arg(long, default_value = "lab")]
        nick: String,
        /// CA certificate to trust for wss:// (e.g. certs/dev-ca.pem).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Failover drills through the lb (kill, drain, Redis and subscriber faults) with an exact message ledger.
    Drill(lab::drill::DrillArgs),
    /// The Vagrant lab (lb pair on a VIP, apps, Redis with Sentinels) in network namespaces: chat check and host-loss drills (needs root).
    Netns(lab::netns::NetnsArgs),
    /// Benchmarks: lb vs HAProxy vs direct, wsmesh vs seed-python vs node (`make bench`).
    Bench {
        /// The short run (about two minutes).
        #[arg(long)]
        quick: bool,
        /// Directory for report.md, report.json and the charts.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Run only these scenarios (1-8), e.g. --only 1 --only 8.
        #[arg(long)]
        only: Vec<u8>,
        /// Run the wsmesh apps of the chat scenarios (5, 6) in jwt mode; their clients carry a token.
        #[arg(long)]
        auth: bool,
    },
    /// The fixed fast backend of the proxy benchmarks (small response, WebSocket echo).
    Backend {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:29001")]
        listen: std::net::SocketAddr,
    },
}

/// `lab drill`: runs the drills, prints each table as it finishes (or the JSON
/// at the end) and the summary; exit status 1 when any loss column is non-zero.
async fn drill(args: lab::drill::DrillArgs) -> anyhow::Result<i32> {
    let (faults, opts) = args.parse().map_err(anyhow::Error::msg)?;
    let json = args.json;
    let reports = lab::drill::run(&faults, &opts, |r| {
        if !json {
            println!("{}", r.table());
        }
    })
    .await
    .context("lab drill")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!("{}", lab::drill::report::summary(&reports));
    }
    Ok(if reports.iter().all(|r| r.clean()) { 0 } else { 1 })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wsmesh_common::logging::init();
    match Cli::parse().command {
        Command::Up {
            configs,
            ha,
            redis,
            apps,
            redis_dir,
            start_timeout,
            port_offset,
            pid_dir,
            auth,
        } => {
            let layout = match (ha, redis) {
                (true, _) | (_, Some(RedisArg::Ha)) => Layout::Ha,
                (_, Some(RedisArg::Cluster)) => Layout::Cluster,
                (_, Some(RedisArg::Single) | None) => Layout::Single,
            };
            up::run(UpOptions {
                layout,
                apps: usize::from(apps),
                configs: configs.unwrap_or_else(|| layout.default_configs()),
                redis_dir,
                start_timeout: Duration::from_secs(start_timeout),
                port_offset,
                pid_dir,
                auth,
            })
            .await
            .context("lab up")?
        }
        Command::Token {
            sub,
            name,
            rooms,
            ttl,
            config,
        } => {
            let spec = TokenSpec {
                sub,
                name,
                rooms: token::parse_rooms(&rooms),
                ttl: lab::drill::parse_duration(&ttl).map_err(anyhow::Error::msg)?,
            };
            println!("{}", Minter::from_config(&config)?.mint(&spec)?);
        }
        Command::Chat { url, room, nick, ca } => line_chat::run(ChatOptions { url, room, nick, ca })
            .await
            .context("lab chat")?,
        Command::Netns(args) => std::process::exit(lab::netns::cli(args)),
        Command::Drill(args) => std::process::exit(drill(args).await?),
        Command::Bench {
            quick,
            out,
            only,
            auth,
        } => {
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let report = lab::bench::run(lab::bench::BenchOptions {
                quick,
                out: out.clone(),
                only,
                command,
                auth,
            })
            .await
            .context("lab bench")?;
            println!("{}\n{}", report.table(), report.goals_text());
            println!("report: {}/report.md, report.json and charts", out.display());
        }
        Command::Backend { listen } => lab::bench::backend::run(listen).await.context("lab backend")?,
    }
    Ok(())
}
