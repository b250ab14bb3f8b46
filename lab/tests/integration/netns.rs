//! The Vagrant lab, run for real in network namespaces by `lab netns` (see
//! `lab/src/netns.rs`): the files in `configs/vagrant/` and `deploy/`, a
//! Redis master with two replicas and three Sentinels, two apps, two
//! subscribers, two lbs with keepalived on a virtual IP; the chat check and
//! the failover drills at small size: app1's link, the active lb's host and
//! the Redis master's host lost under load, each with the drill's ledger.
//!
//! It needs root and network namespaces, so it is `#[ignore]`d: a plain
//! `cargo test` lists it as ignored instead of passing without running it.
//! `make test` runs it explicitly when root
//! (`cargo test -p lab --test integration netns:: -- --ignored`), and a run that was asked
//! for fails when `lab netns` still cannot run (exit 77), with its reason.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `lab netns`'s exit code for "cannot run here".
const EXIT_SKIPPED: i32 = 77;

#[test]
#[ignore = "needs root and network namespaces; `make test` runs it when root"]
fn the_ha_lab_loses_no_message_when_a_host_is_lost_in_network_namespaces() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    let mut child = Command::new(lab)
        .arg("netns")
        .arg("--configs")
        .arg(repo.join("configs/vagrant"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lab netns");
    // Drain both pipes on threads so a chatty child never blocks.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // `lab netns` bounds itself; this is the outer bound. SIGTERM lets it
    // clean up; SIGKILL only if that too hangs.
    let deadline = Instant::now() + Duration::from_secs(420);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            std::thread::sleep(Duration::from_secs(30));
            let _ = child.kill();
            let _ = child.wait();
            panic!("lab netns did not finish within 420s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out.join().expect("stdout thread");
    let stderr = err.join().expect("stderr thread");
    assert_ne!(
        status.code(),
        Some(EXIT_SKIPPED),
        "lab netns cannot run here: {}",
        stdout.trim()
    );
    print!("{stdout}");
    assert!(
        status.success(),
        "lab netns failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("netns lab: passed"), "{stdout}");
    assert!(stdout.contains("app-link-down: app1's link down"), "{stdout}");
    // Each host-loss drill prints its table with the verdict of its ledger
    // (clients and store), and `lab netns` fails unless every one is clean.
    for fault in ["lb-host-down", "redis-host-down"] {
        let verdict = stdout
            .lines()
            .find(|l| l.starts_with(&format!("drill {fault} ")))
            .unwrap_or_else(|| panic!("no {fault} table in:\n{stdout}"));
        assert!(verdict.ends_with("PASS"), "{verdict}");
    }
    assert!(stdout.contains("the VIP is on lb"), "{stdout}");
    assert!(stdout.contains("the Sentinels promoted"), "{stdout}");
}
