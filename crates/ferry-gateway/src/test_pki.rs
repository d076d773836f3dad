//! Test certificates for the crate's unit tests: a CA in a temp dir and leaves, CRLs and chains it signs, as
//! files a listener's TLS settings name.

use crate::TlsFiles;
use std::path::PathBuf;

/// A CA and certificates it signs, written to a temp dir.
pub(crate) struct Pki {
    /// Where the files are (`ca.pem`, and each leaf's `{file}.pem` and `{file}-key.pem`).
    pub(crate) dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    /// A new CA named `{tag} ca`, written as `ca.pem` in a fresh temp dir.
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ferry-gw-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{tag} ca"));
        let ca = params.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Self { dir, ca, ca_key }
    }

    /// The file `file` in the PKI's directory.
    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A leaf for `names`, written as `{file}.pem` and `{file}-key.pem`; returns the files and the DER.
    pub(crate) fn leaf(&self, file: &str, names: &[&str]) -> (TlsFiles, Vec<u8>) {
        self.leaf_numbered(file, names, None)
    }

    /// [`Pki::leaf`] with a serial number.
    pub(crate) fn leaf_numbered(
        &self,
        file: &str,
        names: &[&str],
        serial: Option<u64>,
    ) -> (TlsFiles, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params.serial_number = serial.map(rcgen::SerialNumber::from);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        let files = TlsFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write");
        std::fs::write(&files.key, key.serialize_pem()).expect("write");
        (files, cert.der().to_vec())
    }

    /// A CRL of the CA revoking `serials`, written as `{file}.pem`.
    pub(crate) fn crl(&self, file: &str, serials: &[u64]) -> PathBuf {
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2024, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca, &self.ca_key)
        .expect("crl");
        let path = self.dir.join(format!("{file}.pem"));
        std::fs::write(&path, crl.pem().expect("pem")).expect("write");
        path
    }

    /// A leaf signed by an intermediate CA the root signed; its file holds the leaf and the intermediate.
    pub(crate) fn chained_leaf(&self, file: &str, names: &[&str]) -> TlsFiles {
        let mid_key = rcgen::KeyPair::generate().expect("key");
        let mut mid = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        mid.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        mid.distinguished_name
            .push(rcgen::DnType::CommonName, "intermediate");
        let mid = mid
            .signed_by(&mid_key, &self.ca, &self.ca_key)
            .expect("sign");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params")
        .signed_by(&key, &mid, &mid_key)
        .expect("sign");
        let files = TlsFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, format!("{}{}", leaf.pem(), mid.pem())).expect("write");
        std::fs::write(&files.key, key.serialize_pem()).expect("write");
        files
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
