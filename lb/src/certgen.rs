//! `lb gen-cert`: a development CA and a server certificate for 127.0.0.1,
//! ::1 and localhost (plus any `--host` names or addresses, e.g. the lab
//! lb's 192.168.56.10), signed by it, so the local cluster and the lab speak
//! real TLS and curl or a browser can trust it with one file (`dev-ca.pem`).
//! Never for production.
//!
//! Files written into the directory:
//! `dev-ca.pem` (CA certificate), `dev-ca.key` (CA key), `server.pem`
//! (server certificate followed by the CA certificate), `server.key`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// File names written by [`generate`].
pub const CA_CERT: &str = "dev-ca.pem";
pub const CA_KEY: &str = "dev-ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";

/// Names the server certificate is valid for.
const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Browsers refuse server certificates valid for longer than this.
const SERVER_VALIDITY: Duration = Duration::from_secs(397 * 86_400);

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("--host {0:?} is neither an IP address nor a DNS name")]
    BadHost(String),
}

/// What [`generate`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New files were written.
    Written,
    /// All files existed and `force` was not given.
    Kept,
}

/// The names the server certificate is made for: the local ones, then
/// `hosts` (IP addresses or DNS names), each once.
pub fn server_names(hosts: &[String]) -> Result<Vec<String>, CertGenError> {
    let mut names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    for host in hosts {
        let host = host.trim();
        let valid =
            host.parse::<std::net::IpAddr>().is_ok() || rustls_pki_types::DnsName::try_from(host).is_ok();
        if host.is_empty() || !valid {
            return Err(CertGenError::BadHost(host.to_string()));
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            names.push(host.to_string());
        }
    }
    Ok(names)
}

/// Writes the four files into `dir` unless they all exist (or `force`);
/// the server certificate also covers `hosts`.
pub fn generate(dir: &Path, force: bool, hosts: &[String]) -> Result<Outcome, CertGenError> {
    let server_names = server_names(hosts)?;
    let names = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY];
    if !force && names.iter().all(|n| dir.join(n).is_file()) {
        return Ok(Outcome::Kept);
    }
    std::fs::create_dir_all(dir).map_err(|source| CertGenError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name = name("wsmesh development CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(server_names)?;
    server.distinguished_name = name("wsmesh development server");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.use_authority_key_identifier_extension = true;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // A day back, so a clock slightly behind still accepts it.
    server.not_before = epoch + now.saturating_sub(Duration::from_secs(86_400));
    server.not_after = epoch + now + SERVER_VALIDITY;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    write(dir, CA_CERT, &ca_cert.pem(), 0o644)?;
    write(dir, CA_KEY, &ca_key.serialize_pem(), 0o600)?;
    write(
        dir,
        SERVER_CERT,
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
        0o644,
    )?;
    write(dir, SERVER_KEY, &server_key.serialize_pem(), 0o600)?;
    Ok(Outcome::Written)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(dir: &Path, file: &str, contents: &str, mode: u32) -> Result<(), CertGenError> {
    let path = dir.join(file);
    let io = |source| CertGenError::Io {
        path: path.clone(),
        source,
    };
    let tmp = dir.join(format!(".{file}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    // Replace atomically so a running lb reloading never reads half a file.
    std::fs::rename(&tmp, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_server_certificate_loads_and_files_are_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(generate(dir.path(), false, &[]).unwrap(), Outcome::Written);
        let loaded = crate::tls::load_cert(&dir.path().join(SERVER_CERT), Some(&dir.path().join(SERVER_KEY)));
        assert!(loaded.is_ok(), "{loaded:?}");
        let before = std::fs::read(dir.path().join(SERVER_CERT)).unwrap();
        assert_eq!(generate(dir.path(), false, &[]).unwrap(), Outcome::Kept);
        assert_eq!(std::fs::read(dir.path().join(SERVER_CERT)).unwrap(), before);
        assert_eq!(generate(dir.path(), true, &[]).unwrap(), Outcome::Written);
        assert_ne!(std::fs::read(dir.path().join(SERVER_CERT)).unwrap(), before);
    }

    /// Whether the leaf of `dir/server.pem` is valid for `name`.
    fn valid_for(dir: &Path, name: &str) -> bool {
        use rustls_pki_types::pem::PemObject;
        let leaf = rustls_pki_types::CertificateDer::pem_file_iter(dir.join(SERVER_CERT))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let cert = webpki::EndEntityCert::try_from(&leaf).unwrap();
        let name = rustls_pki_types::ServerName::try_from(name).unwrap();
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    }

    #[test]
    fn host_names_and_addresses_are_added_to_the_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = [
            "192.168.56.10".to_string(),
            "chat.lab".to_string(),
            "fd00::10".to_string(),
        ];
        assert_eq!(generate(dir.path(), false, &hosts).unwrap(), Outcome::Written);
        for name in [
            "192.168.56.10",
            "chat.lab",
            "fd00::10",
            "127.0.0.1",
            "::1",
            "localhost",
        ] {
            assert!(valid_for(dir.path(), name), "{name} missing");
        }
        assert!(!valid_for(dir.path(), "192.168.56.11"));
        assert!(!valid_for(dir.path(), "other.lab"));
    }

    #[test]
    fn a_bad_host_is_refused_and_duplicates_are_dropped() {
        assert!(matches!(
            server_names(&["not a name".into()]),
            Err(CertGenError::BadHost(h)) if h == "not a name"
        ));
        assert!(server_names(&["".into()]).is_err());
        assert_eq!(
            server_names(&["LOCALHOST".into(), "a.lab".into(), "a.lab".into()])
                .unwrap()
                .len(),
            4
        );
    }
}
