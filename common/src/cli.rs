//! What every binary's `main` does the same way once clap has parsed the
//! command line: `check-config FILE` (like `haproxy -c`: `FILE: ok`, or the
//! loader's `FILE:LINE:COL: reason` and a non-zero exit, so scripts and the
//! lab's preflight can rely on one shape) and running the server on a tokio
//! runtime with logging, its outcome turned into the exit code.

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

/// Loads `file` with `load`; prints `FILE: ok` and exits 0, or prints the
/// error to stderr and exits 1.
pub fn check_config<T, E: Display>(file: &Path, load: impl FnOnce(&Path) -> Result<T, E>) -> ExitCode {
    match load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads `file` with `load` (a bad one: its error on stderr, exit 1), then
/// serves with what it loaded (see `serve`).
pub fn load_and_serve<C, LE: Display, E: Display, F: Future<Output = Result<(), E>>>(
    file: &Path,
    load: impl FnOnce(&Path) -> Result<C, LE>,
    server: impl FnOnce(C) -> F,
) -> ExitCode {
    match load(file) {
        Ok(config) => serve(server(config)),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts logging and a multi-thread runtime and runs `server` on it until
/// it returns; an error is logged (with its causes) and exits 1.
pub fn serve<E: Display>(server: impl Future<Output = Result<(), E>>) -> ExitCode {
    crate::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
