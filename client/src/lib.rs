//! The Rust client of wsmesh.
//!
//! [`Connection`] is one WebSocket connection that does exactly what it is
//! told (tests send hostile frames with it); [`resilient::ResilientClient`]
//! behaves the way the protocol asks real clients to behave: it reconnects,
//! resumes and re-sends until acked. `line_chat` is the terminal chat behind
//! `lab chat`; `tls` and `http` are the small helpers the clients, drills and
//! tests share.

mod connection;
mod endpoint;
mod error;
pub mod http;
pub mod line_chat;
mod options;
pub mod resilient;
pub mod tls;

pub use connection::{CloseInfo, Connection, Incoming, Io, Welcome};
pub use endpoint::{Endpoint, Scheme};
pub use error::ClientError;
pub use options::{ConnectOptions, Protocol};
