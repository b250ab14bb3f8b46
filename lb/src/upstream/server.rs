//! A server as the running lb sees it: configuration, admin state
//! (ready/drain/maint), health from the rise/fall state machine, and what
//! being marked down or failing connects does to it and its sessions.
//!
//! A server's [`ServerShared`] outlives a reload when the server keeps its
//! name and address, so sessions, counters, health and pooled connections
//! carry over to the new configuration.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::check_result::{CheckResult, CheckStatus};
use super::counters::Counters;
use super::h1::Pool;
use super::rise_fall::{Health, HealthCounter};
use crate::config::{self, OnError, OnMarkedDown};

/// Steps per unit of weight in `Server::scaled_weight` (HAProxy's
/// `BE_WEIGHT_SCALE`).
pub const WEIGHT_SCALE: u32 = 16;

/// What the admin asked for (HAProxy `set server … state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Normal operation.
    Ready,
    /// No new sessions; established ones stay; checks go on.
    Drain,
    /// No traffic and no checks.
    Maint,
}

/// A server's state as operators see it, combining admin state and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Up,
    Down,
    Draining,
    Maint,
}

impl ServerState {
    /// The name used in the admin JSON and on the stats page.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Down => "down",
            ServerState::Draining => "drain",
            ServerState::Maint => "maint",
        }
    }
}

/// Why a down server is down, as `shutdown-unreachable` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownCause {
    /// The result that took it down was an answer (a 503 while draining or
    /// over capacity, a bad response): the server is alive, its sessions
    /// may still be served.
    Answering,
    /// The result that took it down, or one since, got no answer.
    Unreachable,
}

/// What may close a server's open sessions, weighed by `on_marked_down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionThreat {
    /// The admin put it in maintenance (HAProxy: as being marked down).
    Maintenance,
    /// Checks or passive health marked it down, for this cause.
    MarkedDown(DownCause),
    /// Already down by its answers, it has now stopped answering.
    BecameUnreachable,
}

/// Mutable status of a server, behind one lock.
#[derive(Debug)]
struct Status {
    /// What the admin asked for; maintenance overrides health.
    admin: AdminState,
    /// Where the rise/fall state machine stands.
    counter: HealthCounter,
    /// Last check outcome, shown to operators; cleared on entering maintenance.
    last_check: Option<CheckResult>,
    /// When the shown state last changed.
    last_change: Instant,
    /// When the server last came back (up from down, or ready from
    /// drain/maint), for slowstart; `None` since start, as HAProxy applies
    /// no slowstart at startup.
    usable_since: Option<Instant>,
    /// Refused or timed-out connects in a row, for `error_limit`.
    consecutive_errors: u32,
    /// The server's check asked for drain (404 with `disable_on_404`):
    /// no new sessions until a plain success (HAProxy's NOLB).
    self_drained: bool,
    /// While down: whether it still answers, which decides what
    /// `shutdown-unreachable` does to its sessions; `None` while up.
    down_cause: Option<DownCause>,
}

/// The part of a server that survives reloads.
#[derive(Debug)]
pub struct ServerShared {
    /// Status, behind a lock held only briefly.
    status: Mutex<Status>,
    /// What the stats page and metrics show for this server.
    pub counters: Counters,
    /// Idle keep-alive connections to this server.
    pub pool: Arc<Pool>,
    /// Bumped to close every open session (`on_marked_down` is
    /// `shutdown-sessions` or `shutdown-unreachable`); each session watches
    /// it from its start, so sessions opened afterwards are not affected.
    shutdown: watch::Sender<u64>,
}

/// A server as configured now, plus its shared state.
#[derive(Debug)]
pub struct Server {
    /// Name, unique in the configuration.
    pub name: String,
    /// Where requests, tunnels and checks connect.
    pub addr: SocketAddr,
    /// Configured weight (0–256).
    pub weight: u32,
    /// Session limit; 0: none.
    pub maxconn: usize,
    /// Only used when no regular server is usable.
    pub backup: bool,
    /// Weight ramp after coming up.
    pub slowstart: Duration,
    /// Health thresholds (rise, fall); `None` without active checks, when
    /// nothing could bring a server back up and so nothing takes it down.
    rise_fall: Option<(u32, u32)>,
    /// What being marked down and failed connects do to this server.
    pub reactions: Reactions,
    /// State and counters kept across reloads.
    pub shared: Arc<ServerShared>,
}

