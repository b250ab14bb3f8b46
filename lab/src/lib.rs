//! The wsmesh lab: everything to run and test the cluster on one machine.
//! `cluster` and `process` start real processes, `client` and `session` speak
//! the client protocol, `up` is the `lab up` launcher and `line_chat` the
//! interactive `lab chat`.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod drill;
pub mod http;
pub mod line_chat;
pub mod netns;
pub mod ports;
pub mod process;
pub mod session;
pub mod shift;
pub mod tls;
pub mod up;
