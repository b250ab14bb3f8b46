//! Free loopback ports for tests, clusters, drills and benchmarks (never
//! the fixed ports of the real local cluster).
//!
//! They are taken below the kernel's ephemeral range. A process that is
//! stopped and started again on its port (a drill, a Redis restart, an app
//! coming back) must find the port free, but a port in the ephemeral range
//! can meanwhile become the source port of any outgoing connection on the
//! machine, and the restart then fails with "address in use". Ports below
//! the range are never handed out that way.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

use rand::Rng;

/// Lowest port used: above the fixed ports of the local cluster, also with
/// `lab up --port-offset 10000` (18443, 19001, …).
const LOW: u16 = 20000;
/// Ports this process has handed out, so clusters started at the same time
/// in one test binary never share one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that is free now, below the ephemeral range when the
/// machine leaves room there (else one the kernel picks).
pub fn free_loopback_port() -> io::Result<u16> {
    let high = ephemeral_low().saturating_sub(1);
    let mut rng = rand::rng();
    // Held across the bind checks: two threads cannot pick the same port.
    let mut taken = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    if high > LOW + 1000 {
        for _ in 0..256 {
            let port = rng.random_range(LOW..=high);
            if !taken.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                taken.insert(port);
                return Ok(port);
            }
        }
    }
    for _ in 0..64 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if taken.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free loopback port found",
    ))
}

/// A free loopback address (see [`free_loopback_port`]).
pub fn free_addr() -> io::Result<SocketAddr> {
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, free_loopback_port()?)))
}

/// Whether `addr` can be bound right now.
pub fn is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// First port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addrs_are_loopback_and_distinct() {
        let a = free_addr().unwrap();
        let b = free_addr().unwrap();
        assert!(a.ip().is_loopback());
        assert_ne!(a.port(), b.port());
        assert!(is_free(a));
    }

    #[test]
    fn a_bound_port_is_not_free() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!is_free(listener.local_addr().unwrap()));
    }

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_loopback_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        let high = ephemeral_low();
        if high > LOW + 1001 {
            assert!(ports.iter().all(|p| (LOW..high).contains(p)), "{ports:?}");
        }
        for p in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("still free");
        }
    }
}
