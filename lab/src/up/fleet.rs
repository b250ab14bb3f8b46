//! The configs `lab up` writes into its run directory when it runs another
//! number of apps than the committed two (`--apps N`) or runs on a Redis
//! Cluster: app1…appN and subscriber1…N made from the committed
//! `app1.toml` and `subscriber1.toml`, and the lb with N servers, made from
//! the committed `lb.toml` (so `balance = "hash"` on the room and every
//! other setting stays what users run). Every port follows the fixed
//! scheme — app i public `900i`, internal `910i`, subscriber i `920i` —
//! and moves with `--port-offset` like the rest (see `shift`). The
//! committed files are never written.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use wsmesh_redis_wire::keys::DEFAULT_URL;
use wsmesh_testkit::cluster::ClusterError;
use wsmesh_testkit::configs::{self, shift, AppConfig, LbConfig, SubscriberConfig};

use super::UpError;

/// The most apps the port scheme has room for (app 10 would take 9010, app
/// 1's neighbourhood of the next block).
pub const MAX_APPS: usize = 9;

/// First ports of the scheme before the offset: app i listens on
/// `PUBLIC + i` and `INTERNAL + i`, subscriber i on `HEALTH + i`.
const PUBLIC: u16 = 9000;
/// See `PUBLIC`.
const INTERNAL: u16 = 9100;
/// See `PUBLIC`.
const HEALTH: u16 = 9200;

/// What to write.
#[derive(Debug, Clone, Copy)]
pub struct Fleet<'a> {
    /// Apps (each with its subscriber), 1 to `MAX_APPS`.
    pub apps: usize,
    /// `--port-offset`, or 0.
    pub offset: u16,
    /// The Redis Cluster's nodes (moved already) when on a cluster; else
    /// Redis is where the committed configs say, moved by `offset`.
    pub cluster: Option<&'a [SocketAddr]>,
}

/// `127.0.0.1:(base + i + offset)`.
pub fn port(base: u16, i: usize, offset: u16) -> Result<SocketAddr, UpError> {
    let past = || UpError::PortPast {
        what: "app".into(),
        port: base.saturating_add(i as u16),
        offset,
    };
    let i = u16::try_from(i).map_err(|_| past())?;
    let port = base
        .checked_add(i)
        .and_then(|p| p.checked_add(offset))
        .ok_or_else(past)?;
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Writes `app1.toml`…, `subscriber1.toml`… and `lb.toml` (when the
/// committed directory has one) into `out`, from the configs in `committed`.
pub fn render(committed: &Path, out: &Path, fleet: Fleet<'_>) -> Result<(), UpError> {
    if !(1..=MAX_APPS).contains(&fleet.apps) {
        return Err(UpError::Apps(fleet.apps));
    }
    // The committed set moved first: Redis, the lb's listeners and its
    // certificate paths then need nothing more.
    let moved = out.join("committed");
    std::fs::create_dir_all(&moved).map_err(ClusterError::from)?;
    shift::render_dir(committed, &moved, fleet.offset)?;
    let load = |file: &str| moved.join(file);
    let nodes: Option<Vec<String>> = fleet
        .cluster
        .map(|nodes| nodes.iter().map(SocketAddr::to_string).collect());
    let mut servers = Vec::new();
    for i in 1..=fleet.apps {
        let name = format!("app{i}");
        let public = port(PUBLIC, i, fleet.offset)?;
        let internal = port(INTERNAL, i, fleet.offset)?;
        let mut app: AppConfig = configs::load(&load("app1.toml")).map_err(ClusterError::from)?;
        app.instance = name.clone();
        app.listen.public = public;
        app.listen.internal = internal;
        let mut sub: SubscriberConfig =
            configs::load(&load("subscriber1.toml")).map_err(ClusterError::from)?;
        sub.listen.health = port(HEALTH, i, fleet.offset)?;
        sub.app.internal_url = format!("http://{internal}");
        if let Some(nodes) = &nodes {
            app.redis.url = DEFAULT_URL.into();
            app.redis.sentinels.clear();
            app.redis.master_name = None;
            app.redis.cluster = nodes.clone();
            sub.redis.url = DEFAULT_URL.into();
            sub.redis.sentinels.clear();
            sub.redis.master_name = None;
            sub.redis.cluster = nodes.clone();
        }
        write(&app, &out.join(format!("{name}.toml")))?;
        write(&sub, &out.join(format!("subscriber{i}.toml")))?;
        servers.push((name, public));
    }
    let lb_file = load("lb.toml");
    if lb_file.exists() {
        let mut lb: LbConfig = configs::load(&lb_file).map_err(ClusterError::from)?;
        for backend in &mut lb.backends {
            let Some(first) = backend.servers.first().cloned() else {
                continue;
            };
            backend.servers = servers
                .iter()
                .map(|(name, addr)| {
                    let mut s = first.clone();
                    *s.name.get_mut() = name.clone();
                    *s.addr.get_mut() = addr.to_string();
                    s
                })
                .collect();
        }
        write(&lb, &out.join("lb.toml"))?;
    }
    Ok(())
}

fn write<T: serde::Serialize>(config: &T, path: &Path) -> Result<(), UpError> {
    Ok(configs::write(config, path).map_err(ClusterError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_apps_on_a_cluster_follow_the_port_scheme_and_the_lb_lists_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<SocketAddr> = vec![
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
        ];
        let fleet = Fleet {
            apps: 4,
            offset: 0,
            cluster: Some(&nodes),
        };
        render(&configs::configs_dir(), dir.path(), fleet).unwrap();
        let app: AppConfig = configs::load(&dir.path().join("app4.toml")).unwrap();
        assert_eq!(app.instance, "app4");
        assert_eq!(app.listen.public.port(), 9004);
        assert_eq!(app.listen.internal.port(), 9104);
        assert_eq!(app.redis.cluster, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert!(wsmesh_redis_wire::keys::is_default_url(&app.redis.url));
        let sub: SubscriberConfig = configs::load(&dir.path().join("subscriber3.toml")).unwrap();
        assert_eq!(sub.listen.health.port(), 9203);
        assert_eq!(sub.app.internal_url, "http://127.0.0.1:9103");
        assert_eq!(sub.redis.cluster.len(), 2);
        let lb: LbConfig = configs::load(&dir.path().join("lb.toml")).unwrap();
        let servers: Vec<String> = lb.backends[0]
            .servers
            .iter()
            .map(|s| format!("{}={}", s.name.get_ref(), s.addr.get_ref()))
            .collect();
        assert_eq!(
            servers,
            [
                "app1=127.0.0.1:9001",
                "app2=127.0.0.1:9002",
                "app3=127.0.0.1:9003",
                "app4=127.0.0.1:9004"
            ]
        );
        let committed: LbConfig = configs::committed("lb.toml").unwrap();
        assert_eq!(lb.backends[0].balance, committed.backends[0].balance);
        assert_eq!(lb.backends[0].hash_key, committed.backends[0].hash_key);
    }

    #[test]
    fn the_offset_moves_every_port_and_too_many_apps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet {
            apps: 3,
            offset: 1000,
            cluster: None,
        };
        render(&configs::configs_dir(), dir.path(), fleet).unwrap();
        let app: AppConfig = configs::load(&dir.path().join("app3.toml")).unwrap();
        assert_eq!(app.listen.public.port(), 10003);
        assert_eq!(app.redis.url, "redis://127.0.0.1:7390/");
        let err = render(&configs::configs_dir(), dir.path(), Fleet { apps: 10, ..fleet }).unwrap_err();
        assert!(err.to_string().contains("1 to 9"), "{err}");
    }
}
