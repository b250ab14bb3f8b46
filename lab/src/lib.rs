//! The wsmesh lab: everything to run and test the cluster on one machine.
//! `cluster` and `process` start real processes, `up` is the `lab up`
//! launcher; the client it drives the cluster with is the `wsmesh-client`
//! crate.

pub mod bench;
pub mod cluster;
pub mod drill;
pub mod netns;
pub mod ports;
pub mod process;
pub mod shift;
pub mod up;
