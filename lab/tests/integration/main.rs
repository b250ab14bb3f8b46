//! lab's end-to-end tests, one module per behaviour, in one test binary
//! (one link instead of one per file). Each starts its own processes
//! through `wsmesh-testkit` on free loopback ports.

mod bad_input;
mod bench_smoke;
mod chat;
mod cluster_drills;
mod configs;
mod drills;
mod health;
mod idempotency;
mod lab_up;
mod lb_chat;
mod netns;
mod presence;
mod redis_restart;
mod resilient;
mod resume;
mod seed_formats;
mod sessions;
mod subscriber_failover;
mod up;
mod up_cluster;
mod up_ha;
