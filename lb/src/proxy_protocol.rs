//! The PROXY protocol v2 header an L4 balancer puts before the client's
//! bytes (the binary form of haproxy.org's `proxy-protocol.txt`): a
//! 12-byte signature, version and command, address family, the length of
//! what follows, then the addresses and optional TLVs (read and ignored).
//! Read exactly, so not one byte of the TLS handshake behind it is taken.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first 12 bytes of every v2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest address-and-TLV block accepted: far above what balancers send
/// (addresses plus a few TLVs), far below what would cost memory.
pub const MAX_BLOCK: usize = 4096;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The balancer's own connection (its health check): the peer is the
    /// source.
    Local,
    /// A relayed connection from `source` (a TCP or UDP address over IPv4
    /// or IPv6).
    Proxied { source: SocketAddr },
    /// A relayed connection of a family without an IP address (UNIX,
    /// unspecified): the peer is the source.
    Unaddressed,
}

/// Why a connection's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not the v2 signature (a client speaking directly, or PROXY v1).
    #[error("no PROXY v2 signature")]
    Signature,
    /// Version other than 2, or a command other than LOCAL and PROXY.
    #[error("unsupported PROXY version or command {0:#04x}")]
    VersionCommand(u8),
    /// The block is too short for its family's addresses, or too long.
    #[error("PROXY header length {0} does not fit its address family")]
    Length(usize),
    /// The connection ended or stalled before the whole header arrived.
    #[error("connection ended or stalled before the PROXY header was complete")]
    Incomplete,
}

impl HeaderError {
    /// The reason as counted and logged: `missing` when nothing usable
    /// arrived, `invalid` when something else than a header did.
    pub fn reason(self) -> ProxyRefusal {
        match self {
            HeaderError::Incomplete => ProxyRefusal::Missing,
            _ => ProxyRefusal::Invalid,
        }
    }
}

/// Why a connection to a PROXY-protocol frontend was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// The peer is not a trusted proxy.
    Untrusted,
    /// The header is malformed or not a PROXY v2 header.
    Invalid,
    /// The connection ended or stalled before the header was complete.
    Missing,
}

impl ProxyRefusal {
    /// Every reason, in the order of the counters indexed by `as usize`.
    pub const ALL: [ProxyRefusal; 3] = [
        ProxyRefusal::Untrusted,
        ProxyRefusal::Invalid,
        ProxyRefusal::Missing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProxyRefusal::Untrusted => "untrusted",
            ProxyRefusal::Invalid => "invalid",
            ProxyRefusal::Missing => "missing",
        }
    }
}

