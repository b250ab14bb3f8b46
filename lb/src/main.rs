//! `lb`: the wsmesh TLS-terminating HTTP/WebSocket load balancer.
//!
//! `lb --config FILE` runs it; `lb check-config FILE` validates a file like
//! `haproxy -c`; `lb gen-cert` makes development certificates.

mod access_log;
mod admin;
mod certgen;
mod client_io;
mod config;
mod conn;
mod drain;
mod lifecycle;
mod listener;
mod metrics;
mod proxy;
mod runtime;
mod stats_page;
mod tls;
mod tunnel;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lb",
    version,
    about = "wsmesh TLS load balancer for HTTP and WebSocket"
)]
struct Cli {
    /// Configuration file to run with.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file (syntax, references, certificates) and exit.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Make a development CA and a server certificate for 127.0.0.1, ::1,
    /// localhost and any --host.
    GenCert {
        /// Directory for dev-ca.pem, dev-ca.key, server.pem, server.key.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Another DNS name or IP address for the server certificate
        /// (repeatable), e.g. --host 192.168.56.10 for the lab's lb.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), _) => wsmesh_common::cli::check_config(&file, lifecycle::check),
        (Some(Command::GenCert { dir, force, hosts }), _) => match certgen::generate(&dir, force, &hosts) {
            Ok(outcome) => {
                let verb = match outcome {
                    certgen::Outcome::Written => "wrote",
                    certgen::Outcome::Kept if hosts.is_empty() => "kept existing",
                    certgen::Outcome::Kept => "kept existing (--host not applied; --force replaces them)",
                };
                println!(
                    "{verb} {0}/{1} {0}/{2} {0}/{3} {0}/{4}; trust the CA with: curl --cacert {0}/{1}",
                    dir.display(),
                    certgen::CA_CERT,
                    certgen::CA_KEY,
                    certgen::SERVER_CERT,
                    certgen::SERVER_KEY
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gen-cert: {e}");
                ExitCode::FAILURE
            }
        },
        (None, Some(config)) => wsmesh_common::cli::serve(lifecycle::run(&config)),
        (None, None) => {
            eprintln!("usage: lb --config FILE | lb check-config FILE | lb gen-cert [--dir DIR] [--force] [--host NAME]...");
            ExitCode::from(2)
        }
    }
}
