//! The lb's integration tests, one module per behaviour, in one test
//! binary (one link instead of one per file): most run the lb in-process
//! on port-0 sockets, the signal, reload and log tests run the binary.

mod support;

mod admin;
mod balance;
mod check_config;
mod closed_surface;
mod failover;
mod h2_websocket;
mod hash_balance;
mod head_watch;
mod health;
mod limits;
mod maxconn;
mod module_graph;
mod proxy;
mod proxy_protocol;
mod reload;
mod source_limits;
mod timeouts;
mod tls;
mod tunnel;
