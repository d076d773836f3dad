//! The client certificate's details sent upstream: the nginx-style `X-SSL-Client-*` headers (names configurable
//! per route) and Envoy's `X-Forwarded-Client-Cert`, rendered from the [`TlsInfo`] the listener attached.

use crate::EdgeError;
use ferry_config::ClientCertHeaders;
use ferry_http::TlsInfo;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// The keys of `client_cert_header_names` and their default header names.
const DEFAULT_NAMES: [(&str, &str); 9] = [
    ("verify", "x-ssl-client-verify"),
    ("s_dn", "x-ssl-client-s-dn"),
    ("i_dn", "x-ssl-client-i-dn"),
    ("serial", "x-ssl-client-serial"),
    ("v_start", "x-ssl-client-v-start"),
    ("v_end", "x-ssl-client-v-end"),
    ("fingerprint", "x-ssl-client-fingerprint"),
    ("protocol", "x-ssl-protocol"),
    ("cert", "x-ssl-client-cert"),
];

const XFCC: &str = "x-forwarded-client-cert";

/// What a route sends: the formats and the nginx-style names, in the order of [`DEFAULT_NAMES`].
#[derive(Debug, Clone)]
pub struct CertHeaders {
    format: ClientCertHeaders,
    names: Vec<HeaderName>,
}

impl CertHeaders {
    pub fn compile(
        key: &str,
        format: ClientCertHeaders,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, EdgeError> {
        for k in overrides.keys() {
            if !DEFAULT_NAMES.iter().any(|(d, _)| d == k) {
                return Err(EdgeError::Config {
                    path: format!("{key}.client_cert_header_names"),
                    message: format!(
                        "unknown key {k:?}; known: verify, s_dn, i_dn, serial, v_start, v_end, fingerprint, protocol, cert"
                    ),
                });
            }
        }
        let names = DEFAULT_NAMES
            .iter()
            .map(|(k, default)| {
                let name = overrides.get(*k).map(String::as_str).unwrap_or(default);
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| EdgeError::Config {
                    path: format!("{key}.client_cert_header_names.{k}"),
                    message: format!("{name:?} is not a header name"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { format, names })
    }

    /// Every header name this route may send (to strip incoming ones).
    pub fn family(&self) -> impl Iterator<Item = &HeaderName> {
        self.names.iter()
    }

    /// Add the headers for a request that arrived with `tls` (none: not over TLS).
    pub fn apply(&self, headers: &mut HeaderMap, tls: Option<&TlsInfo>) {
        let Some(tls) = tls else { return };
        let nginx = matches!(
            self.format,
            ClientCertHeaders::Nginx | ClientCertHeaders::Both
        );
        let envoy = matches!(
            self.format,
            ClientCertHeaders::Envoy | ClientCertHeaders::Both
        );
        let leaf = tls.client_chain.first();
        let parsed = leaf.and_then(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c));
        if nginx {
            let values = nginx_values_of(tls, leaf.map(Vec::as_slice), parsed.as_ref());
            for (name, value) in self.names.iter().zip(values) {
                if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    headers.insert(name.clone(), v);
                }
            }
        }
        // Envoy's header has no way to say "failed": it names verified certificates only.
        if envoy && tls.client_verified() {
            if let (Some(der), Some(cert)) = (leaf, &parsed) {
                let mut v = format!(
                    "Hash={};Cert=\"{}\";Subject=\"{}\"",
                    hex(&Sha256::digest(der)),
                    escaped_pem(der),
                    rfc2253(cert.subject()).replace('"', "\\\"")
                );
                if let Ok(Some(san)) = cert.subject_alternative_name() {
                    for n in &san.value.general_names {
                        match n {
                            GeneralName::URI(u) => v.push_str(&format!(";URI={u}")),
                            GeneralName::DNSName(d) => v.push_str(&format!(";DNS={d}")),
                            _ => {}
                        }
                    }
                }
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(XFCC, v);
                }
            }
        }
    }
}

/// Which of the nginx-style values: indexes into [`nginx_values`]'s answer, in the order of the keys of
/// `client_cert_header_names`.
pub(crate) mod field {
    pub const VERIFY: usize = 0;
    pub const S_DN: usize = 1;
    pub const I_DN: usize = 2;
    pub const SERIAL: usize = 3;
    pub const V_START: usize = 4;
    pub const V_END: usize = 5;
    pub const FINGERPRINT: usize = 6;
    pub const PROTOCOL: usize = 7;
    pub const CERT: usize = 8;
}

/// The nginx-style values of a TLS connection's client certificate (`None`: nothing to say), indexed by
/// [`field`]: what the `X-SSL-Client-*` headers carry and what the `$ssl_*` variables of header templates read.
pub(crate) fn nginx_values(tls: &TlsInfo) -> [Option<String>; 9] {
    let leaf = tls.client_chain.first();
    let parsed = leaf.and_then(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c));
    nginx_values_of(tls, leaf.map(Vec::as_slice), parsed.as_ref())
}

