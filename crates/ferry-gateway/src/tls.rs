//! TLS of a listener: its settings (certificates by SNI, client certificates with a CA bundle, CRLs and a depth
//! limit, protocol versions, cipher suites, stapled OCSP responses), the rustls server configurations built from
//! them, and replacing those whole for new connections, by a reload of the settings or when their files change.
//!
//! Each SNI entry is a *site* with a server configuration of its own, chosen from the ClientHello before the
//! handshake goes on (tokio-rustls's `LazyConfigAcceptor`), so that a host may ask for client certificates of
//! another CA than the rest. A request on a connection made for one site whose `Host` belongs to a site with other
//! client-certificate settings is answered 421, as nginx does, so that a client cannot dodge a host's client
//! check by sending another name in its handshake.

use crate::GatewayError;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, TrustAnchor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// PEM files of a certificate and its key.
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
    /// Verified when the client sends one; one that does not verify counts as none (its details are not passed).
    Optional,
    /// Verified when the client sends one; one that does not verify is let in, marked `FAILED:reason` for the
    /// upstream (nginx's `optional_no_ca`).
    OptionalNoCa,
    /// A verified certificate is needed to connect.
    Required,
}

/// A certificate for some SNI names, with client-certificate settings of its own when set.
#[derive(Debug, Clone)]
pub struct SniSite {
    /// Exact (`api.example.com`) or wildcard (`*.example.com`) names.
    pub names: Vec<String>,
    pub files: TlsFiles,
    /// A DER OCSP response to staple.
    pub ocsp_response: Option<PathBuf>,
    /// Unset: the listener's.
    pub client_auth: Option<ClientAuth>,
    /// Unset: the listener's.
    pub client_ca: Option<PathBuf>,
}

impl SniSite {
    /// Only a certificate for `names`, with the listener's client-certificate settings.
    pub fn new(names: Vec<String>, files: TlsFiles) -> Self {
        Self {
            names,
            files,
            ocsp_response: None,
            client_auth: None,
            client_ca: None,
        }
    }
}

/// Everything about a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The certificate for clients whose SNI name matches no entry of `sni` (or who send none).
    pub default: TlsFiles,
    /// A DER OCSP response stapled to the default certificate.
    pub ocsp_response: Option<PathBuf>,
    /// More certificates, by SNI name.
    pub sni: Vec<SniSite>,
    pub client_auth: ClientAuth,
    /// The CA bundle client certificates are verified against; needed unless `client_auth` is off.
    pub client_ca: Option<PathBuf>,
    /// PEM CRLs client certificates are checked against.
    pub client_crl: Vec<PathBuf>,
    /// The most certificates from a client's certificate up to the CA bundle (`1`: signed by it directly).
    pub verify_depth: Option<u8>,
    /// `TLSv1.2`, `TLSv1.3`; empty: both.
    pub protocols: Vec<String>,
    /// Cipher suites by IANA or OpenSSL name, in order of preference; empty: rustls's.
    pub cipher_suites: Vec<String>,
    /// How often the files are checked for changes; `None`: never.
    pub reload_interval: Option<Duration>,
    /// Fetch OCSP responses for the certificates without an `ocsp_response` file and staple them (`ocsp.rs`).
    pub ocsp_stapling: bool,
    /// With `ocsp_stapling`: the responder asked for every certificate instead of its own (an `http://` URL).
    pub ocsp_responder: Option<String>,
}

impl TlsOptions {
    /// Only `files`, no client certificates, no reload: what [`crate::Listener::bind`] uses.
    pub fn single(files: TlsFiles) -> Self {
        Self {
            default: files,
            ocsp_response: None,
            sni: Vec::new(),
            client_auth: ClientAuth::Off,
            client_ca: None,
            client_crl: Vec::new(),
            verify_depth: None,
            protocols: Vec::new(),
            cipher_suites: Vec::new(),
            reload_interval: None,
            ocsp_stapling: false,
            ocsp_responder: None,
        }
    }

    /// Read every file and build the settings, as binding would, without binding (`ferry config check`).
    pub fn load_files(&self) -> Result<(), GatewayError> {
        Sites::load(self).map(|_| ())
    }

