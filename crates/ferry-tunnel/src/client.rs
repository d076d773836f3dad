//! The connector's end of the tunnel: dialling the node (TCP or through a proxy, TLS with SNI, HTTP/1.1 upgrade
//! to `ferry-tunnel/1` or to a WebSocket; docs/protocol.md §2), serving the reversed HTTP/2 on the upgraded connection (the connector is the HTTP/2 server; §3, §5, §8),
//! and the TLS client configuration (system roots plus an optional CA file).
//!
//! Does not own: tokens (the caller fetches one and passes it in), reconnecting, or what a stream does with its
//! request (the caller's service).

use crate::proxy::{self, Proxy, ProxyError};
use crate::ws::{self, Transport, TunnelIo};
use crate::{
    server::non_zero, BoxError, TunnelBody, TunnelError, TunnelOptions, MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
};
use bytes::Bytes;
use ferry_proto::headers::FERRY_ERROR;
use ferry_proto::tunnel::{
    CONNECTOR_ID, CONNECTOR_VERSION, MAX_STREAMS, NODE_ID, TARGETS, TUNNEL_PATH, UPGRADE_PROTOCOL,
    UPGRADE_PROTOCOL_2, WEBSOCKET_PROTOCOL_2,
};
use ferry_proto::TargetName;
use http::header::{
    AUTHORIZATION, CONNECTION, HOST, PROXY_AUTHORIZATION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
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
    /// TLS settings for `https://` servers and `https://` proxies (see [`tls_config`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// Which upgrade to ask for.
    pub transport: Transport,
    /// The proxy to go through, if any, and how.
    pub proxy: Option<(Proxy, ProxyMode)>,
    /// The newest tunnel protocol to offer: 2 offers 2 and 1 (the node picks), 1 offers 1 only.
    pub protocol: u8,
    /// The most streams this connector takes at once on the tunnel (sent as `ferry-max-streams`).
    pub max_streams: u32,
}

/// A tunnel dialled and upgraded.
pub struct Dialled {
    /// The upgraded connection: serve protocol 1 on it with [`serve`], protocol 2 with
    /// [`crate::exchange::serve`].
    pub io: TunnelIo,
    /// The node's id (`ferry-node-id`), empty if the node sent none.
    pub node_id: String,
    /// The tunnel protocol the node chose: 1 or 2.
    pub protocol: u8,
}

/// How the tunnel goes through a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// `CONNECT host:port`, then everything (TLS included) inside that tunnel. The usual way.
    Connect,
    /// The upgrade request sent to the proxy in absolute form (`GET http://node/_ferry/tunnel`), for proxies that
    /// refuse `CONNECT` to the node's port but forward plain HTTP (and, for some, WebSocket upgrades). `http://`
    /// servers only.
    Forward,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Forward => "forward",
        }
    }
}

