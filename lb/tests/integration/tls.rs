//! TLS termination: a client trusting the CA gets through (HTTP/1.1 and h2
//! by ALPN), SNI picks the certificate, combined PEM loads, TLS 1.1 is
//! refused and TLS 1.2 accepted, plain HTTP redirects to https.

use std::sync::Arc;

use crate::support::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn client_trusting_the_ca_gets_through_on_http1_and_h2() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let (status, _, body) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"app1"[..]));
    let (status, version, body) = h2_get(&certs, lb.ports.https, "/").await;
    assert_eq!(
        (status, version, &body[..]),
        (StatusCode::OK, http::Version::HTTP_2, &b"app1"[..])
    );
}

#[tokio::test]
async fn sni_picks_the_certificate_with_that_name_and_unknown_names_get_the_default() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    let (c, k) = certs.server("other", &["other.test"]);
    opts.certs.push((c, Some(k)));
    let lb = Lb::start(&opts).await;
    // The client verifies the name, so success means the right certificate.
    assert!(tls_connect(&certs, lb.ports.https, "other.test", &[b"http/1.1"])
        .await
        .is_ok());
    assert!(tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .is_ok());
    let unknown = tls_connect(&certs, lb.ports.https, "unknown.test", &[b"http/1.1"]).await;
    let err = unknown.expect_err("default certificate does not name unknown.test");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn combined_pem_with_key_and_chain_in_one_file_loads() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.certs = vec![(certs.combined("combined", &["localhost"]), None)];
    let lb = Lb::start(&opts).await;
    let (status, _, body) = https_get(&certs, lb.ports.https, "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"app1"[..]));
}

/// A ClientHello for TLS 1.`minor - 1` (no supported_versions extension),
/// as an old client sends it.
fn client_hello(minor: u8) -> Vec<u8> {
    let mut hello = vec![0x03, minor];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // session id
    let suites: [u8; 10] = [0xc0, 0x2f, 0xc0, 0x2b, 0x00, 0x2f, 0x00, 0x35, 0xc0, 0x13];
    hello.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    hello.extend_from_slice(&suites);
    hello.extend_from_slice(&[1, 0]); // compression: null
                                      // supported_groups (x25519, P-256), ec_point_formats, signature_algorithms:
                                      // everything a TLS 1.2 server needs, so only the version can be the problem.
    let extensions: [u8; 30] = [
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, //
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, //
        0x00, 0x0d, 0x00, 0x0a, 0x00, 0x08, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x01,
    ];
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1u8];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, minor];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_protocol_version_alert() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let first_bytes = |minor: u8| async move {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", lb.ports.https))
            .await
            .unwrap();
        tcp.write_all(&client_hello(minor)).await.unwrap();
        let mut reply = [0u8; 7];
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_exact(&mut reply))
            .await
            .expect("reply within 5s")
            .expect("a record");
        reply
    };
    let reply = first_bytes(2).await;
    assert_eq!(reply[0], 0x15, "alert record expected, got {reply:?}");
    assert_eq!(reply[6], 70, "protocol_version alert expected, got {reply:?}");
    // The same hello as TLS 1.2 gets a ServerHello: only the version was refused.
    let reply = first_bytes(3).await;
    assert_eq!(
        (reply[0], reply[5]),
        (0x16, 2),
        "ServerHello expected, got {reply:?}"
    );
}

#[tokio::test]
async fn tls_1_2_only_client_is_accepted() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.ca_der.clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", lb.ports.https))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn plain_http_redirects_to_https_keeping_path_and_query() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let lb = Lb::start(&LbOpts::new(&[&app], &certs)).await;
    let req = http::Request::get("/room/x?since=5-0&a=b")
        .header("host", format!("127.0.0.1:{}", lb.ports.http))
        .body(empty())
        .unwrap();
    let (status, headers, _) = http1(([127, 0, 0, 1], lb.ports.http).into(), req).await.unwrap();
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        headers["location"],
        format!("https://127.0.0.1:{}/room/x?since=5-0&a=b", lb.ports.https)
    );
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn gen_cert_host_makes_the_lb_trusted_under_that_address() {
    use rustls_pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(lb_bin())
        .args([
            "gen-cert",
            "--host",
            "192.168.56.10",
            "--host",
            "chat.lab",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.certs = vec![(dir.path().join("server.pem"), Some(dir.path().join("server.key")))];
    let lb = Lb::start(&opts).await;
    // A client that trusts only dev-ca.pem, as the lab's browsers do.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(dir.path().join("dev-ca.pem")).unwrap())
        .unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let handshake = |name: &'static str| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", lb.ports.https))
                .await
                .unwrap();
            let name = rustls_pki_types::ServerName::try_from(name).unwrap();
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .is_ok()
        }
    };
    for name in ["192.168.56.10", "chat.lab", "127.0.0.1", "localhost"] {
        assert!(handshake(name).await, "{name} refused");
    }
    assert!(
        !handshake("192.168.56.11").await,
        "a name not asked for is accepted"
    );
    let bad = std::process::Command::new(lb_bin())
        .args(["gen-cert", "--force", "--host", "not a name", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a name"),
        "{bad:?}"
    );
}
