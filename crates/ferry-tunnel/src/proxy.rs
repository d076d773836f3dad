//! Reaching the node through an HTTP forward proxy (docs/operations.md, "Connectors behind a corporate proxy").
//!
//! Owns: which proxy applies to a URL ([`ProxySettings`]: an explicit proxy or the standard `HTTPS_PROXY` /
//! `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` variables, matched by hyper-util's `Matcher`, the same rules as curl's),
//! Basic proxy credentials (from the proxy URL or a file), the `CONNECT` handshake ([`connect`]) with its typed
//! refusals (407, 403, a proxy that cannot reach the node), a plain connection to the proxy for requests sent
//! through it in absolute form ([`connect_forward`]), and [`ProxyConnector`], the same for hyper-util's pooled
//! client (the token request).
//!
//! The `CONNECT` request goes through hyper's own HTTP/1.1 client connection (a `2xx` to `CONNECT` is an upgrade
//! in hyper), rather than through hyper-util's `Tunnel` connector: that one reports every refusal as one opaque
//! error, and the connector must say in its log whether the proxy wants credentials, refused, or could not reach
//! the node.

use bytes::Bytes;
use http::header::{HeaderValue, HOST, PROXY_AUTHORIZATION};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Most bytes of a proxy's refusal kept for the log.
const MAX_REFUSAL_BODY: usize = 512;

/// A forward proxy: where it is and the `Proxy-Authorization` to send, if any.
#[derive(Clone)]
pub struct Proxy {
    tls: bool,
    host: String,
    port: u16,
    /// `scheme://host:port`, without credentials: for logs.
    display: String,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.display)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish()
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// Why the proxy settings are not usable.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// The proxy URL is not `http(s)://[user:password@]host[:port]`.
    #[error("invalid proxy url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The credentials file could not be read or is not `user:password`.
    #[error("proxy_auth_file {path}: {message}")]
    AuthFile { path: String, message: String },
}

impl Proxy {
    /// Parse an explicit proxy URL: `http://[user:password@]host[:port]` (port 80 by default) or `https://…`
    /// (TLS to the proxy, port 443 by default); without a scheme, `http://` is meant. Credentials are
    /// percent-decoded, as in curl.
    pub fn parse(url: &str) -> Result<Self, ProxyConfigError> {
        let invalid = |reason: &str| ProxyConfigError::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(invalid("scheme must be http or https")),
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(invalid("a path is not allowed"));
        }
        if uri.query().is_some() {
            return Err(invalid("a query is not allowed"));
        }
        let matcher = Matcher::builder().all(with_scheme.clone()).build();
        let intercept = matcher
            .intercept(&Uri::from_static("https://node.invalid/"))
            .ok_or_else(|| invalid("not a usable proxy URL"))?;
        Self::from_intercept(intercept.uri(), intercept.basic_auth().cloned())
            .map_err(|reason| invalid(&reason))
    }

    fn from_intercept(uri: &Uri, authorization: Option<HeaderValue>) -> Result<Self, String> {
        let tls = uri.scheme_str() == Some("https");
        let authority = uri.authority().ok_or("no host")?;
        let host = authority.host();
        let host = crate::unbracketed_host(host).to_owned();
        if host.is_empty() {
            return Err("no host".to_owned());
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "https" } else { "http" };
        Ok(Self {
            tls,
            display: format!("{scheme}://{}:{port}", authority.host()),
            host,
            port,
            authorization,
        })
    }

    /// Use the credentials in `path` (one line `user:password`, surrounding white space ignored) instead of any in
    /// the URL.
    pub fn with_auth_file(mut self, path: &Path) -> Result<Self, ProxyConfigError> {
        let error = |message: String| ProxyConfigError::AuthFile {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let line = text.trim();
        let (user, password) = line
            .split_once(':')
            .ok_or_else(|| error("must hold one line user:password".to_owned()))?;
        if user.is_empty() || line.contains('\n') {
            return Err(error("must hold one line user:password".to_owned()));
        }
        self.authorization = Some(basic(user, password));
        Ok(self)
    }

    /// Whether credentials will be sent.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// Whether the connection to the proxy itself uses TLS (`https://` proxy).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The `Proxy-Authorization` value, if credentials are set.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }
}

