//! Starting and stopping real processes: `redis-server` and the subscriber
//! binary (for the tests of signals and of what the process logs). Every
//! process is killed on Drop, on every path; every wait is bounded.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{eventually, WAIT};

/// A free loopback port below the ephemeral range, so a server stopped and
/// started again on it finds it free (`wsmesh_common::ports`).
pub fn free_port() -> u16 {
    wsmesh_common::ports::free_loopback_port().expect("a free loopback port")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits up to `WAIT` for `child` to exit; kills it after that.
fn reap(child: &mut Child) -> Option<ExitStatus> {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A real `redis-server` on a free loopback port, AOF on so streams survive a restart.
pub struct RedisServer {
    /// Its port, kept across restarts so clients reconnect to the same address.
    pub port: u16,
    /// Data directory (AOF files), removed with the server.
    dir: tempfile::TempDir,
    /// The running process, if up.
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        server.up().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let url = self.url();
        eventually("redis-server answers PING", || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        })
        .await;
    }

    /// Stops it cleanly (SIGTERM: the AOF is complete) and starts it again on the same port.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            reap(&mut child);
        }
        self.up().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The real subscriber binary, running with a config file; its stderr goes to a log file.
pub struct SubscriberProcess {
    /// The process, `None` once it was killed or exited.
    child: Option<Child>,
}

impl SubscriberProcess {
    pub fn spawn(config: &Path, log: &Path) -> SubscriberProcess {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_subscriber"))
            .arg("--config")
            .arg(config)
            .env_remove("WSMESH_REDIS_URL")
            .env_remove("WSMESH_INTERNAL_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn subscriber");
        SubscriberProcess { child: Some(child) }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and the exit status (`None` if it had to be killed).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(&child, libc::SIGTERM);
        reap(&mut child)
    }
}

impl Drop for SubscriberProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
