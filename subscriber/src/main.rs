//! `subscriber`: forwards the chats published on Redis to the local app's
//! internal API, losing nothing across Redis, app or own restarts. This file
//! only parses the command line; the subscriber itself is the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use subscriber::Config;

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
    if let Some(Command::CheckConfig { file }) = cli.command {
        return wsmesh_common::cli::check_config(&file, Config::load);
    }
    let Some(file) = cli.config else {
        // clap already refuses this; should its rules change, say it the same way.
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--config FILE is required",
            )
            .exit()
    };
    wsmesh_common::cli::load_and_serve(&file, Config::load, |config| {
        subscriber::run(config, wsmesh_common::signal::terminate())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