/// `Basic base64(user:password)`, marked sensitive.
fn basic(user: &str, password: &str) -> HeaderValue {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// A URL with any `user:password@` replaced by `***@`, for messages.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let prefix = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{prefix}***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Which proxy, if any, to use for a URL.
pub struct ProxySettings {
    /// `None`: never a proxy.
    matcher: Option<Matcher>,
    auth_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySettings")
            .field("matcher", &self.matcher)
            .field("auth_file", &self.auth_file)
            .finish()
    }
}

/// The value of `proxy` that turns every proxy off, the environment's included.
pub const NO_PROXY_VALUE: &str = "none";

impl ProxySettings {
    /// No proxy at all.
    pub fn none() -> Self {
        Self {
            matcher: None,
            auth_file: None,
        }
    }

    /// The proxy settings of a connector: `explicit` (its `proxy` setting) when set (`"none"`: no proxy, whatever
    /// the environment says), else the standard variables read through `env` (`HTTPS_PROXY` for https URLs,
    /// `HTTP_PROXY` for http ones, `ALL_PROXY` for both; lowercase names too). `NO_PROXY` applies in both cases.
    /// `auth_file`, when set, replaces the credentials of whichever proxy applies.
    pub fn resolve(
        explicit: Option<&str>,
        auth_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProxyConfigError> {
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
                .unwrap_or_default()
        };
        let no = first(&["NO_PROXY", "no_proxy"]);
        let explicit = explicit.map(str::trim).filter(|s| !s.is_empty());
        let builder = match explicit {
            Some(v) if v.eq_ignore_ascii_case(NO_PROXY_VALUE) => return Ok(Self::none()),
            Some(url) => {
                // Parsed here for its error message; the matcher drops URLs it cannot use without a word.
                Proxy::parse(url)?;
                let url = if url.contains("://") {
                    url.to_owned()
                } else {
                    format!("http://{url}")
                };
                Matcher::builder().all(url)
            }
            None => {
                let mut builder = Matcher::builder();
                for (names, which) in [
                    (&["ALL_PROXY", "all_proxy"][..], 0),
                    (&["HTTP_PROXY", "http_proxy"][..], 1),
                    (&["HTTPS_PROXY", "https_proxy"][..], 2),
                ] {
                    let value = first(names);
                    if value.is_empty() {
                        continue;
                    }
                    Proxy::parse(&value).map_err(|e| match e {
                        ProxyConfigError::InvalidUrl { url, reason } => {
                            ProxyConfigError::InvalidUrl {
                                url: format!("{url} (from {})", names[0]),
                                reason,
                            }
                        }
                        other => other,
                    })?;
                    builder = match which {
                        0 => builder.all(value),
                        1 => builder.http(value),
                        _ => builder.https(value),
                    };
                }
                builder
            }
        };
        if let Some(path) = auth_file {
            // Checked now, so that a bad file stops the connector at start.
            Proxy::parse("http://proxy.invalid")?.with_auth_file(path)?;
        }
        Ok(Self {
            matcher: Some(builder.no(no).build()),
            auth_file: auth_file.map(Path::to_path_buf),
        })
    }

    /// The proxy for `url`, if one applies.
    pub fn for_url(&self, url: &str) -> Result<Option<Proxy>, ProxyConfigError> {
        let Some(matcher) = &self.matcher else {
            return Ok(None);
        };
        let Ok(uri) = url.parse::<Uri>() else {
            return Ok(None);
        };
        let Some(intercept) = matcher.intercept(&uri) else {
            return Ok(None);
        };
        let proxy = Proxy::from_intercept(intercept.uri(), intercept.basic_auth().cloned())
            .map_err(|reason| ProxyConfigError::InvalidUrl {
                url: intercept.uri().to_string(),
                reason,
            })?;
        match &self.auth_file {
            Some(path) => proxy.with_auth_file(path).map(Some),
            None => Ok(Some(proxy)),
        }
    }
}