impl std::fmt::Debug for DialOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialOptions")
            .field("server", &self.server)
            .field("token", &"***")
            .field("connector_id", &self.connector_id)
            .field("targets", &self.targets)
            .field("transport", &self.transport)
            .field("proxy", &self.proxy)
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
    /// TLS handshake failed (certificate not trusted, wrong name, …); a refused certificate is named by its
    /// issuer and subject ([`crate::tls::CertificateRefused`]).
    #[error("tls handshake with {host}: {}", crate::tls::describe_io(source))]
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
    /// The node answered `101` but not with the protocol asked for.
    #[error("node answered 101 with Upgrade {got:?}, not {asked}")]
    WrongProtocol { asked: &'static str, got: String },
    /// The WebSocket handshake's answer did not match its key.
    #[error("node answered the websocket upgrade with a wrong Sec-WebSocket-Accept")]
    BadWebSocketAccept,
    /// Going through the proxy failed.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

impl DialError {
    /// The node's status, for a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the default transport's upgrade looks refused or stripped on the way (an answer that is not
    /// Ferry's, a `400` because the `Upgrade` header did not arrive, a `101` to something else, a connection cut
    /// during the upgrade), so that the WebSocket transport is worth a try. Not for Ferry's own refusals
    /// (`401`, draining, …) nor for failures before the request (TCP, TLS, the proxy's `CONNECT`).
    pub fn suggests_websocket(&self) -> bool {
        match self {
            Self::Refused { code, .. } => match code.as_deref() {
                None => true,
                Some(code) => code == ferry_proto::ErrorCode::BadRequest.as_str(),
            },
            Self::WrongProtocol { .. } | Self::Http(_) => true,
            _ => false,
        }
    }

    /// Whether the proxy refused `CONNECT` (`403`, `405`), so that a request in absolute form may still pass.
    pub fn connect_refused(&self) -> bool {
        matches!(
            self,
            Self::Proxy(ProxyError::Refused { status, .. })
                if *status == StatusCode::FORBIDDEN || *status == StatusCode::METHOD_NOT_ALLOWED
        )
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
        let host = crate::unbracketed_host(host).to_owned();
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

/// Dial a node: TCP (directly, or through a proxy's `CONNECT`), TLS (with SNI) for an `https://` server, then the
/// HTTP/1.1 upgrade of docs/protocol.md §2 to `ferry-tunnel/1` or to a WebSocket (`opts.transport`).
///
/// Returns the upgraded connection with the node's id and the protocol the node chose (see [`Dialled`]). An
/// answer other than `101` is [`DialError::Refused`] with its status and body.
/// Has no timeout of its own: wrap it in one.
pub async fn dial(opts: &DialOptions) -> Result<Dialled, DialError> {
    let url = ServerUrl::parse(&opts.server)?;
    match &opts.proxy {
        None => {
            let addr = format!("{}:{}", url.host, url.port);
            let tcp = TcpStream::connect((url.host.as_str(), url.port))
                .await
                .map_err(|source| DialError::Connect { addr, source })?;
            // Small frames (PINGs, headers) must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            if url.tls {
                upgrade(tls_to_node(tcp, opts, &url).await?, opts, &url, None).await
            } else {
                upgrade(tcp, opts, &url, None).await
            }
        }
        Some((proxy, ProxyMode::Connect)) => {
            let tunnel = TokioIo::new(proxy::connect(proxy, &url.host, url.port, &opts.tls).await?);
            if url.tls {
                upgrade(tls_to_node(tunnel, opts, &url).await?, opts, &url, None).await
            } else {
                upgrade(tunnel, opts, &url, None).await
            }
        }
        Some((proxy, ProxyMode::Forward)) => {
            if url.tls {
                return Err(DialError::InvalidServer {
                    url: opts.server.clone(),
                    reason: "an https server is reached through a proxy with CONNECT only"
                        .to_owned(),
                });
            }
            let io = proxy::connect_forward(proxy, &opts.tls).await?;
            upgrade(io, opts, &url, Some(proxy)).await
        }
    }
}

async fn tls_to_node<T>(
    io: T,
    opts: &DialOptions,
    url: &ServerUrl,
) -> Result<tokio_rustls::client::TlsStream<T>, DialError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(url.host.clone()).map_err(|_| DialError::InvalidServer {
        url: opts.server.clone(),
        reason: "host is not a valid TLS server name".to_owned(),
    })?;
    tokio_rustls::TlsConnector::from(opts.tls.clone())
        .connect(name, io)
        .await
        .map_err(|source| DialError::Tls {
            host: url.host.clone(),
            source,
        })
}

/// Send the upgrade request on `io` and take the `101`. `forward`: `io` is a connection to this proxy, and the
/// request goes in absolute form with the proxy's credentials.
async fn upgrade<T>(
    io: T,
    opts: &DialOptions,
    url: &ServerUrl,
    forward: Option<&Proxy>,
) -> Result<Dialled, DialError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let targets = opts
        .targets
        .iter()
        .map(TargetName::as_str)
        .collect::<Vec<_>>()
        .join(",");
    let path = ferry_proto::path::join_base(&url.base_path, TUNNEL_PATH);
    let target = match forward {
        Some(_) => format!("http://{}{path}", url.authority),
        None => path,
    };
    let mut req = Request::get(target)
        .header(HOST, &url.authority)
        .header(CONNECTION, "Upgrade");
    let ws_key = match opts.transport {
        Transport::Upgrade => {
            req = if opts.protocol >= 2 {
                req.header(UPGRADE, format!("{UPGRADE_PROTOCOL_2}, {UPGRADE_PROTOCOL}"))
            } else {
                req.header(UPGRADE, UPGRADE_PROTOCOL)
            };
            None
        }
        Transport::WebSocket => {
            let key = ws::new_key();
            req = req
                .header(UPGRADE, "websocket")
                .header(SEC_WEBSOCKET_VERSION, "13")
                .header(SEC_WEBSOCKET_KEY, &key)
                .header(
                    SEC_WEBSOCKET_PROTOCOL,
                    if opts.protocol >= 2 {
                        format!("{WEBSOCKET_PROTOCOL_2}, {}", ws::SUBPROTOCOL)
                    } else {
                        ws::SUBPROTOCOL.to_owned()
                    },
                );
            Some(key)
        }
    };
    if let Some(auth) = forward.and_then(Proxy::authorization) {
        req = req.header(PROXY_AUTHORIZATION, auth.clone());
    }
    let req = req
        .header(AUTHORIZATION, format!("Bearer {}", opts.token))
        .header(CONNECTOR_ID, &opts.connector_id)
        .header(TARGETS, targets)
        .header(CONNECTOR_VERSION, env!("CARGO_PKG_VERSION"))
        .header(MAX_STREAMS, opts.max_streams)
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
    if let Some(proxy) = forward {
        if res.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            let target = url.authority.clone();
            let status = res.status();
            return Err(proxy::refusal(proxy, &target, status, res.into_body())
                .await
                .into());
        }
    }
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
    let (asked, chosen) = match opts.transport {
        Transport::Upgrade
            if opts.protocol >= 2 && protocol.eq_ignore_ascii_case(UPGRADE_PROTOCOL_2) =>
        {
            (UPGRADE_PROTOCOL_2, 2)
        }
        Transport::Upgrade => (UPGRADE_PROTOCOL, 1),
        Transport::WebSocket => {
            let sub = res
                .headers()
                .get(SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let chosen =
                if opts.protocol >= 2 && sub.trim().eq_ignore_ascii_case(WEBSOCKET_PROTOCOL_2) {
                    2
                } else {
                    1
                };
            ("websocket", chosen)
        }
    };
    if !protocol.eq_ignore_ascii_case(asked) {
        return Err(DialError::WrongProtocol {
            asked,
            got: protocol,
        });
    }
    if let Some(key) = &ws_key {
        let accept = res
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if accept != ws::accept_key(key) {
            return Err(DialError::BadWebSocketAccept);
        }
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
    Ok(Dialled {
        io: TunnelIo::new(upgraded, opts.transport, true).await,
        node_id,
        protocol: chosen,
    })
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
pub async fn serve<I, S, D>(
    io: I,
    service: S,
    opts: &TunnelOptions,
    drain: D,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
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
/// ALPN: callers set the protocols they offer. Certificates are verified by rustls' WebPKI verifier; its refusals
/// name the certificate's issuer ([`crate::tls::CertificateRefused`]).
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TunnelError> {
    client_config_pinned(roots, Vec::new())
}

/// [`client_config`], and a server certificate whose SHA-256 is one of `pins` is trusted whatever its issuer,
/// names or CA flag (a self-signed node; docs/configuration.md, "TLS").
pub fn client_config_pinned(
    roots: rustls::RootCertStore,
    pins: Vec<crate::tls::Pin>,
) -> Result<rustls::ClientConfig, TunnelError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    if roots.is_empty() && pins.is_empty() {
        // No anchors (no system certificates, no CA file): nothing will verify, and rustls' verifier refuses
        // to be built without anchors; keep the plain configuration so that plain-HTTP use still works.
        return Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TunnelError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth());
    }
    let verifier = if roots.is_empty() {
        None
    } else {
        Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| TunnelError::Tls(rustls::Error::General(e.to_string())))?,
        )
    };
    let verifier = crate::tls::NamingVerifier::new(verifier, pins, &provider);
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TunnelError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
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