/// Reads the 16 fixed bytes: whether they start a v2 header, and the
/// length of the block after them.
pub fn parse_fixed(fixed: &[u8; 16]) -> Result<usize, HeaderError> {
    if fixed[..12] != SIGNATURE {
        return Err(HeaderError::Signature);
    }
    let version_command = fixed[12];
    if version_command >> 4 != 2 || version_command & 0x0f > 1 {
        return Err(HeaderError::VersionCommand(version_command));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_BLOCK {
        return Err(HeaderError::Length(len));
    }
    Ok(len)
}

/// The header of the fixed bytes and the block after them.
pub fn parse(fixed: &[u8; 16], block: &[u8]) -> Result<Header, HeaderError> {
    parse_fixed(fixed)?;
    if fixed[12] & 0x0f == 0 {
        return Ok(Header::Local);
    }
    let need = |n: usize| {
        if block.len() < n {
            Err(HeaderError::Length(block.len()))
        } else {
            Ok(())
        }
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match fixed[13] >> 4 {
        // AF_INET: source, destination (4 bytes each), then their ports.
        1 => {
            need(12)?;
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Ok(Header::Proxied {
                source: SocketAddr::from((ip, port(8))),
            })
        }
        // AF_INET6: 16 bytes each, then the ports.
        2 => {
            need(36)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            Ok(Header::Proxied {
                source: SocketAddr::from((Ipv6Addr::from(octets), port(32))),
            })
        }
        _ => Ok(Header::Unaddressed),
    }
}

/// Reads one header from the start of `stream` within `limit`.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Result<Header, HeaderError> {
    let read = async {
        let mut fixed = [0u8; 16];
        stream
            .read_exact(&mut fixed)
            .await
            .map_err(|_| HeaderError::Incomplete)?;
        let len = parse_fixed(&fixed)?;
        let mut block = vec![0u8; len];
        stream
            .read_exact(&mut block)
            .await
            .map_err(|_| HeaderError::Incomplete)?;
        parse(&fixed, &block)
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| HeaderError::Incomplete)?
}

/// A v2 PROXY header for a TCP connection from `source` to `destination`
/// (both of one family), as a balancer sends it: for tests and tools.
pub fn encode(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(bytes: &[u8]) -> ([u8; 16], &[u8]) {
        let mut fixed = [0u8; 16];
        fixed.copy_from_slice(&bytes[..16]);
        (fixed, &bytes[16..])
    }

    #[test]
    fn ipv4_and_ipv6_headers_give_their_source() {
        for (s, d) in [
            ("192.0.2.7:5555", "10.0.0.1:443"),
            ("[2001:db8::7]:5555", "[2001:db8::1]:443"),
        ] {
            let source: SocketAddr = s.parse().unwrap();
            let bytes = encode(source, d.parse().unwrap());
            let (fixed, block) = split(&bytes);
            assert_eq!(parse_fixed(&fixed), Ok(block.len()));
            assert_eq!(parse(&fixed, block), Ok(Header::Proxied { source }));
        }
    }

    #[test]
    fn local_unix_and_tlvs_are_understood() {
        let mut bytes = encode("192.0.2.7:1".parse().unwrap(), "10.0.0.1:2".parse().unwrap());
        // A TLV after the addresses (type 0x04 NOOP, 3 bytes) is skipped.
        bytes.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]);
        bytes[15] = 18;
        let (fixed, block) = split(&bytes);
        assert!(matches!(parse(&fixed, block), Ok(Header::Proxied { .. })));
        let mut local = fixed;
        local[12] = 0x20;
        assert_eq!(parse(&local, block), Ok(Header::Local));
        let mut unix = fixed;
        unix[13] = 0x31;
        assert_eq!(parse(&unix, block), Ok(Header::Unaddressed));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let bytes = encode("192.0.2.7:1".parse().unwrap(), "10.0.0.1:2".parse().unwrap());
        let (fixed, block) = split(&bytes);
        let mut v1 = [0u8; 16];
        v1.copy_from_slice(b"PROXY TCP4 1.2.3");
        assert_eq!(parse_fixed(&v1), Err(HeaderError::Signature));
        let mut version = fixed;
        version[12] = 0x11;
        assert_eq!(parse_fixed(&version), Err(HeaderError::VersionCommand(0x11)));
        let mut command = fixed;
        command[12] = 0x22;
        assert!(parse_fixed(&command).is_err());
        assert_eq!(parse(&fixed, &block[..8]), Err(HeaderError::Length(8)));
        let mut huge = fixed;
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse_fixed(&huge), Err(HeaderError::Length(65535)));
    }

    #[tokio::test]
    async fn reading_takes_the_header_and_not_a_byte_more() {
        let mut bytes = encode("192.0.2.7:9".parse().unwrap(), "10.0.0.1:2".parse().unwrap());
        bytes.extend_from_slice(b"\x16\x03\x01rest");
        let mut stream = &bytes[..];
        let h = read(&mut stream, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            h,
            Header::Proxied {
                source: "192.0.2.7:9".parse().unwrap()
            }
        );
        assert_eq!(stream, b"\x16\x03\x01rest");
        let mut short = &bytes[..20];
        assert_eq!(
            read(&mut short, Duration::from_secs(1)).await,
            Err(HeaderError::Incomplete)
        );
    }
}
