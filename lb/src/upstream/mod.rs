//! Backends and their servers as the running lb sees them: the server and
//! backend model, the health rise/fall state machine, active checks, the
//! per-server counters and sessions, pooled server connections, and the
//! choice of a server for each request.

mod backend;
mod check_result;
mod counters;
pub mod h1;
pub mod health;
mod open_keys;
mod rise_fall;
pub mod select;
mod server;
mod session;

pub use backend::Backend;
pub use check_result::{CheckResult, CheckStatus};
pub use server::{AdminState, Reactions, Server, ServerShared, ServerState};
pub use session::SessionGuard;
