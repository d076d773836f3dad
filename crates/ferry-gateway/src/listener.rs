//! Binding a listener and, when certificate files are given, preparing TLS (1.2 and 1.3, ALPN h2 and http/1.1):
//! several certificates chosen by SNI, client certificates (off, optional, required) verified against a CA
//! bundle, and certificate files reloaded on change for new connections.

use crate::GatewayError;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// PEM files of a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Whether a listener asks clients for certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    Off,
    /// Verified when the client sends one; a client without one is let in.
    Optional,
    /// A verified certificate is needed to connect.
    Required,
}

/// Everything about a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The certificate for clients whose SNI name matches no entry of `sni` (or who send none).
    pub default: TlsFiles,
    /// More certificates, by SNI name: exact (`api.example.com`) or wildcard (`*.example.com`).
    pub sni: Vec<(Vec<String>, TlsFiles)>,
    pub client_auth: ClientAuth,
    /// The CA bundle client certificates are verified against; needed unless `client_auth` is off.
    pub client_ca: Option<PathBuf>,
    /// How often the certificate files are checked for changes; `None`: never.
    pub reload_interval: Option<Duration>,
}

impl TlsOptions {
    /// Only `files`, no client certificates, no reload: what [`Listener::bind`] uses.
    pub fn single(files: TlsFiles) -> Self {
        Self {
            default: files,
            sni: Vec::new(),
            client_auth: ClientAuth::Off,
            client_ca: None,
            reload_interval: None,
        }
    }
}

/// A bound listener, plain or TLS.
pub struct Listener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
    /// With `client_auth = optional`: the CA check, run after the handshake on whatever chain the client sent.
    pub(crate) client_check: Option<Arc<dyn ClientCertVerifier>>,
    local_addr: SocketAddr,
}

impl Listener {
    /// Bind `addr` now (port 0 picks a free port) and load the TLS files if given.
    pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self, GatewayError> {
        Self::bind_with(addr, tls.map(|f| TlsOptions::single(f.clone()))).await
    }

    /// Bind `addr` now, with TLS as `tls` says (certificates checked before binding). With a reload interval, a
    /// task checks the certificate files until the listener is dropped.
    pub async fn bind_with(
        addr: SocketAddr,
        tls: Option<TlsOptions>,
    ) -> Result<Self, GatewayError> {
        let mut client_check = None;
        let tls = match tls {
            Some(options) => {
                let resolver = Arc::new(SniResolver {
                    store: RwLock::new(Arc::new(CertStore::load(&options)?)),
                });
                let (acceptor, check) = acceptor(&options, resolver.clone())?;
                client_check = check;
                if let Some(every) = options.reload_interval.filter(|d| !d.is_zero()) {
                    tokio::spawn(watch_certificates(
                        Arc::downgrade(&resolver),
                        options,
                        every,
                    ));
                }
                Some(acceptor)
            }
            None => None,
        };
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let local_addr = tcp
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Self {
            tcp,
            tls,
            client_check,
            local_addr,
        })
    }

    /// The CA check of an `optional` listener, for [`connection_info`].
    pub(crate) fn client_check(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.client_check.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }
}

/// The TLS facts of an accepted connection, to attach to its requests: protocol version and the client's
/// certificate chain (verified during the handshake when client certificates are on).
pub fn tls_info(conn: &rustls::ServerConnection) -> ferry_http::TlsInfo {
    ferry_http::TlsInfo {
        protocol: conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        }),
        client_chain: conn
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default(),
        client_verify_error: None,
    }
}

/// The TLS facts of an accepted connection (see [`tls_info`]), with the client certificate checked against the
/// CA bundle by `client_check` (the listener's, when its client authentication is optional).
pub(crate) fn connection_info(
    conn: &rustls::ServerConnection,
    client_check: Option<&dyn ClientCertVerifier>,
) -> ferry_http::TlsInfo {
    let mut info = tls_info(conn);
    if let (Some(check), Some((leaf, intermediates))) = (
        client_check,
        conn.peer_certificates().and_then(|c| c.split_first()),
    ) {
        if let Err(error) =
            check.verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
        {
            info.client_verify_error = Some(verify_reason(&error));
        }
    }
    info
}

