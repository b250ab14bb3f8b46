//! The wsmesh chat server as a library: `main.rs` wires these parts into the
//! `app` binary, and the integration tests in `tests/` drive the Redis store
//! directly. The path of one chat reads through the modules: `ws` (socket) →
//! `store` (script: append + publish) → subscriber → `internal` → `hub`
//! (room fan-out) → `conversation` (write to each socket).

pub mod auth;
pub mod config;
pub mod conversation;
pub mod drain;
pub mod health;
pub mod hub;
pub mod internal;
pub mod legacy;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod page;
pub mod presence;
pub mod query;
pub mod routes;
pub mod server;
pub mod shared;
pub mod socket;
pub mod store;
pub mod upgrade;
pub mod ws;
