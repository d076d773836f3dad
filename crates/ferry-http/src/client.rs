//! Ferry's HTTP/1.1 client for one plain-HTTP origin (a gateway upstream server, a connector's target): idle
//! keep-alive connections kept last-in-first-out, reused while they last, and handed back when a response body
//! has been read to its end.
//!
//! Written over hyper's connection API (`hyper::client::conn::http1`) instead of hyper-util's pooled client,
//! which on every request hashes its pool key with SipHash (twice), takes the pool's lock for a map lookup, and
//! spawns a task to give the connection back once the response body ends. Here the origin is known when the
//! client is built, so the idle list needs no key, and the connection goes back from the body itself
//! (docs/performance.md, "Changes and their effect"). TLS and HTTP/2 origins stay on hyper-util's client, except
//! behind the PROXY protocol ([`ProxiedClient`], below).
//!
//! On the node's cores ([`crate::cores`]) each core keeps its own idle connections: a connection's task runs on
//! the core that opened it, and a request reusing it from another core would wake that core's thread for each
//! exchange. A core with none idle opens one, as each nginx worker keeps its own keep-alive connections.
//!
//! With [`ClientOptions::proxy_protocol`] each new connection starts with a PROXY protocol header naming the
//! client connection it was opened for, so a connection carries the requests of that client connection only:
//! idle connections are kept by the client connection (its two addresses) and reused only for it, as HAProxy
//! keeps connections that sent a PROXY header private to their client. [`ProxiedClient`] does the same for
//! `https://` and `h2c://` origins: the header, then TLS (HAProxy's `send-proxy-v2 ssl`) and HTTP/1.1 or HTTP/2
//! by ALPN, or HTTP/2 with prior knowledge; one HTTP/2 connection per client connection.

use crate::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection: the TCP connect failed or timed out (its source is an `io::Error`, of kind `TimedOut` for
    /// a timeout), or the origin's address did not resolve.
    #[error("connect to {origin}")]
    Connect {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while the request was sent or its response head awaited.
    #[error("exchange with {origin}")]
    Exchange {
        origin: String,
        #[source]
        source: hyper::Error,
    },
}

impl ClientError {
    /// No connection was made: the request never left, so another server may take it.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// How an [`OriginClient`] connects and how long it keeps idle connections.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Idle connections kept at most (per core, on cores); beyond it the oldest is closed.
    pub max_idle: usize,
    /// Start each connection with a PROXY protocol header of this version (HAProxy's `send-proxy`).
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// The version of the PROXY protocol header sent to an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Version 1, a line of text: `PROXY TCP4 203.0.113.9 192.0.2.80 40123 443`.
    V1,
    /// Version 2, binary.
    V2,
}

/// The two addresses of the client connection a request came on: what a PROXY protocol header names (source
/// and destination).
pub type ClientConnection = (std::net::SocketAddr, std::net::SocketAddr);

impl ProxyProtocol {
    /// The header for a connection opened for `client`, or for none (health checks, requests without a client
    /// connection): v1 `PROXY UNKNOWN`, v2 `LOCAL`, which a receiver takes as the peer's own connection.
    pub fn header(self, client: Option<ClientConnection>) -> Vec<u8> {
        // an IPv4 client of a dual-stack (IPv6) listener: both addresses as IPv6, as the header needs one family
        let client = client.map(|(source, destination)| match (source, destination) {
            (std::net::SocketAddr::V4(s), std::net::SocketAddr::V6(_)) => (
                std::net::SocketAddr::new(s.ip().to_ipv6_mapped().into(), s.port()),
                destination,
            ),
            (std::net::SocketAddr::V6(_), std::net::SocketAddr::V4(d)) => (
                source,
                std::net::SocketAddr::new(d.ip().to_ipv6_mapped().into(), d.port()),
            ),
            both => both,
        });
        match self {
            ProxyProtocol::V1 => match client {
                Some(pair) => ppp::v1::Addresses::from(pair).to_string().into_bytes(),
                None => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
            },
            ProxyProtocol::V2 => {
                use ppp::v2::{Builder, Command, Protocol, Version};
                let built = match client {
                    Some(pair) => Builder::with_addresses(
                        Version::Two | Command::Proxy,
                        Protocol::Stream,
                        pair,
                    )
                    .build(),
                    None => Builder::with_addresses(
                        Version::Two | Command::Local,
                        Protocol::Unspecified,
                        ppp::v2::Addresses::Unspecified,
                    )
                    .build(),
                };
                // writing into a Vec cannot fail, and two socket addresses fit the header's length field
                built.unwrap_or_default()
            }
        }
    }
}

impl ClientOptions {
    /// Ferry's keep-alive for upstream servers and targets (docs/gateway.md, "Upstream pools"): idle connections
    /// kept 90 s, at most 256 per origin (and core).
    pub fn keep_alive(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            idle_timeout: Duration::from_secs(90),
            max_idle: 256,
            proxy_protocol: None,
        }
    }
}

/// The longest wait for an idle connection to take a request (see [`OriginClient::checkout`]).
const CHECKOUT_WAIT: Duration = Duration::from_millis(100);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
    /// The client connection it was opened for, with a PROXY protocol header (`None` without one).
    client: Option<ClientConnection>,
}

