//! The lb as drills and the bench run it: the committed
//! `configs/local/lb.toml` (same timeouts, balance, checks, limits) with one
//! TLS frontend and backend per route, built from the committed first
//! frontend, backend and server, so what runs is the configuration users
//! start from.

use std::net::SocketAddr;
use std::path::Path;

use lb::config::{CertFiles, Frontend};

use super::{committed, ConfigError, LbConfig};

/// One frontend → backend pair.
#[derive(Debug, Clone)]
pub struct Route {
    /// Frontend and backend name.
    pub name: String,
    /// TLS listen address.
    pub listen: SocketAddr,
    /// Servers (name, address).
    pub servers: Vec<(String, SocketAddr)>,
}

/// The committed lb config with a TLS frontend (serving `cert` and `key`)
/// and a backend per route, the admin listener on `admin` without a token.
pub fn lb_config(
    routes: &[Route],
    cert: &Path,
    key: &Path,
    admin: SocketAddr,
) -> Result<LbConfig, ConfigError> {
    let mut config: LbConfig = committed("lb.toml")?;
    let missing = |what: &str| ConfigError::new(&super::configs_dir().join("lb.toml"), format!("no {what}"));
    let frontend = config
        .frontends
        .first()
        .cloned()
        .ok_or_else(|| missing("[[frontend]]"))?;
    let backend = config
        .backends
        .first()
        .cloned()
        .ok_or_else(|| missing("[[backend]]"))?;
    let server = backend
        .servers
        .first()
        .cloned()
        .ok_or_else(|| missing("[[backend.server]]"))?;
    config.frontends = routes
        .iter()
        .map(|route| {
            let mut f = Frontend::new(&route.name, route.listen, &route.name);
            f.certs = vec![CertFiles::new(cert, Some(key))];
            Frontend {
                name: f.name,
                listen: f.listen,
                backend: f.backend,
                certs: f.certs,
                ..frontend.clone()
            }
        })
        .collect();
    config.backends = routes
        .iter()
        .map(|route| {
            let mut b = backend.clone();
            *b.name.get_mut() = route.name.clone();
            b.servers = route
                .servers
                .iter()
                .map(|(name, addr)| {
                    let mut s = server.clone();
                    *s.name.get_mut() = name.clone();
                    *s.addr.get_mut() = addr.to_string();
                    s
                })
                .collect();
            b
        })
        .collect();
    config.admin = lb::config::Admin::new(admin);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_the_committed_settings() {
        let committed: LbConfig = committed("lb.toml").unwrap();
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let routes = [
            Route {
                name: "chat".into(),
                listen: addr(1),
                servers: vec![("a".into(), addr(2)), ("b".into(), addr(3))],
            },
            Route {
                name: "echo".into(),
                listen: addr(4),
                servers: vec![("c".into(), addr(5))],
            },
        ];
        let c = lb_config(&routes, Path::new("/c.pem"), Path::new("/c.key"), addr(6)).unwrap();
        assert_eq!(c.frontends.len(), 2);
        assert_eq!(
            c.frontends[1].backend.as_ref().map(|b| b.get_ref().as_str()),
            Some("echo")
        );
        assert_eq!(c.frontends[1].listen.get_ref(), "127.0.0.1:4");
        assert_eq!(c.frontends[0].certs[0].cert.get_ref(), "/c.pem");
        assert_eq!(c.frontends[0].deny, committed.frontends[0].deny);
        assert_eq!(c.backends[0].servers[1].addr.get_ref(), "127.0.0.1:3");
        assert_eq!(c.backends[1].name.get_ref(), "echo");
        assert_eq!(c.backends[1].check, committed.backends[0].check);
        assert_eq!(c.backends[1].balance, committed.backends[0].balance);
        assert_eq!(c.timeouts, committed.timeouts);
        assert_eq!(c.admin.listen.get_ref(), "127.0.0.1:6");
        assert_eq!(c.admin.token, "");
    }
}
