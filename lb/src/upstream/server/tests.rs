//! The server model's reactions to check results, passive errors and admin requests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::upstream::session::SessionGuard;

fn server(rise: u32, fall: u32) -> Server {
    Server {
        name: "s".into(),
        addr: "127.0.0.1:1".parse().unwrap(),
        weight: 1,
        maxconn: 0,
        backup: false,
        slowstart: Duration::ZERO,
        rise_fall: Some((rise, fall)),
        reactions: Reactions::default(),
        shared: ServerShared::new(rise, 1),
    }
}

fn ok() -> CheckResult {
    CheckResult {
        status: CheckStatus::L7Ok,
        code: Some(200),
        detail: String::new(),
    }
}

fn bad() -> CheckResult {
    CheckResult {
        status: CheckStatus::L7Sts,
        code: Some(503),
        detail: String::new(),
    }
}

#[test]
fn first_failure_at_start_takes_server_down() {
    let s = server(2, 3);
    assert_eq!(s.state(), ServerState::Up);
    s.record(bad());
    assert_eq!(s.state(), ServerState::Down);
}

#[test]
fn rise_successes_bring_it_up_and_fall_failures_take_it_down() {
    let s = server(2, 3);
    s.record(bad());
    s.record(ok());
    assert_eq!(s.state(), ServerState::Down, "one success is not enough");
    s.record(ok());
    assert_eq!(s.state(), ServerState::Up);
    s.record(bad());
    s.record(bad());
    assert_eq!(s.state(), ServerState::Up, "two failures are not enough");
    s.record(ok());
    s.record(bad());
    s.record(bad());
    assert_eq!(
        s.state(),
        ServerState::Up,
        "a success in between resets the count"
    );
    s.record(bad());
    assert_eq!(s.state(), ServerState::Down);
}

fn refused() -> CheckResult {
    CheckResult {
        status: CheckStatus::L4Con,
        code: None,
        detail: "client request: refused".into(),
    }
}

/// A fully up server (health at the top) reacting with `on_error`.
fn fully_up(on_error: OnError, error_limit: u32) -> Server {
    let mut s = server(2, 3);
    s.reactions.on_error = on_error;
    s.reactions.error_limit = error_limit;
    s.record(ok());
    assert_eq!(s.view().health, 4);
    s
}

#[test]
fn on_error_decides_what_failed_connects_do() {
    let s = fully_up(OnError::MarkDown, 1);
    s.connect_failed(refused());
    assert_eq!(s.state(), ServerState::Down, "mark-down: at once");

    let s = fully_up(OnError::FailCheck, 1);
    s.connect_failed(refused());
    assert_eq!(
        (s.state(), s.view().health),
        (ServerState::Up, 3),
        "fail-check: one step"
    );

    let s = fully_up(OnError::SuddenDeath, 1);
    s.connect_failed(refused());
    assert_eq!(s.state(), ServerState::Up);
    s.record(bad());
    assert_eq!(s.state(), ServerState::Down, "sudden-death: one more failure");

    let s = fully_up(OnError::None, 1);
    s.connect_failed(refused());
    assert_eq!(
        (s.state(), s.view().health),
        (ServerState::Up, 4),
        "none: counted only"
    );
}

#[test]
fn error_limit_counts_failed_connects_in_a_row() {
    let s = fully_up(OnError::MarkDown, 3);
    s.connect_failed(refused());
    s.connect_failed(refused());
    s.connect_succeeded();
    s.connect_failed(refused());
    s.connect_failed(refused());
    assert_eq!(s.state(), ServerState::Up, "a success in between resets the run");
    s.connect_failed(refused());
    assert_eq!(s.state(), ServerState::Down);
    s.record(ok());
    s.record(ok());
    assert_eq!(s.state(), ServerState::Up, "checks bring it back after rise");
}