/// How a server reacts to trouble, from its backend's settings and its own
/// overrides (HAProxy `on-marked-down`, `on-error`, `error-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reactions {
    /// What happens to open sessions when the server is marked down or
    /// put in maintenance.
    pub on_marked_down: OnMarkedDown,
    /// What `error_limit` failed connects in a row do to its health.
    pub on_error: OnError,
    /// Failed connects in a row that trigger `on_error`.
    pub error_limit: u32,
}

impl Default for Reactions {
    /// The lb's behaviour before these were configurable: sessions stay,
    /// each failed connect counts as one failed check.
    fn default() -> Self {
        Reactions {
            on_marked_down: OnMarkedDown::None,
            on_error: OnError::FailCheck,
            error_limit: 1,
        }
    }
}

impl Reactions {
    /// The server's own settings over its backend's.
    pub fn of(backend: &config::Backend, server: &config::Server) -> Reactions {
        Reactions {
            on_marked_down: server.on_marked_down.unwrap_or(backend.on_marked_down),
            on_error: server.on_error.unwrap_or(backend.on_error),
            error_limit: server.error_limit.unwrap_or(backend.error_limit).max(1),
        }
    }
}

impl ServerShared {
    /// Fresh state: up (HAProxy starts servers up, one failed check away
    /// from down), ready, empty counters.
    pub fn new(rise: u32, pool_max_idle: usize) -> Arc<ServerShared> {
        let now = Instant::now();
        Arc::new(ServerShared {
            status: Mutex::new(Status {
                admin: AdminState::Ready,
                counter: HealthCounter::starting(rise),
                last_check: None,
                last_change: now,
                usable_since: None,
                consecutive_errors: 0,
                self_drained: false,
                down_cause: None,
            }),
            counters: Counters::default(),
            pool: Arc::new(Pool::new(pool_max_idle)),
            shutdown: watch::Sender::new(0),
        })
    }

    /// The shutdown signal as it is now: a session watching it is told
    /// about shutdowns from now on only.
    pub fn shutdown_signal(&self) -> watch::Receiver<u64> {
        self.shutdown.subscribe()
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        // A panic while holding this lock cannot leave it inconsistent
        // (plain field writes), so a poisoned lock is still usable.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A consistent copy of a server's status, for display.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// The state as the admin API and stats page show it.
    pub state: ServerState,
    /// Last check, if any ran.
    pub last_check: Option<CheckResult>,
    /// Health counter position.
    pub health: u32,
    /// Time since the shown state changed.
    pub since_change: Duration,
}

impl Server {
    pub fn new(
        cfg: &config::Server,
        addr: SocketAddr,
        check: Option<&config::Check>,
        shared: Arc<ServerShared>,
    ) -> Server {
        Server {
            name: cfg.name.get_ref().clone(),
            addr,
            weight: cfg.weight,
            maxconn: cfg.maxconn,
            backup: cfg.backup,
            slowstart: cfg.slowstart,
            rise_fall: check.map(|c| (c.rise, c.fall)),
            reactions: Reactions::default(),
            shared,
        }
    }

    /// State shown to operators.
    pub fn state(&self) -> ServerState {
        let s = self.shared.status();
        shown(&s)
    }

    /// Copy of the status for display.
    pub fn view(&self) -> StatusView {
        let s = self.shared.status();
        StatusView {
            state: shown(&s),
            last_check: s.last_check.clone(),
            health: s.counter.position(),
            since_change: s.last_change.elapsed(),
        }
    }

    /// Admin state.
    pub fn admin_state(&self) -> AdminState {
        self.shared.status().admin
    }

    /// Sessions now.
    pub fn sessions(&self) -> usize {
        self.shared.counters.sessions.load(Ordering::Relaxed)
    }

    /// Whether new sessions may go here: ready, up, weight > 0, below maxconn.
    pub fn usable(&self) -> bool {
        let s = self.shared.status();
        s.admin == AdminState::Ready
            && s.counter.state() == Health::Up
            && !s.self_drained
            && self.weight > 0
            && (self.maxconn == 0 || self.sessions() < self.maxconn)
    }

