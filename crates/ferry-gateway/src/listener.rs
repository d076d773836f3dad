//! Binding a listener, plain or with TLS (see [`crate::tls`] for the TLS settings and their reloading).

use crate::tls::{TlsReloader, TlsSwitch};
use crate::{ConnectionCaps, GatewayError, TlsFiles, TlsOptions};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;

/// A bound listener, plain or TLS.
pub struct Listener {
    pub(crate) tcp: TcpListener,
    /// What new connections get; changed in place by a [`ListenerControl`] (a reload), so that the socket and
    /// the connections it already accepted stay.
    mode: Arc<RwLock<Arc<ListenerMode>>>,
    local_addr: SocketAddr,
    /// HTTP/3's socket, on the UDP port of the TCP one (see [`Listener::with_http3`]).
    pub(crate) udp: Option<std::net::UdpSocket>,
}

/// How a listener treats the connections it accepts.
pub(crate) struct ListenerMode {
    pub(crate) tls: Option<Arc<TlsSwitch>>,
    /// Every connection starts with a PROXY protocol header naming the client.
    pub(crate) proxy_protocol: bool,
    /// The handler in place of the one [`crate::serve`] was given (set by [`ListenerControl::change`]).
    pub(crate) handler: Option<crate::Handler>,
    /// Caps on this listener's connections in place of [`crate::ServeOptions`]'s.
    pub(crate) caps: Option<ConnectionCaps>,
}

impl Listener {
    /// Bind `addr` now (port 0 picks a free port) and load the TLS files if given.
    pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self, GatewayError> {
        Self::bind_with(addr, tls.map(|f| TlsOptions::single(f.clone()))).await
    }

    /// Bind `addr` now, with TLS as `tls` says (certificates checked before binding). With a reload interval, a
    /// task checks the TLS files until the listener is dropped.
    pub async fn bind_with(
        addr: SocketAddr,
        tls: Option<TlsOptions>,
    ) -> Result<Self, GatewayError> {
        let tls = tls.map(TlsSwitch::start).transpose()?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Self::from_tcp(addr, tcp, tls)
    }

    /// Bind `addr` now, without waiting (for a reload, which binds before it changes anything), sharing the TLS
    /// settings of the listener `tls` comes from: a reload of those changes both. Needs a Tokio runtime.
    pub fn bind_sharing(addr: SocketAddr, tls: Option<&TlsReloader>) -> Result<Self, GatewayError> {
        let bind = || {
            let std = std::net::TcpListener::bind(addr)?;
            std.set_nonblocking(true)?;
            TcpListener::from_std(std)
        };
        let tcp = bind().map_err(|source| GatewayError::Bind { addr, source })?;
        Self::from_tcp(addr, tcp, tls.map(|t| t.0.clone()))
    }

    fn from_tcp(
        addr: SocketAddr,
        tcp: TcpListener,
        tls: Option<Arc<TlsSwitch>>,
    ) -> Result<Self, GatewayError> {
        let local_addr = tcp
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Self {
            tcp,
            mode: Arc::new(RwLock::new(Arc::new(ListenerMode {
                tls,
                proxy_protocol: false,
                handler: None,
                caps: None,
            }))),
            local_addr,
            udp: None,
        })
    }

    /// Serve HTTP/3 too (`on`), on the UDP port of the listener's TCP port, with the listener's TLS settings,
    /// and tell clients so in an `Alt-Svc` header on the TCP connections' responses. Needs TLS with TLS 1.3, and
    /// certificates by SNI that share the listener's client-certificate settings; the UDP port must be free.
    pub fn with_http3(mut self, on: bool) -> Result<Self, GatewayError> {
        if !on {
            self.udp = None;
            return Ok(self);
        }
        let Some(tls) = self.mode().tls.clone() else {
            return Err(GatewayError::Settings {
                key: "http3".into(),
                message: "HTTP/3 needs a TLS listener".into(),
            });
        };
        crate::http3::check(&tls.sites()).map_err(|message| GatewayError::Settings {
            key: "http3".into(),
            message,
        })?;
        let addr = self.local_addr;
        self.udp =
            Some(crate::http3::bind(addr).map_err(|source| GatewayError::Bind { addr, source })?);
        Ok(self)
    }

    /// Whether the listener serves HTTP/3.
    pub fn serves_http3(&self) -> bool {
        self.udp.is_some()
    }

    /// The `Alt-Svc` header that points clients of the TCP port at HTTP/3 (a day's worth, as is common).
    pub(crate) fn alt_svc(&self) -> Option<http::HeaderValue> {
        self.udp.as_ref()?;
        http::HeaderValue::try_from(format!("h3=\":{}\"; ma=86400", self.local_addr.port())).ok()
    }

    pub(crate) fn mode_cell(&self) -> Arc<RwLock<Arc<ListenerMode>>> {
        self.mode.clone()
    }

    /// Expect a PROXY protocol header (v1 or v2) at the start of every connection and take the client's address
    /// from it: for a listener behind an L4 load balancer that sends one. A connection without one is closed.
    pub fn with_proxy_protocol(self, on: bool) -> Self {
        let mode = self.mode();
        self.set_mode(ListenerMode {
            tls: mode.tls.clone(),
            proxy_protocol: on,
            handler: mode.handler.clone(),
            caps: mode.caps,
        });
        self
    }

    /// Caps on this listener's connections in place of those of the [`crate::ServeOptions`] it is served with
    /// (`None`: those).
    pub fn with_connection_caps(self, caps: Option<ConnectionCaps>) -> Self {
        let mode = self.mode();
        self.set_mode(ListenerMode {
            tls: mode.tls.clone(),
            proxy_protocol: mode.proxy_protocol,
            handler: mode.handler.clone(),
            caps,
        });
        self
    }

    /// Changes this listener's TLS settings for new connections; `None` for a plain listener.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.mode().tls.clone().map(TlsReloader)
    }

    /// Changes how this listener treats new connections, while it serves (see [`ListenerControl`]).
    pub fn control(&self) -> ListenerControl {
        ListenerControl {
            mode: self.mode.clone(),
        }
    }

    /// What a connection accepted now gets.
    pub(crate) fn mode(&self) -> Arc<ListenerMode> {
        read_mode(&self.mode)
    }

    fn set_mode(&self, mode: ListenerMode) {
        write_mode(&self.mode, mode);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.mode().tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.local_addr)
    }
}