fn nginx_values_of(
    tls: &TlsInfo,
    leaf: Option<&[u8]>,
    parsed: Option<&X509Certificate<'_>>,
) -> [Option<String>; 9] {
    let mut values: [Option<String>; 9] = Default::default();
    values[field::PROTOCOL] = tls.protocol.map(str::to_owned);
    match (leaf, parsed) {
        (Some(der), Some(cert)) => {
            values[field::VERIFY] = Some(match &tls.client_verify_error {
                None => "SUCCESS".into(),
                Some(reason) => format!("FAILED:{reason}"),
            });
            values[field::S_DN] = Some(rfc2253(cert.subject()));
            values[field::I_DN] = Some(rfc2253(cert.issuer()));
            values[field::SERIAL] = Some(
                cert.raw_serial_as_string()
                    .replace(':', "")
                    .to_ascii_uppercase(),
            );
            values[field::V_START] = Some(nginx_time(&cert.validity().not_before));
            values[field::V_END] = Some(nginx_time(&cert.validity().not_after));
            values[field::FINGERPRINT] = Some(hex(&Sha256::digest(der)));
            values[field::CERT] = Some(escaped_pem(der));
        }
        (Some(_), None) => values[field::VERIFY] = Some("FAILED:unparsable certificate".into()),
        (None, _) => values[field::VERIFY] = Some("NONE".into()),
    }
    values
}

/// Whether `name` is of the client-certificate family by default (`X-SSL-Client-*`, `X-SSL-Protocol`,
/// `X-Forwarded-Client-Cert`).
pub fn is_default_family(name: &str) -> bool {
    name.starts_with("x-ssl-client-") || name == "x-ssl-protocol" || name == XFCC
}

