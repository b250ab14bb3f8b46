//! `lab up` as a real process, on configs rendered with free ports (the fixed
//! ports belong to the real local cluster): one `ready` line with the URLs, a
//! killed process is logged and not restarted while the rest keeps running,
//! and SIGTERM stops everything and exits 0.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use lab::ports;

use crate::lab_up::LabUp;
use wsmesh_client::http;
use wsmesh_testkit::cluster::{render_local, LocalOptions};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn lab_up_reports_ready_keeps_running_after_a_crash_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let layout = render_local(dir.path(), &LocalOptions::default()).unwrap();
    let redis_dir = dir.path().join("redis");
    let mut up = LabUp::start([
        OsStr::new("--configs"),
        dir.path().as_os_str(),
        OsStr::new("--redis-dir"),
        redis_dir.as_os_str(),
    ]);

    let ready = up.line_matching(LIMIT, |l| l.contains("ready")).await;
    let (app1, app2) = (&layout.apps[0], &layout.apps[1]);
    assert_eq!(
        ready,
        format!("ready: app1 http://{}  app2 http://{}", app1.public, app2.public)
    );

    let holder = ports::holder(app1.public.port()).expect("app1 listens");
    // SAFETY: kill(2) on a pid read from /proc a moment ago; it is app1, a child of lab up.
    assert_eq!(unsafe { libc::kill(holder.pid as libc::pid_t, libc::SIGKILL) }, 0);
    let exited = up.line_matching(LIMIT, |l| l.starts_with("app1 exited")).await;
    assert!(exited.contains("signal: 9"), "{exited}");
    let app2_health = format!("{}/healthz", app2.http_url());
    http::wait_status(&app2_health, 200, LIMIT).await.unwrap();

    let status = up.terminate(LIMIT).await;
    assert!(status.success(), "lab up exited with {status}");
    for addr in [
        app2.public,
        layout.redis,
        layout.subscribers[0],
        layout.subscribers[1],
    ] {
        assert!(
            wsmesh_testkit::ports::is_free(addr),
            "{addr} still bound after lab up stopped"
        );
    }
    assert!(ports::holder(app1.public.port()).is_none(), "app1 was restarted");
}

/// Runs `lab up` on `configs` to completion (it is expected to refuse at once).
async fn refused_up(configs: &std::path::Path, path_env: Option<&str>) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lab"));
    cmd.arg("up")
        .arg("--configs")
        .arg(configs)
        .arg("--redis-dir")
        .arg(configs.join("redis"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(path) = path_env {
        cmd.env("PATH", path);
    }
    let out = tokio::time::timeout(LIMIT, cmd.output()).await.unwrap().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn lab_up_refuses_a_taken_port_naming_the_port_and_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let layout = render_local(dir.path(), &LocalOptions::default()).unwrap();
    let squatter = std::net::TcpListener::bind(layout.apps[1].public).unwrap();
    let (ok, stderr) = refused_up(dir.path(), None).await;
    assert!(!ok);
    assert!(stderr.contains(&layout.apps[1].public.to_string()), "{stderr}");
    assert!(stderr.contains("app2 public"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    drop(squatter);
}

#[tokio::test]
async fn lab_up_without_redis_server_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    render_local(dir.path(), &LocalOptions::default()).unwrap();
    let (ok, stderr) = refused_up(dir.path(), Some("/nonexistent")).await;
    assert!(!ok);
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
}