#[tokio::test]
async fn shutdown_sessions_signals_sessions_open_at_mark_down_only() {
    let mut s = server(2, 3);
    s.reactions.on_marked_down = OnMarkedDown::ShutdownSessions;
    let s = Arc::new(s);
    let mut open = SessionGuard::open(&s, None);
    s.set_admin(AdminState::Drain);
    assert!(!open.shutdown.has_changed().unwrap(), "drain keeps sessions");
    s.set_admin(AdminState::Ready);
    s.record(bad());
    assert_eq!(s.state(), ServerState::Down);
    open.shut_down().await;
    let mut later = SessionGuard::open(&s, None);
    assert!(
        !later.shutdown.has_changed().unwrap(),
        "a later session is not affected"
    );
    s.record(ok());
    s.record(ok());
    s.set_admin(AdminState::Maint);
    later.shut_down().await;
}

fn result(status: CheckStatus) -> CheckResult {
    CheckResult {
        status,
        code: None,
        detail: String::new(),
    }
}

/// A fully up server with `shutdown-unreachable` and one open session.
fn unreachable_policy(on_error: OnError) -> (Arc<Server>, SessionGuard) {
    let mut s = server(2, 3);
    s.reactions.on_marked_down = OnMarkedDown::ShutdownUnreachable;
    s.reactions.on_error = on_error;
    let s = Arc::new(s);
    s.record(ok());
    let open = SessionGuard::open(&s, None);
    (s, open)
}

#[tokio::test]
async fn shutdown_unreachable_keeps_sessions_of_a_server_that_answers() {
    for answer in [bad(), result(CheckStatus::L7Rsp)] {
        let (s, mut open) = unreachable_policy(OnError::FailCheck);
        for _ in 0..3 {
            s.record(answer.clone());
        }
        assert_eq!(s.state(), ServerState::Down);
        assert!(!s.usable(), "no new sessions");
        s.record(answer.clone());
        s.record(ok());
        assert!(
            !open.shutdown.has_changed().unwrap(),
            "{:?}: down but answering, sessions stay",
            answer.status
        );
        s.record(result(CheckStatus::L7Tout));
        open.shut_down().await;
        assert!(!open.shutdown.has_changed().unwrap());
        s.record(result(CheckStatus::L4Con));
        assert!(
            !open.shutdown.has_changed().unwrap(),
            "signalled once while unreachable"
        );
    }
}

#[tokio::test]
async fn shutdown_unreachable_closes_sessions_when_no_answer_marks_it_down() {
    for none in [CheckStatus::L4Con, CheckStatus::L4Tout, CheckStatus::L7Tout] {
        let (s, mut open) = unreachable_policy(OnError::FailCheck);
        s.record(bad());
        s.record(bad());
        assert_eq!(s.state(), ServerState::Up);
        s.record(result(none));
        assert_eq!(s.state(), ServerState::Down);
        open.shut_down().await;
    }
    // The result that marks it down decides: answering again, it is alive.
    let (s, open) = unreachable_policy(OnError::FailCheck);
    s.record(result(CheckStatus::L7Tout));
    s.record(result(CheckStatus::L7Tout));
    s.record(bad());
    assert_eq!(s.state(), ServerState::Down);
    assert!(!open.shutdown.has_changed().unwrap());
}

#[tokio::test]
async fn shutdown_unreachable_closes_on_passive_errors_and_maint() {
    let (s, mut open) = unreachable_policy(OnError::MarkDown);
    s.connect_failed(refused());
    assert_eq!(s.state(), ServerState::Down);
    open.shut_down().await;

    let (s, mut open) = unreachable_policy(OnError::FailCheck);
    s.set_admin(AdminState::Drain);
    assert!(!open.shutdown.has_changed().unwrap(), "drain keeps sessions");
    s.set_admin(AdminState::Maint);
    open.shut_down().await;
}

