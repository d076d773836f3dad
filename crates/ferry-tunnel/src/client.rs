//! The connector's end of the tunnel: dialling the node (TCP, TLS with SNI, HTTP/1.1 upgrade; docs/protocol.md
//! §2), serving the reversed HTTP/2 on the upgraded connection (the connector is the HTTP/2 server; §3, §5, §8),
//! and the TLS client configuration (system roots plus an optional CA file).
//!
//! Does not own: tokens (the caller fetches one and passes it in), reconnecting, or what a stream does with its
//! request (the caller's service).

use crate::{
    server::non_zero, BoxError, TunnelBody, TunnelError, TunnelOptions, MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
};
use bytes::Bytes;
use ferry_proto::headers::FERRY_ERROR;
use ferry_proto::tunnel::{
    CONNECTOR_ID, CONNECTOR_VERSION, NODE_ID, TARGETS, TUNNEL_PATH, UPGRADE_PROTOCOL,
};
use ferry_proto::TargetName;
use http::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Where and how to dial a node.
#[derive(Clone)]
pub struct DialOptions {
    /// The node's base URL, `http://host[:port]` or `https://host[:port]` (a path, if any, is prefixed to
    /// `/_ferry/tunnel`).
    pub server: String,
    /// The bearer token (without `Bearer `).
    pub token: String,
    /// This connector's id.
    pub connector_id: String,
    /// The targets this connector serves.
    pub targets: Vec<TargetName>,
    /// TLS settings for `https://` servers (see [`tls_config`]).
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for DialOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialOptions")
            .field("server", &self.server)
            .field("token", &"***")
            .field("connector_id", &self.connector_id)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// Why dialling a node failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The server URL is not `http(s)://host[:port][/path]`.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidServer { url: String, reason: String },
    /// TCP connection failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// TLS handshake failed (certificate not trusted, wrong name, …).
    #[error("tls handshake with {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The upgrade request could not be built (a header value is not valid, e.g. the token).
    #[error("building the upgrade request: {0}")]
    Request(#[source] http::Error),
    /// HTTP/1.1 failed during the upgrade.
    #[error("upgrade request: {0}")]
    Http(#[source] hyper::Error),
    /// The node answered something other than `101`.
    #[error("node refused the tunnel: {status}: {body}")]
    Refused {
        status: StatusCode,
        /// The `ferry-error` header, when present.
        code: Option<String>,
        /// The response body as text (first line, at most 1 KiB).
        body: String,
    },
    /// The node answered `101` but not with the tunnel protocol.
    #[error("node answered 101 with Upgrade {0:?}, not {UPGRADE_PROTOCOL}")]
    WrongProtocol(String),
}

impl DialError {
    /// The node's status, for a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A parsed server base URL.
struct ServerUrl {
    tls: bool,
    /// Host without IPv6 brackets, for TCP and SNI.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    base_path: String,
}

impl ServerUrl {
    fn parse(url: &str) -> Result<Self, DialError> {
        let invalid = |reason: &str| DialError::InvalidServer {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not allowed"));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query is not allowed"));
        }
        Ok(Self {
            tls,
            host,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            base_path: uri.path().to_owned(),
        })
    }
}

/// Dial a node: TCP, TLS (with SNI) for an `https://` server, then the HTTP/1.1 upgrade of docs/protocol.md §2.
///
/// Returns the upgraded connection, on which the caller runs [`serve`], and the node's id (`ferry-node-id`,
/// empty if the node sent none). An answer other than `101` is [`DialError::Refused`] with its status and body.
/// Has no timeout of its own: wrap it in one.
pub async fn dial(opts: &DialOptions) -> Result<(Upgraded, String), DialError> {
    let url = ServerUrl::parse(&opts.server)?;
    let addr = format!("{}:{}", url.host, url.port);
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| DialError::Connect {
            addr: addr.clone(),
            source,
        })?;
    // Small frames (PINGs, headers) must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    if url.tls {
        let name =
            ServerName::try_from(url.host.clone()).map_err(|_| DialError::InvalidServer {
                url: opts.server.clone(),
                reason: "host is not a valid TLS server name".to_owned(),
            })?;
        let tls = tokio_rustls::TlsConnector::from(opts.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|source| DialError::Tls {
                host: url.host.clone(),
                source,
            })?;
        upgrade(tls, opts, &url).await
    } else {
        upgrade(tcp, opts, &url).await
    }
}

