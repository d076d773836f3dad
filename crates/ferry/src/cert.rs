//! `ferry cert dev`: a development CA and a server certificate signed by it, for people who are not PKI experts.
//! A certificate from `openssl req -x509` is a CA certificate, which TLS clients refuse as a server's
//! (`CaUsedAsEndEntity`); this writes the two certificates a client expects: trust `ca.pem` (`--ca-file`), serve
//! `server.pem` with `server-key.pem` (`--tls-cert`, `--tls-key`). Key files are written with mode 0600.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The files `ferry cert dev` writes, by name in the output directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";

/// What was written.
pub struct DevCerts {
    pub dir: PathBuf,
    /// SHA-256 of the server certificate's DER, colon-separated hex: what `--pin-sha256` takes.
    pub server_fingerprint: String,
}

/// Write a CA (`ca.pem`, `ca-key.pem`) and a server certificate for `names` (DNS names or IP addresses) signed by
/// it (`server.pem`, `server-key.pem`) into `dir`, valid from a day ago for `days` days. Existing files are not
/// overwritten unless `force`.
pub fn dev(names: &[String], dir: &Path, days: u32, force: bool) -> anyhow::Result<DevCerts> {
    anyhow::ensure!(!names.is_empty(), "give at least one --name");
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if !force {
        for file in [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY] {
            let path = dir.join(file);
            anyhow::ensure!(
                !path.exists(),
                "{} exists; pass --force to replace it",
                path.display()
            );
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::days(1);
    let not_after = now + time::Duration::days(i64::from(days));

    let ca_key = KeyPair::generate().context("generate the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Ferry development CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).context("sign the CA")?;

    let key = KeyPair::generate().context("generate the server key")?;
    let mut server = CertificateParams::new(names.to_vec())
        .with_context(|| format!("names {names:?}: not DNS names or IP addresses"))?;
    server.is_ca = IsCa::ExplicitNoCa;
    server
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = not_before;
    server.not_after = not_after;
    let server_cert = server
        .signed_by(&key, &ca_cert, &ca_key)
        .context("sign the server certificate")?;

    write(&dir.join(CA_CERT), &ca_cert.pem(), 0o644)?;
    write(&dir.join(CA_KEY), &ca_key.serialize_pem(), 0o600)?;
    write(&dir.join(SERVER_CERT), &server_cert.pem(), 0o644)?;
    write(&dir.join(SERVER_KEY), &key.serialize_pem(), 0o600)?;
    Ok(DevCerts {
        dir: dir.to_owned(),
        server_fingerprint: ferry_tunnel::tls::Pin::of(server_cert.der()).to_string(),
    })
}

/// Write `text` to `path` with `mode` (unix), replacing what is there; the mode is set when the file is created,
/// so a key is never readable by others, not even for a moment.
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // An existing file keeps its old mode on open; set it.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_a_server_certificate_that_rustls_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = dev(&names, &out, 30, false).expect("dev certs");
        assert_eq!(made.server_fingerprint.len(), 95);
        #[cfg(unix)]
        for (file, mode) in [(CA_KEY, 0o600), (SERVER_KEY, 0o600), (CA_CERT, 0o644)] {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = std::fs::metadata(out.join(file)).expect("file");
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        // The server certificate verifies against the CA for both names, as the connector verifies it.
        let roots = ferry_tunnel::client::root_store(Some(&out.join(CA_CERT))).expect("roots");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_file(out.join(SERVER_CERT))
            .expect("server.pem");
        use rustls::client::danger::ServerCertVerifier as _;
        for name in ["localhost", "127.0.0.1"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).expect("name");
            verifier
                .verify_server_cert(
                    &der,
                    &[],
                    &server_name,
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // No silent overwrite.
        let again = dev(&names, &out, 30, false).err().expect("exists");
        assert!(again.to_string().contains("--force"), "{again}");
        dev(&names, &out, 30, true).expect("forced");
    }
}
