//! The lb as a separate process, for the tests that need one: signals
//! (reload, stop) and the log it writes. Everything else runs the lb
//! in-process (`super::Lb`).

use std::path::PathBuf;
use std::time::Duration;

use wsmesh_testkit::cluster::lb_spec;
use wsmesh_testkit::process::{Health, Output, Process};

use super::{free_port, write_config, LbOpts, Ports};

/// The real `lb` binary (through `wsmesh-testkit`, killed on drop): for what
/// only a process shows (signals, its log on stderr).
pub struct LbProcess {
    pub process: Process,
    pub ports: Ports,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
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
            let mut lb = LbProcess::spawn(opts, ports, |_| {});
            // "lb ready" is logged once every socket is bound: unambiguous,
            // unlike a port answering (which could be another test's lb).
            for _ in 0..200 {
                if lb.log_text().contains("lb ready") {
                    return lb;
                }
                if lb.process.exit_status().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            eprintln!("lb did not start, retrying:\n{}", lb.log_text());
        }
        panic!("lb did not start three times");
    }

    /// Writes the config of `opts` on `ports`, changed by `edit`, and starts
    /// the binary on it without waiting for anything.
    pub fn spawn(
        opts: &LbOpts,
        ports: Ports,
        edit: impl FnOnce(&mut wsmesh_testkit::process::ProcessSpec),
    ) -> LbProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("lb.toml");
        write_config(opts, ports, &config);
        let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut spec = lb_spec(
            "lb",
            lb_bin().into(),
            &config,
            vec![(local(ports.https), "https".into())],
            local(ports.admin),
        );
        spec.health = Health::Listening(vec![local(ports.admin)]);
        spec.env = vec![
            ("RUST_LOG".into(), "info".into()),
            ("WSMESH_LOG_JSON".into(), "1".into()),
        ];
        spec.env_remove = vec!["WSMESH_ADMIN_TOKEN".into()];
        spec.output = Output::Capture;
        edit(&mut spec);
        LbProcess {
            process: Process::spawn(spec).expect("spawn lb"),
            ports,
            config,
            _dir: dir,
        }
    }

    pub fn signal(&mut self, sig: i32) {
        self.process.signal(sig).expect("signal delivered");
    }

    pub fn log_text(&self) -> String {
        self.process.log()
    }
}

impl std::ops::Deref for LbProcess {
    type Target = Ports;

    fn deref(&self) -> &Ports {
        &self.ports
    }
}