/// Why going through the proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// TCP connection to the proxy failed.
    #[error("connecting to proxy {proxy}: {source}")]
    Connect {
        proxy: String,
        #[source]
        source: std::io::Error,
    },
    /// TLS with an `https://` proxy failed.
    #[error(
        "tls handshake with proxy {proxy}: {}",
        crate::tls::describe_io(source)
    )]
    Tls {
        proxy: String,
        #[source]
        source: std::io::Error,
    },
    /// HTTP/1.1 with the proxy failed (it closed the connection, answered garbage, …).
    #[error("proxy {proxy}: {source}")]
    Http {
        proxy: String,
        #[source]
        source: hyper::Error,
    },
    /// `407`: the proxy requires authentication (or refused the credentials sent).
    #[error("proxy {proxy} requires authentication (407 Proxy Authentication Required){}", if *.sent { ": the credentials sent were refused" } else { ": set user:password in the proxy URL or proxy_auth_file" })]
    AuthRequired { proxy: String, sent: bool },
    /// `403` (or another refusal): the proxy does not allow this `CONNECT`.
    #[error("proxy {proxy} refused CONNECT to {target}: {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Refused {
        proxy: String,
        target: String,
        status: StatusCode,
        body: String,
    },
    /// `500`, `502`, `503`, `504`: the proxy could not reach the node.
    #[error("proxy {proxy} cannot reach {target}: {status}")]
    Unreachable {
        proxy: String,
        target: String,
        status: StatusCode,
    },
}

impl ProxyError {
    /// The proxy's status, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::AuthRequired { .. } => Some(StatusCode::PROXY_AUTHENTICATION_REQUIRED),
            Self::Refused { status, .. } | Self::Unreachable { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Open a connection to the proxy itself (TCP, then TLS for an `https://` proxy, ALPN `http/1.1`).
async fn open(proxy: &Proxy, tls: &Arc<rustls::ClientConfig>) -> Result<ProxyIo, ProxyError> {
    let tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|source| ProxyError::Connect {
            proxy: proxy.display.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !proxy.tls {
        return Ok(Either::Left(tcp));
    }
    let name = ServerName::try_from(proxy.host.clone()).map_err(|_| ProxyError::Tls {
        proxy: proxy.display.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "host is not a valid TLS server name",
        ),
    })?;
    let mut config = (**tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| ProxyError::Tls {
            proxy: proxy.display.clone(),
            source,
        })?;
    Ok(Either::Right(Box::new(stream)))
}

/// A connection to the proxy: plain or TLS (tokio-util's `Either` reads and writes whichever it holds).
pub type ProxyIo = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// A connection to the proxy on which requests are sent in absolute form (`GET http://node/…`), for proxies
/// that refuse `CONNECT` but forward plain HTTP. The caller adds [`Proxy::authorization`] to each request.
pub async fn connect_forward(
    proxy: &Proxy,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<ProxyIo, ProxyError> {
    open(proxy, tls).await
}

/// `CONNECT host:port` through `proxy`: returns the tunnelled byte stream to `host:port`.
///
/// `tls` is used only for an `https://` proxy. No timeout of its own: the caller bounds the whole dial.
pub async fn connect(
    proxy: &Proxy,
    host: &str,
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Upgraded, ProxyError> {
    let io = open(proxy, tls).await?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let http_error = |source| ProxyError::Http {
        proxy: proxy.display.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_error)?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "proxy connection ended");
        }
    });
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(target.as_str())
        .header(HOST, target.as_str());
    if let Some(auth) = &proxy.authorization {
        req = req.header(PROXY_AUTHORIZATION, auth.clone());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|_| ProxyError::Refused {
            proxy: proxy.display.clone(),
            target: target.clone(),
            status: StatusCode::BAD_REQUEST,
            body: "the node's address is not a valid CONNECT target".to_owned(),
        })?;
    let mut res = sender.send_request(req).await.map_err(http_error)?;
    let status = res.status();
    if status.is_success() {
        return hyper::upgrade::on(&mut res).await.map_err(http_error);
    }
    Err(refusal(proxy, &target, status, res.into_body()).await)
}

