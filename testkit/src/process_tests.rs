use super::*;

fn sh(name: &str, script: &str, health: Health) -> ProcessSpec {
    ProcessSpec::new(
        name,
        Kind::App,
        "/bin/sh",
        vec!["-c".into(), script.into()],
        health,
    )
}

fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn lb_is_ready_only_when_every_server_is_up() {
    let up = r#"{"backends":[{"name":"apps","servers":[{"name":"app1","state":"up"},{"name":"app2","state":"up"}]}]}"#;
    assert_eq!(servers_up(up), Ok(()));
    let unchecked = r#"{"backends":[{"name":"apps","servers":[{"name":"app1","state":"up","check":{"enabled":true,"status":"INI"}}]}]}"#;
    assert!(
        servers_up(unchecked).is_err(),
        "up before the first check passed is not ready"
    );
    let checked = unchecked.replace("INI", "L7OK");
    assert_eq!(servers_up(&checked), Ok(()));
    let one_down = up.replacen(r#""state":"up""#, r#""state":"down""#, 1);
    assert!(servers_up(&one_down).unwrap_err().contains("app1"));
    assert!(servers_up(r#"{"backends":[]}"#).is_err());
    assert!(servers_up("<html>").is_err());
}

#[tokio::test]
async fn kill9_reaps_and_start_runs_it_again() {
    let mut p = Process::spawn(sh("sleeper", "sleep 30", Health::RedisPing(unused_addr()))).unwrap();
    let first = p.pid().unwrap();
    p.kill9().unwrap();
    assert!(p.pid().is_none());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(p.exit_status().and_then(|s| s.signal()), Some(libc::SIGKILL));
    p.start().unwrap();
    assert_ne!(p.pid(), Some(first));
    assert!(p.pid().is_some());
}

#[tokio::test]
async fn shutdown_escalates_to_sigkill_when_term_is_ignored() {
    let mut p = Process::spawn(sh(
        "stubborn",
        "trap '' TERM; sleep 30",
        Health::RedisPing(unused_addr()),
    ))
    .unwrap();
    // Give the shell a moment to install its trap, bounded.
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.shutdown(Duration::from_millis(300)).await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(p.exit_status().and_then(|s| s.signal()), Some(libc::SIGKILL));
}

#[tokio::test]
async fn listening_is_healthy_once_every_address_accepts() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut p = Process::spawn(sh(
        "idle",
        "sleep 30",
        Health::Listening(vec![open.local_addr().unwrap()]),
    ))
    .unwrap();
    p.wait_healthy(Duration::from_secs(5)).await.unwrap();
    let closed = unused_addr();
    let p = Process::spawn(sh(
        "idle",
        "sleep 30",
        Health::Listening(vec![open.local_addr().unwrap(), closed]),
    ))
    .unwrap();
    assert!(p.check().await.unwrap_err().contains(&closed.to_string()));
}

#[tokio::test]
async fn wait_healthy_fails_fast_when_the_process_exits() {
    let mut p = Process::spawn(sh("quitter", "exit 3", Health::RedisPing(unused_addr()))).unwrap();
    match p.wait_healthy(Duration::from_secs(20)).await {
        Err(ProcessError::Exited { status, .. }) => assert_eq!(status.code(), Some(3)),
        other => panic!("expected exit, got {other:?}"),
    }
    assert!(p.reap().is_none(), "an exit is reported once");
}

#[tokio::test]
async fn missing_program_names_the_install_hint() {
    let mut spec = sh("redis", "", Health::RedisPing(unused_addr()));
    spec.kind = Kind::Redis;
    spec.program = "/nonexistent/redis-server".into();
    let err = Process::spawn(spec).unwrap_err();
    assert!(err.to_string().contains("apt-get install redis-server"), "{err}");
}

#[tokio::test]
async fn drop_kills_the_child() {
    let p = Process::spawn(sh("dropped", "sleep 30", Health::RedisPing(unused_addr()))).unwrap();
    let pid = p.pid().unwrap() as libc::pid_t;
    drop(p);
    // SAFETY: signal 0 only probes existence.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "child {pid} survived drop");
}

#[tokio::test]
async fn output_is_captured_or_appended_to_a_file_over_restarts() {
    let mut spec = sh(
        "talker",
        "echo out; echo err >&2",
        Health::RedisPing(unused_addr()),
    );
    spec.output = Output::Capture;
    let mut p = Process::spawn(spec.clone()).unwrap();
    p.wait_exit(Duration::from_secs(10)).await.unwrap();
    crate::eventually(Duration::from_secs(5), "both lines captured", || async {
        p.log().lines().count() == 2
    })
    .await;
    assert!(
        p.log().contains("out\n") && p.log().contains("err\n"),
        "{}",
        p.log()
    );

    let dir = tempfile::tempdir().unwrap();
    spec.output = Output::File(dir.path().join("talker.log"));
    let mut p = Process::spawn(spec).unwrap();
    p.wait_exit(Duration::from_secs(10)).await.unwrap();
    p.start().unwrap();
    p.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(p.log().lines().count(), 4, "{}", p.log());
}

#[tokio::test]
async fn stop_and_cont_track_state() {
    let mut p = Process::spawn(sh("pausable", "sleep 30", Health::RedisPing(unused_addr()))).unwrap();
    p.stop().unwrap();
    assert!(matches!(p.state, State::Paused(_)));
    p.cont().unwrap();
    assert!(matches!(p.state, State::Running(_)));
}
