//! The lb as a separate process, for the tests that need one: signals
//! (reload, stop) and the log it writes. Everything else runs the lb
//! in-process (`super::Lb`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{free_port, render_config, LbOpts, Ports};

/// The real `lb` binary, killed on drop: for what only a process shows
/// (signals, its log on stderr).
pub struct LbProcess {
    pub child: Child,
    pub ports: Ports,
    pub config: PathBuf,
    pub log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn lb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lb")
}

impl LbProcess {
    /// Starts the lb on fresh ports; if a port was taken in the meantime
    /// (the lb exits), tries again with others, at most three times.
    pub async fn start(opts: &LbOpts) -> LbProcess {
        for _ in 0..3 {
            let ports = Ports {
                https: free_port(),
                http: free_port(),
                admin: free_port(),
            };
            let mut lb = LbProcess::spawn(opts, ports);
            // "lb ready" is logged once every socket is bound: unambiguous,
            // unlike a port answering (which could be another test's lb).
            for _ in 0..200 {
                if lb.log_text().contains("lb ready") {
                    return lb;
                }
                if lb.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("lb did not start, retrying:\n{}", lb.log_text());
        }
        panic!("lb did not start three times");
    }

    fn spawn(opts: &LbOpts, ports: Ports) -> LbProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("lb.toml");
        std::fs::write(&config, render_config(opts, ports)).expect("write config");
        let mut child = Command::new(lb_bin())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("WSMESH_LOG_JSON", "1")
            .env_remove("WSMESH_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb");
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = log.lock().expect("lock");
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        LbProcess {
            child,
            ports,
            config,
            log,
            _dir: dir,
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("lock").clone()
    }
}

impl std::ops::Deref for LbProcess {
    type Target = Ports;

    fn deref(&self) -> &Ports {
        &self.ports
    }
}
