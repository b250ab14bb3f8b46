//! The TLS record layer of a client connection, after rustls made the
//! handshake.
//!
//! rustls' buffered connection holds a 4 KiB receive buffer, its whole
//! handshake state and per-record bookkeeping for the connection's life.
//! Past the handshake none of it is needed: at the first read where
//! rustls holds nothing of the connection but its keys ([`TlsConn`]), the
//! traffic keys are taken out of rustls and the lb seals and opens records
//! itself, with rustls' own record protection (the `MessageEncrypter` and
//! `MessageDecrypter` rustls would have used), holding a buffer only while
//! a record is in flight. An idle keep-alive connection or WebSocket
//! tunnel then holds no TLS buffer, and a request costs less.
//!
//! The hand-over needs rustls to hold no part of a record: [`RecordWatch`]
//! follows the record framing of every byte rustls reads, which tells
//! whether it ends on a record boundary. A connection caught mid-record,
//! with data not yet read or records not yet sent stays with rustls until
//! a later read; a tunnel made from it keeps rustls ([`Handover::Kept`]).
//!
//! Three things this layer does not do, each of which closes the
//! connection (the client reconnects): follow a TLS 1.3 key update from
//! the client (rustls hands out the keys, not the secrets they derive
//! from; clients send one after about 2^24 records), renegotiate TLS 1.2,
//! and seal more records than the cipher's confidentiality limit allows.

mod boundary;
mod open;
mod seal;
mod stream;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use rustls::crypto::cipher::{AeadKey, Iv, MessageDecrypter, MessageEncrypter};
use rustls::{ConnectionTrafficSecrets, ServerConnection, SupportedCipherSuite};
use tokio::net::TcpStream;

pub use boundary::RecordWatch;
pub use open::RecordReader;
pub use seal::RecordWriter;
pub use stream::TlsConn;

/// A client's TLS stream as the listener builds it.
pub type ClientTls = tokio_rustls::server::TlsStream<RecordWatch<TcpStream>>;

/// Header bytes of a record: type, version, length.
const HEADER: usize = 5;

/// The largest plaintext in one record.
const MAX_PLAIN: usize = 16 * 1024;

/// The largest record body accepted (TLS 1.2 allows 2048 bytes of
/// expansion; TLS 1.3 needs less).
const MAX_BODY: usize = MAX_PLAIN + 2048;

/// The version every record after the handshake carries (TLS 1.3 keeps
/// TLS 1.2's on the wire).
const RECORD_VERSION: u16 = 0x0303;

/// What became of a connection offered to [`hand_over`].
pub enum Handover {
    /// The lb now seals and opens the records itself.
    Records(RecordReader, RecordWriter),
    /// rustls keeps the connection, for the reason given.
    Kept(Box<ClientTls>, Kept),
}

/// Why a connection stays with rustls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// rustls holds part of a record.
    MidRecord,
    /// Received data waits to be read.
    Unread,
    /// Records wait to be sent.
    Unsent,
    /// The client has closed its side.
    PeerClosed,
    /// The connection failed or is still handshaking.
    NotEstablished,
    /// The lb has closed its side (or reading failed): what is left of the
    /// connection stays with rustls.
    Closing,
}

/// Takes the record layer of `stream` out of rustls, or leaves it there
/// when that cannot be done without losing a byte. Fails only when rustls
/// refuses to hand out the keys after every check passed (it was not
/// configured to), in which case the connection is gone.
pub fn hand_over(stream: ClientTls) -> std::io::Result<Handover> {
    let mut stream = stream;
    match ready(&mut stream) {
        Ok(()) => {
            let (r, w) = take(stream)?;
            Ok(Handover::Records(r, w))
        }
        Err(why) => Ok(Handover::Kept(Box::new(stream), why)),
    }
}