/// The mode in `mode` now (a poisoned lock still holds a whole mode: it is replaced, never changed in place).
pub(crate) fn read_mode(mode: &RwLock<Arc<ListenerMode>>) -> Arc<ListenerMode> {
    match mode.read() {
        Ok(m) => m.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn write_mode(mode: &RwLock<Arc<ListenerMode>>, new: ListenerMode) {
    match mode.write() {
        Ok(mut m) => *m = Arc::new(new),
        Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
    }
}

/// Changes a serving listener in place: TLS on or off (settings of its own, or shared with another listener), the
/// PROXY protocol, the handler, the caps on its connections. Connections accepted before keep what they had; the socket stays bound, so that no connection
/// is refused while a reload changes a listener.
#[derive(Clone)]
pub struct ListenerControl {
    mode: Arc<RwLock<Arc<ListenerMode>>>,
}

impl ListenerControl {
    /// From the next accepted connection on: TLS with the settings of `tls` (or plain), the PROXY protocol as
    /// `proxy_protocol` says, `handler` (`None`: the one the listener was served with) and `caps` (`None`: the
    /// [`crate::ServeOptions`]' ones).
    pub fn change(
        &self,
        tls: Option<&TlsReloader>,
        proxy_protocol: bool,
        handler: Option<crate::Handler>,
        caps: Option<ConnectionCaps>,
    ) {
        write_mode(
            &self.mode,
            ListenerMode {
                tls: tls.map(|t| t.0.clone()),
                proxy_protocol,
                handler,
                caps,
            },
        );
    }
}

/// The TLS facts of an accepted connection, to attach to its requests: protocol version and the client's
/// certificate chain (verified during the handshake when client certificates are required).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Pki;
    use crate::tls::load_certs;
    use crate::{ClientAuth, SniSite};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    use std::path::Path;
    use std::time::Duration;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

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
            let Some(switch) = l.mode().tls.clone() else {
                return;
            };
            while let Ok((s, _)) = l.tcp.accept().await {
                let sites = switch.sites();
                let seen = seen.clone();
                tokio::spawn(async move {
                    if let Ok((mut conn, site)) = crate::tls::accept(&sites, s).await {
                        if let Ok(mut v) = seen.lock() {
                            v.push(site.connection_info(conn.get_ref().1));
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
                SniSite::new(vec!["api.example.test".into()], api),
                SniSite::new(vec!["*.apps.example.test".into()], wild),
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
        for mode in [
            ClientAuth::Required,
            ClientAuth::OptionalNoCa,
            ClientAuth::Optional,
        ] {
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
            // Required: a certificate of another CA is refused in the handshake. Optional: it gets in as if it
            // had sent none. OptionalNoCa: it gets in, marked as failed, so that the upstream can be told why.
            let stranger_result = handshake(addr, &ca, "localhost", Some(&stranger)).await;
            if mode == ClientAuth::Required {
                assert!(
                    stranger_result.is_err(),
                    "a certificate of another CA is refused"
                );
            } else if mode == ClientAuth::Optional {
                assert!(stranger_result.is_ok(), "{stranger_result:?}");
                let info = seen
                    .lock()
                    .expect("lock")
                    .last()
                    .cloned()
                    .expect("a connection");
                assert!(info.client_chain.is_empty(), "{info:?}");
                assert_eq!(info.client_verify_error, None);
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
                mode != ClientAuth::Required,
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

    /// Revoked certificates (CRL) and chains longer than `verify_depth` do not verify: refused by `required`,
    /// counted as none by `optional`.
    #[tokio::test]
    async fn revoked_and_too_long_client_chains() {
        let pki = Pki::new("crl");
        let (server, _) = pki.leaf("server", &["localhost"]);
        let (good, _) = pki.leaf_numbered("good", &["c.example.test"], Some(11));
        let (revoked, _) = pki.leaf_numbered("revoked", &["c.example.test"], Some(12));
        let chained = pki.chained_leaf("chained", &["c.example.test"]);
        let ca = pki.dir.join("ca.pem");
        let crl = pki.crl("crl", &[12]);
        for mode in [ClientAuth::Required, ClientAuth::Optional] {
            let options = TlsOptions {
                client_auth: mode,
                client_ca: Some(ca.clone()),
                client_crl: vec![crl.clone()],
                ..TlsOptions::single(server.clone())
            };
            let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(options))
                .await
                .expect("bind");
            let addr = l.local_addr();
            let seen: Arc<std::sync::Mutex<Vec<ferry_http::TlsInfo>>> = Arc::default();
            let task = accept_recording(l, seen.clone());
            let last = || seen.lock().expect("lock").last().cloned().expect("conn");
            handshake(addr, &ca, "localhost", Some(&good))
                .await
                .expect("a certificate the CRL does not name");
            assert!(last().client_verified());
            let r = handshake(addr, &ca, "localhost", Some(&revoked)).await;
            if mode == ClientAuth::Required {
                assert!(r.is_err(), "revoked: refused");
            } else {
                assert!(r.is_ok());
                assert!(last().client_chain.is_empty(), "revoked: counted as none");
            }
            task.abort();
        }
        for (depth, fits) in [(1, false), (2, true)] {
            let options = TlsOptions {
                client_auth: ClientAuth::OptionalNoCa,
                client_ca: Some(ca.clone()),
                verify_depth: Some(depth),
                ..TlsOptions::single(server.clone())
            };
            let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(options))
                .await
                .expect("bind");
            let addr = l.local_addr();
            let seen: Arc<std::sync::Mutex<Vec<ferry_http::TlsInfo>>> = Arc::default();
            let task = accept_recording(l, seen.clone());
            for (files, direct) in [(&good, true), (&chained, false)] {
                handshake(addr, &ca, "localhost", Some(files))
                    .await
                    .expect("optional_no_ca lets it in");
                let info = seen.lock().expect("lock").last().cloned().expect("conn");
                let expected = direct || fits;
                assert_eq!(info.client_verified(), expected, "depth {depth}: {info:?}");
                if !expected {
                    assert_eq!(
                        info.client_verify_error.as_deref(),
                        Some("certificate chain too long")
                    );
                }
            }
            task.abort();
        }
    }

    /// Records the OCSP response a server staples.
    #[derive(Debug)]
    struct RecordOcsp {
        inner: Arc<rustls::client::WebPkiServerVerifier>,
        stapled: std::sync::Mutex<Vec<u8>>,
    }

    impl rustls::client::danger::ServerCertVerifier for RecordOcsp {
        fn verify_server_cert(
            &self,
            end_entity: &rustls_pki_types::CertificateDer<'_>,
            intermediates: &[rustls_pki_types::CertificateDer<'_>],
            server_name: &rustls_pki_types::ServerName<'_>,
            ocsp_response: &[u8],
            now: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            if let Ok(mut s) = self.stapled.lock() {
                *s = ocsp_response.to_vec();
            }
            self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

    /// Versions and cipher suites as configured, and the OCSP response file stapled.
    #[tokio::test]
    async fn versions_cipher_suites_and_stapling() {
        let pki = Pki::new("suites");
        let (server, _) = pki.leaf("server", &["localhost"]);
        let ocsp = pki.dir.join("ocsp.der");
        std::fs::write(&ocsp, b"\x30\x03\x0a\x01\x00").expect("write");
        let options = TlsOptions {
            protocols: vec!["TLSv1.2".into()],
            cipher_suites: vec!["ECDHE-ECDSA-CHACHA20-POLY1305".into()],
            ocsp_response: Some(ocsp),
            ..TlsOptions::single(server.clone())
        };
        let l = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(options))
            .await
            .expect("bind");
        let addr = l.local_addr();
        let task = accept_loop(l);
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(&pki.dir.join("ca.pem")).expect("ca") {
            roots.add(c).expect("root");
        }
        let roots = Arc::new(roots);
        let connect = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
            let verifier = Arc::new(RecordOcsp {
                inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots.clone(),
                    provider(),
                )
                .build()
                .expect("verifier"),
                stapled: Default::default(),
            });
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .expect("versions")
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let conn = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(
                        rustls_pki_types::ServerName::try_from("localhost").expect("name"),
                        tcp,
                    )
                    .await?;
                let c = conn.get_ref().1;
                let stapled = verifier.stapled.lock().expect("lock").clone();
                Ok::<_, std::io::Error>((
                    c.protocol_version(),
                    c.negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite())),
                    stapled,
                ))
            }
        };
        let (version, suite, stapled) = connect(rustls::ALL_VERSIONS).await.expect("tls 1.2");
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(
            suite.as_deref(),
            Some("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256")
        );
        assert_eq!(stapled, b"\x30\x03\x0a\x01\x00");
        assert!(connect(TLS13_ONLY).await.is_err(), "TLS 1.3 is not offered");
        task.abort();
        // names that are not versions or suites are refused with the list of what there is
        let bad = TlsOptions {
            protocols: vec!["TLSv1.1".into()],
            ..TlsOptions::single(server.clone())
        };
        let e = bad.check().expect_err("refused").to_string();
        assert!(
            e.contains("gateway.tls.protocols") && e.contains("insecure"),
            "{e}"
        );
        let bad = TlsOptions {
            cipher_suites: vec!["RC4-MD5".into()],
            ..TlsOptions::single(server)
        };
        let e = bad.check().expect_err("refused").to_string();
        assert!(e.contains("TLS13_AES_128_GCM_SHA256"), "{e}");
    }

    /// A reload adds a host with its certificate for new connections; one naming a missing file is refused
    /// whole, before anything changes. A host with client-certificate settings of its own cannot be asked for
    /// on a connection made for another name.
    #[tokio::test]
    async fn a_reload_adds_a_host_and_hosts_keep_their_client_settings() {
        let pki = Pki::new("reload-sni");
        let (default, default_der) = pki.leaf("default", &["localhost"]);
        let (api, api_der) = pki.leaf("api", &["api.example.test"]);
        let l = Listener::bind_with(
            ([127, 0, 0, 1], 0).into(),
            Some(TlsOptions::single(default.clone())),
        )
        .await
        .expect("bind");
        let addr = l.local_addr();
        let reloader = l.tls_reloader().expect("a TLS listener");
        let task = accept_loop(l);
        let ca = pki.dir.join("ca.pem");
        assert!(handshake(addr, &ca, "api.example.test", None)
            .await
            .is_err());
        let mut with_api = TlsOptions::single(default.clone());
        with_api.sni = vec![SniSite {
            client_auth: Some(ClientAuth::Required),
            client_ca: Some(ca.clone()),
            ..SniSite::new(vec!["api.example.test".into()], api)
        }];
        reloader.prepare(with_api.clone()).expect("loads").commit();
        let (client, _) = pki.leaf("client", &["c.example.test"]);
        assert_eq!(
            handshake(addr, &ca, "api.example.test", Some(&client))
                .await
                .expect("the new host"),
            api_der
        );
        assert!(
            handshake(addr, &ca, "api.example.test", None)
                .await
                .is_err(),
            "the new host requires client certificates"
        );
        assert_eq!(
            handshake(addr, &ca, "localhost", None).await.expect("hs"),
            default_der
        );
        let mut broken = with_api.clone();
        broken.sni.push(SniSite::new(
            vec!["gone.example.test".into()],
            TlsFiles {
                cert: pki.dir.join("gone.pem"),
                key: pki.dir.join("gone-key.pem"),
            },
        ));
        let Err(e) = reloader.prepare(broken) else {
            panic!("a missing file is refused")
        };
        let e = e.to_string();
        assert!(e.contains("gone.pem"), "{e}");
        assert!(handshake(addr, &ca, "api.example.test", Some(&client))
            .await
            .is_ok());
        task.abort();

        let sites = crate::tls::Sites::load(&with_api).expect("sites");
        let plain = sites.pick(Some("localhost")).clone();
        let strict = sites.pick(Some("API.example.test.")).clone();
        assert!(sites.host_fits(&plain, || Some("localhost:8443")));
        assert!(sites.host_fits(&plain, || Some("other.example.test")));
        assert!(!sites.host_fits(&plain, || Some("api.example.test:443")));
        assert!(sites.host_fits(&strict, || Some("api.example.test")));
        assert!(!sites.host_fits(&strict, || Some("localhost")));
    }
}