/// A distinguished name as RFC 2253 writes it (as nginx's `$ssl_client_s_dn`): most specific first, `,` between.
fn rfc2253(name: &X509Name<'_>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let key = x509_parser::objects::oid2abbrev(
                    a.attr_type(),
                    x509_parser::objects::oid_registry(),
                )
                .map(str::to_owned)
                .unwrap_or_else(|_| a.attr_type().to_id_string());
                let value = a.as_str().map(escape_dn).unwrap_or_default();
                format!("{key}={value}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

fn escape_dn(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `Nov 23 12:00:00 2026 GMT`, as nginx's `$ssl_client_v_start`.
fn nginx_time(t: &x509_parser::time::ASN1Time) -> String {
    let d = t.to_datetime();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(u8::from(d.month())).saturating_sub(1) % 12];
    format!(
        "{month} {:>2} {:02}:{:02}:{:02} {} GMT",
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.year()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Characters kept as they are in the URL-encoded PEM (as nginx's `$ssl_client_escaped_cert`).
const PEM_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The certificate as PEM, URL-encoded into one line.
fn escaped_pem(der: &[u8]) -> String {
    let pem = pem_encode(der);
    utf8_percent_encode(&pem, PEM_KEEP).to_string()
}

fn pem_encode(der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or(""));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> Vec<u8> {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let ca = ca.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p =
            rcgen::CertificateParams::new(vec!["client.example.test".to_owned()]).expect("p");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "client one");
        p.serial_number = Some(rcgen::SerialNumber::from(vec![0x01, 0xab]));
        p.not_before = rcgen::date_time_ymd(2026, 1, 2);
        p.not_after = rcgen::date_time_ymd(2027, 11, 30);
        p.signed_by(&key, &ca, &ca_key)
            .expect("sign")
            .der()
            .to_vec()
    }

    fn info(chain: Vec<Vec<u8>>) -> TlsInfo {
        TlsInfo {
            protocol: Some("TLSv1.3"),
            client_chain: chain,
            client_verify_error: None,
        }
    }

    #[test]
    fn a_failed_certificate_is_named_failed_and_gets_no_envoy_header() {
        let h =
            CertHeaders::compile("r", ClientCertHeaders::Both, &BTreeMap::new()).expect("compile");
        let mut headers = HeaderMap::new();
        let failed = TlsInfo {
            client_verify_error: Some("certificate has expired".into()),
            ..info(vec![leaf()])
        };
        h.apply(&mut headers, Some(&failed));
        assert_eq!(
            headers["x-ssl-client-verify"],
            "FAILED:certificate has expired"
        );
        assert!(headers.contains_key("x-ssl-client-s-dn"));
        assert!(!headers.contains_key("x-forwarded-client-cert"));
    }

    #[test]
    fn nginx_headers_describe_the_certificate() {
        let der = leaf();
        let h =
            CertHeaders::compile("r", ClientCertHeaders::Nginx, &BTreeMap::new()).expect("compile");
        let mut headers = HeaderMap::new();
        h.apply(&mut headers, Some(&info(vec![der.clone()])));
        assert_eq!(headers["x-ssl-client-verify"], "SUCCESS");
        // rcgen encodes CN before O; RFC 2253 writes the last RDN first
        assert_eq!(headers["x-ssl-client-s-dn"], "O=Acme\\, Inc,CN=client one");
        assert_eq!(headers["x-ssl-client-i-dn"], "CN=Test CA");
        assert_eq!(headers["x-ssl-client-serial"], "01AB");
        assert_eq!(headers["x-ssl-client-v-start"], "Jan  2 00:00:00 2026 GMT");
        assert_eq!(headers["x-ssl-client-v-end"], "Nov 30 00:00:00 2027 GMT");
        assert_eq!(
            headers["x-ssl-client-fingerprint"],
            hex(&Sha256::digest(&der))
        );
        assert_eq!(headers["x-ssl-protocol"], "TLSv1.3");
        let cert = headers["x-ssl-client-cert"].to_str().expect("ascii");
        assert!(
            cert.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
            "{cert}"
        );
        assert!(!cert.contains('\n') && !cert.contains(' '));
        let decoded = percent_encoding::percent_decode_str(cert)
            .decode_utf8()
            .expect("utf8");
        use rustls_pki_types::pem::PemObject;
        let parsed = rustls_pki_types::CertificateDer::pem_slice_iter(decoded.as_bytes())
            .next()
            .expect("one")
            .expect("pem");
        assert_eq!(parsed.as_ref(), der.as_slice());
        assert!(!headers.contains_key(XFCC));
    }

    #[test]
    fn no_certificate_is_none_and_names_are_configurable() {
        let names: BTreeMap<String, String> =
            [("verify".to_owned(), "X-Client-Verify".to_owned())].into();
        let h = CertHeaders::compile("r", ClientCertHeaders::Both, &names).expect("compile");
        let mut headers = HeaderMap::new();
        h.apply(&mut headers, Some(&info(vec![])));
        assert_eq!(headers["x-client-verify"], "NONE");
        assert!(!headers.contains_key("x-ssl-client-verify"));
        assert!(!headers.contains_key(XFCC));
        assert!(h.family().any(|n| n == "x-client-verify"));
        let bad: BTreeMap<String, String> = [("subject".to_owned(), "x".to_owned())].into();
        let e = CertHeaders::compile("gateway.routes[0]", ClientCertHeaders::Nginx, &bad)
            .expect_err("bad");
        assert!(
            e.to_string()
                .starts_with("gateway.routes[0].client_cert_header_names"),
            "{e}"
        );
    }

    #[test]
    fn envoy_format_has_hash_cert_subject_and_names() {
        let der = leaf();
        let h =
            CertHeaders::compile("r", ClientCertHeaders::Envoy, &BTreeMap::new()).expect("compile");
        let mut headers = HeaderMap::new();
        h.apply(&mut headers, Some(&info(vec![der.clone()])));
        let v = headers[XFCC].to_str().expect("ascii");
        assert!(
            v.starts_with(&format!(
                "Hash={};Cert=\"-----BEGIN",
                hex(&Sha256::digest(&der))
            )),
            "{v}"
        );
        assert!(
            v.contains(";Subject=\"O=Acme\\, Inc,CN=client one\""),
            "{v}"
        );
        assert!(v.ends_with(";DNS=client.example.test"), "{v}");
        assert!(!headers.contains_key("x-ssl-client-verify"));
    }
}
