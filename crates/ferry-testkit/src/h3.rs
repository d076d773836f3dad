//! An HTTP/3 client for tests (quinn and h3, the crates Ferry serves HTTP/3 with, on the client side): one QUIC
//! connection to a listener, requests on it one after another, each answer read whole within a bound.

use anyhow::Context as _;
use bytes::{Buf, Bytes, BytesMut};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// An answer read whole.
#[derive(Debug)]
pub struct H3Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
}

impl H3Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/3 connection.
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    driver: tokio::task::JoinHandle<()>,
    authority: String,
}

/// How long a connection or one request may take.
const BOUND: Duration = Duration::from_secs(20);

impl H3Client {
    /// Connect to `addr` (UDP) as `server_name`, trusting the PEM CA bundle `ca`; with `identity`, a client
    /// certificate chain and key (PEM files).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots);
        let mut tls = match identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
                builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let bind: SocketAddr = match addr {
            SocketAddr::V4(_) => ([127, 0, 0, 1], 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        };
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = tokio::time::timeout(BOUND, endpoint.connect(addr, server_name)?)
            .await
            .context("QUIC handshake timed out")??;
        let (mut driver, send) = tokio::time::timeout(
            BOUND,
            h3::client::new(h3_quinn::Connection::new(conn.clone())),
        )
        .await
        .context("HTTP/3 setup timed out")??;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self {
            send,
            endpoint,
            conn,
            driver,
            authority: format!("{server_name}:{}", addr.port()),
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<H3Response> {
        self.request(http::Method::GET, path, &[], Bytes::new())
            .await
    }

    /// `method path` with `headers` and `body` (sent in 16 KiB frames), the answer read whole.
    pub async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<H3Response> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(())?;
        let exchange = async {
            let mut stream = self.send.send_request(req).await?;
            let mut rest = body;
            while !rest.is_empty() {
                let chunk = rest.split_to(rest.len().min(16 * 1024));
                stream.send_data(chunk).await?;
            }
            stream.finish().await?;
            let resp = stream.recv_response().await?;
            let mut body = BytesMut::new();
            while let Some(mut chunk) = stream.recv_data().await? {
                body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            let trailers = stream.recv_trailers().await?;
            let (parts, ()) = resp.into_parts();
            anyhow::Ok(H3Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: body.freeze(),
                trailers,
            })
        };
        tokio::time::timeout(BOUND, exchange)
            .await
            .context("HTTP/3 request timed out")?
    }

    /// The QUIC connection (to learn how it ended, or to close it).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Close the connection and wait (bounded) until the server learnt it.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        self.driver.abort();
    }
}