/// The error for a proxy's non-2xx answer.
pub(crate) async fn refusal(
    proxy: &Proxy,
    target: &str,
    status: StatusCode,
    body: hyper::body::Incoming,
) -> ProxyError {
    match status {
        StatusCode::PROXY_AUTHENTICATION_REQUIRED => ProxyError::AuthRequired {
            proxy: proxy.display.clone(),
            sent: proxy.authorization.is_some(),
        },
        // tinyproxy answers 500 "Unable to connect", squid 503, others 502 or 504.
        StatusCode::INTERNAL_SERVER_ERROR
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => ProxyError::Unreachable {
            proxy: proxy.display.clone(),
            target: target.to_owned(),
            status,
        },
        _ => ProxyError::Refused {
            proxy: proxy.display.clone(),
            target: target.to_owned(),
            status,
            body: first_line(body).await,
        },
    }
}

/// The first non-empty line of a (probably HTML) body without tags, at most [`MAX_REFUSAL_BODY`] bytes read.
async fn first_line(mut body: hyper::body::Incoming) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_REFUSAL_BODY {
        match tokio::time::timeout(std::time::Duration::from_secs(1), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    buf.truncate(MAX_REFUSAL_BODY);
    let text = String::from_utf8_lossy(&buf);
    let mut plain = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                plain.push(' ');
            }
            _ if !in_tag => plain.push(c),
            _ => {}
        }
    }
    plain
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

/// A connector for hyper-util's pooled client (`HttpsConnector<ProxyConnector>`) that dials either directly or
/// through a proxy with `CONNECT` (or, in forward mode, to the proxy itself, for `http://` requests sent in
/// absolute form). Used for the token request, so that it takes the same way as the tunnel.
#[derive(Clone)]
pub struct ProxyConnector {
    proxy: Option<Proxy>,
    tls: Arc<rustls::ClientConfig>,
    forward: bool,
}

impl ProxyConnector {
    /// Dial through `proxy` when set, else directly. `tls` is for an `https://` proxy only.
    pub fn new(proxy: Option<Proxy>, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            proxy,
            tls,
            forward: false,
        }
    }

    /// Connect to the proxy itself instead of through `CONNECT`: the client then sends `http://` requests in
    /// absolute form, and the caller adds [`Proxy::authorization`] to each. For proxies that refuse `CONNECT`.
    pub fn forward(mut self) -> Self {
        self.forward = true;
        self
    }
}

/// The stream [`ProxyConnector`] returns.
pub enum ProxyStream {
    Direct(TokioIo<TcpStream>),
    Tunneled(Upgraded),
    Forward(TokioIo<ProxyIo>),
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        match self {
            // Through `CONNECT` the stream reaches the origin itself: requests keep their origin form.
            Self::Direct(_) | Self::Tunneled(_) => Connected::new(),
            // To the proxy: absolute form.
            Self::Forward(_) => Connected::new().proxy(true),
        }
    }
}

