//! Backends and their servers as the running lb sees them: configuration,
//! admin state (ready/drain/maint), health (up/down with HAProxy's rise/fall
//! counter), and the per-server counters the stats page and metrics show.
//!
//! A server's [`ServerShared`] outlives a reload when the server keeps its
//! name and address, so sessions, counters, health and pooled connections
//! carry over to the new configuration.

pub mod health;
pub mod pool;
pub mod select;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{self, Balance, OnError, OnMarkedDown};
use pool::Pool;

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

/// What the checks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// The state shown to operators, combining admin state and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Up,
    Down,
    Draining,
    Maint,
}

impl BackendState {
    /// The name used in the admin JSON and on the stats page.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Draining => "drain",
            BackendState::Maint => "maint",
        }
    }
}

/// Outcome of the last health check, with HAProxy's status names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// HTTP status as expected.
    L7Ok,
    /// 404 with `disable_on_404`: up, but draining itself.
    L7OkCond,
    /// Unexpected HTTP status.
    L7Sts,
    /// No valid HTTP status line.
    L7Rsp,
    /// Connected but no answer in time.
    L7Tout,
    /// Connection refused or reset.
    L4Con,
    /// Connect did not finish in time.
    L4Tout,
}

impl CheckStatus {
    /// HAProxy's short name (`L7OK`, `L4CON`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::L7Ok => "L7OK",
            CheckStatus::L7OkCond => "L7OKC",
            CheckStatus::L7Sts => "L7STS",
            CheckStatus::L7Rsp => "L7RSP",
            CheckStatus::L7Tout => "L7TOUT",
            CheckStatus::L4Con => "L4CON",
            CheckStatus::L4Tout => "L4TOUT",
        }
    }

    /// Whether the server gave no answer at all: connect refused or timed
    /// out, or connected and then nothing within the check's timeout. As
    /// with a frozen process, a cut link or a dead host, its open sessions
    /// are then as dead as it is. An unexpected status (`L7STS`) or a
    /// malformed or cut-short response (`L7RSP`) is an answer: something
    /// there is alive and reading, so `shutdown-unreachable` keeps its
    /// sessions (a dead process shows as `L4CON` on the next check).
    pub fn is_no_answer(self) -> bool {
        matches!(
            self,
            CheckStatus::L4Con | CheckStatus::L4Tout | CheckStatus::L7Tout
        )
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

/// One check result: the status and the words for the log.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Classification.
    pub status: CheckStatus,
    /// HTTP status code seen, if any.
    pub code: Option<u16>,
    /// Human-readable detail, e.g. "connection refused".
    pub detail: String,
}

/// Health bookkeeping, HAProxy style: `health` runs from 0 to
/// `rise + fall - 1`; the server is up while `health >= rise`.
#[derive(Debug)]
struct HealthCounter {
    /// Current position on the scale.
    health: u32,
    /// Current verdict.
    state: Health,
}

/// Mutable status of a server, behind one lock.
#[derive(Debug)]
struct Status {
    /// Admin state.
    admin: AdminState,
    /// Health counter and verdict.
    counter: HealthCounter,
    /// Last check outcome.
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

/// Counters shown on the stats page and in metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions now (requests in flight + open tunnels).
    pub sessions: AtomicUsize,
    /// Highest `sessions` seen.
    pub max_sessions: AtomicUsize,
    /// Sessions ever.
    pub total_sessions: AtomicU64,
    /// Body bytes from clients to this server.
    pub bytes_in: AtomicU64,
    /// Body bytes from this server to clients.
    pub bytes_out: AtomicU64,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub responses: [AtomicU64; 6],
    /// Connects that failed (refused or timed out).
    pub connect_errors: AtomicU64,
}

