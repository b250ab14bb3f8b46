//! `lab up` as a child process whose output a test reads line by line.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;

/// A running `lab up` and the lines of its stdout and stderr.
pub struct LabUp {
    /// The `lab` process, killed when dropped; tests signal and reap it.
    pub child: Child,
    /// Every output line, stdout and stderr interleaved as they come.
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl LabUp {
    /// Starts `lab up ARGS` without the environment overrides that would
    /// point it at another cluster's Redis or tokens.
    pub fn start<I, S>(args: I) -> LabUp
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab"))
            .arg("up")
            .args(args)
            .env_remove("WSMESH_REDIS_URL")
            .env_remove("WSMESH_INTERNAL_TOKEN")
            .env_remove("WSMESH_ADMIN_TOKEN")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("lab binary runs");
        let (tx, lines) = mpsc::unbounded_channel();
        drain(child.stdout.take().expect("piped stdout"), tx.clone());
        drain(child.stderr.take().expect("piped stderr"), tx);
        LabUp { child, lines }
    }

    /// The next line for which `pred` holds, within `limit`.
    pub async fn line_matching(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if pred(&line) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!("lab up ended its output early"),
                Err(_) => panic!("no matching line within {limit:?}"),
            }
        }
    }
}

impl LabUp {
    /// Sends SIGTERM (what Ctrl-C's clean stop does) and reaps the process
    /// within `limit`; its exit status.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("lab up still running") as libc::pid_t;
        // SAFETY: kill(2) on our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("lab up exits after SIGTERM")
            .expect("lab up is reaped")
    }
}

/// Forwards every line of `pipe` to `lines` (and to the test's output), so
/// the child never blocks on a full pipe.
fn drain(pipe: impl AsyncRead + Unpin + Send + 'static, lines: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            println!("{line}");
            if lines.send(line).is_err() {
                return;
            }
        }
    });
}
