//! Test harness for the lb: certificates made with rcgen in a temp dir, the
//! lb started in-process with a config built as a value (or as the real `lb`
//! binary through `wsmesh-testkit`, in `process`, where a test needs signals
//! or its log), real in-test backends (HTTP + WebSocket echo, health that can
//! be flipped), and TLS / WebSocket / admin clients. Everything binds
//! loopback only and is cleaned up on drop.
//! Over 600 lines because it is one harness (certificates, backends, lb,
//! clients) of lb-specific parts.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
pub use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};
use tokio_tungstenite::WebSocketStream;

use lb::config::{Admin, CertFiles, Check, Frontend, Server};
#[allow(unused_imports)] // each test file uses a different part of the harness
pub use lb::config::{Balance, OnError, OnMarkedDown, RetryOn, Timeouts};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// A free loopback port below the ephemeral range, so a server stopped and
/// started again on it finds it free.
pub fn free_port() -> u16 {
    wsmesh_testkit::ports::free_loopback_port().expect("a free loopback port")
}

/// Polls `f` every 50 ms until it is true, at most `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wsmesh_testkit::eventually(Duration::from_secs(secs), what, f).await
}

// ---------------------------------------------------------------- certificates

/// A CA and certificates it signed, in a temp dir.
pub struct Certs {
    pub dir: tempfile::TempDir,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: PathBuf,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write ca");
        Certs {
            ca_der: ca.der().clone(),
            dir,
            ca_key,
            ca_params,
            ca_pem,
        }
    }

    /// Writes `<file>.pem` + `<file>.key` for `names`; returns (cert, key).
    pub fn server(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(names);
        let c = self.dir.path().join(format!("{file}.pem"));
        let k = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&c, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        (c, k)
    }

    /// Writes a HAProxy-style combined PEM (key, then chain) for `names`.
    pub fn combined(&self, file: &str, names: &[&str]) -> PathBuf {
        let (cert, key) = self.issue(names);
        let c = self.dir.path().join(format!("{file}.pem"));
        std::fs::write(&c, format!("{key}{cert}")).expect("write combined");
        c
    }

    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// A rustls client config trusting this CA, with the given ALPN.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }
}

// ---------------------------------------------------------------- backends

