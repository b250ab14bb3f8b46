//! One log setup for every binary: `tracing` to stderr, level from
//! `RUST_LOG` (default `info`), JSON lines when `WSMESH_LOG_JSON=1`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WSMESH_LOG_JSON").is_ok_and(|v| v == "1");
    // Colour only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json {
        builder.json().try_init()
    } else {
        builder.with_target(false).try_init()
    };
    // A second init (tests) keeps the first subscriber; nothing to report.
    drop(result);
}
