//! TLS termination: loading certificates (separate cert + key files, or
//! HAProxy-style combined PEM), picking one by SNI, and the rustls server
//! settings (TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// ALPN protocols offered, in server preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificates: {reason}")]
    Certs { path: PathBuf, reason: String },
    #[error("{path}: no certificate found")]
    NoCert { path: PathBuf },
    #[error("{path}: cannot read private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: unusable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}: the private key does not match the certificate")]
    Mismatch { path: PathBuf },
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// One loaded certificate chain with its key.
#[derive(Debug)]
pub struct LoadedCert {
    /// Chain and signing key, as rustls serves them.
    key: Arc<CertifiedKey>,
}

/// Loads a chain and key. `key` is `None` for a combined PEM, where the key
/// sits in the certificate file.
pub fn load_cert(cert: &Path, key: Option<&Path>) -> Result<LoadedCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certs {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_path_buf(),
        });
    }
    let key_path = key.unwrap_or(cert);
    let private = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let certified = CertifiedKey::new(chain, signer);
    if certified.keys_match().is_err() {
        return Err(TlsError::Mismatch {
            path: key_path.to_path_buf(),
        });
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
    })
}

/// Picks the first certificate valid for the client's SNI name; the first
/// certificate overall when there is no SNI or no match (HAProxy's default
/// certificate, without `strict-sni`).
#[derive(Debug)]
pub struct SniResolver {
    /// Certificates in configuration order; never empty.
    certs: Vec<LoadedCert>,
}

impl SniResolver {
    fn matches(cert: &LoadedCert, name: &ServerName<'_>) -> bool {
        let Some(leaf) = cert.key.cert.first() else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf)
            .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok())
            .and_then(|name| self.certs.iter().find(|c| Self::matches(c, &name)));
        by_name.or(self.certs.first()).map(|c| c.key.clone())
    }
}

/// rustls server settings for a list of certificates (first = default).
pub fn server_config(certs: Vec<LoadedCert>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // After the handshake the lb seals and opens a connection's records
    // itself (`tls_records`), with the traffic keys rustls hands out.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        path
    }

    #[test]
    fn combined_pem_loads_without_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = self_signed(dir.path(), "a.test");
        assert!(load_cert(&path, None).is_ok());
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(dir.path(), "a.test");
        let b = self_signed(dir.path(), "b.test");
        let e = load_cert(&a, Some(&b)).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let e = load_cert(Path::new("/nonexistent/x.pem"), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.pem"), "{e}");
    }

    #[test]
    fn sni_matches_by_certificate_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_cert(&self_signed(dir.path(), "a.test"), None).unwrap();
        let b = load_cert(&self_signed(dir.path(), "b.test"), None).unwrap();
        let name = ServerName::try_from("b.test").unwrap();
        assert!(SniResolver::matches(&b, &name));
        assert!(!SniResolver::matches(&a, &name));
    }
}