/// A real HTTP + WebSocket server in the test process.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// What /healthz answers: 200 when true, 503 when false.
    pub healthy: Arc<AtomicBool>,
    /// Requests served (health checks excluded).
    pub hits: Arc<AtomicUsize>,
    /// Headers of the last non-health request.
    pub last_headers: Arc<Mutex<HashMap<String, String>>>,
    /// When true, WebSocket upgrades get 503 (as an app does once draining).
    pub refuse_upgrades: Arc<AtomicBool>,
    /// When true, /healthz answers 404 (a server draining itself, for
    /// `disable_on_404`).
    pub health_404: Arc<AtomicBool>,
    /// When true, /healthz never answers (a stopped process or a cut link:
    /// the socket stays open, nothing comes back).
    pub frozen: Arc<AtomicBool>,
    /// Connection and WebSocket tasks, aborted by `kill`.
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the request handler of a test backend shares with its `Backend`.
#[derive(Clone)]
struct BackendState {
    name: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    last: Arc<Mutex<HashMap<String, String>>>,
    refuse_upgrades: Arc<AtomicBool>,
    health_404: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0").await
    }

    pub async fn start_on(name: &str, addr: &str) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let state = BackendState {
            name: name.to_string(),
            healthy: Arc::new(AtomicBool::new(true)),
            hits: Arc::new(AtomicUsize::new(0)),
            last: Arc::new(Mutex::new(HashMap::new())),
            refuse_upgrades: Arc::new(AtomicBool::new(false)),
            health_404: Arc::new(AtomicBool::new(false)),
            frozen: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                let conns = state.conns.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(backend_handle(req, state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
                conns.lock().expect("lock").push(conn.abort_handle());
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            healthy: shared.healthy,
            hits: shared.hits,
            last_headers: shared.last,
            refuse_upgrades: shared.refuse_upgrades,
            health_404: shared.health_404,
            frozen: shared.frozen,
            conns: shared.conns,
            task,
        }
    }

    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::SeqCst);
    }

    /// Stops the server as a crash would: the listener closes (connects are
    /// refused) and every open connection and WebSocket is dropped.
    pub async fn kill(&self) {
        self.task.abort();
        for c in self.conns.lock().expect("lock").drain(..) {
            c.abort();
        }
        let addr = self.addr;
        eventually(5, "killed backend refuses connects", || async move {
            TcpStream::connect(addr).await.is_err()
        })
        .await;
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

async fn backend_handle(mut req: Request<Incoming>, state: BackendState) -> Response<Body> {
    let BackendState {
        name,
        healthy,
        hits,
        last,
        refuse_upgrades,
        health_404,
        frozen,
        conns,
    } = state;
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if health_404.load(Ordering::SeqCst) {
            let mut r = Response::new(full("draining"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        let up = healthy.load(Ordering::SeqCst);
        let mut r = Response::new(full(if up { "ok" } else { "draining" }));
        *r.status_mut() = if up {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return r;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    {
        let mut h = last.lock().expect("lock");
        h.clear();
        for (k, v) in req.headers() {
            h.insert(k.as_str().to_string(), v.to_str().unwrap_or("?").to_string());
        }
        h.insert(":path".into(), req.uri().to_string());
    }
    if path == "/ws" && req.headers().contains_key(http::header::UPGRADE) {
        if refuse_upgrades.load(Ordering::SeqCst) {
            let mut r = Response::new(full(format!("{name} is draining")));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| tungstenite::handshake::derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let protocol = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|s| s.trim().to_string());
        let upgrade = hyper::upgrade::on(&mut req);
        let server_name = name.clone();
        let ws_task = tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let _ = ws.send(Message::text(format!("hello from {server_name}"))).await;
            while let Some(Ok(msg)) = ws.next().await {
                let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
                if msg.is_close() || (echo && ws.send(msg).await.is_err()) {
                    return;
                }
            }
        });
        conns.lock().expect("lock").push(ws_task.abort_handle());
        let mut r = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", key);
        if let Some(p) = protocol {
            r = r.header("sec-websocket-protocol", p);
        }
        return r.body(full("")).expect("response");
    }
    match path.as_str() {
        "/upload" => {
            // Reads the whole body before answering, with its length.
            match req.into_body().collect().await {
                Ok(body) => Response::new(full(body.to_bytes().len().to_string())),
                Err(_) => {
                    let mut r = Response::new(full("unreadable body"));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    r
                }
            }
        }
        "/echo" => {
            // Streams the request body straight back.
            let body = req.into_body().boxed();
            Response::builder()
                .header("x-server", name)
                .body(body)
                .expect("response")
        }
        "/stream" => {
            // One chunk, then nothing more: a server frozen mid-response.
            let first = futures_util::stream::once(async {
                Ok::<_, hyper::Error>(hyper::body::Frame::data(Bytes::from_static(b"start")))
            });
            let body = http_body_util::StreamBody::new(first.chain(futures_util::stream::pending()));
            Response::builder()
                .header("x-server", name)
                .body(BodyExt::boxed(body))
                .expect("response")
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("slow"))
        }
        _ => Response::builder()
            .header("x-server", name.clone())
            .body(full(name))
            .expect("response"),
    }
}

// ---------------------------------------------------------------- lb

pub mod process;
pub mod sources;
#[allow(unused_imports)]
pub use process::{lb_bin, LbProcess};
#[allow(unused_imports)]
pub use sources::*;

/// A change to the built config (a backend option, a route, a token).
pub type Edit = Arc<dyn Fn(&mut lb::config::Config) + Send + Sync>;

/// Settings of a built lb config.
#[derive(Clone)]
pub struct LbOpts {
    pub balance: Balance,
    pub servers: Vec<(String, SocketAddr)>,
    /// Active checks on /healthz (interval 100ms, rise 2, fall 3).
    pub check: bool,
    /// `[timeouts]`; `connect` is 1s unless set.
    pub timeouts: Timeouts,
    /// [[frontend.cert]] entries: (cert, optional key).
    pub certs: Vec<(PathBuf, Option<PathBuf>)>,
    /// Check interval (`100ms` unless set) and fall (3).
    pub check_interval: Duration,
    pub check_fall: u32,
    /// Applied last, in order.
    pub edits: Vec<Edit>,
}

impl LbOpts {
    pub fn new(servers: &[&Backend], certs: &Certs) -> LbOpts {
        let (c, k) = certs.server("server", &["localhost", "127.0.0.1"]);
        LbOpts {
            balance: Balance::RoundRobin,
            servers: servers.iter().map(|b| (b.name.clone(), b.addr)).collect(),
            check: false,
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                ..Timeouts::default()
            },
            certs: vec![(c, Some(k))],
            check_interval: Duration::from_millis(100),
            check_fall: 3,
            edits: Vec::new(),
        }
    }

    /// Adds a change to the built config.
    pub fn edit(&mut self, edit: impl Fn(&mut lb::config::Config) + Send + Sync + 'static) {
        self.edits.push(Arc::new(edit));
    }
}

/// Ports of one lb instance.
#[derive(Clone, Copy)]
pub struct Ports {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
}

/// The lb config of `o` on `p`: an https frontend to backend `apps`, an
/// http frontend redirecting to it, a 2 s grace.
pub fn config(o: &LbOpts, p: Ports) -> lb::config::Config {
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut https = Frontend::new("https", local(p.https), "apps");
    https.certs = o
        .certs
        .iter()
        .map(|(c, k)| CertFiles::new(c, k.as_deref()))
        .collect();
    let servers = o
        .servers
        .iter()
        .map(|(name, addr)| Server::new(name, *addr))
        .collect();
    let mut apps = lb::config::Backend::new("apps", servers);
    apps.balance = o.balance;
    if o.check {
        apps.check = Some(Check {
            path: "/healthz".into(),
            interval: o.check_interval,
            timeout: Some(Duration::from_millis(500)),
            rise: 2,
            fall: o.check_fall,
            ..Check::default()
        });
    }
    let mut c = lb::config::Config {
        timeouts: o.timeouts.clone(),
        admin: Admin::new(local(p.admin)),
        frontends: vec![https, Frontend::redirect("http", local(p.http), p.https)],
        backends: vec![apps],
        ..lb::config::Config::default()
    };
    c.global.grace = Duration::from_secs(2);
    for edit in &o.edits {
        edit(&mut c);
    }
    c
}

/// Writes the config of `o` on `p` to `path`.
pub fn write_config(o: &LbOpts, p: Ports, path: &Path) {
    wsmesh_testkit::configs::write(&config(o, p), path).expect("write config");
}

/// The config of `o` on `p` as a TOML table, for tests that write a file
/// the lb must refuse (a value of the wrong kind, an unknown key).
pub fn config_table(o: &LbOpts, p: Ports) -> toml::Table {
    toml::Table::try_from(config(o, p)).expect("a config is a table")
}

/// The lb running in this test process on a runtime of its own, serving
/// on sockets bound to port 0 before its configuration was written; stopped
/// at once on drop, as a killed process would be.
pub struct Lb {
    pub ports: Ports,
    pub config: PathBuf,
    /// Runs the lb; shut down without waiting on drop.
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Lb {
    pub async fn start(opts: &LbOpts) -> Lb {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let (https, http, admin) = (bind(), bind(), bind());
        let port = |l: &std::net::TcpListener| l.local_addr().expect("local addr").port();
        let ports = Ports {
            https: port(&https),
            http: port(&http),
            admin: port(&admin),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("lb.toml");
        write_config(opts, ports, &config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("lb runtime");
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let path = config.clone();
        runtime.spawn(async move {
            let tokio_listener = |l: std::net::TcpListener| {
                l.set_nonblocking(true).expect("nonblocking");
                TcpListener::from_std(l).expect("tokio listener")
            };
            let addr = |l: &std::net::TcpListener| l.local_addr().expect("local addr");
            let prebound = lb::Prebound {
                frontends: HashMap::from([
                    (addr(&https), tokio_listener(https)),
                    (addr(&http), tokio_listener(http)),
                ]),
                admin: Some(tokio_listener(admin)),
            };
            match lb::Lb::start(&path, prebound).await {
                Ok(lb) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = lb.serve(std::future::pending()).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        });
        if let Err(e) = ready.await.expect("lb start reported") {
            panic!("lb did not start: {e}");
        }
        Lb {
            ports,
            config,
            runtime: Some(runtime),
            _dir: dir,
        }
    }
}

impl std::ops::Deref for Lb {
    type Target = Ports;

    fn deref(&self) -> &Ports {
        &self.ports
    }
}

impl Ports {
    /// The server JSON objects, by name.
    pub async fn servers(&self) -> HashMap<String, serde_json::Value> {
        let v = admin_get(self.admin, "/api/backends")
            .await
            .expect("admin answers");
        let mut out = HashMap::new();
        for b in v["backends"].as_array().expect("backends") {
            for s in b["servers"].as_array().expect("servers") {
                out.insert(s["name"].as_str().expect("name").to_string(), s.clone());
            }
        }
        out
    }

    pub async fn state_of(&self, server: &str) -> String {
        self.servers().await[server]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }

    pub async fn wait_state(&self, server: &str, state: &str) {
        let what = format!("{server} is {state}");
        eventually(15, &what, || async { self.state_of(server).await == state }).await;
    }
}

// ---------------------------------------------------------------- clients

/// Sends a request over plain HTTP/1.1; returns status and body.
pub async fn http1(addr: SocketAddr, req: Request<Body>) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await.ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some((parts.status, parts.headers, body))
}

/// The `Host` a client of the admin listener on loopback `port` sends (as
/// curl does for `127.0.0.1:PORT`): the admin API refuses other names.
pub fn admin_host(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// `GET path` on the admin listener: status and body text.
pub async fn admin_text(port: u16, path: &str) -> Option<(StatusCode, String)> {
    let req = Request::get(path)
        .header("host", admin_host(port))
        .body(empty())
        .ok()?;
    let (status, _, body) = http1(SocketAddr::from(([127, 0, 0, 1], port)), req).await?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

pub async fn admin_get(port: u16, path: &str) -> Option<serde_json::Value> {
    let (status, body) = admin_text(port, path).await?;
    if status != StatusCode::OK {
        return None;
    }
    serde_json::from_str(&body).ok()
}

pub async fn admin_set_state(port: u16, server: &str, state: &str) -> StatusCode {
    let req = Request::post(format!("/api/backends/{server}/state"))
        .header("host", admin_host(port))
        .header("content-type", "application/json")
        .body(full(format!("{{\"state\":\"{state}\"}}")))
        .expect("request");
    http1(SocketAddr::from(([127, 0, 0, 1], port)), req)
        .await
        .expect("admin answers")
        .0
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn body(s: impl Into<Bytes>) -> Body {
    full(s)
}

/// A TLS connection to the lb with SNI `sni`.
pub async fn tls_connect(
    certs: &Certs,
    port: u16,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = tokio_rustls::TlsConnector::from(certs.client_config(alpn));
    let name = ServerName::try_from(sni.to_string()).map_err(|e| std::io::Error::other(e.to_string()))?;
    connector.connect(name, tcp).await
}

/// GET over HTTPS/1.1 (one connection per call).
pub async fn https_get(certs: &Certs, port: u16, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    https_request(
        certs,
        port,
        Request::get(path)
            .header("host", "localhost")
            .body(empty())
            .expect("req"),
    )
    .await
}

pub async fn https_request(
    certs: &Certs,
    port: u16,
    req: Request<Body>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let tls = tls_connect(certs, port, "localhost", &[b"http/1.1"])
        .await
        .expect("tls connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = send.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// GET over HTTP/2 with ALPN h2; returns status, version and body.
pub async fn h2_get(certs: &Certs, port: u16, path: &str) -> (StatusCode, http::Version, Bytes) {
    let mut send = h2_connection(certs, port).await;
    let req = Request::get(format!("https://localhost:{port}{path}"))
        .body(empty())
        .expect("req");
    let resp = send.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.version,
        body.collect().await.expect("body").to_bytes(),
    )
}

/// An HTTP/2 connection to the lb (ALPN h2), driven in the background.
pub async fn h2_connection(certs: &Certs, port: u16) -> hyper::client::conn::http2::SendRequest<Body> {
    let tls = tls_connect(certs, port, "localhost", &[b"h2"])
        .await
        .expect("tls connect");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// The close code that ends a WebSocket, reading what comes before it;
/// `None` for an end without a close frame (1006 to a browser) or none
/// within `limit`.
pub async fn close_code<S>(ws: &mut S, limit: Duration) -> Option<u16>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Opens `wss://localhost:port/ws` offering `protocol`; returns the socket,
/// the selected subprotocol and the backend's greeting.
pub async fn wss_connect(certs: &Certs, port: u16, protocol: &str) -> (Wss, Option<String>, String) {
    wss_connect_to(certs, port, "/ws", protocol).await
}

/// As [`wss_connect`], to `path` (which may carry a query).
pub async fn wss_connect_to(
    certs: &Certs,
    port: u16,
    path: &str,
    protocol: &str,
) -> (Wss, Option<String>, String) {
    let tls = tls_connect(certs, port, "localhost", &[b"http/1.1"])
        .await
        .expect("tls connect");
    let mut req = format!("wss://localhost:{port}{path}")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().expect("header"));
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("websocket handshake");
    let selected = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let greeting = next_text(&mut ws).await;
    (ws, selected, greeting)
}

/// The next text message, within 5 s.
pub async fn next_text(ws: &mut Wss) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("message within 5s")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

/// Sends `text` and expects it echoed.
pub async fn echo(ws: &mut Wss, text: &str) {
    ws.send(Message::text(text.to_string())).await.expect("send");
    assert_eq!(next_text(ws).await, text);
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// An address where nothing listens: nothing in the tests binds 127.0.0.2,
/// so another test cannot take the port in the meantime.
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], free_port()))
}

// ---------------------------------------------------------------- raw HTTP/1.1

/// One HTTP/1.1 response read off a raw stream: the status and the whole
/// text (head and a `Content-Length` body); `None` when the stream closed
/// or nothing complete came within 5 s.
pub async fn read_response(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((
                    status,
                    String::from_utf8_lossy(&got[..end + 4 + length]).into_owned(),
                ));
            }
        }
        let n = tokio::time::timeout_at(deadline, io.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether the peer closes the stream within `limit` (EOF or an error,
/// reading and discarding what comes before).
pub async fn closes_within(io: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
