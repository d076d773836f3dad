//! Certificate verification that says what it saw: the standard WebPKI verification (rustls' own, with the
//! trust roots given), whose refusals name the certificate's issuer and subject, so that a connector behind a
//! TLS-inspecting proxy logs "issued by CN=Corp Inspection CA" rather than only "unknown issuer"; the refusals
//! most people meet with self-signed setups (a CA certificate used as the server's, as `openssl req -x509` makes
//! it; an unknown self-signed issuer) say what to do instead. Also certificate pinning ([`Pin`]): a certificate
//! whose SHA-256 fingerprint is pinned is trusted whatever its issuer, names or CA flag.

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
    /// The certificate's SHA-256 fingerprint (hex, colon-separated), what `--pin-sha256` takes.
    pub fingerprint: String,
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
        let self_signed = self.issuer.is_some() && self.issuer == self.subject;
        match &self.reason {
            CertificateError::Other(other)
                if format!("{other:?}").contains("CaUsedAsEndEntity") =>
            {
                write!(
                    f,
                    " (the node's certificate is a CA certificate used as a server certificate, as `openssl req \
                     -x509` makes it; make a CA and a server certificate with `ferry cert dev`, or pin this one \
                     with --pin-sha256 {})",
                    self.fingerprint
                )?;
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature if self_signed => {
                write!(
                    f,
                    " (a self-signed certificate: trust its CA with --ca-file, make a CA and a server \
                     certificate with `ferry cert dev`, or pin this one with --pin-sha256 {})",
                    self.fingerprint
                )?;
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                write!(
                    f,
                    " (not a trusted CA; if a proxy inspects TLS, trust its CA with --ca-file)"
                )?;
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                write!(
                    f,
                    " (the certificate does not name this host; make one that does, e.g. `ferry cert dev --name \
                     HOST`, or pin it with --pin-sha256 {})",
                    self.fingerprint
                )?;
            }
            _ => {}
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

/// A pinned certificate: the SHA-256 of its DER encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(der).into())
    }
}

/// Why a pin was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")]
pub struct BadPin(pub String);

impl std::str::FromStr for Pin {
    type Err = BadPin;

    /// 64 hex digits, in either case, with or without `:` between bytes (as `openssl x509 -fingerprint
    /// -sha256` prints it, with or without its `sha256 Fingerprint=` prefix).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadPin(text.to_owned());
        let digits: Vec<u8> = text
            .trim()
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .bytes()
            .filter(|b| *b != b':')
            .collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// rustls' WebPKI verifier, whose certificate errors name the issuer (see [`CertificateRefused`]), with the
/// pinned certificates accepted before it is asked. Without trust roots (`inner` `None`), only pinned
/// certificates pass.
#[derive(Debug)]
pub(crate) struct NamingVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<Pin>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl NamingVerifier {
    pub(crate) fn new(
        inner: Option<Arc<WebPkiServerVerifier>>,
        pins: Vec<Pin>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Self {
        Self {
            inner,
            pins,
            algorithms: provider.signature_verification_algorithms,
        }
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
        if !self.pins.is_empty() && self.pins.contains(&Pin::of(end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = match &self.inner {
            Some(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        match verified {
            Err(rustls::Error::InvalidCertificate(reason)) => {
                let (issuer, subject) = names(end_entity);
                Err(rustls::Error::Other(rustls::OtherError(Arc::new(
                    CertificateRefused {
                        server: server_name.to_str().into_owned(),
                        issuer,
                        subject,
                        reason,
                        fingerprint: Pin::of(end_entity).to_string(),
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons_and_print_with_them() {
        let hex = "ab".repeat(32);
        let pin: Pin = hex.parse().expect("plain hex");
        assert_eq!(pin, Pin([0xab; 32]));
        let colons = pin.to_string();
        assert_eq!(colons.len(), 32 * 3 - 1);
        assert_eq!(colons.parse::<Pin>().expect("colons"), pin);
        let openssl = format!("sha256 Fingerprint={colons}");
        assert_eq!(openssl.parse::<Pin>().expect("openssl's form"), pin);
        assert!("abcd".parse::<Pin>().is_err());
        assert!("zz".repeat(32).parse::<Pin>().is_err());
    }

    #[test]
    fn a_ca_used_as_the_server_certificate_says_what_to_do() {
        let refused = CertificateRefused {
            server: "127.0.0.1".to_owned(),
            issuer: Some("CN=dev".to_owned()),
            subject: Some("CN=dev".to_owned()),
            reason: CertificateError::Other(rustls::OtherError(Arc::new(
                webpki_like::CaUsedAsEndEntity,
            ))),
            fingerprint: Pin([1; 32]).to_string(),
        };
        let text = refused.to_string();
        assert!(
            text.contains("a CA certificate used as a server certificate"),
            "{text}"
        );
        assert!(text.contains("ferry cert dev"), "{text}");
        assert!(text.contains("--pin-sha256 01:01"), "{text}");
    }

    /// Stands in for webpki's error of the same name, which rustls passes on as `CertificateError::Other`.
    mod webpki_like {
        #[derive(Debug)]
        pub struct CaUsedAsEndEntity;
        impl std::fmt::Display for CaUsedAsEndEntity {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("CaUsedAsEndEntity")
            }
        }
        impl std::error::Error for CaUsedAsEndEntity {}
    }
}