    /// Whether a listener with these settings can serve HTTP/3 (TLS 1.3, QUIC's first cipher suite, one
    /// client-certificate setting for every name), as [`crate::Listener::with_http3`] checks; every file read.
    pub fn check_http3(&self) -> Result<(), GatewayError> {
        let sites = Sites::load(self)?;
        crate::http3::check(&sites).map_err(|message| settings("http3", message))
    }

    /// Check the settings without reading a file (names of versions and suites, client-certificate needs), for
    /// `ferry config check` and before binding.
    pub fn check(&self) -> Result<(), GatewayError> {
        provider(self)?;
        versions(&self.protocols)?;
        for (mode, ca, key) in std::iter::once((self.client_auth, &self.client_ca, "client_ca"))
            .chain(self.sni.iter().map(|s| {
                (
                    s.client_auth.unwrap_or(self.client_auth),
                    if s.client_ca.is_some() {
                        &s.client_ca
                    } else {
                        &self.client_ca
                    },
                    "certificates[].client_ca",
                )
            }))
        {
            if mode != ClientAuth::Off && ca.is_none() {
                return Err(settings(key, "client certificates need a CA bundle"));
            }
        }
        if self.verify_depth == Some(0) {
            return Err(settings("verify_depth", "must be at least 1"));
        }
        if let Some(url) = &self.ocsp_responder {
            crate::ocsp::responder_uri(url)
                .map_err(|e| settings("ocsp_responder", e.to_string()))?;
        }
        Ok(())
    }
}

fn settings(key: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::Settings {
        key: format!("gateway.tls.{key}"),
        message: message.into(),
    }
}

/// What a connection made with a site does with the client's certificate after the handshake.
struct AfterHandshake {
    /// The CA check (with CRLs and depth) the handshake let pass.
    check: Arc<dyn ClientCertVerifier>,
    /// A certificate that does not verify counts as none (`optional`), instead of being marked (`optional_no_ca`).
    strict: bool,
}

