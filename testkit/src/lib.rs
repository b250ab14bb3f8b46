//! The one harness of wsmesh: every crate's end-to-end tests, the drills,
//! the bench and `lab up` start their processes through it.
//!
//! - [`ports`]: free loopback ports below the ephemeral range;
//! - [`process`]: one supervised child (health, signals, captured log, kill on drop);
//! - [`redis`]: a `redis-server` that can be stopped and started on its port;
//! - [`sentinel`]: a master, a replica and three Sentinels, for failovers;
//! - [`redis_cluster`]: a 3-master, 3-replica Redis Cluster, and which
//!   master owns a key's slot;
//! - [`eventually`]: the one polling wait of the tests;
//! - [`configs`]: app, subscriber and lb configs as typed values, loaded from
//!   the committed `configs/local/*.toml` and written with `toml::to_string`;
//! - [`cluster`]: a set of real processes and the local test cluster.

pub mod bytes;
pub mod cluster;
pub mod configs;
pub mod eventually;
pub mod metrics;
pub mod ports;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod sentinel;

pub use eventually::eventually;
