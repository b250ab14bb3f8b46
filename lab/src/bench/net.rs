//! Dialling for the load generator: one `Target` type for "plain TCP straight
//! to a backend" and "TLS to a proxy", and connections that bind a chosen
//! 127.0.0.x source address first, so a run that opens and closes many
//! connections spreads its TIME_WAIT sockets over several source addresses
//! instead of running out of ephemeral ports on one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpSocket;

use wsmesh_client::Io;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP connect (or bind of the source address) failed.
    #[error("connect {addr}: {source}")]
    Tcp {
        /// The proxy or backend that did not accept.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS to {addr}: {source}")]
    Tls {
        /// Destination.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// Where the load goes: an address, and TLS when it is a proxy's frontend.
#[derive(Clone)]
pub struct Target {
    /// Destination address.
    pub addr: SocketAddr,
    /// Client TLS configuration and server name; `None` for plain TCP.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// A bearer token the chat clients put in the `/ws` query (`lab bench
    /// --auth`: the wsmesh apps run in jwt mode).
    pub token: Option<Arc<str>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// Plain TCP to `addr`.
    pub fn plain(addr: SocketAddr) -> Target {
        Target {
            addr,
            tls: None,
            token: None,
        }
    }

    /// TLS to `addr`, verifying the certificate for `addr`'s IP against `config`'s roots.
    pub fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Target {
        let name = ServerName::IpAddress(addr.ip().into());
        Target {
            addr,
            tls: Some((config, name)),
            token: None,
        }
    }

    /// `ws` or `wss`, for request URLs.
    pub fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }
}

/// Source addresses handed out round robin (127.0.0.2 … 127.0.0.(1+n)).
#[derive(Debug)]
pub struct Sources {
    /// 127.0.0.2 onwards, so many connections do not run out of source ports.
    addrs: Vec<IpAddr>,
    /// Counter for the round robin.
    next: AtomicUsize,
}

impl Sources {
    /// `n` loopback source addresses, starting at 127.0.0.2 (at least one).
    pub fn loopback(n: u8) -> Arc<Sources> {
        let addrs = (0..n.max(1))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i.min(250))))
            .collect();
        Arc::new(Sources {
            addrs,
            next: AtomicUsize::new(0),
        })
    }

    /// The next source address.
    pub fn pick(&self) -> IpAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.addrs[i % self.addrs.len()]
    }
}

/// Connects to `target` from `source` (port chosen by the kernel), TLS on top
/// when the target asks for it. Nagle is off: the load is small requests.
pub async fn dial(target: &Target, source: IpAddr) -> Result<Box<dyn Io>, DialError> {
    let addr = target.addr;
    let tcp_err = |source| DialError::Tcp { addr, source };
    let socket = TcpSocket::new_v4().map_err(tcp_err)?;
    // Lets a source port in TIME_WAIT towards another destination be reused.
    socket.set_reuseaddr(true).map_err(tcp_err)?;
    socket.bind(SocketAddr::new(source, 0)).map_err(tcp_err)?;
    let tcp = socket.connect(addr).await.map_err(tcp_err)?;
    tcp.set_nodelay(true).map_err(tcp_err)?;
    match &target.tls {
        None => Ok(Box::new(tcp)),
        Some((config, name)) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), tcp)
                .await
                .map_err(|source| DialError::Tls { addr, source })?;
            Ok(Box::new(tls))
        }
    }
}
