//! `lab up` as a real process, on configs rendered with free ports (the fixed
//! ports belong to the real local cluster): one `ready` line with the URLs, a
//! killed process is logged and not restarted while the rest keeps running,
//! and SIGTERM stops everything and exits 0.

use std::process::Stdio;
use std::time::Duration;

use lab::cluster::{render_local, LocalOptions};
use lab::{http, ports};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(60);

/// Forwards every line of `pipe` to `lines`, so the child never blocks on a full pipe.
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

async fn line_matching(lines: &mut mpsc::UnboundedReceiver<String>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) if pred(&line) => return line,
            Ok(Some(_)) => {}
            Ok(None) => panic!("lab up ended its output early"),
            Err(_) => panic!("no matching line within {LIMIT:?}"),
        }
    }
}

#[tokio::test]
async fn lab_up_reports_ready_keeps_running_after_a_crash_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let layout = render_local(dir.path(), &LocalOptions::default()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("up")
        .arg("--configs")
        .arg(dir.path())
        .arg("--redis-dir")
        .arg(dir.path().join("redis"))
        .env_remove("WSMESH_REDIS_URL")
        .env_remove("WSMESH_INTERNAL_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    drain(child.stdout.take().unwrap(), tx.clone());
    drain(child.stderr.take().unwrap(), tx);

    let ready = line_matching(&mut lines, |l| l.contains("ready")).await;
    let (app1, app2) = (&layout.apps[0], &layout.apps[1]);
    assert_eq!(
        ready,
        format!("ready: app1 http://{}  app2 http://{}", app1.public, app2.public)
    );

    let holder = ports::holder(app1.public.port()).expect("app1 listens");
    // SAFETY: kill(2) on a pid read from /proc a moment ago; it is app1, a child of lab up.
    assert_eq!(unsafe { libc::kill(holder.pid as libc::pid_t, libc::SIGKILL) }, 0);
    let exited = line_matching(&mut lines, |l| l.starts_with("app1 exited")).await;
    assert!(exited.contains("signal: 9"), "{exited}");
    let app2_health = format!("{}/healthz", app2.http_url());
    http::wait_status(&app2_health, 200, LIMIT).await.unwrap();

    let lab_pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(lab_pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "lab up exited with {status}");
    for addr in [
        app2.public,
        layout.redis,
        layout.subscribers[0],
        layout.subscribers[1],
    ] {
        assert!(ports::is_free(addr), "{addr} still bound after lab up stopped");
    }
    assert!(ports::holder(app1.public.port()).is_none(), "app1 was restarted");
}
