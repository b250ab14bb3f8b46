//! Code that the wsmesh binaries share because it is the same thing on both
//! sides of a wire or a file: the client protocol, the internal event batch,
//! Redis stream ids, config loading with `file:line: reason` errors, retry
//! backoff, log setup and the shared part of each `main`. Nothing binary-specific belongs here.

pub mod backoff;
pub mod chat;
pub mod cli;
pub mod config;
pub mod events;
pub mod logging;
pub mod protocol;
pub mod signal;
pub mod stream_id;
