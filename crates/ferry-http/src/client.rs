//! Ferry's HTTP/1.1 client for one plain-HTTP origin (a gateway upstream server, a connector's target): idle
//! keep-alive connections kept last-in-first-out, reused while they last, and handed back when a response body
//! has been read to its end.
//!
//! Written over hyper's connection API (`hyper::client::conn::http1`) instead of hyper-util's pooled client,
//! which on every request hashes its pool key with SipHash (twice), takes the pool's lock for a map lookup, and
//! spawns a task to give the connection back once the response body ends. Here the origin is known when the
//! client is built, so the idle list needs no key, and the connection goes back from the body itself
//! (docs/performance.md, "Changes and their effect"). TLS and HTTP/2 origins stay on hyper-util's client.
//!
//! On the node's cores ([`crate::cores`]) each core keeps its own idle connections: a connection's task runs on
//! the core that opened it, and a request reusing it from another core would wake that core's thread for each
//! exchange. A core with none idle opens one, as each nginx worker keeps its own keep-alive connections.
//!
//! With [`ClientOptions::proxy_protocol`] each new connection starts with a PROXY protocol header naming the
//! client connection it was opened for, so a connection carries the requests of that client connection only:
//! idle connections are kept by the client connection (its two addresses) and reused only for it, as HAProxy
//! keeps connections that sent a PROXY header private to their client.

use crate::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
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
        let connect_error = |source| ClientError::Connect {
            origin: self.origin.clone(),
            source,
        };
        let mut stream = match tokio::time::timeout(
            self.options.connect_timeout,
            TcpStream::connect(self.origin.as_str()),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(connect_error(e)),
            Err(_) => {
                return Err(connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.options.connect_timeout),
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(version) = self.options.proxy_protocol {
            use tokio::io::AsyncWriteExt;
            let header = version.header(client);
            // a fresh socket's send buffer takes the header (at most a few hundred bytes) at once
            stream.write_all(&header).await.map_err(connect_error)?;
        }
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

/// Why a request sent with either client got no response: this module's [`OriginClient`], or hyper-util's pooled
/// client (TLS and HTTP/2 origins).
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

/// A response body from either client.
#[derive(Debug)]
pub enum ResponseBody {
    Origin(PooledBody),
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

    /// An origin behind the PROXY protocol: each connection's header (its source address, or `local` for v1
    /// `UNKNOWN` and v2 `LOCAL`) is recorded, and its requests answered with `hello`.
    async fn proxied_origin() -> (String, Arc<Mutex<Vec<String>>>) {
        use ppp::PartialResult;
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
                            let (len, source) = match ppp::HeaderResult::parse(&seen) {
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
                                    (h.header.len(), format!("v1 {source}"))
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
                                    (h.header.len(), format!("v2 {source}"))
                                }
                                r if r.is_incomplete() => continue,
                                _ => return,
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
