//! `Connection` against small in-process servers: what goes out in the
//! handshake, what comes back, refusals, and TLS with and without trust.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use wsmesh_client::{tls, ClientError, ConnectOptions, Connection, Incoming, Protocol};
use wsmesh_common::protocol::SUBPROTOCOL;

/// A one-connection server that records the request and echoes text frames
/// back as-is, then closes with 4000 on "bye".
#[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
async fn echo_server() -> (u16, tokio::task::JoinHandle<Vec<(String, String)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, mut resp: Response| {
            seen.push(("uri".to_string(), req.uri().to_string()));
            for (k, v) in req.headers() {
                seen.push((k.to_string(), v.to_str().unwrap().to_string()));
            }
            if req.headers().contains_key("sec-websocket-protocol") {
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
            }
            Ok(resp)
        })
        .await
        .unwrap();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) if t.as_str() == "bye" => {
                    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                        code: 4000.into(),
                        reason: "bye".into(),
                    };
                    ws.close(Some(frame)).await.unwrap();
                }
                Message::Text(_) | Message::Binary(_) => ws.send(m).await.unwrap(),
                _ => {}
            }
        }
        seen
    });
    (port, task)
}

#[tokio::test]
async fn v1_connection_offers_the_subprotocol_and_sends_the_query_and_headers() {
    let (port, server) = echo_server().await;
    let opts = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws"))
        .unwrap()
        .room("r1")
        .header("Origin", "http://evil.example");
    let mut conn = Connection::connect(&opts).await.unwrap();
    assert_eq!(conn.subprotocol(), Some(SUBPROTOCOL));
    let welcome =
        r#"{"type":"welcome","session":"s","nick":"n","room":"r1","instance":"app1","connected_since":7}"#;
    conn.send_text(welcome).await.unwrap();
    let w = conn.welcome(Duration::from_secs(5)).await.unwrap();
    assert_eq!((w.instance.as_str(), w.connected_since), ("app1", 7));
    conn.send_text("not json").await.unwrap();
    assert_eq!(
        conn.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Incoming::Text("not json".into())
    );
    conn.send_text("bye").await.unwrap();
    let close = conn.wait_close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(close.map(|c| c.code), Some(4000));
    drop(conn);
    let seen = server.await.unwrap();
    assert!(seen.contains(&("uri".into(), "/ws?room=r1".into())), "{seen:?}");
    assert!(
        seen.contains(&("origin".into(), "http://evil.example".into())),
        "{seen:?}"
    );
}

#[tokio::test]
async fn seed_connection_offers_no_subprotocol() {
    let (port, server) = echo_server().await;
    let opts = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/chatsocket"))
        .unwrap()
        .protocol(Protocol::Seed);
    let mut conn = Connection::connect(&opts).await.unwrap();
    assert_eq!(conn.subprotocol(), None);
    conn.send_binary(vec![1, 2, 3]).await.unwrap();
    assert_eq!(
        conn.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Incoming::Binary(vec![1, 2, 3])
    );
    conn.close().await;
    let seen = server.await.unwrap();
    assert!(
        !seen.iter().any(|(k, _)| k == "sec-websocket-protocol"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn refused_upgrade_reports_the_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 2048];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    });
    let opts = ConnectOptions::new(&format!("ws://127.0.0.1:{port}/ws")).unwrap();
    match Connection::connect(&opts).await {
        Err(ClientError::Refused { status }) => assert_eq!(status, 403),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A CA file in `dir` and a TLS acceptor whose leaf for 127.0.0.1 it signed.
fn dev_pki(dir: &std::path::Path) -> (std::path::PathBuf, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (ca_path, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn wss_trusts_the_given_ca_and_speaks_websocket_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, acceptor) = dev_pki(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
        if let Some(Ok(m)) = ws.next().await {
            ws.send(m).await.unwrap();
        }
    });
    let opts = ConnectOptions::new(&format!("wss://127.0.0.1:{port}/ws"))
        .unwrap()
        .protocol(Protocol::Seed)
        .tls(tls::client_config(&ca).unwrap());
    let mut conn = Connection::connect(&opts).await.unwrap();
    conn.send_text("over tls").await.unwrap();
    assert_eq!(
        conn.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Incoming::Text("over tls".into())
    );
}

#[tokio::test]
async fn wss_refuses_a_server_signed_by_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (_, acceptor) = dev_pki(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = dev_pki(other.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let opts = ConnectOptions::new(&format!("wss://127.0.0.1:{port}/ws"))
        .unwrap()
        .tls(tls::client_config(&other_ca).unwrap());
    assert!(matches!(
        Connection::connect(&opts).await,
        Err(ClientError::Connect { .. })
    ));
}

#[tokio::test]
async fn wss_without_trust_is_refused_before_dialling_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let opts = ConnectOptions::new(&format!("wss://127.0.0.1:{port}/ws")).unwrap();
    assert!(matches!(
        Connection::connect(&opts).await,
        Err(ClientError::NoTls)
    ));
}
