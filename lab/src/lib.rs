//! The wsmesh lab: `up` is the `lab up` launcher, `drill`, `bench` and
//! `netns` run the cluster under faults and load, `token` mints development
//! tokens for a cluster in jwt mode. The processes are started
//! by the `wsmesh-testkit` crate, the client it drives them with is the
//! `wsmesh-client` crate.

pub mod bench;
pub mod drill;
pub mod netns;
pub mod ports;
pub mod token;
pub mod up;
