//! `lb`: the wsmesh TLS-terminating HTTP/WebSocket load balancer.
//!
//! `lb --config FILE` runs it; `lb check-config FILE` validates a file like
//! `haproxy -c`; `lb gen-cert` makes development certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An allocator with per-thread caches: each request allocates and frees
/// header maps, buffers and futures, and glibc's `malloc` took a sixth of
/// the lb's CPU per request. Its version 2: with many idle connections
/// (WebSocket tunnels) version 3 kept a fifth more memory resident.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 2's `mi_option_purge_delay` (the crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has the allocator give pages it emptied back to the system at once.
/// With its default delay a purge waits for the thread's next allocation
/// after the delay, so after a burst of new connections a worker that then
/// only waits on idle tunnels keeps every page the burst emptied (a
/// quarter of an idle tunnel's memory).
fn purge_at_once() {
    // SAFETY: sets a plain integer option; called first thing in `main`,
    // before any other thread exists that could read it meanwhile.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

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
    purge_at_once();
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), _) => wsmesh_common::cli::check_config(&file, lb::check),
        (Some(Command::GenCert { dir, force, hosts }), _) => match lb::certgen::generate(&dir, force, &hosts)
        {
            Ok(outcome) => {
                let verb = match outcome {
                    lb::certgen::Outcome::Written => "wrote",
                    lb::certgen::Outcome::Kept if hosts.is_empty() => "kept existing",
                    lb::certgen::Outcome::Kept => "kept existing (--host not applied; --force replaces them)",
                };
                println!(
                    "{verb} {0}/{1} {0}/{2} {0}/{3} {0}/{4}; trust the CA with: curl --cacert {0}/{1}",
                    dir.display(),
                    lb::certgen::CA_CERT,
                    lb::certgen::CA_KEY,
                    lb::certgen::SERVER_CERT,
                    lb::certgen::SERVER_KEY
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gen-cert: {e}");
                ExitCode::FAILURE
            }
        },
        (None, Some(config)) => {
            wsmesh_common::cli::serve(lb::run(&config, wsmesh_common::signal::terminate()))
        }
        (None, None) => {
            eprintln!("usage: lb --config FILE | lb check-config FILE | lb gen-cert [--dir DIR] [--force] [--host NAME]...");
            ExitCode::from(2)
        }
    }
}