#[tokio::test]
async fn shutdown_sessions_closes_once_whatever_brought_it_down() {
    let mut s = server(2, 3);
    s.reactions.on_marked_down = OnMarkedDown::ShutdownSessions;
    let s = Arc::new(s);
    let mut open = SessionGuard::open(&s, None);
    s.record(bad());
    open.shut_down().await;
    s.record(result(CheckStatus::L7Tout));
    assert!(
        !open.shutdown.has_changed().unwrap(),
        "not signalled again when it stops answering"
    );
}

#[tokio::test]
async fn a_404_with_disable_on_404_drains_without_marking_down() {
    let mut s = server(2, 3);
    s.reactions.on_marked_down = OnMarkedDown::ShutdownSessions;
    let s = Arc::new(s);
    s.record(ok());
    let mut open = SessionGuard::open(&s, None);
    let soft = || CheckResult {
        status: CheckStatus::L7OkCond,
        code: Some(404),
        detail: String::new(),
    };
    s.record(soft());
    assert_eq!(s.state(), ServerState::Draining);
    assert!(!s.usable());
    assert!(!open.shutdown.has_changed().unwrap(), "its sessions stay");
    s.record(ok());
    assert_eq!(s.state(), ServerState::Up, "a plain success brings it back");
    s.record(soft());
    for _ in 0..3 {
        s.record(bad());
    }
    assert_eq!(s.state(), ServerState::Down, "failing while drained: down");
    open.shut_down().await;
    s.record(soft());
    s.record(soft());
    assert_eq!(s.state(), ServerState::Down, "404s do not bring a down server up");
    s.record(ok());
    s.record(ok());
    assert_eq!(s.state(), ServerState::Up);
}

#[test]
fn admin_states_override_health_in_the_shown_state() {
    let s = server(2, 3);
    s.set_admin(AdminState::Drain);
    assert_eq!(s.state(), ServerState::Draining);
    assert!(!s.usable());
    s.set_admin(AdminState::Maint);
    assert_eq!(s.state(), ServerState::Maint);
    s.set_admin(AdminState::Ready);
    assert!(s.usable());
}

#[test]
fn results_landing_in_maintenance_are_dropped() {
    let s = server(2, 3);
    s.set_admin(AdminState::Maint);
    s.record(bad());
    s.connect_failed(result(CheckStatus::L4Con));
    let view = s.view();
    assert_eq!(view.health, 2, "health untouched");
    assert!(view.last_check.is_none(), "no check result shown in maint");
    s.set_admin(AdminState::Ready);
    assert!(s.usable());
}

#[test]
fn slowstart_ramps_weight_after_coming_back_but_not_at_start() {
    let mut s = server(1, 1);
    s.weight = 100;
    s.slowstart = Duration::from_secs(3600);
    assert_eq!(s.effective_weight(), 100, "no slowstart at startup");
    s.set_admin(AdminState::Maint);
    s.set_admin(AdminState::Ready);
    let w = s.effective_weight();
    assert!((1..10).contains(&w), "{w}");
    assert!((1..10 * WEIGHT_SCALE).contains(&s.scaled_weight()));
    s.weight = 1;
    assert_eq!(s.effective_weight(), 1, "whole weights cannot ramp from 1");
    assert_eq!(s.scaled_weight(), 1, "scaled ones start at 1/16");
    s.slowstart = Duration::ZERO;
    assert_eq!(s.scaled_weight(), WEIGHT_SCALE);
    s.weight = 100;
    assert_eq!(s.effective_weight(), 100);
}

#[test]
fn session_guard_counts_current_max_and_total() {
    let s = Arc::new(server(1, 1));
    let a = SessionGuard::open(&s, None);
    let b = SessionGuard::open(&s, None);
    assert_eq!(s.sessions(), 2);
    drop(a);
    drop(b);
    let c = &s.shared.counters;
    assert_eq!(s.sessions(), 0);
    assert_eq!(c.max_sessions.load(Ordering::Relaxed), 2);
    assert_eq!(c.total_sessions.load(Ordering::Relaxed), 2);
}