/// One way of answering handshakes.
pub(crate) struct Site {
    /// Sites with the same client-certificate settings share it; a request's host must map to the same value.
    client_settings: usize,
    config: Arc<rustls::ServerConfig>,
    after: Option<AfterHandshake>,
    /// The certificate (and staple) the site answers with, for the QUIC configuration of [`Sites::quic`].
    resolver: Arc<dyn ResolvesServerCert>,
    /// The client-certificate check of the handshake (`None`: no client certificates asked for).
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl Site {
    /// The TLS facts of a connection made with this site (see [`crate::tls_info`]), the client certificate
    /// checked against the CA bundle when the handshake let any through.
    pub(crate) fn connection_info(&self, conn: &rustls::ServerConnection) -> ferry_http::TlsInfo {
        self.checked(crate::tls_info(conn), conn.peer_certificates())
    }

    /// The TLS facts of a QUIC connection made with this site: TLS 1.3, and the client's chain checked as
    /// [`Site::connection_info`] does.
    pub(crate) fn quic_connection_info(
        &self,
        peer: Option<&[CertificateDer<'static>]>,
    ) -> ferry_http::TlsInfo {
        let info = ferry_http::TlsInfo {
            protocol: Some("TLSv1.3"),
            client_chain: peer
                .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
                .unwrap_or_default(),
            client_verify_error: None,
        };
        self.checked(info, peer)
    }

    fn checked(
        &self,
        mut info: ferry_http::TlsInfo,
        peer: Option<&[CertificateDer<'_>]>,
    ) -> ferry_http::TlsInfo {
        if let (Some(after), Some((leaf, intermediates))) =
            (&self.after, peer.and_then(|c| c.split_first()))
        {
            if let Err(error) = after.check.verify_client_cert(
                leaf,
                intermediates,
                rustls_pki_types::UnixTime::now(),
            ) {
                if after.strict {
                    tracing::debug!(
                        "client certificate does not verify ({}): treated as none",
                        verify_reason(&error)
                    );
                    info.client_chain.clear();
                } else {
                    info.client_verify_error = Some(verify_reason(&error));
                }
            }
        }
        info
    }

    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// Every site of a listener, chosen by SNI name.
pub(crate) struct Sites {
    default: Arc<Site>,
    exact: HashMap<String, Arc<Site>>,
    /// `(".example.com", site)` for `*.example.com`, longest first.
    wildcard: Vec<(String, Arc<Site>)>,
    /// Whether some site's client-certificate settings differ from the others' (then hosts are checked against
    /// the connection's site).
    mixed_client_settings: bool,
    /// The files' bytes, to notice changes.
    fingerprint: Vec<u8>,
    /// The certificates whose OCSP responses are fetched (their fetchers run while some sites hold them).
    _stapling: Vec<Arc<crate::ocsp::Stapling>>,
    /// What a QUIC configuration is built from (see [`Sites::quic`]).
    provider: Arc<rustls::crypto::CryptoProvider>,
    tls13: bool,
    /// Built on first use, by the listener's HTTP/3 endpoint.
    quic: std::sync::OnceLock<Result<Arc<rustls::ServerConfig>, String>>,
}

impl Sites {
    pub(crate) fn load(options: &TlsOptions) -> Result<Self, GatewayError> {
        options.check()?;
        let mut fingerprint = Vec::new();
        let provider = Arc::new(provider(options)?);
        let versions = versions(&options.protocols)?;
        let crls = load_crls(&options.client_crl, &mut fingerprint)?;
        let mut verifiers = Verifiers::default();
        let mut stapling = Vec::new();
        let listener_client = (options.client_auth, options.client_ca.clone());
        let default = Arc::new(build_site(
            &options.default,
            options.ocsp_response.as_deref(),
            &listener_client,
            options,
            &provider,
            &versions,
            &crls,
            &mut verifiers,
            &mut fingerprint,
            &mut stapling,
        )?);
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for sni in &options.sni {
            let client = (
                sni.client_auth.unwrap_or(options.client_auth),
                sni.client_ca.clone().or_else(|| options.client_ca.clone()),
            );
            let site = Arc::new(build_site(
                &sni.files,
                sni.ocsp_response.as_deref(),
                &client,
                options,
                &provider,
                &versions,
                &crls,
                &mut verifiers,
                &mut fingerprint,
                &mut stapling,
            )?);
            for name in &sni.names {
                let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                        wildcard.push((suffix.to_owned(), site.clone()))
                    }
                    Some(_) => {
                        return Err(GatewayError::Certificate {
                            path: sni.files.cert.display().to_string(),
                            message: format!("bad wildcard name {name:?}"),
                        })
                    }
                    None => {
                        exact.insert(name, site.clone());
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
            mixed_client_settings: verifiers.seen.len() > 1,
            fingerprint,
            _stapling: stapling,
            tls13: versions.contains(&&rustls::version::TLS13),
            provider,
            quic: std::sync::OnceLock::new(),
        })
    }

    /// The rustls configuration of QUIC handshakes (HTTP/3): TLS 1.3 only, ALPN `h3`, the certificate of every
    /// site by SNI as over TCP. QUIC has no way to pick a configuration from the ClientHello before the
    /// handshake, so one client-certificate check serves every name: sites whose client-certificate settings
    /// differ are refused here (with why), as is a listener without TLS 1.3 or without the cipher suite QUIC's
    /// first packets need.
    pub(crate) fn quic(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        self.quic
            .get_or_init(|| {
                if !self.tls13 {
                    return Err("HTTP/3 needs TLSv1.3 among the listener's protocols".into());
                }
                if self.mixed_client_settings {
                    return Err("HTTP/3 cannot serve certificates by SNI name whose client-certificate \
                                settings differ from the listener's (QUIC picks no configuration per name)"
                        .into());
                }
                let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(|e| e.to_string())?;
                let builder = match &self.default.verifier {
                    Some(v) => builder.with_client_cert_verifier(v.clone()),
                    None => builder.with_no_client_auth(),
                };
                let resolve = |site: &Arc<Site>| site.resolver.clone();
                let mut config = builder.with_cert_resolver(Arc::new(BySni {
                    default: resolve(&self.default),
                    exact: self.exact.iter().map(|(n, s)| (n.clone(), resolve(s))).collect(),
                    wildcard: self
                        .wildcard
                        .iter()
                        .map(|(n, s)| (n.clone(), resolve(s)))
                        .collect(),
                }));
                config.alpn_protocols = vec![b"h3".to_vec()];
                // the first packets of every QUIC connection are protected with TLS_AES_128_GCM_SHA256
                let initial = self
                    .provider
                    .cipher_suites
                    .iter()
                    .any(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
                if !initial {
                    return Err(
                        "HTTP/3 needs TLS13_AES_128_GCM_SHA256 among the listener's cipher suites".into(),
                    );
                }
                Ok(Arc::new(config))
            })
            .clone()
    }

    /// The site for an SNI name (or a request's host, port removed).
    pub(crate) fn pick(&self, name: Option<&str>) -> &Arc<Site> {
        let Some(name) = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return &self.default;
        };
        if let Some(site) = self.exact.get(&name) {
            return site;
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, site)| site)
            .unwrap_or(&self.default)
    }

    /// Whether a request for `host` may be served on a connection made with `site`: always, unless the host's
    /// site asks for client certificates differently.
    /// `host` is only asked for when some site's settings differ (the common case costs nothing per request).
    pub(crate) fn host_fits<'h>(
        &self,
        site: &Site,
        host: impl FnOnce() -> Option<&'h str>,
    ) -> bool {
        if !self.mixed_client_settings {
            return true;
        }
        let host = host().map(strip_port);
        self.pick(host).client_settings == site.client_settings
    }
}

/// `host` without a `:port` (and without the brackets of an IPv6 literal's port form).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Client-certificate settings seen while building sites: equal settings share a number (and a verifier).
#[derive(Default)]
struct Verifiers {
    seen: Vec<(ClientAuth, Option<PathBuf>)>,
}

impl Verifiers {
    fn number(&mut self, settings: &(ClientAuth, Option<PathBuf>)) -> usize {
        let settings = match settings.0 {
            ClientAuth::Off => (ClientAuth::Off, None),
            _ => settings.clone(),
        };
        match self.seen.iter().position(|s| *s == settings) {
            Some(i) => i,
            None => {
                self.seen.push(settings);
                self.seen.len() - 1
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_site(
    files: &TlsFiles,
    ocsp: Option<&Path>,
    client: &(ClientAuth, Option<PathBuf>),
    options: &TlsOptions,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    crls: &[CertificateRevocationListDer<'static>],
    verifiers: &mut Verifiers,
    fingerprint: &mut Vec<u8>,
    stapling: &mut Vec<Arc<crate::ocsp::Stapling>>,
) -> Result<Site, GatewayError> {
    let mut key = load_key_pair(files, provider, fingerprint)?;
    if let Some(path) = ocsp {
        let response = std::fs::read(path).map_err(|e| GatewayError::Certificate {
            path: path.display().to_string(),
            message: format!("OCSP response: {e}"),
        })?;
        fingerprint.extend(&response);
        key.ocsp = Some(response);
    }
    let client_settings = verifiers.number(client);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?;
    let (mode, ca) = client;
    let mut after = None;
    let mut verifier: Option<Arc<dyn ClientCertVerifier>> = None;
    let builder = match mode {
        ClientAuth::Off => builder.with_no_client_auth(),
        mode => {
            let path = ca
                .as_deref()
                .ok_or_else(|| settings("client_ca", "client certificates need a CA bundle"))?;
            let check = ca_check(path, crls, options.verify_depth, provider, fingerprint)?;
            let handshake: Arc<dyn ClientCertVerifier> = match mode {
                ClientAuth::Required => check,
                _ => {
                    after = Some(AfterHandshake {
                        check: check.clone(),
                        strict: *mode == ClientAuth::Optional,
                    });
                    Arc::new(TolerantClientVerifier { inner: check })
                }
            };
            verifier = Some(handshake.clone());
            builder.with_client_cert_verifier(handshake)
        }
    };
    // without a response file, stapling fetches them (when it can for this certificate)
    let fetched = match (ocsp, options.ocsp_stapling) {
        (None, true) => {
            crate::ocsp::start(key.clone(), options.ocsp_responder.as_deref(), &files.cert)
        }
        _ => None,
    };
    let resolver: Arc<dyn ResolvesServerCert> = match fetched {
        Some(s) => {
            let resolver = s.resolver();
            stapling.push(s);
            resolver
        }
        None => Arc::new(Fixed(Arc::new(key))),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Site {
        client_settings,
        verifier,
        config: Arc::new(config),
        after,
        resolver,
    })
}

/// The CA check of client certificates: rustls's (`WebPkiClientVerifier`, with the CRLs), and the depth limit.
fn ca_check(
    path: &Path,
    crls: &[CertificateRevocationListDer<'static>],
    depth: Option<u8>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    fingerprint: &mut Vec<u8>,
) -> Result<Arc<dyn ClientCertVerifier>, GatewayError> {
    let bad = |message: String| GatewayError::Certificate {
        path: path.display().to_string(),
        message,
    };
    fingerprint.extend(std::fs::read(path).unwrap_or_default());
    let certs = load_certs(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls.iter().cloned())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let Some(depth) = depth else {
        return Ok(verifier);
    };
    let anchors = certs
        .iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| bad(format!("{e:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(DepthLimited {
        inner: verifier,
        anchors,
        max_intermediates: usize::from(depth).saturating_sub(1),
        algorithms: provider.signature_verification_algorithms.all,
    }))
}

/// Complete a TLS handshake on `stream` with the site its ClientHello names.
pub(crate) async fn accept<IO>(
    sites: &Sites,
    stream: IO,
) -> std::io::Result<(tokio_rustls::server::TlsStream<IO>, Arc<Site>)>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let site = sites.pick(start.client_hello().server_name()).clone();
    let stream = start.into_stream(site.config()).await?;
    Ok((stream, site))
}

/// The certificate of a QUIC handshake, by its SNI name as [`Sites::pick`] chooses a site.
#[derive(Debug)]
struct BySni {
    default: Arc<dyn ResolvesServerCert>,
    exact: HashMap<String, Arc<dyn ResolvesServerCert>>,
    wildcard: Vec<(String, Arc<dyn ResolvesServerCert>)>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let resolver = match &name {
            None => &self.default,
            Some(name) => self.exact.get(name).unwrap_or_else(|| {
                self.wildcard
                    .iter()
                    .find(|(suffix, _)| {
                        name.len() > suffix.len() && name.ends_with(suffix.as_str())
                    })
                    .map(|(_, r)| r)
                    .unwrap_or(&self.default)
            }),
        };
        resolver.resolve(hello)
    }
}

/// Always the one certificate of a site.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS side of a listener: its sites, replaced whole by a reload or when its files change.
pub(crate) struct TlsSwitch {
    sites: RwLock<Arc<Sites>>,
    options: RwLock<TlsOptions>,
}

impl TlsSwitch {
    /// Load every file of `options` and build the sites; with a reload interval, a task checks the files until
    /// the switch is dropped.
    pub(crate) fn start(options: TlsOptions) -> Result<Arc<Self>, GatewayError> {
        let sites = Sites::load(&options)?;
        let switch = Arc::new(Self {
            sites: RwLock::new(Arc::new(sites)),
            options: RwLock::new(options),
        });
        tokio::spawn(watch_files(Arc::downgrade(&switch)));
        Ok(switch)
    }

    /// The sites new connections get.
    pub(crate) fn sites(&self) -> Arc<Sites> {
        match self.sites.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn options(&self) -> TlsOptions {
        match self.options.read() {
            Ok(o) => o.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, options: TlsOptions, sites: Arc<Sites>) {
        if let Ok(mut s) = self.sites.write() {
            *s = sites;
        }
        if let Ok(mut o) = self.options.write() {
            *o = options;
        }
    }
}

/// Changes the TLS settings of a bound listener (see [`crate::Listener::tls_reloader`]).
#[derive(Clone)]
pub struct TlsReloader(pub(crate) Arc<TlsSwitch>);

impl TlsReloader {
    /// TLS settings of their own for a listener (not shared with another listener's): every file read and
    /// checked now; with a reload interval, a task checks the files for as long as a listener uses them. Needs a
    /// Tokio runtime.
    pub fn start(options: TlsOptions) -> Result<Self, GatewayError> {
        TlsSwitch::start(options).map(Self)
    }

    /// Load and build `options` without putting them to use yet: every file is read and checked here, so that
    /// a reload can be refused as a whole before anything changes.
    pub fn prepare(&self, options: TlsOptions) -> Result<PreparedTls, GatewayError> {
        let sites = Sites::load(&options)?;
        Ok(PreparedTls {
            switch: self.0.clone(),
            options,
            sites: Arc::new(sites),
        })
    }
}

/// TLS settings loaded by [`TlsReloader::prepare`].
pub struct PreparedTls {
    switch: Arc<TlsSwitch>,
    options: TlsOptions,
    sites: Arc<Sites>,
}

impl PreparedTls {
    /// Put the settings to use for new connections (open ones keep theirs).
    pub fn commit(self) {
        self.switch.install(self.options, self.sites);
    }
}

/// Rebuild the sites when their files' content changes, until the switch is gone. Files that do not load are
/// logged once and the sites in use stay.
async fn watch_files(switch: Weak<TlsSwitch>) {
    let mut refused: Option<Vec<u8>> = None;
    loop {
        let every = match switch.upgrade() {
            Some(s) => s.options().reload_interval.filter(|d| !d.is_zero()),
            None => return,
        };
        // without an interval (never, for now), look again now and then in case a reload sets one
        tokio::time::sleep(every.unwrap_or(Duration::from_secs(1))).await;
        let Some(switch) = switch.upgrade() else {
            return;
        };
        let options = switch.options();
        if options.reload_interval.is_none_or(|d| d.is_zero()) {
            continue;
        }
        let now = files_bytes(&options);
        if now == switch.sites().fingerprint || refused.as_ref() == Some(&now) {
            continue;
        }
        match Sites::load(&options) {
            Ok(sites) => {
                switch.install(options.clone(), Arc::new(sites));
                refused = None;
                tracing::info!(file = %options.default.cert.display(), "tls files reloaded");
            }
            Err(e) => {
                tracing::error!("tls files refused, keeping the certificates in use: {e}");
                refused = Some(now);
            }
        }
    }
}

/// The bytes of every file of `options`, in the order [`Sites::load`] reads them (unreadable files count as
/// empty).
fn files_bytes(options: &TlsOptions) -> Vec<u8> {
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    let mut out = Vec::new();
    for crl in &options.client_crl {
        out.extend(read(crl));
    }
    let listener_ca = options.client_ca.as_deref();
    let mut site = |files: &TlsFiles, ocsp: Option<&Path>, mode: ClientAuth, ca: Option<&Path>| {
        out.extend(read(&files.cert));
        out.extend(read(&files.key));
        if let Some(ocsp) = ocsp {
            out.extend(read(ocsp));
        }
        if let (false, Some(ca)) = (mode == ClientAuth::Off, ca) {
            out.extend(read(ca));
        }
    };
    site(
        &options.default,
        options.ocsp_response.as_deref(),
        options.client_auth,
        listener_ca,
    );
    for s in &options.sni {
        site(
            &s.files,
            s.ocsp_response.as_deref(),
            s.client_auth.unwrap_or(options.client_auth),
            s.client_ca.as_deref().or(listener_ca),
        );
    }
    out
}

/// The crypto provider with the chosen cipher suites, in the chosen order.
fn provider(options: &TlsOptions) -> Result<rustls::crypto::CryptoProvider, GatewayError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if options.cipher_suites.is_empty() {
        return Ok(provider);
    }
    let mut chosen = Vec::with_capacity(options.cipher_suites.len());
    for name in &options.cipher_suites {
        let suite = provider
            .cipher_suites
            .iter()
            .find(|s| {
                suite_names(s)
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.trim()))
            })
            .ok_or_else(|| {
                let known: Vec<String> = provider
                    .cipher_suites
                    .iter()
                    .map(|s| suite_names(s)[0].clone())
                    .collect();
                settings(
                    "cipher_suites",
                    format!(
                        "{name:?} is not a supported cipher suite (supported: {})",
                        known.join(", ")
                    ),
                )
            })?;
        if !chosen.contains(suite) {
            chosen.push(*suite);
        }
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

/// A suite's IANA name as rustls spells it, and OpenSSL's name for it.
fn suite_names(suite: &rustls::SupportedCipherSuite) -> Vec<String> {
    let iana = format!("{:?}", suite.suite());
    // OpenSSL's names of the suites rustls has (ECDHE only; TLS 1.3 suites have IANA-like names there too)
    let openssl = match iana.as_str() {
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "",
    };
    let mut names = vec![iana];
    if !openssl.is_empty() {
        names.push(openssl.to_owned());
    }
    names
}

/// The protocol versions of `names` (empty: TLS 1.3 and 1.2).
fn versions(
    names: &[String],
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, GatewayError> {
    if names.is_empty() {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    }
    let mut out = Vec::new();
    for name in names {
        let version = match name.trim().to_ascii_lowercase().as_str() {
            "tlsv1.3" | "tls1.3" | "1.3" => &rustls::version::TLS13,
            "tlsv1.2" | "tls1.2" | "1.2" => &rustls::version::TLS12,
            "tlsv1" | "tlsv1.0" | "tlsv1.1" | "sslv3" | "sslv2" => {
                return Err(settings(
                    "protocols",
                    format!("{name} is insecure and not supported; use TLSv1.2 and TLSv1.3"),
                ))
            }
            _ => {
                return Err(settings(
                    "protocols",
                    format!("{name:?} is not a TLS version (TLSv1.2, TLSv1.3)"),
                ))
            }
        };
        if !out
            .iter()
            .any(|v: &&rustls::SupportedProtocolVersion| v.version == version.version)
        {
            out.push(version);
        }
    }
    Ok(out)
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
            E::UnknownRevocationStatus => "unable to get certificate CRL".to_owned(),
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
                "unsupported certificate purpose".to_owned()
            }
            E::Other(other) => other.to_string(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// A client certificate whose shortest chain to the CA bundle is longer than `verify_depth` allows.
#[derive(Debug, thiserror::Error)]
#[error("certificate chain too long")]
struct ChainTooLong;

/// nginx's `ssl_verify_depth`: rustls's check first, then a path to the bundle within the depth. rustls has no
/// depth setting; the path is built by rustls-webpki (its `verify_path` hook refuses longer ones), so no
/// certificate parsing is written here.
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<dyn ClientCertVerifier>,
    anchors: Vec<TrustAnchor<'static>>,
    max_intermediates: usize,
    algorithms: &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm],
}

impl ClientCertVerifier for DepthLimited {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let too_long = || {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(ChainTooLong),
            )))
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| too_long())?;
        let max = self.max_intermediates;
        let within = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() <= max {
                Ok(())
            } else {
                Err(webpki::Error::MaximumPathDepthExceeded)
            }
        };
        cert.verify_for_usage(
            self.algorithms,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            Some(&within),
        )
        .map_err(|_| too_long())?;
        Ok(verified)
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

/// The client-certificate check of the `optional` modes: every chain is let through the handshake (the client
/// still proves it holds the key, by the handshake signature), and [`Site::connection_info`] checks it against
/// the CA bundle afterwards, so that a client with a bad certificate reaches the upstream without it (or marked
/// `FAILED:reason`) instead of being cut off. Written by hand because rustls offers no "verify but tolerate"
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

fn load_crls(
    paths: &[PathBuf],
    fingerprint: &mut Vec<u8>,
) -> Result<Vec<CertificateRevocationListDer<'static>>, GatewayError> {
    let mut out = Vec::new();
    for path in paths {
        fingerprint.extend(std::fs::read(path).unwrap_or_default());
        let err = |message: String| GatewayError::Certificate {
            path: path.display().to_string(),
            message,
        };
        let crls = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if crls.is_empty() {
            return Err(err("no CRL found".into()));
        }
        out.extend(crls);
    }
    Ok(out)
}

fn load_key_pair(
    files: &TlsFiles,
    provider: &rustls::crypto::CryptoProvider,
    fingerprint: &mut Vec<u8>,
) -> Result<CertifiedKey, GatewayError> {
    fingerprint.extend(std::fs::read(&files.cert).unwrap_or_default());
    fingerprint.extend(std::fs::read(&files.key).unwrap_or_default());
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| GatewayError::Key {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| GatewayError::Key {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
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