    /// Share of the weight in force during `slowstart` after coming back:
    /// in (0, 1), or `None` when no ramp is under way.
    fn ramp(&self) -> Option<f64> {
        if self.slowstart.is_zero() {
            return None;
        }
        let up_for = self.shared.status().usable_since?.elapsed();
        (up_for < self.slowstart).then(|| up_for.as_secs_f64() / self.slowstart.as_secs_f64())
    }

    /// Weight in force now: ramps up during `slowstart` after coming up.
    /// Never below 1 for a usable server, so it can still be picked.
    pub fn effective_weight(&self) -> u32 {
        match self.ramp() {
            None => self.weight,
            Some(share) => ((f64::from(self.weight) * share).ceil() as u32).clamp(1, self.weight.max(1)),
        }
    }

    /// `effective_weight` in 1/WEIGHT_SCALE steps, as HAProxy computes its
    /// `eweight`: leastconn uses it, so a server of weight 1 ramps too
    /// (whole weights would jump from 1 to 1).
    pub fn scaled_weight(&self) -> u32 {
        let full = self.weight * WEIGHT_SCALE;
        match self.ramp() {
            None => full,
            Some(share) => ((f64::from(full) * share).ceil() as u32).clamp(1, full.max(1)),
        }
    }

    /// Changes the admin state; returns the previous one.
    pub fn set_admin(&self, admin: AdminState) -> AdminState {
        let mut s = self.shared.status();
        let before = shown(&s);
        let previous = std::mem::replace(&mut s.admin, admin);
        if admin == AdminState::Ready && previous != AdminState::Ready {
            s.usable_since = Some(Instant::now());
        }
        if admin == AdminState::Maint {
            // HAProxy: a server leaving maintenance is checked afresh.
            s.last_check = None;
        }
        let after = shown(&s);
        if before != after {
            s.last_change = Instant::now();
            tracing::warn!(server = %self.name, from = before.as_str(), to = after.as_str(), reason = "admin request", "server state changed");
        }
        drop(s);
        // HAProxy treats entering maintenance as being marked down; drain
        // is not, so drained sessions keep running.
        if admin == AdminState::Maint && previous != AdminState::Maint {
            self.marked_down("maintenance", SessionThreat::Maintenance);
        }
        previous
    }

    /// Feeds one active check result into the rise/fall counter, logging
    /// any state change with its reason.
    pub fn record(&self, result: CheckResult) {
        let status = result.status;
        self.update(result, |c, rise, fall| match status {
            CheckStatus::L7Ok => c.observe(true, rise, fall),
            // HAProxy: a conditional pass keeps a running server up (and
            // draining); a down server needs a plain success to rise.
            CheckStatus::L7OkCond if c.state() == Health::Up => c.observe(true, rise, fall),
            _ => c.observe(false, rise, fall),
        });
    }

    /// Passive health: a connect to this server was refused or timed out.
    /// Once `error_limit` happened in a row, `on_error` decides what it does
    /// to the server's health. Only for servers with active checks, since
    /// nothing else could bring them back.
    pub fn connect_failed(&self, result: CheckResult) {
        if self.rise_fall.is_none() {
            return;
        }
        {
            let mut s = self.shared.status();
            s.consecutive_errors += 1;
            if s.consecutive_errors < self.reactions.error_limit {
                return;
            }
            s.consecutive_errors = 0;
        }
        match self.reactions.on_error {
            OnError::None => {}
            OnError::FailCheck => self.update(result, |c, rise, fall| c.observe(false, rise, fall)),
            OnError::SuddenDeath => self.update(result, |c, rise, _| c.one_failure_from_down(rise)),
            OnError::MarkDown => self.update(result, |c, _, _| c.mark_down()),
        }
    }

    /// A connect to this server worked: the run of failed ones is over.
    pub fn connect_succeeded(&self) {
        if self.rise_fall.is_some() {
            self.shared.status().consecutive_errors = 0;
        }
    }