/// The HTTP/1.1 client of one origin (`host:port`).
pub struct OriginClient {
    origin: String,
    options: ClientOptions,
    /// Idle connections by the core that opened them: index 0 off the cores, `core + 1` on one.
    idle: Mutex<Vec<Vec<Idle>>>,
}

/// The index in [`OriginClient::idle`] of the connections of `core`.
fn slot(core: Option<usize>) -> usize {
    core.map_or(0, |c| c + 1)
}

impl std::fmt::Debug for OriginClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginClient")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl OriginClient {
    /// A client of `origin`, `host:port` (a name is resolved on each new connection).
    pub fn new(origin: impl Into<String>, options: ClientOptions) -> Arc<Self> {
        Arc::new(Self {
            origin: origin.into(),
            options,
            idle: Mutex::new(vec![Vec::new()]),
        })
    }

    /// A client of the origin `http://authority` (port 80 when the authority names none).
    pub fn for_authority(authority: &http::uri::Authority, options: ClientOptions) -> Arc<Self> {
        let port = authority.port_u16().unwrap_or(80);
        Self::new(format!("{}:{port}", authority.host()), options)
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(Vec::len)
            .sum()
    }

    /// Send `req`, whose URI must be in origin form (`/path?query`) and whose headers include `Host`. Upgrades
    /// (`101 Switching Protocols`) work with `hyper::upgrade::on` on the response.
    ///
    /// A reused connection that turns out closed before the request went out (the origin's keep-alive timeout
    /// racing this request) is set aside and the request goes on the next one, or a new one.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, ClientError> {
        self.send_for(req, None).await
    }

    /// [`send`](Self::send) for a request of the client connection `client`: with
    /// [`ClientOptions::proxy_protocol`] it goes on a connection opened for that client connection, whose PROXY
    /// header names it; without, `client` is not used.
    pub async fn send_for(
        self: &Arc<Self>,
        mut req: Request<Body>,
        client: Option<ClientConnection>,
    ) -> Result<Response<PooledBody>, ClientError> {
        // the core this runs on, where a new connection's task is spawned and a reused one's runs
        let core = crate::cores::current();
        let client = client.filter(|_| self.options.proxy_protocol.is_some());
        loop {
            let (mut sender, reused) = match self.checkout(core, client).await {
                Some(sender) => (sender, true),
                // boxed: a new connection is the rare case, and its future (connect, PROXY header, handshake) would
                // otherwise make every request's future larger, and every move of it longer
                None => (Box::pin(self.connect(client)).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(self
                        .clone()
                        .hand_back_after(resp, sender, Owner { core, client }))
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        tracing::debug!(
                            origin = self.origin,
                            "idle connection closed before use, trying another"
                        );
                        req = unsent;
                    }
                    _ => {
                        return Err(ClientError::Exchange {
                            origin: self.origin.clone(),
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
    }

    /// The newest idle connection (of `client`'s, with the PROXY protocol) that is still open, waited for until
    /// it takes a request.
    async fn checkout(
        &self,
        core: Option<usize>,
        client: Option<ClientConnection>,
    ) -> Option<SendRequest<Body>> {
        loop {
            let idle = {
                let mut lists = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let list = lists.get_mut(slot(core))?;
                // without the PROXY protocol every connection has `client: None`: the newest is the last
                let at = list.iter().rposition(|i| i.client == client)?;
                let idle = list.remove(at);
                if idle.since.elapsed() > self.options.idle_timeout {
                    // those before it are older still
                    list.drain(..at);
                    return None;
                }
                idle
            };
            let mut sender = idle.sender;
            // Nearly always ready at once: then no timer is made (a timer reads the clock and the runtime handle).
            if sender.is_ready() {
                return Some(sender);
            }
            // A connection goes back when its response body ends, a moment before hyper's connection task has
            // taken note: `ready` waits for that, or reports the connection closed. It is bounded for the rare
            // connection still busy sending a request body its origin stopped reading (the response came
            // first): that one is let go, and the request takes the next connection.
            if let Ok(Ok(())) = tokio::time::timeout(CHECKOUT_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    async fn connect(
        &self,
        client: Option<ClientConnection>,
    ) -> Result<SendRequest<Body>, ClientError> {
        let stream = open(&self.origin, &self.options, client).await?;
        let (sender, conn) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Exchange {
                origin: self.origin.clone(),
                source,
            })?;
        let origin = self.origin.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(origin, "origin connection ended: {e}");
            }
        });
        Ok(sender)
    }

    fn checkin(&self, sender: SendRequest<Body>, owner: Owner) {
        if sender.is_closed() {
            return;
        }
        let mut lists = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slot(owner.core);
        if lists.len() <= slot {
            lists.resize_with(slot + 1, Vec::new);
        }
        let list = &mut lists[slot];
        if owner.client.is_some() {
            // connections of client connections that have gone are never asked for again: the oldest go when
            // they have outlived the idle timeout or were closed by the origin
            let stale = list
                .iter()
                .take_while(|i| {
                    i.since.elapsed() > self.options.idle_timeout || i.sender.is_closed()
                })
                .count();
            list.drain(..stale);
        }
        if list.len() >= self.options.max_idle {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
            client: owner.client,
        });
    }

    /// The response with a body that hands the connection back when it ends (at once when there is none). An
    /// upgraded connection is the caller's and never goes back.
    fn hand_back_after(
        self: Arc<Self>,
        resp: Response<Incoming>,
        sender: SendRequest<Body>,
        owner: Owner,
    ) -> Response<PooledBody> {
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let (parts, inner) = resp.into_parts();
        let mut body = PooledBody {
            inner,
            back: (!upgraded).then_some((self, sender, owner)),
        };
        if body.inner.is_end_stream() {
            body.hand_back();
        }
        Response::from_parts(parts, body)
    }
}

/// A TCP connection to `origin` (within the connect timeout), started with the PROXY protocol header for `client`
/// when the options ask for one.
async fn open(
    origin: &str,
    options: &ClientOptions,
    client: Option<ClientConnection>,
) -> Result<TcpStream, ClientError> {
    let connect_error = |source| ClientError::Connect {
        origin: origin.to_owned(),
        source,
    };
    let mut stream =
        match tokio::time::timeout(options.connect_timeout, TcpStream::connect(origin)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => {
                return Err(connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", options.connect_timeout),
                )))
            }
        };
    let _ = stream.set_nodelay(true);
    if let Some(version) = options.proxy_protocol {
        use tokio::io::AsyncWriteExt;
        let header = version.header(client);
        // a fresh socket's send buffer takes the header (at most a few hundred bytes) at once
        stream.write_all(&header).await.map_err(connect_error)?;
    }
    Ok(stream)
}