async fn upgrade<T>(
    io: T,
    opts: &DialOptions,
    url: &ServerUrl,
) -> Result<(Upgraded, String), DialError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let targets = opts
        .targets
        .iter()
        .map(TargetName::as_str)
        .collect::<Vec<_>>()
        .join(",");
    let req = Request::get(ferry_proto::path::join_base(&url.base_path, TUNNEL_PATH))
        .header(HOST, &url.authority)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, UPGRADE_PROTOCOL)
        .header(AUTHORIZATION, format!("Bearer {}", opts.token))
        .header(CONNECTOR_ID, &opts.connector_id)
        .header(TARGETS, targets)
        .header(CONNECTOR_VERSION, env!("CARGO_PKG_VERSION"))
        .body(Empty::<Bytes>::new())
        .map_err(DialError::Request)?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(DialError::Http)?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "tunnel upgrade connection ended");
        }
    });
    let mut res = sender.send_request(req).await.map_err(DialError::Http)?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = res.status();
        let code = res
            .headers()
            .get(FERRY_ERROR)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_text(res.into_body()).await;
        return Err(DialError::Refused { status, code, body });
    }
    let protocol = res
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !protocol.eq_ignore_ascii_case(UPGRADE_PROTOCOL) {
        return Err(DialError::WrongProtocol(protocol));
    }
    let node_id = res
        .headers()
        .get(NODE_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let upgraded = hyper::upgrade::on(&mut res)
        .await
        .map_err(DialError::Http)?;
    Ok((upgraded, node_id))
}

/// Most bytes of a refusal's body kept for the log.
const MAX_REFUSAL_BODY: usize = 1024;

/// The first line of a body (at most [`MAX_REFUSAL_BODY`] bytes), as text.
async fn read_text(mut body: Incoming) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_REFUSAL_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    buf.truncate(MAX_REFUSAL_BODY);
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// Serve the reversed HTTP/2 on an upgraded connection: the connector is the HTTP/2 server. Advertises
/// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` (RFC 8441) and `max_concurrent_streams`, uses the windows of `opts` and
/// sends keep-alive PINGs (closing the connection when one is not acknowledged in time).
///
/// Every stream is handed to `service`. When `drain` resolves: graceful shutdown (GOAWAY, so the node opens no
/// new stream here), the streams in flight finish, then this returns. Bound the drain with a timeout around the
/// returned future. Returns `Ok(())` when the connection closed cleanly, the error otherwise (broken connection,
/// keep-alive timeout, protocol error).
pub async fn serve<S, D>(
    io: Upgraded,
    service: S,
    opts: &TunnelOptions,
    drain: D,
) -> Result<(), hyper::Error>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<TunnelBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    D: Future<Output = ()>,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(opts.max_concurrent_streams)
        // The node resets a stream whose client hung up; when many clients hang up at once (a load tool
        // stopping), many resets reach streams not yet taken up here. h2's guard against "rapid reset" floods
        // would end the whole tunnel after 20 of them (tests/relay_errors.rs, a burst of abandoned requests);
        // the node is an authenticated peer bound by `max_concurrent_streams`, so that is the limit here.
        .max_pending_accept_reset_streams(opts.max_concurrent_streams as usize)
        .initial_stream_window_size(opts.stream_window)
        .initial_connection_window_size(opts.connection_window_in_use())
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_frame_size(MAX_FRAME_SIZE)
        .keep_alive_interval(non_zero(opts.keepalive_interval))
        .keep_alive_timeout(opts.keepalive_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::pin!(drain);
    tokio::select! {
        result = conn.as_mut() => return result,
        () = &mut drain => {}
    }
    tracing::debug!("tunnel draining: goaway sent");
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// The trust roots: the system's (rustls-native-certs) plus every PEM certificate in `ca_file`.
///
/// A missing, unreadable or certificate-less `ca_file` is an error; system certificates that fail to load are
/// logged and skipped.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TunnelError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "could not load some system certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system trust roots loaded");
    if let Some(path) = ca_file {
        let ca_error = |message: String| TunnelError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate found".to_owned()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("unusable certificate: {e}")))?;
        }
    }
    Ok(roots)
}

/// A rustls client configuration (ring provider, safe default protocol versions) trusting `roots`, without
/// ALPN: callers set the protocols they offer.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TunnelError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TunnelError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The TLS configuration of the tunnel: system roots plus the PEM CAs in `ca_file`, ALPN `http/1.1` only (the
/// upgrade is HTTP/1.1; HTTP/2 starts after it, without ALPN).
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TunnelError> {
    let mut config = client_config(root_store(ca_file)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_urls() {
        let u = ServerUrl::parse("https://ferry.example.com").expect("valid");
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("ferry.example.com", 443));
        assert_eq!(u.authority, "ferry.example.com");
        let u = ServerUrl::parse("http://[::1]:8080/base/").expect("valid");
        assert!(!u.tls);
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.authority, "[::1]:8080");
        assert_eq!(
            ferry_proto::path::join_base(&u.base_path, TUNNEL_PATH),
            "/base/_ferry/tunnel"
        );
        for bad in ["ftp://x", "x:80", "/path", "http://u@x", "http://x/?q"] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let err = root_store(Some(Path::new("/nonexistent/ca.pem"))).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("ferry-tunnel-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = root_store(Some(&empty)).expect_err("empty");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tunnel_tls_offers_http11_only() {
        let config = tls_config(None).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