/// A short reason for `X-SSL-Client-Verify: FAILED:reason`, in the spirit of OpenSSL's messages that nginx
/// passes on.
fn verify_reason(error: &rustls::Error) -> String {
    use rustls::CertificateError as E;
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            E::Expired | E::ExpiredContext { .. } => "certificate has expired".to_owned(),
            E::NotValidYet | E::NotValidYetContext { .. } => {
                "certificate is not yet valid".to_owned()
            }
            E::UnknownIssuer => "unable to get local issuer certificate".to_owned(),
            E::BadSignature => "certificate signature failure".to_owned(),
            E::Revoked => "certificate revoked".to_owned(),
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
                "unsupported certificate purpose".to_owned()
            }
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// The client-certificate check of an `optional` listener: every chain is let through the handshake (the
/// client still proves it holds the key, by the handshake signature), and [`Listener::connection_info`] checks it
/// against the CA bundle afterwards, so that a client with a bad certificate reaches the upstream marked
/// `FAILED:reason` instead of being cut off. Written by hand because rustls offers no "verify but tolerate"
/// mode; the checks themselves stay rustls's (`WebPkiClientVerifier`).
#[derive(Debug)]
struct TolerantClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for TolerantClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor of a TLS listener, and for `optional` client authentication the CA check to run after the
/// handshake.
type Acceptor = (TlsAcceptor, Option<Arc<dyn ClientCertVerifier>>);

fn acceptor(options: &TlsOptions, resolver: Arc<SniResolver>) -> Result<Acceptor, GatewayError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut check = None;
    let builder = match options.client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        mode => {
            let path = options
                .client_ca
                .as_deref()
                .ok_or_else(|| GatewayError::Certificate {
                    path: "client_ca".into(),
                    message: "client certificates need a CA bundle".into(),
                })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| GatewayError::Certificate {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| GatewayError::Certificate {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            if mode == ClientAuth::Optional {
                check = Some(verifier.clone());
                builder
                    .with_client_cert_verifier(Arc::new(TolerantClientVerifier { inner: verifier }))
            } else {
                builder.with_client_cert_verifier(verifier)
            }
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), check))
}

/// The loaded certificates: a default and some by SNI name.
#[derive(Debug)]
struct CertStore {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    /// The files' bytes, to notice changes.
    fingerprint: Vec<u8>,
}

impl CertStore {
    fn load(options: &TlsOptions) -> Result<Self, GatewayError> {
        let mut fingerprint = Vec::new();
        let default = Arc::new(load_key_pair(&options.default, &mut fingerprint)?);
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (names, files) in &options.sni {
            let key = Arc::new(load_key_pair(files, &mut fingerprint)?);
            for name in names {
                let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                        wildcard.push((suffix.to_owned(), key.clone()))
                    }
                    Some(_) => {
                        return Err(GatewayError::Certificate {
                            path: files.cert.display().to_string(),
                            message: format!("bad wildcard name {name:?}"),
                        })
                    }
                    None => {
                        exact.insert(name, key.clone());
                    }
                }
            }
        }
        // longer suffixes first: the most specific wildcard wins
        wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        Ok(Self {
            default,
            exact,
            wildcard,
            fingerprint,
        })
    }

    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

/// Picks the certificate by SNI from the current store, which a reload replaces.
#[derive(Debug)]
struct SniResolver {
    store: RwLock<Arc<CertStore>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = match self.store.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Some(store.pick(hello.server_name()))
    }
}

/// Reload the certificate files when their content changes, until the listener is gone. A file that does not
/// load is logged and the certificates in use stay.
async fn watch_certificates(resolver: Weak<SniResolver>, options: TlsOptions, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut refused: Option<Vec<u8>> = None;
    loop {
        tick.tick().await;
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        let current = match resolver.store.read() {
            Ok(s) => s.fingerprint.clone(),
            Err(poisoned) => poisoned.into_inner().fingerprint.clone(),
        };
        let now = files_bytes(&options);
        if now == current || refused.as_ref() == Some(&now) {
            continue;
        }
        match CertStore::load(&options) {
            Ok(store) => {
                if let Ok(mut s) = resolver.store.write() {
                    *s = Arc::new(store);
                }
                refused = None;
                tracing::info!(file = %options.default.cert.display(), "tls certificates reloaded");
            }
            Err(e) => {
                tracing::error!(
                    "tls certificate files refused, keeping the certificates in use: {e}"
                );
                refused = Some(now);
            }
        }
    }
}

