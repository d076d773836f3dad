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
}

impl ClientOptions {
    /// Ferry's keep-alive for upstream servers and targets (docs/gateway.md, "Upstream pools"): idle connections
    /// kept 90 s, at most 256 per origin (and core).
    pub fn keep_alive(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            idle_timeout: Duration::from_secs(90),
            max_idle: 256,
        }
    }
}

/// The longest wait for an idle connection to take a request (see [`OriginClient::checkout`]).
const CHECKOUT_WAIT: Duration = Duration::from_millis(100);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
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
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, ClientError> {
        // the core this runs on, where a new connection's task is spawned and a reused one's runs
        let core = crate::cores::current();
        loop {
            let (mut sender, reused) = match self.checkout(core).await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.clone().hand_back_after(resp, sender, core)),
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

    /// The newest idle connection that is still open, waited for until it takes a request.
    async fn checkout(&self, core: Option<usize>) -> Option<SendRequest<Body>> {
        loop {
            let idle = {
                let mut lists = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let list = lists.get_mut(slot(core))?;
                let idle = list.pop()?;
                if idle.since.elapsed() > self.options.idle_timeout {
                    // the rest are older still
                    list.clear();
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

    async fn connect(&self) -> Result<SendRequest<Body>, ClientError> {
        let connect_error = |source| ClientError::Connect {
            origin: self.origin.clone(),
            source,
        };
        let stream = match tokio::time::timeout(
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

    fn checkin(&self, sender: SendRequest<Body>, core: Option<usize>) {
        if sender.is_closed() {
            return;
        }
        let mut lists = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slot(core);
        if lists.len() <= slot {
            lists.resize_with(slot + 1, Vec::new);
        }
        let list = &mut lists[slot];
        if list.len() >= self.options.max_idle {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// The response with a body that hands the connection back when it ends (at once when there is none). An
    /// upgraded connection is the caller's and never goes back.
    fn hand_back_after(
        self: Arc<Self>,
        resp: Response<Incoming>,
        sender: SendRequest<Body>,
        core: Option<usize>,
    ) -> Response<PooledBody> {
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let (parts, inner) = resp.into_parts();
        let mut body = PooledBody {
            inner,
            back: (!upgraded).then_some((self, sender, core)),
        };
        if body.inner.is_end_stream() {
            body.hand_back();
        }
        Response::from_parts(parts, body)
    }
}

/// A response body from an [`OriginClient`]: its connection goes back to the idle list when the body has been
/// read to its end. A body dropped before its end takes its connection with it (hyper closes it).
pub struct PooledBody {
    inner: Incoming,
    /// The client, the connection, and the core that opened it.
    back: Option<(Arc<OriginClient>, SendRequest<Body>, Option<usize>)>,
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
        if let Some((client, sender, core)) = self.back.take() {
            client.checkin(sender, core);
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
