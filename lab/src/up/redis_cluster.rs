//! The Redis side of `lab up --redis cluster`: six `redis-server`s in
//! cluster mode on loopback, made three masters with a replica each by
//! `redis-cli --cluster create`. Their ports are a fixed block (no config
//! file names them), moved by `--port-offset` like everything else; each
//! node's cluster bus is its port + 10000, Redis's own convention. The
//! data starts afresh every run: a cluster is made once per run.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use wsmesh_testkit::process::ProcessSpec;
use wsmesh_testkit::redis_cluster;

use super::UpError;

/// Node ports before `--port-offset`; the first three become masters.
pub const NODE_PORTS: [u16; 6] = [7001, 7002, 7003, 7004, 7005, 7006];

/// A node's cluster bus port is its port plus this.
pub const BUS_OFFSET: u16 = 10000;

/// The nodes' addresses, moved by `offset`.
pub fn nodes(offset: u16) -> Result<Vec<SocketAddr>, UpError> {
    NODE_PORTS
        .iter()
        .map(|&port| {
            port.checked_add(offset)
                .filter(|p| p.checked_add(BUS_OFFSET).is_some())
                .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
                .ok_or(UpError::PortPast {
                    what: "Redis Cluster node".into(),
                    port,
                    offset,
                })
        })
        .collect()
}

/// `redis-node1…` on `nodes`, data and `nodes-PORT.conf` in `dir/<name>`.
pub fn specs(nodes: &[SocketAddr], dir: &Path) -> std::io::Result<Vec<ProcessSpec>> {
    let mut specs = Vec::new();
    for (i, addr) in nodes.iter().enumerate() {
        let name = format!("redis-node{}", i + 1);
        let data = dir.join(&name);
        std::fs::create_dir_all(&data)?;
        // `nodes` checked that the bus port fits.
        let bus = addr.port().saturating_add(BUS_OFFSET);
        specs.push(redis_cluster::node_spec(&name, *addr, bus, &data));
    }
    Ok(specs)
}

/// Makes the running nodes a cluster (three masters, one replica each) and
/// waits until every node says `cluster_state:ok` and knows the others.
pub async fn create(nodes: &[SocketAddr]) -> Result<(), UpError> {
    redis_cluster::create(nodes, redis_cluster::REPLICAS_PER_MASTER)
        .await
        .map_err(|e| UpError::ClusterCreate(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_move_with_the_offset_and_their_bus_must_fit() {
        let moved = nodes(1000).unwrap();
        assert_eq!(moved[0].to_string(), "127.0.0.1:8001");
        assert_eq!(moved[5].port(), 8006);
        let err = nodes(60000).unwrap_err().to_string();
        assert!(err.contains("7001"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let specs = specs(&nodes(0).unwrap(), dir.path()).unwrap();
        let bus: Vec<u16> = specs.iter().map(|s| s.listens[1].0.port()).collect();
        assert_eq!(bus, [17001, 17002, 17003, 17004, 17005, 17006]);
    }
}
