//! The lab's processes: each one started with `ip netns exec NS BINARY …`
//! (which execs the binary, so the child is the service itself), a clean
//! environment as systemd gives it (PATH plus what the unit's
//! `EnvironmentFile` would hold), its output in a log file, its own process
//! group (a terminal's Ctrl-C reaches only `lab`, which then stops them in
//! order) and `PR_SET_PDEATHSIG` so even a killed `lab` leaves none behind.
//! Dropping the set stops them all: SIGTERM, a bounded wait, then SIGKILL.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::NetnsError;

/// One running service.
#[derive(Debug)]
struct Proc {
    /// Name in messages and the log file's name (`app1`, `subscriber1`, …).
    name: String,
    /// The child (the service itself, after `ip netns exec` exec'd it).
    child: Child,
    /// Where its stdout and stderr go.
    log: PathBuf,
}

/// Every process started by one run.
#[derive(Debug)]
pub struct Procs {
    /// Started processes, in start order.
    procs: Vec<Proc>,
    /// Directory of the log files.
    log_dir: PathBuf,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// Name for messages and the log file.
    pub name: &'a str,
    /// Namespace to run in.
    pub ns: &'a str,
    /// Executable started inside the namespace.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment besides PATH (the unit's `EnvironmentFile`).
    pub env: Vec<(String, String)>,
}

impl Procs {
    /// An empty set logging into `log_dir`.
    pub fn new(log_dir: &Path) -> Procs {
        Procs {
            procs: Vec::new(),
            log_dir: log_dir.to_path_buf(),
        }
    }

    /// Starts one process.
    pub fn spawn(&mut self, spec: Spec<'_>) -> Result<(), NetnsError> {
        let log = self.log_dir.join(format!("{}.log", spec.name));
        let out = File::create(&log).map_err(|e| NetnsError::Setup(format!("{}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| NetnsError::Setup(format!("{}: {e}", log.display())))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", spec.ns])
            .arg(spec.program)
            .args(&spec.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| NetnsError::Setup(format!("starting {}: {e}", spec.name)))?;
        tracing::info!(name = spec.name, ns = spec.ns, pid = child.id(), "started");
        self.procs.push(Proc {
            name: spec.name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    /// An error naming the first process that has exited (a service must not die).
    pub fn check_alive(&mut self) -> Result<(), NetnsError> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(NetnsError::Died {
                    name: p.name.clone(),
                    status: status.to_string(),
                    log_tail: tail(&p.log, 15),
                });
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every log, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {} ({})\n{}", p.name, p.log.display(), tail(&p.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops everything, last started first: SIGTERM, up to `grace` for all of
    /// them together, then SIGKILL.
    pub fn stop_all(&mut self, grace: Duration) {
        for p in self.procs.iter().rev() {
            if let Ok(pid) = i32::try_from(p.child.id()) {
                // SAFETY: kill(2) on our own child's pid; no memory involved.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        for p in self.procs.iter_mut().rev() {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Ok(None) => {
                        tracing::warn!(name = %p.name, "did not stop on SIGTERM; killing");
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break;
                    }
                }
            }
        }
        self.procs.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(8));
    }
}

/// Last `lines` lines of a file (empty when unreadable), colour codes removed.
fn tail(path: &Path, lines: usize) -> String {
    let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_keeps_the_text() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m up"),
            "2026  INFO up"
        );
    }
}