/// The part of a server that survives reloads.
#[derive(Debug)]
pub struct ServerShared {
    /// Status, behind a lock held only briefly.
    status: Mutex<Status>,
    /// Counters.
    pub counters: Counters,
    /// Idle keep-alive connections to this server.
    pub pool: Pool,
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
    /// Address of the server.
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

/// A backend as configured now.
#[derive(Debug)]
pub struct Backend {
    /// Name.
    pub name: String,
    /// Balancing algorithm.
    pub balance: Balance,
    /// Extra attempts after a failed connect (or a `retry_on` failure).
    pub retries: usize,
    /// Failures after which a request goes to the next server (`retry-on`).
    pub retry_on: Vec<config::RetryOn>,
    /// Active check settings, if any.
    pub check: Option<config::Check>,
    /// Servers in configuration order.
    pub servers: Vec<Arc<Server>>,
    /// Rotation counter for roundrobin and leastconn ties.
    pub rotation: AtomicUsize,
}

impl ServerShared {
    /// Fresh state: up (HAProxy starts servers up, one failed check away
    /// from down), ready, empty counters.
    pub fn new(rise: u32, pool_max_idle: usize) -> Arc<ServerShared> {
        let now = Instant::now();
        Arc::new(ServerShared {
            status: Mutex::new(Status {
                admin: AdminState::Ready,
                counter: HealthCounter {
                    health: rise,
                    state: Health::Up,
                },
                last_check: None,
                last_change: now,
                usable_since: None,
                consecutive_errors: 0,
                self_drained: false,
                down_cause: None,
            }),
            counters: Counters::default(),
            pool: Pool::new(pool_max_idle),
            shutdown: watch::Sender::new(0),
        })
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
    /// Shown state.
    pub state: BackendState,
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
    pub fn state(&self) -> BackendState {
        let s = self.shared.status();
        shown(&s)
    }

    /// Copy of the status for display.
    pub fn view(&self) -> StatusView {
        let s = self.shared.status();
        StatusView {
            state: shown(&s),
            last_check: s.last_check.clone(),
            health: s.counter.health,
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
            && s.counter.state == Health::Up
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
        self.update(result, |c, rise, max| match status {
            CheckStatus::L7Ok => step(c, true, rise, max),
            // HAProxy: a conditional pass keeps a running server up (and
            // draining); a down server needs a plain success to rise.
            CheckStatus::L7OkCond if c.state == Health::Up => step(c, true, rise, max),
            _ => step(c, false, rise, max),
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
            OnError::FailCheck => self.update(result, |c, rise, max| step(c, false, rise, max)),
            OnError::SuddenDeath => self.update(result, |c, rise, _| {
                if c.state == Health::Up {
                    // The lowest "up" position: the next failure takes it down.
                    c.health = c.health.min(rise);
                }
            }),
            OnError::MarkDown => self.update(result, |c, _, _| {
                c.health = 0;
                c.state = Health::Down;
            }),
        }
    }

    /// A connect to this server worked: the run of failed ones is over.
    pub fn connect_succeeded(&self) {
        if self.rise_fall.is_some() {
            self.shared.status().consecutive_errors = 0;
        }
    }

    /// Applies `change` to the health counter (given rise and the top of
    /// the scale), remembers `result` as the last check, and logs and acts
    /// on a change of the shown state.
    fn update(&self, result: CheckResult, change: impl FnOnce(&mut HealthCounter, u32, u32)) {
        let Some((rise, fall)) = self.rise_fall else {
            return;
        };
        let max = rise + fall - 1;
        let mut s = self.shared.status();
        // A check started before `maint` may finish after it; maintenance
        // means no checks, so its result (and any passive error) is dropped.
        if s.admin == AdminState::Maint {
            return;
        }
        let before = shown(&s);
        let was_down = s.counter.state == Health::Down;
        change(&mut s.counter, rise, max);
        let came_back = s.self_drained && result.status == CheckStatus::L7Ok;
        if (was_down && s.counter.state == Health::Up) || came_back {
            s.usable_since = Some(Instant::now());
        }
        match result.status {
            CheckStatus::L7Ok => s.self_drained = false,
            CheckStatus::L7OkCond if s.counter.state == Health::Up => s.self_drained = true,
            _ => {}
        }
        // The latest result decides whether a down server still answers;
        // once unreachable it stays so until it is up again, since its
        // sessions were dealt with then.
        let cause_before = s.down_cause;
        s.down_cause = match s.counter.state {
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
            let health = s.counter.health;
            drop(s);
            tracing::warn!(server = %self.name, addr = %self.addr, from = before.as_str(), to = after.as_str(), %reason, health, "server state changed");
            if let (BackendState::Down, Some(cause)) = (after, cause) {
                self.marked_down(&reason, SessionThreat::MarkedDown(cause));
            }
        } else if became_unreachable && after == BackendState::Down {
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
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.shared.counters.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Opens a session on this server; closed when the guard drops.
    pub fn open_session(self: &Arc<Self>) -> SessionGuard {
        let c = &self.shared.counters;
        let now = c.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        c.max_sessions.fetch_max(now, Ordering::Relaxed);
        c.total_sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard {
            server: self.clone(),
            shutdown: self.shared.shutdown.subscribe(),
        }
    }
}

/// One check outcome on HAProxy's health scale: a success climbs (and
/// jumps to the top on reaching `rise`), a failure steps down while above
/// `rise`, else the server goes down.
fn step(c: &mut HealthCounter, ok: bool, rise: u32, max: u32) {
    if ok {
        if c.health < max {
            c.health += 1;
            if c.health >= rise {
                c.health = max;
                c.state = Health::Up;
            }
        }
    } else if c.health > rise {
        c.health -= 1;
    } else {
        c.health = 0;
        c.state = Health::Down;
    }
}

fn shown(s: &Status) -> BackendState {
    match (s.admin, s.counter.state) {
        (AdminState::Maint, _) => BackendState::Maint,
        (_, Health::Down) => BackendState::Down,
        (AdminState::Drain, Health::Up) => BackendState::Draining,
        (AdminState::Ready, Health::Up) if s.self_drained => BackendState::Draining,
        (AdminState::Ready, Health::Up) => BackendState::Up,
    }
}

/// A session on a server; dropping it ends the session.
#[derive(Debug)]
pub struct SessionGuard {
    /// The server the session is on.
    pub server: Arc<Server>,
    /// The server's shutdown signal as it was when the session opened.
    shutdown: watch::Receiver<u64>,
}

impl SessionGuard {
    /// Resolves once the server's sessions are shut down (marked down or
    /// put in maintenance with `on_marked_down = "shutdown-sessions"`, or
    /// unreachable or in maintenance with `"shutdown-unreachable"`) after
    /// this session opened; never otherwise.
    pub async fn shut_down(&mut self) {
        if self.shutdown.changed().await.is_err() {
            // The sender lives as long as the server, which this guard
            // keeps alive, so this does not happen; never resolve if it did.
            std::future::pending::<()>().await;
        }
    }

    /// The same signal as [`SessionGuard::shut_down`], as a future that
    /// owns its receiver, for a response body that outlives the handler.
    pub fn shut_down_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.clone();
        async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.server
            .shared
            .counters
            .sessions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backend {
    /// Finds a server by name.
    pub fn server(&self, name: &str) -> Option<&Arc<Server>> {
        self.servers.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.state(), BackendState::Up);
        s.record(bad());
        assert_eq!(s.state(), BackendState::Down);
    }

    #[test]
    fn rise_successes_bring_it_up_and_fall_failures_take_it_down() {
        let s = server(2, 3);
        s.record(bad());
        s.record(ok());
        assert_eq!(s.state(), BackendState::Down, "one success is not enough");
        s.record(ok());
        assert_eq!(s.state(), BackendState::Up);
        s.record(bad());
        s.record(bad());
        assert_eq!(s.state(), BackendState::Up, "two failures are not enough");
        s.record(ok());
        s.record(bad());
        s.record(bad());
        assert_eq!(
            s.state(),
            BackendState::Up,
            "a success in between resets the count"
        );
        s.record(bad());
        assert_eq!(s.state(), BackendState::Down);
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
        assert_eq!(s.state(), BackendState::Down, "mark-down: at once");

        let s = fully_up(OnError::FailCheck, 1);
        s.connect_failed(refused());
        assert_eq!(
            (s.state(), s.view().health),
            (BackendState::Up, 3),
            "fail-check: one step"
        );

        let s = fully_up(OnError::SuddenDeath, 1);
        s.connect_failed(refused());
        assert_eq!(s.state(), BackendState::Up);
        s.record(bad());
        assert_eq!(s.state(), BackendState::Down, "sudden-death: one more failure");

        let s = fully_up(OnError::None, 1);
        s.connect_failed(refused());
        assert_eq!(
            (s.state(), s.view().health),
            (BackendState::Up, 4),
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
        assert_eq!(s.state(), BackendState::Up, "a success in between resets the run");
        s.connect_failed(refused());
        assert_eq!(s.state(), BackendState::Down);
        s.record(ok());
        s.record(ok());
        assert_eq!(s.state(), BackendState::Up, "checks bring it back after rise");
    }

    #[tokio::test]
    async fn shutdown_sessions_signals_sessions_open_at_mark_down_only() {
        let mut s = server(2, 3);
        s.reactions.on_marked_down = OnMarkedDown::ShutdownSessions;
        let s = Arc::new(s);
        let mut open = s.open_session();
        s.set_admin(AdminState::Drain);
        assert!(!open.shutdown.has_changed().unwrap(), "drain keeps sessions");
        s.set_admin(AdminState::Ready);
        s.record(bad());
        assert_eq!(s.state(), BackendState::Down);
        open.shut_down().await;
        let mut later = s.open_session();
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
        let open = s.open_session();
        (s, open)
    }

    #[tokio::test]
    async fn shutdown_unreachable_keeps_sessions_of_a_server_that_answers() {
        for answer in [bad(), result(CheckStatus::L7Rsp)] {
            let (s, mut open) = unreachable_policy(OnError::FailCheck);
            for _ in 0..3 {
                s.record(answer.clone());
            }
            assert_eq!(s.state(), BackendState::Down);
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
            assert_eq!(s.state(), BackendState::Up);
            s.record(result(none));
            assert_eq!(s.state(), BackendState::Down);
            open.shut_down().await;
        }
        // The result that marks it down decides: answering again, it is alive.
        let (s, open) = unreachable_policy(OnError::FailCheck);
        s.record(result(CheckStatus::L7Tout));
        s.record(result(CheckStatus::L7Tout));
        s.record(bad());
        assert_eq!(s.state(), BackendState::Down);
        assert!(!open.shutdown.has_changed().unwrap());
    }

    #[tokio::test]
    async fn shutdown_unreachable_closes_on_passive_errors_and_maint() {
        let (s, mut open) = unreachable_policy(OnError::MarkDown);
        s.connect_failed(refused());
        assert_eq!(s.state(), BackendState::Down);
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
        let mut open = s.open_session();
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
        let mut open = s.open_session();
        let soft = || CheckResult {
            status: CheckStatus::L7OkCond,
            code: Some(404),
            detail: String::new(),
        };
        s.record(soft());
        assert_eq!(s.state(), BackendState::Draining);
        assert!(!s.usable());
        assert!(!open.shutdown.has_changed().unwrap(), "its sessions stay");
        s.record(ok());
        assert_eq!(s.state(), BackendState::Up, "a plain success brings it back");
        s.record(soft());
        for _ in 0..3 {
            s.record(bad());
        }
        assert_eq!(s.state(), BackendState::Down, "failing while drained: down");
        open.shut_down().await;
        s.record(soft());
        s.record(soft());
        assert_eq!(
            s.state(),
            BackendState::Down,
            "404s do not bring a down server up"
        );
        s.record(ok());
        s.record(ok());
        assert_eq!(s.state(), BackendState::Up);
    }

    #[test]
    fn admin_states_override_health_in_the_shown_state() {
        let s = server(2, 3);
        s.set_admin(AdminState::Drain);
        assert_eq!(s.state(), BackendState::Draining);
        assert!(!s.usable());
        s.set_admin(AdminState::Maint);
        assert_eq!(s.state(), BackendState::Maint);
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
        let a = s.open_session();
        let b = s.open_session();
        assert_eq!(s.sessions(), 2);
        drop(a);
        drop(b);
        let c = &s.shared.counters;
        assert_eq!(s.sessions(), 0);
        assert_eq!(c.max_sessions.load(Ordering::Relaxed), 2);
        assert_eq!(c.total_sessions.load(Ordering::Relaxed), 2);
    }
}
