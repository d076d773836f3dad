//! Binding a listener, plain or with TLS (see [`crate::tls`] for the TLS settings and their reloading).

use crate::tls::{Sites, TlsReloader, TlsSwitch};
use crate::{GatewayError, TlsFiles, TlsOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A bound listener, plain or TLS.
pub struct Listener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: Option<Arc<TlsSwitch>>,
    local_addr: SocketAddr,
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
        let local_addr = tcp
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Self {
            tcp,
            tls,
            local_addr,
        })
    }

    /// Changes this listener's TLS settings for new connections; `None` for a plain listener.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.tls.clone().map(TlsReloader)
    }

    /// The TLS sites new connections get.
    pub(crate) fn tls_sites(&self) -> Option<Arc<Sites>> {
        self.tls.as_ref().map(|t| t.sites())
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
    use crate::tls::load_certs;
    use crate::{ClientAuth, SniSite};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    use std::path::{Path, PathBuf};
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
            let Some(switch) = l.tls.clone() else { return };
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
}
