//! Certificate verification that says what it saw: the standard WebPKI verification (rustls' own, with the
//! trust roots given), whose refusals name the certificate's issuer and subject, so that a connector behind a
//! TLS-inspecting proxy logs "issued by CN=Corp Inspection CA" rather than only "unknown issuer".

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// A refused server certificate, with the names it carries.
#[derive(Debug)]
pub struct CertificateRefused {
    /// The name the connection was for.
    pub server: String,
    /// The certificate's issuer, as a distinguished name (`CN=…, O=…`), when it could be read.
    pub issuer: Option<String>,
    /// The certificate's subject, when it could be read.
    pub subject: Option<String>,
    /// rustls' reason.
    pub reason: CertificateError,
}

impl std::fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the certificate presented for {} was not accepted: {}",
            self.server, self.reason
        )?;
        if let Some(issuer) = &self.issuer {
            write!(f, "; issued by \"{issuer}\"")?;
        }
        if let Some(subject) = &self.subject {
            write!(f, " to \"{subject}\"")?;
        }
        if matches!(
            self.reason,
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        ) {
            write!(
                f,
                " (not a trusted CA; if a proxy inspects TLS, trust its CA with --ca-file)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for CertificateRefused {}

/// The issuer and subject of a DER certificate, if it parses.
fn names(der: &[u8]) -> (Option<String>, Option<String>) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => (
            Some(cert.issuer().to_string()).filter(|s| !s.is_empty()),
            Some(cert.subject().to_string()).filter(|s| !s.is_empty()),
        ),
        Err(_) => (None, None),
    }
}

/// rustls' WebPKI verifier, whose certificate errors name the issuer (see [`CertificateRefused`]).
#[derive(Debug)]
pub(crate) struct NamingVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl NamingVerifier {
    pub(crate) fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self { inner }
    }
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(reason)) => {
                let (issuer, subject) = names(end_entity);
                Err(rustls::Error::Other(rustls::OtherError(Arc::new(
                    CertificateRefused {
                        server: server_name.to_str().into_owned(),
                        issuer,
                        subject,
                        reason,
                    },
                ))))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An I/O error of a TLS handshake, said plainly: a refused certificate by its [`CertificateRefused`] text,
/// anything else as it is.
pub fn describe_io(error: &std::io::Error) -> String {
    if let Some(refused) = certificate_refused(error) {
        return refused.to_string();
    }
    error.to_string()
}

/// The refused certificate inside a TLS handshake's error, if that is why it failed.
pub fn certificate_refused(error: &std::io::Error) -> Option<&CertificateRefused> {
    let inner = error.get_ref()?;
    match inner.downcast_ref::<rustls::Error>()? {
        rustls::Error::Other(other) => other.0.downcast_ref::<CertificateRefused>(),
        _ => None,
    }
}