/// The bytes of every certificate and key file, in load order (unreadable files count as empty).
fn files_bytes(options: &TlsOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for files in std::iter::once(&options.default).chain(options.sni.iter().map(|(_, f)| f)) {
        out.extend(std::fs::read(&files.cert).unwrap_or_default());
        out.extend(std::fs::read(&files.key).unwrap_or_default());
    }
    out
}

fn load_key_pair(
    files: &TlsFiles,
    fingerprint: &mut Vec<u8>,
) -> Result<CertifiedKey, GatewayError> {
    fingerprint.extend(std::fs::read(&files.cert).unwrap_or_default());
    fingerprint.extend(std::fs::read(&files.key).unwrap_or_default());
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| GatewayError::Key {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| GatewayError::Key {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let err = |message: String| GatewayError::Certificate {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_port_zero_and_reports_url() {
        let l = Listener::bind(([127, 0, 0, 1], 0).into(), None)
            .await
            .expect("bind");
        assert_ne!(l.local_addr().port(), 0);
        assert!(l.url().starts_with("http://127.0.0.1:"));
    }

    #[tokio::test]
    async fn bad_tls_files_name_the_file() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = Listener::bind(([127, 0, 0, 1], 0).into(), Some(&files))
            .await
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[tokio::test]
    async fn loads_generated_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let dir = std::env::temp_dir().join(format!("ferry-gw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let files = TlsFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).expect("write");
        std::fs::write(&files.key, cert.key_pair.serialize_pem()).expect("write");
        let l = Listener::bind(([127, 0, 0, 1], 0).into(), Some(&files))
            .await
            .expect("bind tls");
        assert!(l.url().starts_with("https://"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A CA and certificates it signs, written to a temp dir.
    struct Pki {
        dir: PathBuf,
        ca: rcgen::Certificate,
        ca_key: rcgen::KeyPair,
    }

    impl Pki {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ferry-gw-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            std::fs::create_dir_all(&dir).expect("dir");
            let ca_key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("{tag} ca"));
            let ca = params.self_signed(&ca_key).expect("ca");
            std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
            Self { dir, ca, ca_key }
        }

        /// A leaf for `names`, written as `{file}.pem` and `{file}-key.pem`; returns the files and the DER.
        fn leaf(&self, file: &str, names: &[&str]) -> (TlsFiles, Vec<u8>) {
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(
                names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
            )
            .expect("params");
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
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Accept TLS connections forever (handshake only, then hold the stream briefly).
    fn accept_loop(l: Listener) -> tokio::task::JoinHandle<()> {
        accept_recording(l, Arc::default())
    }

    /// [`accept_loop`], recording each connection's [`tls_info`].
    fn accept_recording(
        l: Listener,
        seen: Arc<std::sync::Mutex<Vec<ferry_http::TlsInfo>>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let Some(tls) = l.tls.clone() else { return };
            let check = l.client_check();
            while let Ok((s, _)) = l.tcp.accept().await {
                let tls = tls.clone();
                let seen = seen.clone();
                let check = check.clone();
                tokio::spawn(async move {
                    if let Ok(mut conn) = tls.accept(s).await {
                        if let Ok(mut v) = seen.lock() {
                            v.push(connection_info(conn.get_ref().1, check.as_deref()));
                        }
                        use tokio::io::AsyncWriteExt;
                        let _ = conn.write_all(b"hi").await;
                        let _ = conn.shutdown().await;
                    }
                });
            }
        })
    }

    /// Handshake as `name` trusting `ca`, with an optional client certificate; returns the server's leaf DER.
    async fn handshake(
        addr: SocketAddr,
        ca: &Path,
        name: &str,
        client: Option<&TlsFiles>,
    ) -> Result<Vec<u8>, String> {
        use tokio::io::AsyncReadExt;
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(ca).map_err(|e| e.to_string())? {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            Some(f) => builder
                .with_client_auth_cert(
                    load_certs(&f.cert).map_err(|e| e.to_string())?,
                    PrivateKeyDer::from_pem_file(&f.key).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?,
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let server_name =
            rustls_pki_types::ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let mut conn = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let leaf = conn
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or("no certificate")?;
        // with TLS 1.3 a refused client certificate shows on the first read
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(leaf)
    }

    #[tokio::test]
    async fn certificates_are_chosen_by_sni() {
        let pki = Pki::new("sni");
        let (default, default_der) = pki.leaf("default", &["localhost"]);
        let (api, api_der) = pki.leaf("api", &["api.example.test"]);
        let (wild, wild_der) = pki.leaf("wild", &["*.apps.example.test"]);
        let options = TlsOptions {
            sni: vec![
                (vec!["api.example.test".into()], api),
                (vec!["*.apps.example.test".into()], wild),
            ],
            ..TlsOptions::single(default)
        };
        let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(options))
            .await
            .expect("bind");
        let addr = l.local_addr();
        let task = accept_loop(l);
        let ca = pki.dir.join("ca.pem");
        let got = |name: &'static str| {
            let ca = ca.clone();
            async move { handshake(addr, &ca, name, None).await.expect("handshake") }
        };
        assert_eq!(got("api.example.test").await, api_der);
        assert_eq!(got("shop.apps.example.test").await, wild_der);
        assert_eq!(got("localhost").await, default_der);
        task.abort();
    }

    #[tokio::test]
    async fn client_certificates_required_and_optional() {
        let pki = Pki::new("mtls");
        let (server, _) = pki.leaf("server", &["localhost"]);
        let (client, client_der) = pki.leaf("client", &["client.example.test"]);
        let stranger_pki = Pki::new("stranger");
        let (stranger, _) = stranger_pki.leaf("stranger", &["client.example.test"]);
        let ca = pki.dir.join("ca.pem");
        for mode in [ClientAuth::Required, ClientAuth::Optional] {
            let options = TlsOptions {
                client_auth: mode,
                client_ca: Some(ca.clone()),
                ..TlsOptions::single(server.clone())
            };
            let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(options))
                .await
                .expect("bind");
            let addr = l.local_addr();
            let seen: Arc<std::sync::Mutex<Vec<ferry_http::TlsInfo>>> = Arc::default();
            let task = accept_recording(l, seen.clone());
            assert!(handshake(addr, &ca, "localhost", Some(&client))
                .await
                .is_ok());
            let info = seen
                .lock()
                .expect("lock")
                .first()
                .cloned()
                .expect("a connection");
            assert_eq!(info.protocol, Some("TLSv1.3"));
            assert_eq!(info.client_chain.first(), Some(&client_der));
            assert!(info.client_verified(), "{mode:?}: {info:?}");
            // Required: a certificate of another CA is refused in the handshake. Optional: it gets in, marked
            // as failed, so that the upstream can be told why (nginx's optional_no_ca).
            let stranger_result = handshake(addr, &ca, "localhost", Some(&stranger)).await;
            if mode == ClientAuth::Required {
                assert!(
                    stranger_result.is_err(),
                    "a certificate of another CA is refused"
                );
            } else {
                assert!(stranger_result.is_ok(), "{stranger_result:?}");
                let info = seen
                    .lock()
                    .expect("lock")
                    .last()
                    .cloned()
                    .expect("a connection");
                assert!(!info.client_verified());
                assert_eq!(
                    info.client_verify_error.as_deref(),
                    Some("unable to get local issuer certificate")
                );
            }
            assert_eq!(
                handshake(addr, &ca, "localhost", None).await.is_ok(),
                mode == ClientAuth::Optional,
                "{mode:?} without a certificate"
            );
            task.abort();
        }
        let no_ca = TlsOptions {
            client_auth: ClientAuth::Required,
            ..TlsOptions::single(server)
        };
        assert!(Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(no_ca))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn changed_certificate_files_are_reloaded() {
        let pki = Pki::new("reload");
        let (files, first) = pki.leaf("server", &["localhost"]);
        let options = TlsOptions {
            reload_interval: Some(Duration::from_millis(50)),
            ..TlsOptions::single(files.clone())
        };
        let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(options))
            .await
            .expect("bind");
        let addr = l.local_addr();
        let task = accept_loop(l);
        let ca = pki.dir.join("ca.pem");
        assert_eq!(
            handshake(addr, &ca, "localhost", None).await.expect("hs"),
            first
        );
        // a broken key is refused; the old certificate stays
        std::fs::write(&files.key, "not a key").expect("write");
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(
                handshake(addr, &ca, "localhost", None).await.expect("hs"),
                first
            );
        }
        let (_, second) = pki.leaf("server", &["localhost"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = handshake(addr, &ca, "localhost", None).await.expect("hs");
            if got == second {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        task.abort();
    }
}