/// Whose a connection is: the core that opened it, and the client connection it was opened for (with the PROXY
/// protocol).
#[derive(Debug, Clone, Copy)]
struct Owner {
    core: Option<usize>,
    client: Option<ClientConnection>,
}

/// A response body from an [`OriginClient`]: its connection goes back to the idle list when the body has been
/// read to its end. A body dropped before its end takes its connection with it (hyper closes it).
pub struct PooledBody {
    inner: Incoming,
    /// The client, the connection, and whose it is.
    back: Option<(Arc<OriginClient>, SendRequest<Body>, Owner)>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("holds_connection", &self.back.is_some())
            .finish_non_exhaustive()
    }
}

impl PooledBody {
    fn hand_back(&mut self) {
        if let Some((client, sender, owner)) = self.back.take() {
            client.checkin(sender, owner);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.hand_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.hand_back(),
            // a broken body leaves its connection unusable
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client of one `https://` or `h2c://` origin whose connections start with a PROXY protocol header
/// ([`ClientOptions::proxy_protocol`]): TLS, after which ALPN chooses HTTP/2 or HTTP/1.1, or HTTP/2 with prior
/// knowledge. Each connection names one client connection and carries its requests only.
///
/// Hand-written over hyper's connection API (`http1` and `http2`) and tokio-rustls, rather than hyper-util's pooled
/// client that the pools without the header use: that client keys its pool by scheme and authority only, so a
/// connection whose header names one client would be handed to any client's request, and its connector is not told
/// whose request a new connection is for, so it could not write the header. Here HTTP/1.1 connections (TLS origins
/// that chose it) are kept and reused by an [`OriginClient`]'s idle lists, per core and client connection; an
/// HTTP/2 connection is kept, one per client connection (and core), and its streams carry all of that client
/// connection's requests. An HTTP/2 connection its client connection has not used for the idle timeout is let go
/// (hyper closes it once its streams have ended).
pub struct ProxiedClient {
    /// The idle HTTP/1.1 connections, and the origin (`host:port`) and options.
    http1: Arc<OriginClient>,
    /// The TLS settings and the name the certificate is checked for; `None` for h2c.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// `https` or `http`, and the server's authority: an HTTP/2 request's `:scheme` and `:authority`.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// HTTP/2 connections by core slot and client connection.
    http2: Mutex<HashMap<Http2Key, Http2Conn>>,
    next_id: AtomicU64,
}

/// Whose an HTTP/2 connection is: the [`slot`] of the core that opened it, and the client connection it names.
type Http2Key = (usize, Option<ClientConnection>);

struct Http2Conn {
    sender: http2::SendRequest<Body>,
    /// Tells it apart from a later connection of the same key (its task lets go only its own).
    id: u64,
    /// When it last took a request.
    used: Instant,
}

/// A connection a request can go on.
enum Conn {
    Http1(SendRequest<Body>),
    Http2(http2::SendRequest<Body>, u64),
}

impl std::fmt::Debug for ProxiedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxiedClient")
            .field("origin", &self.http1.origin)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ProxiedClient {
    /// A client of `https://authority` (port 443 when it names none) with the TLS settings `tls`, whose ALPN
    /// protocols are set here to `h2` and `http/1.1` (what hyper-rustls offers for the pools without the header).
    /// The certificate is checked for the authority's host, sent as SNI when it is a name.
    pub fn tls(
        authority: &http::uri::Authority,
        options: ClientOptions,
        mut tls: rustls::ClientConfig,
    ) -> Result<Arc<Self>, rustls::pki_types::InvalidDnsNameError> {
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_owned())?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        Ok(Self::build(
            authority,
            443,
            http::uri::Scheme::HTTPS,
            options,
            Some((connector, name)),
        ))
    }

    /// A client of `h2c://authority` (port 80 when it names none): HTTP/2 with prior knowledge.
    pub fn h2c(authority: &http::uri::Authority, options: ClientOptions) -> Arc<Self> {
        Self::build(authority, 80, http::uri::Scheme::HTTP, options, None)
    }

    fn build(
        authority: &http::uri::Authority,
        default_port: u16,
        scheme: http::uri::Scheme,
        options: ClientOptions,
        tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    ) -> Arc<Self> {
        let port = authority.port_u16().unwrap_or(default_port);
        Arc::new(Self {
            http1: OriginClient::new(format!("{}:{port}", authority.host()), options),
            tls,
            scheme,
            authority: authority.clone(),
            http2: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Send `req` of the client connection `client` (`None`: a request of Ferry's own, whose connections' header
    /// says `UNKNOWN` / `LOCAL`). Its URI is in origin form (`/path?query`) and its headers include `Host`.
    ///
    /// It goes on that client connection's HTTP/2 connection, else on an idle HTTP/1.1 one of it, else on a new
    /// one. A reused connection that turns out closed before the request went out is let go and the request
    /// goes on the next one, or a new one.
    pub async fn send_for(
        self: &Arc<Self>,
        mut req: Request<Body>,
        client: Option<ClientConnection>,
    ) -> Result<Response<ResponseBody>, ClientError> {
        let core = crate::cores::current();
        let client = client.filter(|_| self.http1.options.proxy_protocol.is_some());
        let key = (slot(core), client);
        loop {
            let (conn, reused) = match self.reuse(core, key).await {
                Some(conn) => (conn, true),
                None => (self.connect(key).await?, false),
            };
            let (error, unsent) = match conn {
                Conn::Http1(mut sender) => {
                    if req.uri().scheme().is_some() {
                        // back from an HTTP/2 try: HTTP/1.1 sends the origin form
                        let target = req.uri().path_and_query().cloned();
                        *req.uri_mut() =
                            target.map_or_else(|| http::Uri::from_static("/"), Into::into);
                    }
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            let owner = Owner { core, client };
                            let resp = self.http1.clone().hand_back_after(resp, sender, owner);
                            return Ok(resp.map(ResponseBody::Origin));
                        }
                        Err(mut e) => {
                            let unsent = e.take_message();
                            (e, unsent)
                        }
                    }
                }
                Conn::Http2(mut sender, id) => {
                    // HTTP/2 sends `:scheme` and `:authority`, which hyper takes from an absolute URI
                    *req.uri_mut() = self.absolute(req.uri());
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(ResponseBody::Shared)),
                        Err(mut e) => {
                            let unsent = e.take_message();
                            if unsent.is_some() || sender.is_closed() {
                                self.forget(key, id);
                            }
                            (e, unsent)
                        }
                    }
                }
            };
            match unsent {
                Some(unsent) if reused => {
                    tracing::debug!(
                        origin = self.http1.origin,
                        "connection closed before use, trying another"
                    );
                    req = unsent;
                }
                _ => {
                    return Err(ClientError::Exchange {
                        origin: self.http1.origin.clone(),
                        source: error.into_error(),
                    })
                }
            }
        }
    }

    /// The client connection's HTTP/2 connection if it is open, else (TLS origins) its newest idle HTTP/1.1 one.
    async fn reuse(&self, core: Option<usize>, key: Http2Key) -> Option<Conn> {
        {
            let mut conns = self.http2.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(conn) = conns.get_mut(&key) {
                if !conn.sender.is_closed() {
                    conn.used = Instant::now();
                    return Some(Conn::Http2(conn.sender.clone(), conn.id));
                }
                conns.remove(&key);
            }
        }
        // h2c: HTTP/2 only
        self.tls.as_ref()?;
        self.http1.checkout(core, key.1).await.map(Conn::Http1)
    }

    /// A new connection: TCP and the PROXY header, TLS (each within the connect timeout), then HTTP/2 when ALPN
    /// chose it (or always, h2c), else HTTP/1.1.
    async fn connect(self: &Arc<Self>, key: Http2Key) -> Result<Conn, ClientError> {
        let options = &self.http1.options;
        let stream = open(&self.http1.origin, options, key.1).await?;
        let Some((connector, name)) = &self.tls else {
            return self.handshake(stream, true, key).await;
        };
        let connect_error = |source| ClientError::Connect {
            origin: self.http1.origin.clone(),
            source,
        };
        // nothing of the request has gone out yet: a failed or stalled handshake is a connect error, which another
        // server may retry (nginx's proxy_connect_timeout covers the TLS handshake too)
        let tls = match tokio::time::timeout(
            options.connect_timeout,
            connector.connect(name.clone(), stream),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => {
                return Err(connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {:?}", options.connect_timeout),
                )))
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        self.handshake(tls, h2, key).await
    }

    async fn handshake<T>(
        self: &Arc<Self>,
        io: T,
        h2: bool,
        key: Http2Key,
    ) -> Result<Conn, ClientError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let origin = self.http1.origin.clone();
        let exchange_error = |source| ClientError::Exchange {
            origin: origin.clone(),
            source,
        };
        if !h2 {
            let (sender, conn) = Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(exchange_error)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(origin, "origin connection ended: {e}");
                }
            });
            return Ok(Conn::Http1(sender));
        }
        // the window sizes of the pools' hyper-util client (ferry-edge's pool.rs)
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            .handshake(TokioIo::new(io))
            .await
            .map_err(exchange_error)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // a connection opened at the same time for the same client connection is let go: it closes after its
        // request
        self.http2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                Http2Conn {
                    sender: sender.clone(),
                    id,
                    used: Instant::now(),
                },
            );
        let client = Arc::downgrade(self);
        let idle = self.http1.options.idle_timeout;
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let mut wait = idle;
            let ended = loop {
                tokio::select! {
                    ended = &mut conn => break Some(ended),
                    () = tokio::time::sleep(wait) => {
                        match client.upgrade().and_then(|c| c.still_wanted(key, id, idle)) {
                            Some(rest) => wait = rest,
                            None => break None,
                        }
                    }
                }
            };
            // let go: the connection ends when the requests still on it have
            let ended = match ended {
                Some(ended) => ended,
                None => conn.await,
            };
            if let Err(e) = ended {
                tracing::debug!(origin, "origin connection ended: {e}");
            }
        });
        Ok(Conn::Http2(sender, id))
    }

    /// How much longer HTTP/2 connection `id` of `key` is kept, when it took a request within the last `idle`;
    /// `None` when it is let go now (or was already).
    fn still_wanted(&self, key: Http2Key, id: u64, idle: Duration) -> Option<Duration> {
        let mut conns = self.http2.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = conns.get(&key).filter(|c| c.id == id)?;
        match idle.checked_sub(conn.used.elapsed()) {
            Some(rest) if !rest.is_zero() && !conn.sender.is_closed() => Some(rest),
            _ => {
                conns.remove(&key);
                None
            }
        }
    }

    /// Let go of HTTP/2 connection `id` of `key`.
    fn forget(&self, key: Http2Key, id: u64) {
        let mut conns = self.http2.lock().unwrap_or_else(PoisonError::into_inner);
        if conns.get(&key).is_some_and(|c| c.id == id) {
            conns.remove(&key);
        }
    }

    /// `uri`'s path and query on this origin, as an absolute URI.
    fn absolute(&self, uri: &http::Uri) -> http::Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }

    /// Idle HTTP/1.1 connections and HTTP/2 connections held now.
    pub fn connection_counts(&self) -> (usize, usize) {
        let http2 = self
            .http2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (self.http1.idle_count(), http2)
    }
}

