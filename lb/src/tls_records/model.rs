//! Model test of the record layer on its own: what the writer seals, cut
//! into arbitrary reads with waits between them, read back into buffers
//! of arbitrary sizes, arrives whole and in order; a changed byte or a
//! cut stream gives an error after a prefix of what was sent, never
//! anything else, and never a panic.

use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::ring::cipher_suite as cs;
use rustls::crypto::cipher::OutboundChunks;
use rustls::{ContentType, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use wsmesh_testkit::bytes::pattern;

use super::{Opening, RecordReader, RecordWriter, Sealing};

/// Both directions' protection for one key, as `protection` builds them
/// from what rustls hands out (32-byte keys: AES-256-GCM and ChaCha20).
fn keys(tls13: bool, chacha: bool, seq: u64) -> (Opening, Sealing) {
    let key = || AeadKey::from([0x42; 32]);
    let iv = [0x17u8; 12];
    if tls13 {
        let suite = if chacha { cs::TLS13_CHACHA20_POLY1305_SHA256 } else { cs::TLS13_AES_256_GCM_SHA384 };
        let SupportedCipherSuite::Tls13(s) = suite else { unreachable!() };
        (
            Opening { cipher: s.aead_alg.decrypter(key(), Iv::new(iv)), seq, tls13 },
            Sealing { cipher: s.aead_alg.encrypter(key(), Iv::new(iv)), seq, limit: u64::MAX },
        )
    } else {
        let suite = if chacha {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        } else {
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        };
        let SupportedCipherSuite::Tls12(s) = suite else { unreachable!() };
        let fixed = s.aead_alg.key_block_shape().fixed_iv_len;
        (
            Opening { cipher: s.aead_alg.decrypter(key(), &iv[..fixed]), seq, tls13 },
            Sealing { cipher: s.aead_alg.encrypter(key(), &iv[..fixed], &iv[fixed..]), seq, limit: u64::MAX },
        )
    }
}

/// Hands out `data` in the scripted read sizes, waiting between reads as
/// scripted; then ends.
struct Script {
    data: Vec<u8>,
    at: usize,
    reads: Vec<usize>,
    turn: usize,
}

impl AsyncRead for Script {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let step = self.reads[self.turn % self.reads.len()];
        self.turn += 1;
        if step == 0 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = step.min(buf.remaining()).min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// Reads `wire` back through a reader with `open`, in the scripted reads
/// and into a buffer of `out_size`: what it handed out, and how it ended.
fn read_back(wire: Vec<u8>, reads: Vec<usize>, out_size: usize, open: Opening) -> (Vec<u8>, std::io::Result<()>) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut reads = reads;
    // At least one step makes progress, or the reader waits forever.
    reads.push(1);
    let mut r = RecordReader::new(Script { data: wire, at: 0, reads, turn: 0 }, open);
    let mut got = Vec::new();
    let end = rt.block_on(async {
        let mut out = vec![0u8; out_size];
        loop {
            match r.read(&mut out).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&out[..n]),
                Err(e) => return Err(e),
            }
        }
    });
    (got, end)
}

/// What went wrong with the wire, if anything.
#[derive(Debug, Clone)]
enum Damage {
    None,
    /// One bit of the byte at this fraction of the stream flipped.
    Flip(f64),
    /// The stream ends at this fraction (no `close_notify` then).
    Cut(f64),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        2 => Just(Damage::None),
        1 => (0.0..1.0f64).prop_map(Damage::Flip),
        1 => (0.0..1.0f64).prop_map(Damage::Cut),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn what_is_sealed_is_opened_whole_or_not_at_all(
        tls13 in any::<bool>(),
        chacha in any::<bool>(),
        seq in prop_oneof![Just(0u64), 1u64..1000, Just(u64::MAX / 2)],
        messages in prop::collection::vec(0usize..40_000, 1..8),
        reads in prop::collection::vec(prop_oneof![1 => Just(0usize), 3 => 1usize..64, 3 => 1usize..40_000], 1..16),
        out_size in prop_oneof![1usize..16, 16usize..20_000, Just(16 * 1024)],
        damage in damage(),
        vectored in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let (open, seal) = keys(tls13, chacha, seq);
        let sent: Vec<u8> = messages.iter().enumerate().flat_map(|(i, &n)| pattern(i as u32, n)).collect();
        // Seal: each write is at most one record; shutdown adds close_notify.
        let mut wire = Vec::new();
        rt.block_on(async {
            let mut w = RecordWriter::new(&mut wire, seal);
            for (i, &n) in messages.iter().enumerate() {
                let message = pattern(i as u32, n);
                if vectored {
                    // As a response goes out: a head, then the body in two.
                    let (a, rest) = message.split_at(n.min(200));
                    let (b, c) = rest.split_at(rest.len() / 2);
                    let mut parts = [std::io::IoSlice::new(a), std::io::IoSlice::new(b), std::io::IoSlice::new(c)];
                    let mut parts = &mut parts[..];
                    while parts.iter().any(|p| !p.is_empty()) {
                        let n = w.write_vectored(parts).await.expect("seal");
                        std::io::IoSlice::advance_slices(&mut parts, n);
                    }
                } else {
                    w.write_all(&message).await.expect("seal");
                }
            }
            w.shutdown().await.expect("close_notify");
        });
        let clean = matches!(damage, Damage::None);
        match damage {
            Damage::None => {}
            Damage::Flip(at) => {
                let i = ((wire.len() as f64 * at) as usize).min(wire.len() - 1);
                wire[i] ^= 0x20;
            }
            Damage::Cut(at) => wire.truncate((wire.len() as f64 * at) as usize),
        }
        let (got, end) = read_back(wire, reads, out_size, open);
        prop_assert!(got.len() <= sent.len() && got[..] == sent[..got.len()], "not a prefix of what was sent");
        if clean {
            prop_assert!(end.is_ok(), "{:?}", end);
            prop_assert_eq!(got.len(), sent.len());
        } else {
            // A changed header byte can still make a well-formed header
            // that fails later; a change or a cut never passes unnoticed.
            prop_assert!(end.is_err(), "damage went unnoticed");
        }
    }
}

