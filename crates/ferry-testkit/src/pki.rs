//! Test certificates: a CA and a server certificate for `127.0.0.1` and `localhost`, as PEM files (the CA's key
//! too, for a TLS-inspecting proxy that signs the certificates it makes up with it).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

/// A CA and a server certificate signed by it, written to a temporary directory that lives as long as this.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server certificate, PEM.
    pub cert_pem: String,
    /// The server key, PEM (PKCS#8).
    pub key_pem: String,
    /// The CA's key, PEM (PKCS#8).
    pub ca_key_pem: String,
}

impl TestPki {
    /// A CA named `CN=ferry test ca`.
    pub fn new() -> anyhow::Result<Self> {
        Self::named("ferry test ca")
    }

    /// A CA with the common name `ca_name` (two of them tell apart whose certificate a client saw).
    pub fn named(ca_name: &str) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

        let dir = tempfile::Builder::new().prefix("ferry-pki-").tempdir()?;
        let pki = Self {
            dir,
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_key_pem: ca_key.serialize_pem(),
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem)?;
        std::fs::write(pki.cert_path(), &pki.cert_pem)?;
        std::fs::write(pki.key_path(), &pki.key_pem)?;
        std::fs::write(pki.ca_key_path(), &pki.ca_key_pem)?;
        Ok(pki)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.path().join("ca-key.pem")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// The CA as a reqwest root certificate.
    pub fn reqwest_ca(&self) -> anyhow::Result<reqwest::Certificate> {
        Ok(reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?)
    }
}