/// Why a request sent with any client got no response: this module's [`OriginClient`] or [`ProxiedClient`], or
/// hyper-util's pooled client (TLS and HTTP/2 origins).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Origin(#[from] ClientError),
    #[error(transparent)]
    Shared(#[from] hyper_util::client::legacy::Error),
    #[error("request target")]
    Target(#[from] http::Error),
}

impl SendError {
    /// No connection was made, so the request never left.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Origin(e) => e.is_connect(),
            Self::Shared(e) => e.is_connect(),
            Self::Target(_) => false,
        }
    }
}

/// A response body from any client.
#[derive(Debug)]
pub enum ResponseBody {
    /// Of an HTTP/1.1 connection of an [`OriginClient`] (also a [`ProxiedClient`]'s).
    Origin(PooledBody),
    /// Of hyper-util's pooled client, or of a [`ProxiedClient`]'s HTTP/2 connection.
    Shared(Incoming),
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Origin(b) => Pin::new(b).poll_frame(cx),
            Self::Shared(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Origin(b) => b.is_end_stream(),
            Self::Shared(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Origin(b) => b.size_hint(),
            Self::Shared(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn options() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            max_idle: 4,
            proxy_protocol: None,
        }
    }

    fn get(path: &str) -> Request<Body> {
        let mut req = Request::new(crate::empty());
        *req.uri_mut() = path.parse().expect("uri");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("origin"));
        req
    }

