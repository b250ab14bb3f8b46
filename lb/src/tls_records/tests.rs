//! The record layer against rustls' own client, over loopback sockets,
//! with every cipher suite the lb offers.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::crypto::ring::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use wsmesh_testkit::bytes::pattern as data;

type Client = rustls::StreamOwned<ClientConnection, std::net::TcpStream>;

/// The lb's own TLS settings for a fresh self-signed certificate, and the
/// certificate for the client to trust.
fn lb_tls() -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let path = dir.path().join("lb.pem");
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    let loaded = crate::tls::load_cert(&path, None).unwrap();
    (crate::tls::server_config(vec![loaded]).unwrap(), cert.der().clone())
}

fn client_config(
    cert: &CertificateDer<'static>,
    suite: SupportedCipherSuite,
    version: &'static SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = CryptoProvider {
        cipher_suites: vec![suite],
        ..default_provider()
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_sni = true;
    Arc::new(config)
}

fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Client {
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    rustls::StreamOwned::new(ClientConnection::new(config, name).unwrap(), sock)
}

/// What the client's connection would send now, sealed, without sending it.
fn sealed(client: &mut Client) -> Vec<u8> {
    let mut out = Vec::new();
    while client.conn.wants_write() {
        client.conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Accepts one connection the way the listener does and plays the first
/// exchange: the client's `hello`, the lb's `ok`.
async fn accept(listener: &TcpListener, config: Arc<rustls::ServerConfig>) -> ClientTls {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(RecordWatch::new(tcp))
        .await
        .unwrap();
    let mut hello = [0u8; 5];
    tls.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    tls.write_all(b"ok").await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// The client's side of the first exchange.
fn greet(client: &mut Client) {
    client.write_all(b"hello").unwrap();
    client.flush().unwrap();
    let mut ok = [0u8; 2];
    client.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");
}

fn records(handover: Handover) -> (RecordReader, RecordWriter) {
    match handover {
        Handover::Records(r, w) => (r, w),
        Handover::Kept(_, why) => panic!("kept by rustls: {why:?}"),
    }
}

const SIZES: [usize; 9] = [1, 2, 100, 4096, 16_383, 16_384, 16_385, 40_000, 70_001];

/// Every suite: the lb echoes through the handed-over record layer what a
/// rustls client sends, in pieces around the record size, then both sides
/// close with `close_notify`.
#[tokio::test]
async fn every_suite_carries_both_ways_and_closes_cleanly() {
    let suites: [(SupportedCipherSuite, &'static SupportedProtocolVersion); 6] = [
        (cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13),
        (cs::TLS13_AES_256_GCM_SHA384, &rustls::version::TLS13),
        (cs::TLS13_CHACHA20_POLY1305_SHA256, &rustls::version::TLS13),
        (cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, &rustls::version::TLS12),
        (cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, &rustls::version::TLS12),
        (cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, &rustls::version::TLS12),
    ];
    for (suite, version) in suites {
        let (mut r, mut w, client) = handed_over(suite, version, move |mut c| {
            assert_eq!(c.conn.negotiated_cipher_suite(), Some(suite));
            for (i, size) in SIZES.into_iter().enumerate() {
                let piece = data(i as u32, size);
                c.write_all(&piece).unwrap();
                c.flush().unwrap();
                let mut back = vec![0u8; size];
                c.read_exact(&mut back).unwrap();
                assert!(back == piece, "{suite:?}: piece {i} came back changed");
            }
            c.conn.send_close_notify();
            c.flush().unwrap();
            // The lb's close_notify ends the stream cleanly.
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        })
        .await;
        let echoed = tokio::io::copy(&mut r, &mut w).await.unwrap();
        assert_eq!(echoed, SIZES.iter().sum::<usize>() as u64, "{suite:?}");
        w.shutdown().await.unwrap();
        tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
    }
}

/// A connection accepted as the listener does, after the first exchange,
/// with `client` playing the rest of the client's part on a thread of its
/// own.
async fn accepted<T: Send + 'static>(
    suite: SupportedCipherSuite,
    version: &'static SupportedProtocolVersion,
    client: impl FnOnce(Client) -> T + Send + 'static,
) -> (ClientTls, std::thread::JoinHandle<T>) {
    let (server, cert) = lb_tls();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = client_config(&cert, suite, version);
    let client = std::thread::spawn(move || {
        let mut c = connect(addr, config);
        greet(&mut c);
        client(c)
    });
    (accept(&listener, server).await, client)
}

/// As [`accepted`], with the record layer handed over.
async fn handed_over<T: Send + 'static>(
    suite: SupportedCipherSuite,
    version: &'static SupportedProtocolVersion,
    client: impl FnOnce(Client) -> T + Send + 'static,
) -> (RecordReader, RecordWriter, std::thread::JoinHandle<T>) {
    let (tls, client) = accepted(suite, version, client).await;
    let (r, w) = records(hand_over(tls).unwrap());
    (r, w, client)
}

/// A record changed on the way fails authentication; nothing of it is
/// handed out, and reading stays failed.
#[tokio::test]
async fn a_changed_record_is_refused() {
    let (mut r, _w, client) = handed_over(cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13, |mut c| {
        c.conn.writer().write_all(b"secret").unwrap();
        let mut record = sealed(&mut c);
        let last = record.len() - 1;
        record[last] ^= 1;
        c.sock.write_all(&record).unwrap();
        c
    })
    .await;
    let mut buf = [0u8; 64];
    let e = r.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("authentication"), "{e}");
    assert!(r.read(&mut buf).await.is_err(), "a failed reader stays failed");
    drop(client.join().unwrap());
}

/// A TLS 1.3 key update cannot be followed: the read fails and says why,
/// instead of handing out what the new keys protect.
#[tokio::test]
async fn a_key_update_from_the_client_ends_the_reading() {
    let (mut r, _w, client) = handed_over(cs::TLS13_AES_256_GCM_SHA384, &rustls::version::TLS13, |mut c| {
        c.write_all(b"before").unwrap();
        c.conn.refresh_traffic_keys().unwrap();
        c.write_all(b"after").unwrap();
        c.flush().unwrap();
        c
    })
    .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let e = loop {
        match r.read(&mut buf).await {
            Ok(0) => panic!("clean end after {got:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b"before");
    assert!(e.to_string().contains("key update"), "{e}");
    drop(client.join().unwrap());
}

/// A connection closed without `close_notify` is an error, not an end:
/// the data may have been cut.
#[tokio::test]
async fn a_close_without_close_notify_is_an_error() {
    let (mut r, _w, client) = handed_over(cs::TLS13_CHACHA20_POLY1305_SHA256, &rustls::version::TLS13, |mut c| {
        c.write_all(b"last").unwrap();
        c.flush().unwrap();
        c.sock.shutdown(std::net::Shutdown::Both).unwrap();
    })
    .await;
    let mut buf = [0u8; 4];
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"last");
    let e = r.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    client.join().unwrap();
}

/// A header that cannot start a record fails at once, before its body.
#[tokio::test]
async fn a_malformed_header_is_refused() {
    let suite = cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let (mut r, _w, client) = handed_over(suite, &rustls::version::TLS12, |mut c| {
        // A length beyond any record, then nothing more.
        c.sock.write_all(&[23, 3, 3, 0xFF, 0xFF]).unwrap();
        c
    })
    .await;
    let mut buf = [0u8; 4];
    let e = r.read(&mut buf).await.unwrap_err();
    assert!(e.to_string().contains("malformed header"), "{e}");
    drop(client.join().unwrap());
}

/// rustls keeps a connection when it holds part of a record or plaintext
/// not yet read, and the connection goes on working with it.
#[tokio::test]
async fn a_connection_mid_record_or_with_unread_data_stays_with_rustls() {
    let (server, cert) = lb_tls();
    for (case, expected) in [("partial", Kept::MidRecord), ("unread", Kept::Unread)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = client_config(&cert, cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13);
        let (sent_tx, sent_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut c = connect(addr, config);
            // Complete the handshake before the first write.
            while c.conn.is_handshaking() {
                c.conn.complete_io(&mut c.sock).unwrap();
            }
            c.conn.writer().write_all(b"hello").unwrap();
            let mut first = sealed(&mut c);
            c.conn.writer().write_all(b"more").unwrap();
            let second = sealed(&mut c);
            let cut = if case == "partial" { 3 } else { second.len() };
            first.extend_from_slice(&second[..cut]);
            c.sock.write_all(&first).unwrap();
            sent_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            c.sock.write_all(&second[cut..]).unwrap();
            let mut ok = [0u8; 2];
            c.read_exact(&mut ok).unwrap();
            assert_eq!(&ok, b"ok");
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server.clone())
            .accept(RecordWatch::new(tcp))
            .await
            .unwrap();
        tokio::task::spawn_blocking(move || sent_rx.recv().unwrap()).await.unwrap();
        // Both records (or one and a part) are in the socket: one read
        // takes them in.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut hello = [0u8; 5];
        tls.read_exact(&mut hello).await.unwrap();
        let mut tls = match hand_over(tls).unwrap() {
            Handover::Kept(tls, why) => {
                assert_eq!(why, expected, "{case}");
                tls
            }
            Handover::Records(..) => panic!("{case}: handed over"),
        };
        go_tx.send(()).unwrap();
        let mut more = [0u8; 4];
        tls.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"more", "{case}");
        tls.write_all(b"ok").await.unwrap();
        tls.flush().await.unwrap();
        tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
    }
}

/// A served connection leaves rustls at its first read after rustls has
/// let go of everything but the keys (here: after the first exchange),
/// and goes on through the lb's records, in both directions, with writes
/// of several buffers in one go.
#[tokio::test]
async fn a_served_connection_goes_over_to_records_at_its_next_read() {
    let (tls, client) = accepted(cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13, |mut c| {
        c.write_all(b"second").unwrap();
        c.flush().unwrap();
        let mut answer = vec![0u8; 5 + 40_000];
        c.read_exact(&mut answer).unwrap();
        assert_eq!(&answer[..5], b"head ");
        assert!(answer[5..] == data(9, 40_000)[..]);
    })
    .await;
    let mut conn = TlsConn::new(tls);
    assert!(matches!(conn, TlsConn::Rustls(_)));
    let mut second = [0u8; 6];
    conn.read_exact(&mut second).await.unwrap();
    assert_eq!(&second, b"second");
    assert!(matches!(conn, TlsConn::Records(..)), "still with rustls");
    let body = data(9, 40_000);
    let mut bufs = [std::io::IoSlice::new(b"head "), std::io::IoSlice::new(&body)];
    let mut bufs = &mut bufs[..];
    while !bufs.is_empty() {
        let n = conn.write_vectored(bufs).await.unwrap();
        std::io::IoSlice::advance_slices(&mut bufs, n);
    }
    conn.flush().await.unwrap();
    tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
}

/// A key update the client asks an answer to, taken in by rustls before
/// the hand-over: rustls holds its answer back until its next write, with
/// its own keys already moved on. The answer goes out before the records
/// are taken over, or the client could not read a thing the lb sends.
#[tokio::test]
async fn a_key_update_rustls_took_in_is_answered_before_the_hand_over() {
    let (mut tls, client) = accepted(cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13, |mut c| {
        c.conn.refresh_traffic_keys().unwrap();
        c.write_all(b"after").unwrap();
        c.flush().unwrap();
        let mut reply = [0u8; 5];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"reply");
    })
    .await;
    let mut after = [0u8; 5];
    tls.read_exact(&mut after).await.unwrap();
    assert_eq!(&after, b"after");
    let mut tls = match hand_over(tls).unwrap() {
        Handover::Kept(tls, why) => {
            assert_eq!(why, Kept::Unsent);
            tls
        }
        Handover::Records(..) => panic!("handed over with the key update's answer unsent"),
    };
    tls.flush().await.unwrap();
    let (_r, mut w) = records(hand_over(*tls).unwrap());
    w.write_all(b"reply").await.unwrap();
    w.flush().await.unwrap();
    tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
}

/// Once the lb has closed its side through rustls, the connection stays
/// with rustls: no writer of the lb's own may follow the `close_notify`.
#[tokio::test]
async fn a_connection_the_lb_closed_stays_with_rustls() {
    let (tls, client) = accepted(cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13, |mut c| {
        // The lb's close_notify ends the stream cleanly.
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        c.conn.send_close_notify();
        c.flush().unwrap();
    })
    .await;
    let mut conn = TlsConn::new(tls);
    conn.shutdown().await.unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(conn.read(&mut buf).await.unwrap(), 0);
    assert!(matches!(conn, TlsConn::Closing(_)), "handed over after close_notify");
    assert!(matches!(conn.hand_over().unwrap(), Handover::Kept(_, Kept::Closing)));
    tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
}