    /// Applies `change` to the health counter (given rise and fall),
    /// remembers `result` as the last check, and logs and acts
    /// on a change of the shown state.
    fn update(&self, result: CheckResult, change: impl FnOnce(&mut HealthCounter, u32, u32)) {
        let Some((rise, fall)) = self.rise_fall else {
            return;
        };
        let mut s = self.shared.status();
        // A check started before `maint` may finish after it; maintenance
        // means no checks, so its result (and any passive error) is dropped.
        if s.admin == AdminState::Maint {
            return;
        }
        let before = shown(&s);
        let was_down = s.counter.state() == Health::Down;
        change(&mut s.counter, rise, fall);
        let came_back = s.self_drained && result.status == CheckStatus::L7Ok;
        if (was_down && s.counter.state() == Health::Up) || came_back {
            s.usable_since = Some(Instant::now());
        }
        match result.status {
            CheckStatus::L7Ok => s.self_drained = false,
            CheckStatus::L7OkCond if s.counter.state() == Health::Up => s.self_drained = true,
            _ => {}
        }
        // The latest result decides whether a down server still answers;
        // once unreachable it stays so until it is up again, since its
        // sessions were dealt with then.
        let cause_before = s.down_cause;
        s.down_cause = match s.counter.state() {
            Health::Up => None,
            Health::Down if result.status.is_no_answer() => Some(DownCause::Unreachable),
            Health::Down => Some(cause_before.unwrap_or(DownCause::Answering)),
        };
        let became_unreachable =
            cause_before == Some(DownCause::Answering) && s.down_cause == Some(DownCause::Unreachable);
        let cause = s.down_cause;
        let reason = format!(
            "{}{}{}",
            result.status.as_str(),
            result.code.map(|c| format!(" {c}")).unwrap_or_default(),
            if result.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", result.detail)
            }
        );
        s.last_check = Some(result);
        let after = shown(&s);
        if before != after {
            s.last_change = Instant::now();
            let health = s.counter.position();
            drop(s);
            tracing::warn!(server = %self.name, addr = %self.addr, from = before.as_str(), to = after.as_str(), %reason, health, "server state changed");
            if let (ServerState::Down, Some(cause)) = (after, cause) {
                self.marked_down(&reason, SessionThreat::MarkedDown(cause));
            }
        } else if became_unreachable && after == ServerState::Down {
            drop(s);
            self.marked_down(&reason, SessionThreat::BecameUnreachable);
        }
    }

    /// The server was marked down, put in maintenance or, while down,
    /// stopped answering: `on_marked_down` decides whether every open
    /// session on it is told to close.
    fn marked_down(&self, reason: &str, threat: SessionThreat) {
        let policy = self.reactions.on_marked_down;
        let close = match (policy, threat) {
            (OnMarkedDown::None, _) => false,
            // Closed when it was marked down already.
            (OnMarkedDown::ShutdownSessions, SessionThreat::BecameUnreachable) => false,
            (OnMarkedDown::ShutdownSessions, _) => true,
            (OnMarkedDown::ShutdownUnreachable, SessionThreat::MarkedDown(DownCause::Answering)) => {
                tracing::info!(server = %self.name, sessions = self.sessions(), %reason, "the server still answers: keeping its sessions until it stops (on_marked_down = shutdown-unreachable)");
                false
            }
            (OnMarkedDown::ShutdownUnreachable, _) => true,
        };
        if !close {
            return;
        }
        let open = self.sessions();
        self.shared.shutdown.send_modify(|n| *n = n.wrapping_add(1));
        // Idle pooled connections to it are of no use any more either.
        self.shared.pool.clear();
        tracing::warn!(server = %self.name, sessions = open, %reason, on_marked_down = policy.as_str(), "shutting down the server's sessions");
    }

    /// Counts a response's status class.
    pub fn count_response(&self, status: u16) {
        self.shared.counters.count_response(status);
    }
}

/// The state operators see, from the admin state, health and self-drain.
fn shown(s: &Status) -> ServerState {
    match (s.admin, s.counter.state()) {
        (AdminState::Maint, _) => ServerState::Maint,
        (_, Health::Down) => ServerState::Down,
        (AdminState::Drain, Health::Up) => ServerState::Draining,
        (AdminState::Ready, Health::Up) if s.self_drained => ServerState::Draining,
        (AdminState::Ready, Health::Up) => ServerState::Up,
    }
}

#[cfg(test)]
mod tests;