    /// What a test origin does after answering a connection's first request.
    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        /// Answers the next ones too (keep-alive).
        KeepAlive,
        /// Closes the connection.
        Close,
        /// Reads nothing more, but keeps the connection open.
        Stall,
    }

    /// An origin answering requests with `hello`, counting its connections.
    async fn origin(then: Then) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                            if s.write_all(reply).await.is_err() {
                                return;
                            }
                            match then {
                                Then::KeepAlive => {}
                                Then::Close => return,
                                Then::Stall => {
                                    tokio::time::sleep(Duration::from_secs(60)).await;
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn reuses_a_connection_once_its_body_is_read() {
        let (addr, accepted) = origin(Then::KeepAlive).await;
        let client = OriginClient::new(addr, options());
        for _ in 0..5 {
            let resp = client.send(get("/")).await.expect("response");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(client.idle_count(), 1);
    }

    /// On cores, each core reuses the connections it opened and opens its own: none crosses to another core.
    #[tokio::test]
    async fn each_core_keeps_its_own_idle_connections() {
        let (addr, accepted) = origin(Then::KeepAlive).await;
        let client = OriginClient::new(addr, options());
        let cores = crate::cores::Cores::start(2).expect("cores");
        // requests one after another, spread over the two cores by the cores' turn-taking
        for _ in 0..6 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let client = client.clone();
            cores.spawn(move || async move {
                let resp = client.send(get("/")).await.expect("response");
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                let _ = tx.send(body);
            });
            assert_eq!(&rx.await.expect("answered")[..], b"hello");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one connection per core"
        );
        assert_eq!(client.idle_count(), 2);
        // off the cores, none of theirs is taken
        let resp = client.send(get("/")).await.expect("response");
        resp.into_body().collect().await.expect("body");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_unread_body_keeps_its_connection_out() {
        let (addr, accepted) = origin(Then::KeepAlive).await;
        let client = OriginClient::new(addr, options());
        let first = client.send(get("/")).await.expect("response");
        // still held: a second request needs a second connection
        let second = client.send(get("/")).await.expect("response");
        drop(first);
        second.into_body().collect().await.expect("body");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(client.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_origin_closed_is_not_used_again() {
        let (addr, accepted) = origin(Then::Close).await;
        let client = OriginClient::new(addr, options());
        for _ in 0..3 {
            let resp = client.send(get("/")).await.expect("response");
            resp.into_body().collect().await.expect("body");
            // let the close reach the idle connection
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// A request body that never ends.
    struct Endless;

    impl HttpBody for Endless {
        type Data = Bytes;
        type Error = crate::BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, crate::BoxError>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[b'x'; 16384])))))
        }
    }

    #[tokio::test]
    async fn a_connection_stuck_sending_an_upload_is_not_waited_for() {
        let (addr, accepted) = origin(Then::Stall).await;
        let client = OriginClient::new(addr, options());
        let mut upload = Request::new(http_body_util::BodyExt::boxed_unsync(Endless));
        *upload.method_mut() = http::Method::POST;
        *upload.uri_mut() = "/upload".parse().expect("uri");
        upload
            .headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("origin"));
        let resp = client.send(upload).await.expect("response");
        resp.into_body().collect().await.expect("body");
        let started = Instant::now();
        let resp = tokio::time::timeout(Duration::from_secs(5), client.send(get("/next")))
            .await
            .expect("not stuck behind the upload")
            .expect("response");
        resp.into_body().collect().await.expect("body");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// What a test origin makes of the PROXY header at the start of `seen`.
    enum Header {
        /// Its length, and its source address (`local` for v1 `UNKNOWN` and v2 `LOCAL`) after its version.
        Complete(usize, String),
        Incomplete,
        Bad,
    }

    fn describe_header(seen: &[u8]) -> Header {
        use ppp::PartialResult;
        match ppp::HeaderResult::parse(seen) {
            ppp::HeaderResult::V1(Ok(h)) => {
                let source = match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        format!("{}:{}", a.source_address, a.source_port)
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        format!("[{}]:{}", a.source_address, a.source_port)
                    }
                    ppp::v1::Addresses::Unknown => "local".to_owned(),
                };
                Header::Complete(h.header.len(), format!("v1 {source}"))
            }
            ppp::HeaderResult::V2(Ok(h)) => {
                let source = match (h.command, h.addresses) {
                    (ppp::v2::Command::Local, _) => "local".to_owned(),
                    (_, ppp::v2::Addresses::IPv4(a)) => {
                        format!("{}:{}", a.source_address, a.source_port)
                    }
                    (_, ppp::v2::Addresses::IPv6(a)) => {
                        format!("[{}]:{}", a.source_address, a.source_port)
                    }
                    _ => "other".to_owned(),
                };
                Header::Complete(h.header.len(), format!("v2 {source}"))
            }
            r if r.is_incomplete() => Header::Incomplete,
            _ => Header::Bad,
        }
    }

    /// An origin behind the PROXY protocol: each connection's header (its source address, or `local` for v1
    /// `UNKNOWN` and v2 `LOCAL`) is recorded, and its requests answered with `hello`.
    async fn proxied_origin() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let seen_headers = headers.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let headers = seen_headers.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    let mut proxied = false;
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if !proxied {
                            let (len, source) = match describe_header(&seen) {
                                Header::Complete(len, source) => (len, source),
                                Header::Incomplete => continue,
                                Header::Bad => return,
                            };
                            headers.lock().expect("headers").push(source);
                            seen.drain(..len);
                            proxied = true;
                        }
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                            if s.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, headers)
    }

    /// With the PROXY protocol each client connection gets connections of its own, whose header names it, and
    /// keeps reusing them; a request of no client connection gets `UNKNOWN` / `LOCAL`.
    #[tokio::test]
    async fn proxy_protocol_connections_belong_to_one_client_connection() {
        let a: ClientConnection = (
            "198.51.100.7:40001".parse().expect("addr"),
            "192.0.2.80:443".parse().expect("addr"),
        );
        let b: ClientConnection = (
            "198.51.100.8:40002".parse().expect("addr"),
            "192.0.2.80:443".parse().expect("addr"),
        );
        for (version, tag) in [(ProxyProtocol::V1, "v1"), (ProxyProtocol::V2, "v2")] {
            let (addr, headers) = proxied_origin().await;
            let client = OriginClient::new(
                addr,
                ClientOptions {
                    proxy_protocol: Some(version),
                    ..options()
                },
            );
            for who in [Some(a), Some(a), Some(b), Some(a), None, Some(b), None] {
                let resp = client.send_for(get("/"), who).await.expect("response");
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(&body[..], b"hello");
            }
            assert_eq!(
                *headers.lock().expect("headers"),
                [
                    format!("{tag} 198.51.100.7:40001"),
                    format!("{tag} 198.51.100.8:40002"),
                    format!("{tag} local"),
                ],
                "one connection per client connection, each named in its header"
            );
            assert_eq!(client.idle_count(), 3);
        }
        // without the PROXY protocol the client connection does not matter
        let (addr, accepted) = origin(Then::KeepAlive).await;
        let client = OriginClient::new(addr, options());
        for who in [Some(a), Some(b), None] {
            let resp = client.send_for(get("/"), who).await.expect("response");
            resp.into_body().collect().await.expect("body");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// An origin that takes a PROXY header, then TLS (when given its settings) and HTTP/1.1 or HTTP/2 (as ALPN
    /// or the connection's first bytes say). It records each connection's header, counts the connections that
    /// ended, and answers with the request's HTTP version and `:authority` or `Host`.
    struct LayeredOrigin {
        addr: String,
        headers: Arc<Mutex<Vec<String>>>,
        ended: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn layered_origin(tls: Option<rustls::ServerConfig>) -> LayeredOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let (seen_headers, seen_ended) = (headers.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (headers, ended, acceptor) =
                    (seen_headers.clone(), seen_ended.clone(), acceptor.clone());
                tokio::spawn(async move {
                    // the header and nothing after it (the TLS handshake or HTTP/2 preface follows): a v1 line
                    // to its CRLF, or v2's 16 bytes and the length they give (ppp calls some v1 prefixes bad)
                    let mut seen = Vec::new();
                    let whole = |seen: &[u8]| {
                        if seen.starts_with(b"PROXY") {
                            seen.ends_with(b"\r\n")
                        } else {
                            seen.len() >= 16
                                && seen.len()
                                    == 16 + usize::from(u16::from_be_bytes([seen[14], seen[15]]))
                        }
                    };
                    while !whole(&seen) {
                        let mut byte = [0u8];
                        if s.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        seen.push(byte[0]);
                    }
                    let Header::Complete(_, source) = describe_header(&seen) else {
                        return;
                    };
                    headers.lock().expect("headers").push(source);
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let authority = req
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .or_else(|| {
                                req.headers()
                                    .get(http::header::HOST)
                                    .and_then(|h| h.to_str().ok())
                                    .map(str::to_owned)
                            })
                            .unwrap_or_default();
                        let body = format!("{:?} {authority}", req.version());
                        Ok::<_, std::convert::Infallible>(Response::new(crate::full(body)))
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(s).await else {
                                return;
                            };
                            server.serve_connection(TokioIo::new(tls), service).await
                        }
                        None => server.serve_connection(TokioIo::new(s), service).await,
                    };
                    ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        LayeredOrigin {
            addr,
            headers,
            ended,
        }
    }

    /// A certificate for `localhost`: the origin's TLS settings offering `alpn`, and a client's trusting it.
    fn test_tls(alpn: &[&[u8]]) -> (rustls::ServerConfig, rustls::ClientConfig) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let der = certified.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, client)
    }

    /// What `client` answers for each of `who` (the body, checked to be the same for all).
    async fn answers(client: &Arc<ProxiedClient>, who: &[Option<ClientConnection>]) -> Vec<String> {
        let mut seen = Vec::new();
        for who in who {
            let resp = client.send_for(get("/"), *who).await.expect("response");
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            seen.push(String::from_utf8_lossy(&body).into_owned());
        }
        seen.dedup();
        seen
    }

    fn two_clients() -> (ClientConnection, ClientConnection) {
        (
            (
                "198.51.100.7:40001".parse().expect("addr"),
                "192.0.2.80:443".parse().expect("addr"),
            ),
            (
                "198.51.100.8:40002".parse().expect("addr"),
                "192.0.2.80:443".parse().expect("addr"),
            ),
        )
    }

    /// `https://` behind the PROXY protocol: the header goes before the TLS handshake; by ALPN the connection
    /// speaks HTTP/2 (one per client connection, its streams reused) or HTTP/1.1 (kept idle per client
    /// connection), and each connection's header names its client connection.
    #[tokio::test]
    async fn proxied_tls_connections_belong_to_one_client_connection() {
        let (a, b) = two_clients();
        // HTTP/2 names the server in `:authority`; HTTP/1.1 sends the request's `Host` (here `origin`)
        for (alpn, h2, idle) in [
            (&[b"h2".as_slice(), b"http/1.1"][..], true, (0, 3)),
            (&[b"http/1.1".as_slice()][..], false, (3, 0)),
            (&[][..], false, (3, 0)),
        ] {
            for (pp, tag) in [(ProxyProtocol::V1, "v1"), (ProxyProtocol::V2, "v2")] {
                let (server, tls) = test_tls(alpn);
                let origin = layered_origin(Some(server)).await;
                let port = origin.addr.rsplit(':').next().expect("port");
                let authority = format!("localhost:{port}").parse().expect("authority");
                let options = ClientOptions {
                    proxy_protocol: Some(pp),
                    ..options()
                };
                let client = ProxiedClient::tls(&authority, options, tls).expect("client");
                let who = [Some(a), Some(a), Some(b), Some(a), None, Some(b), None];
                let answer = if h2 {
                    format!("HTTP/2.0 localhost:{port}")
                } else {
                    "HTTP/1.1 origin".to_owned()
                };
                assert_eq!(answers(&client, &who).await, [answer], "{tag} {alpn:?}");
                assert_eq!(
                    *origin.headers.lock().expect("headers"),
                    [
                        format!("{tag} 198.51.100.7:40001"),
                        format!("{tag} 198.51.100.8:40002"),
                        format!("{tag} local"),
                    ],
                    "{tag} {alpn:?}: one connection per client connection, each named in its header"
                );
                assert_eq!(client.connection_counts(), idle, "{tag} {alpn:?}");
            }
        }
    }

    /// `h2c://` behind the PROXY protocol: the header, then HTTP/2 with prior knowledge, one connection per client
    /// connection whose streams carry all its requests, at once too.
    #[tokio::test]
    async fn proxied_h2c_connections_belong_to_one_client_connection() {
        let (a, b) = two_clients();
        let origin = layered_origin(None).await;
        let authority = origin.addr.parse().expect("authority");
        let options = ClientOptions {
            proxy_protocol: Some(ProxyProtocol::V2),
            ..options()
        };
        let client = ProxiedClient::h2c(&authority, options);
        let who = [Some(a), Some(b), Some(a), None, Some(b)];
        assert_eq!(
            answers(&client, &who).await,
            [format!("HTTP/2.0 {}", origin.addr)]
        );
        // streams at once on the connection of a
        let at_once = (0..8).map(|_| {
            let client = client.clone();
            async move {
                let resp = client.send_for(get("/"), Some(a)).await.expect("response");
                resp.into_body().collect().await.expect("body");
            }
        });
        futures_util::future::join_all(at_once).await;
        assert_eq!(
            *origin.headers.lock().expect("headers"),
            ["v2 198.51.100.7:40001", "v2 198.51.100.8:40002", "v2 local"]
        );
        assert_eq!(client.connection_counts(), (0, 3));
    }

    /// An HTTP/2 connection its client connection no longer uses is closed after the idle timeout; the next
    /// request of that client connection opens another.
    #[tokio::test]
    async fn proxied_http2_connections_go_when_idle() {
        let (a, _) = two_clients();
        let origin = layered_origin(None).await;
        let options = ClientOptions {
            proxy_protocol: Some(ProxyProtocol::V1),
            idle_timeout: Duration::from_millis(200),
            ..options()
        };
        let client = ProxiedClient::h2c(&origin.addr.parse().expect("authority"), options);
        answers(&client, &[Some(a), Some(a)]).await;
        assert_eq!(client.connection_counts(), (0, 1));
        let started = Instant::now();
        while origin.ended.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the idle connection was not closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(client.connection_counts(), (0, 0));
        answers(&client, &[Some(a)]).await;
        assert_eq!(origin.headers.lock().expect("headers").len(), 2);
    }

    /// A TLS handshake that fails (a certificate the client does not trust) is a connect error: nothing of the
    /// request went out.
    #[tokio::test]
    async fn a_failed_tls_handshake_is_a_connect_error() {
        let (server, _) = test_tls(&[b"h2"]);
        let (_, other) = test_tls(&[b"h2"]);
        let origin = layered_origin(Some(server)).await;
        let port = origin.addr.rsplit(':').next().expect("port");
        let options = ClientOptions {
            proxy_protocol: Some(ProxyProtocol::V2),
            ..options()
        };
        let authority = format!("localhost:{port}").parse().expect("authority");
        let client = ProxiedClient::tls(&authority, options, other).expect("client");
        let err = client
            .send_for(get("/"), None)
            .await
            .expect_err("untrusted");
        assert!(err.is_connect(), "{err:?}");
    }

    #[test]
    fn proxy_headers_name_both_addresses_in_one_family() {
        let v4: ClientConnection = (
            "203.0.113.9:40123".parse().expect("addr"),
            "192.0.2.80:443".parse().expect("addr"),
        );
        assert_eq!(
            ProxyProtocol::V1.header(Some(v4)),
            b"PROXY TCP4 203.0.113.9 192.0.2.80 40123 443\r\n"
        );
        assert_eq!(ProxyProtocol::V1.header(None), b"PROXY UNKNOWN\r\n");
        // an IPv4 client of an IPv6 listener
        let mixed: ClientConnection = (
            "203.0.113.9:40123".parse().expect("addr"),
            "[2001:db8::1]:443".parse().expect("addr"),
        );
        assert_eq!(
            ProxyProtocol::V1.header(Some(mixed)),
            b"PROXY TCP6 ::ffff:203.0.113.9 2001:db8::1 40123 443\r\n"
        );
        let v2 = ProxyProtocol::V2.header(Some(v4));
        match ppp::HeaderResult::parse(&v2) {
            ppp::HeaderResult::V2(Ok(h)) => {
                assert_eq!(h.command, ppp::v2::Command::Proxy);
                assert_eq!(h.header.len(), v2.len());
            }
            other => panic!("not a v2 header: {other:?}"),
        }
        match ppp::HeaderResult::parse(&ProxyProtocol::V2.header(None)) {
            ppp::HeaderResult::V2(Ok(h)) => assert_eq!(h.command, ppp::v2::Command::Local),
            other => panic!("not a v2 header: {other:?}"),
        }
    }

    #[tokio::test]
    async fn connect_errors_say_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let client = OriginClient::new(addr, options());
        let err = client.send(get("/")).await.expect_err("refused");
        assert!(err.is_connect(), "{err:?}");
    }
}