/// A record a client may send, as the model sees it.
#[derive(Debug, Clone)]
enum Sent {
    Data(usize),
    Empty,
    /// An alert with this description (level warning).
    Alert(u8),
    /// An alert whose body is not two bytes.
    BadAlert(usize),
    /// A handshake message (a key update, a renegotiation).
    Handshake,
    /// A content type TLS does not know.
    Unknown,
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        6 => (1usize..3000).prop_map(Sent::Data),
        3 => Just(Sent::Empty),
        1 => prop_oneof![1 => Just(0u8), 3 => Just(90u8), 1 => any::<u8>()].prop_map(Sent::Alert),
        1 => prop_oneof![Just(0usize), Just(1usize), 3usize..8].prop_map(Sent::BadAlert),
        1 => Just(Sent::Handshake),
        1 => Just(Sent::Unknown),
    ]
}

/// How the reading must end.
#[derive(Debug, PartialEq)]
enum Ending {
    /// `close_notify`: a clean end.
    Closed,
    /// An error, after everything before the record that caused it.
    Failed,
}

/// What the reader must hand out for `records` (then ended by the
/// stream's close without `close_notify` when nothing ended it before).
fn expected(records: &[Sent]) -> (Vec<u8>, Ending) {
    let mut out = Vec::new();
    let mut empty_run = 0;
    for (i, r) in records.iter().enumerate() {
        match r {
            Sent::Data(n) => {
                empty_run = 0;
                out.extend(pattern(i as u32, *n));
            }
            // Records carrying nothing: only so many in a row.
            Sent::Empty | Sent::Alert(90) => {
                empty_run += 1;
                if empty_run > 32 {
                    return (out, Ending::Failed);
                }
            }
            Sent::Alert(0) => return (out, Ending::Closed),
            Sent::Alert(_) | Sent::BadAlert(_) | Sent::Handshake | Sent::Unknown => return (out, Ending::Failed),
        }
    }
    (out, Ending::Failed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_record_a_client_may_send_is_taken_as_tls_says(
        tls13 in any::<bool>(),
        chacha in any::<bool>(),
        records in prop::collection::vec(sent(), 1..60),
        reads in prop::collection::vec(prop_oneof![1 => Just(0usize), 3 => 1usize..40, 3 => 1usize..9000], 1..12),
        out_size in prop_oneof![1usize..8, 8usize..4096, Just(16 * 1024)],
    ) {
        let (open, seal) = keys(tls13, chacha, 0);
        // Each record sealed as it is, whatever its type (a writer only
        // ever sends data and close_notify).
        let mut w = RecordWriter::new(Vec::new(), seal);
        let mut wire = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let (typ, payload) = match r {
                Sent::Data(n) => (ContentType::ApplicationData, pattern(i as u32, *n)),
                Sent::Empty => (ContentType::ApplicationData, Vec::new()),
                Sent::Alert(d) => (ContentType::Alert, vec![1, *d]),
                Sent::BadAlert(n) => (ContentType::Alert, vec![1; *n]),
                Sent::Handshake => (ContentType::Handshake, vec![24, 0, 0, 1, 0]),
                Sent::Unknown => (ContentType::Unknown(0x30), vec![1, 2, 3]),
            };
            wire.extend(w.record(typ, OutboundChunks::Single(&payload)).expect("seal"));
        }
        let (want, ending) = expected(&records);
        let (got, end) = read_back(wire, reads, out_size, open);
        let end = if end.is_ok() { Ending::Closed } else { Ending::Failed };
        prop_assert!(got == want, "{} bytes handed out, {} expected", got.len(), want.len());
        prop_assert_eq!(end, ending);
    }
}
