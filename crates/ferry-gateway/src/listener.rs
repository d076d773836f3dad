//! Binding a listener and, when certificate files are given, preparing TLS (1.2 and 1.3, ALPN h2 and http/1.1).

use crate::GatewayError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// PEM files of a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A bound listener, plain or TLS.
pub struct Listener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
    local_addr: SocketAddr,
}

impl Listener {
    /// Bind `addr` now (port 0 picks a free port) and load the TLS files if given.
    pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self, GatewayError> {
        let tls = tls.map(load_tls).transpose()?;
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

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, GatewayError> {
    let certs = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| GatewayError::Key {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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
}