/// Whether rustls holds nothing of the connection but its keys and state:
/// no part of a record, no plaintext not yet read, no record not yet sent.
pub(crate) fn ready(stream: &mut ClientTls) -> Result<(), Kept> {
    let (watch, conn) = stream.get_mut();
    if !watch.at_boundary() {
        return Err(Kept::MidRecord);
    }
    if conn.is_handshaking() || conn.negotiated_cipher_suite().is_none() {
        return Err(Kept::NotEstablished);
    }
    // Every whole record read was processed when it was read; this only
    // reports what that left.
    let state = conn.process_new_packets().map_err(|_| Kept::NotEstablished)?;
    // rustls holds its answer to a client's key update back until the next
    // write (its own keys have already moved on); an empty write puts it
    // with the records to send, where the check below sees it.
    let _ = std::io::Write::write(&mut conn.writer(), &[]);
    if state.peer_has_closed() {
        Err(Kept::PeerClosed)
    } else if state.plaintext_bytes_to_read() > 0 {
        Err(Kept::Unread)
    } else if conn.wants_write() {
        Err(Kept::Unsent)
    } else {
        Ok(())
    }
}

/// Takes the record layer out of a stream [`ready`] agreed to.
pub(crate) fn take(stream: ClientTls) -> std::io::Result<(RecordReader, RecordWriter)> {
    let (watch, conn) = stream.into_inner();
    let suite = conn
        .negotiated_cipher_suite()
        .ok_or_else(|| std::io::Error::other("no cipher suite negotiated"))?;
    let (reader, writer) = protection(conn, suite)?;
    let (read_half, write_half) = watch.into_inner().into_split();
    Ok((RecordReader::new(read_half, reader), RecordWriter::new(write_half, writer)))
}

/// The client's direction: record protection and the next sequence number.
pub(crate) struct Opening {
    pub(crate) cipher: Box<dyn MessageDecrypter>,
    pub(crate) seq: u64,
    /// TLS 1.3 hides a record's type inside it.
    pub(crate) tls13: bool,
}

/// The lb's direction: record protection, the next sequence number and
/// how many records these keys may protect.
pub(crate) struct Sealing {
    pub(crate) cipher: Box<dyn MessageEncrypter>,
    pub(crate) seq: u64,
    pub(crate) limit: u64,
}

/// The record protection of both directions, from the keys rustls hands out.
fn protection(
    conn: ServerConnection,
    suite: SupportedCipherSuite,
) -> std::io::Result<(Opening, Sealing)> {
    let secrets = conn.dangerous_extract_secrets().map_err(std::io::Error::other)?;
    let (rx_seq, rx) = secrets.rx;
    let (tx_seq, tx) = secrets.tx;
    let (rx_key, rx_iv) = key_and_iv(rx)?;
    let (tx_key, tx_iv) = key_and_iv(tx)?;
    let (decrypter, encrypter, tls13, limit) = match suite {
        SupportedCipherSuite::Tls13(s) => (
            s.aead_alg.decrypter(rx_key, rx_iv),
            s.aead_alg.encrypter(tx_key, tx_iv),
            true,
            s.common.confidentiality_limit,
        ),
        SupportedCipherSuite::Tls12(s) => {
            // rustls hands out TLS 1.2 IVs as the fixed part followed by
            // the explicit nonce's start (nothing for ChaCha20).
            let shape = s.aead_alg.key_block_shape();
            let (Some(rx_fixed), Some((tx_fixed, tx_rest))) =
                (rx_iv.as_ref().get(..shape.fixed_iv_len), tx_iv.as_ref().split_at_checked(shape.fixed_iv_len))
            else {
                return Err(std::io::Error::other("TLS 1.2 key material of an unexpected shape"));
            };
            let explicit = &tx_rest[..shape.explicit_nonce_len.min(tx_rest.len())];
            (
                s.aead_alg.decrypter(rx_key, rx_fixed),
                s.aead_alg.encrypter(tx_key, tx_fixed, explicit),
                false,
                s.common.confidentiality_limit,
            )
        }
    };
    Ok((
        Opening {
            cipher: decrypter,
            seq: rx_seq,
            tls13,
        },
        Sealing {
            cipher: encrypter,
            seq: tx_seq,
            limit,
        },
    ))
}

fn key_and_iv(secrets: ConnectionTrafficSecrets) -> std::io::Result<(AeadKey, Iv)> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(std::io::Error::other("a cipher the lb cannot take over")),
    }
}
