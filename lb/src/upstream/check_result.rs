//! What one check of a server found, active (the health checker) or
//! passive (a client request's failed connect), with HAProxy's status names.

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

/// One check result: the status and the words for the log.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// What the outcome means for health (and for `shutdown-unreachable`).
    pub status: CheckStatus,
    /// HTTP status code seen, if any.
    pub code: Option<u16>,
    /// Human-readable detail, e.g. "connection refused".
    pub detail: String,
}