impl hyper::rt::Read for ProxyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tunneled(s) => Pin::new(s).poll_read(cx, buf),
            Self::Forward(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for ProxyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tunneled(s) => Pin::new(s).poll_write(cx, buf),
            Self::Forward(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_flush(cx),
            Self::Tunneled(s) => Pin::new(s).poll_flush(cx),
            Self::Forward(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tunneled(s) => Pin::new(s).poll_shutdown(cx),
            Self::Forward(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Why [`ProxyConnector`] could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0} has no host")]
    NoHost(Uri),
    #[error("connecting to {addr}: {source}")]
    Direct {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = dst
                .host()
                .ok_or_else(|| ConnectError::NoHost(dst.clone()))?;
            let host = crate::unbracketed_host(host).to_owned();
            let port = dst
                .port_u16()
                .unwrap_or(if dst.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            match &this.proxy {
                Some(proxy) if this.forward => Ok(ProxyStream::Forward(TokioIo::new(
                    open(proxy, &this.tls).await?,
                ))),
                Some(proxy) => Ok(ProxyStream::Tunneled(
                    connect(proxy, &host, port, &this.tls).await?,
                )),
                None => {
                    let tcp =
                        TcpStream::connect((host.as_str(), port))
                            .await
                            .map_err(|source| ConnectError::Direct {
                                addr: format!("{host}:{port}"),
                                source,
                            })?;
                    let _ = tcp.set_nodelay(true);
                    Ok(ProxyStream::Direct(TokioIo::new(tcp)))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn parses_proxy_urls() {
        let p = Proxy::parse("http://u%40x:p%3Aw@proxy.corp:3128").expect("valid");
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        assert_eq!(
            p.authorization().expect("auth"),
            &basic("u@x", "p:w"),
            "credentials are percent-decoded"
        );
        assert!(!format!("{p:?}").contains("Basic"), "{p:?}");
        let p = Proxy::parse("proxy.corp:8080").expect("no scheme");
        assert_eq!(p.to_string(), "http://proxy.corp:8080");
        assert!(!p.has_credentials());
        let p = Proxy::parse("https://proxy.corp").expect("https");
        assert!(p.is_tls());
        assert_eq!(p.to_string(), "https://proxy.corp:443");
        for bad in ["ftp://x", "http://x/path", "http://x:1/?q", "socks5://x:1"] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
        let err = Proxy::parse("ftp://user:secret@x").expect_err("bad");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("http://u:p@h:1"), "http://***@h:1");
        assert_eq!(redact("u:p@h:1"), "***@h:1");
        assert_eq!(redact("http://h:1/a@b"), "http://h:1/a@b");
    }

    #[test]
    fn environment_by_scheme_and_no_proxy() {
        let s = ProxySettings::resolve(
            None,
            None,
            env(&[
                ("HTTPS_PROXY", "http://secure:1"),
                ("http_proxy", "http://plain:2"),
                ("NO_PROXY", "internal.corp,10.0.0.0/8"),
            ]),
        )
        .expect("valid");
        let proxy = |url| s.for_url(url).expect("ok").map(|p| p.to_string());
        assert_eq!(
            proxy("https://ferry.example.com").as_deref(),
            Some("http://secure:1")
        );
        assert_eq!(
            proxy("http://ferry.example.com").as_deref(),
            Some("http://plain:2")
        );
        assert_eq!(proxy("https://node.internal.corp"), None);
        assert_eq!(proxy("http://10.1.2.3:8080"), None);
        let none = ProxySettings::resolve(None, None, env(&[])).expect("valid");
        assert!(none.for_url("https://x").expect("ok").is_none());
    }

    #[test]
    fn explicit_proxy_wins_and_none_turns_all_off() {
        let vars = &[("HTTPS_PROXY", "http://env:1"), ("NO_PROXY", "skip.me")];
        let s = ProxySettings::resolve(Some("http://flag:2"), None, env(vars)).expect("valid");
        let got = s.for_url("https://x").expect("ok").expect("proxy");
        assert_eq!(got.to_string(), "http://flag:2");
        assert!(s.for_url("http://x").expect("ok").is_some(), "all schemes");
        assert!(
            s.for_url("https://skip.me").expect("ok").is_none(),
            "NO_PROXY"
        );
        let off = ProxySettings::resolve(Some("none"), None, env(vars)).expect("valid");
        assert!(off.for_url("https://x").expect("ok").is_none());
        assert!(ProxySettings::resolve(Some("ftp://x"), None, env(&[])).is_err());
        assert!(ProxySettings::resolve(None, None, env(&[("HTTPS_PROXY", "ftp://x")])).is_err());
    }

    #[test]
    fn credentials_from_a_file() {
        let dir = tempdir();
        let file = dir.join("auth");
        std::fs::write(&file, "alice:s3:cret\n").expect("write");
        let s =
            ProxySettings::resolve(Some("http://bob:x@p:1"), Some(&file), env(&[])).expect("valid");
        let p = s.for_url("https://x").expect("ok").expect("proxy");
        assert_eq!(p.authorization(), Some(&basic("alice", "s3:cret")));
        std::fs::write(&file, "no colon").expect("write");
        let err = ProxySettings::resolve(Some("http://p:1"), Some(&file), env(&[]))
            .expect_err("bad file");
        assert!(err.to_string().contains("user:password"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ferry-proxy-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
