//! The accept loop: caps on connections, one task per connection, the protocol judged from the first bytes
//! (HTTP/1.1 or HTTP/2; over TLS after the handshake) within the first request's deadline, upgrades allowed,
//! idle connections closed, and a graceful shutdown that lets in-flight requests finish until a deadline. A
//! listener that serves HTTP/3 gets its QUIC endpoint started here too ([`crate::http3`]), sharing the caps, the
//! handler and the drain.

use crate::h1::{self, H1Guard, Prefixed, Protocol, SniffError};
use crate::limits::{ConnectionCaps, ConnectionLimits, Permit, RateLimitedLog};
use crate::Listener;
use ferry_http::{Body, ClientInfo, RequestBody};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

/// What answers requests: called once per request.
pub type Handler = Arc<
    dyn Fn(Request<RequestBody>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// Per-connection limits and the drain deadline.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Ferry checks the header size itself (to answer with its own 431); hyper's buffer is set above it.
    pub max_header_size: usize,
    /// The first request's head must be complete this long after the connection started (after TLS), a later
    /// request's head this long after its first byte.
    pub header_read_timeout: Duration,
    /// An HTTP/1.1 connection between requests, and an HTTP/2 connection without open streams, are closed after
    /// this.
    pub keepalive_timeout: Duration,
    pub drain_timeout: Duration,
    /// Open connections of the listener at most (0: no cap); the newest beyond it is refused.
    pub max_connections: usize,
    /// Open connections per client address at most (0: no cap).
    pub max_connections_per_ip: usize,
    /// Serve each connection on one of these cores (a single-threaded runtime each), from accept to close;
    /// `None`: on the runtime of the accept loop.
    pub cores: Option<Arc<ferry_http::cores::Cores>>,
}

impl ServeOptions {
    /// The options of `[server.http]`, and the node's drain timeout. `max_connections = 0` becomes half the
    /// process's open-file limit (the other half stays for tunnels, upstream connections and the store).
    pub fn new(http: &ferry_config::HttpSettings, drain_timeout: Duration) -> Self {
        let max_connections = match http.max_connections {
            0 => crate::open_files_limit()
                .map(|n| usize::try_from(n / 2).unwrap_or(usize::MAX).max(64))
                .unwrap_or(0),
            n => n,
        };
        Self {
            max_header_size: http.max_header_size,
            header_read_timeout: http.header_read_timeout,
            keepalive_timeout: http.keepalive_timeout,
            drain_timeout,
            max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
            cores: None,
        }
    }

    /// Serve connections on `cores`.
    pub fn on_cores(mut self, cores: Option<Arc<ferry_http::cores::Cores>>) -> Self {
        self.cores = cores;
        self
    }
}

/// How long an HTTP/2 connection closed for idleness may take to finish its graceful close.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Log lines a flood would repeat, at most one per interval each.
static ACCEPT_ERRORS: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(5));
static REFUSED: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(5));

/// Connections being served by hyper (upgraded ones no longer count): what draining waits for.
#[derive(Default)]
pub(crate) struct Serving {
    count: AtomicUsize,
    done: tokio::sync::Notify,
}

pub(crate) struct ServingGuard(Arc<Serving>);

impl Serving {
    pub(crate) fn enter(self: &Arc<Self>) -> ServingGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ServingGuard(self.clone())
    }

    pub(crate) async fn all_done(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// Requests in flight on an HTTP/2 connection, and since when it has had none: when it has been idle for
/// `keepalive_timeout` it is closed.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

struct ActivityGuard(Arc<Activity>);

impl Activity {
    fn start(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        ActivityGuard(self.clone())
    }

    /// When the connection may be closed for idleness, if it is idle now.
    fn idle_deadline(&self, keepalive: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = match self.idle_since.lock() {
            Ok(s) => *s,
            Err(poisoned) => *poisoned.into_inner(),
        };
        Some(since + keepalive)
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut s) = self.0.idle_since.lock() {
                *s = Instant::now();
            }
        }
    }
}

/// Serve `listener` until `shutdown` resolves, then stop accepting and wait (up to `drain_timeout`) for the open
/// connections to finish their in-flight requests.
pub async fn serve(
    listener: Listener,
    handler: Handler,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer runs from the moment a connection is idle until the next head is complete: the wait
        // between requests. The head itself is bounded by `header_read_timeout` (h1::H1Guard).
        .header_read_timeout(options.keepalive_timeout)
        // Above Ferry's own limit, so that Ferry answers 431 in its own format; far above it, hyper refuses.
        .max_buf_size(options.max_header_size * 2 + 32 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size((options.max_header_size * 2) as u32)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        // large DATA frames from peers that send them (another node's link, docs/cluster.md): fewer frames and
        // wake-ups per bulk upload; clients that send HTTP/2's default 16 KiB frames are unaffected
        .max_frame_size(256 * 1024);
    let http1 = Arc::new(builder.clone().http1_only());
    let http2 = Arc::new(builder.http2_only());
    let limits = ConnectionLimits::new(options.max_connections, options.max_connections_per_ip);
    let default_caps = ConnectionCaps {
        max_connections: options.max_connections,
        max_connections_per_ip: options.max_connections_per_ip,
    };
    let serving = Arc::new(Serving::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let options = Arc::new(options);
    let mut listener = listener;
    let alt_svc = listener.alt_svc();
    if let Some(udp) = listener.udp.take() {
        tokio::spawn(crate::http3::serve(
            udp,
            crate::http3::Shared {
                handler: handler.clone(),
                options: options.clone(),
                limits: limits.clone(),
                default_caps,
                serving: serving.clone(),
                stop: stop_rx.clone(),
                mode: listener.mode_cell(),
                local_addr: listener.local_addr(),
            },
        ));
    }
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let (stream, remote_addr) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(pair) => {
                    backoff = Duration::ZERO;
                    pair
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off (10 ms, doubling to 1 s) instead of
                    // spinning, and say so at most every 5 s.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    if let Some(left_out) = ACCEPT_ERRORS.admit() {
                        tracing::warn!(left_out, open = limits.open(), "accept failed: {e}");
                    }
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // what this connection gets (a reload may change it for the next one)
        let mode = listener.mode();
        limits.set_caps(mode.caps.unwrap_or(default_caps));
        // behind a PROXY protocol balancer the peer is the balancer: the client's own cap waits for its header
        let admitted = match mode.proxy_protocol {
            true => limits.admit_unattributed(),
            false => limits.admit(remote_addr.ip()),
        };
        let permit = match admitted {
            Ok(p) => p,
            Err(refusal) => {
                let reply = refusal.reply(remote_addr.ip());
                if let Some(left_out) = REFUSED.admit() {
                    tracing::warn!(%remote_addr, left_out, "connection refused: {}", reply.message);
                }
                if mode.tls.is_none() {
                    limits.refuse(stream, &reply);
                }
                continue;
            }
        };
        let accepted_at = Instant::now();
        let _ = stream.set_nodelay(true);
        // the address the client reached: what a PROXY protocol header to an upstream names as the destination;
        // the listener's own unless it is bound to every address (then asked of the socket: one system call)
        let bound = listener.local_addr();
        let local_addr = match bound.ip().is_unspecified() {
            true => stream.local_addr().unwrap_or(bound),
            false => bound,
        };
        let conn = Conn {
            info: ClientInfo {
                remote_addr,
                local_addr,
                tls: mode.tls.is_some(),
                listener: bound,
            },
            handler: mode.handler.as_ref().unwrap_or(&handler).clone(),
            options: options.clone(),
            http1: http1.clone(),
            http2: http2.clone(),
            stop: stop_rx.clone(),
            first_deadline: accepted_at + options.header_read_timeout,
            serving: serving.enter(),
            alt_svc: alt_svc.clone(),
        };
        let sites = mode.tls.as_ref().map(|t| t.sites());
        let proxy_protocol = mode.proxy_protocol;
        let limits = limits.clone();
        let connection = move |stream: tokio::net::TcpStream| async move {
            let (mut conn, mut stream, mut permit) = (conn, stream, permit);
            if proxy_protocol {
                let client = match crate::proxy_protocol::read_header(
                    &mut stream,
                    conn.first_deadline,
                )
                .await
                {
                    Ok(client) => client.unwrap_or(remote_addr),
                    Err(e) => {
                        tracing::debug!(%remote_addr, "connection closed: {e}");
                        return;
                    }
                };
                if let Err(refusal) = permit.attribute(client.ip()) {
                    let reply = refusal.reply(client.ip());
                    if let Some(left_out) = REFUSED.admit() {
                        tracing::warn!(remote_addr = %client, left_out, "connection refused: {}", reply.message);
                    }
                    drop(permit);
                    if sites.is_none() {
                        limits.refuse(stream, &reply);
                    }
                    return;
                }
                conn.info.remote_addr = client;
            }
            let remote_addr = conn.info.remote_addr;
            match sites {
                None => conn.run(stream, None, permit).await,
                Some(sites) => {
                    let handshake = async {
                        if sends_plain_http(&stream).await {
                            return Err(PlainHttp);
                        }
                        Ok(crate::tls::accept(&sites, stream).await)
                    };
                    let (tls_stream, site) =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Err(PlainHttp)) => return,
                            Ok(Ok(Ok(s))) => s,
                            Ok(Ok(Err(e))) => {
                                tracing::debug!(%remote_addr, "tls handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote_addr, "tls handshake timed out");
                                return;
                            }
                        };
                    let tls = TlsConn {
                        info: Arc::new(site.connection_info(tls_stream.get_ref().1)),
                        site,
                        sites,
                    };
                    conn.run(tls_stream, Some(tls), permit).await
                }
            }
        };
        match &options.cores {
            // the socket leaves this runtime's reactor and joins the core's, where the connection lives
            Some(cores) => match stream.into_std() {
                Ok(stream) => cores.spawn(move || async move {
                    match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => connection(stream).await,
                        Err(e) => tracing::debug!(%remote_addr, "connection closed: {e}"),
                    }
                }),
                Err(e) => tracing::debug!(%remote_addr, "connection closed: {e}"),
            },
            None => {
                tokio::spawn(connection(stream));
            }
        }
    }
    drop(listener);
    tracing::info!("listener closed, draining open connections");
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = serving.all_done() => tracing::info!("all client connections drained"),
        _ = tokio::time::sleep(options.drain_timeout) => {
            tracing::warn!(timeout = ?options.drain_timeout, "drain deadline reached, cutting remaining connections");
        }
    }
}

/// A connection on a TLS listener that began with plain HTTP (answered by [`sends_plain_http`]).
struct PlainHttp;

/// The answer to plain HTTP on a TLS listener, like nginx's "plain HTTP request was sent to HTTPS port": without
/// it the client reads the TLS alert as an HTTP/0.9 response, or sees the connection cut.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
ferry-error: bad_request\r\n\
connection: close\r\n\
content-length: 68\r\n\
\r\n\
bad_request: plain HTTP was sent to a TLS port; use an https:// URL\n";

/// Whether a client on a TLS listener speaks plain HTTP: its first byte is an upper-case letter (a method)
/// where TLS begins with a handshake record (`0x16`). Such a client is answered `400` in plain HTTP, logged (at
/// most every 5 s), and closed; `true` then. Costs one `peek` per TLS connection.
async fn sends_plain_http(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0].is_ascii_uppercase() => {}
        _ => return false,
    }
    let remote_addr = stream.peer_addr().ok();
    // Read what the client sent (the request head, typically in one segment) so that closing does not reset
    // the connection before the answer is read; then answer and close our side.
    let mut head = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        let _ = stream.readable().await;
        let _ = stream.try_read(&mut head);
    })
    .await;
    let _ = write_all(stream, PLAIN_HTTP_ANSWER).await;
    if let Some(left_out) = REFUSED.admit() {
        tracing::info!(
            remote_addr = remote_addr.map(|a| a.to_string()).unwrap_or_default(),
            left_out,
            "plain HTTP on a TLS listener: answered 400"
        );
    }
    true
}

/// Write `bytes` to a stream we hold by reference only (the TLS handshake would own it).
async fn write_all(stream: &tokio::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One accepted connection and what serving it needs.
struct Conn {
    info: ClientInfo,
    handler: Handler,
    options: Arc<ServeOptions>,
    http1: Arc<auto::Builder<TokioExecutor>>,
    http2: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
    first_deadline: Instant,
    serving: ServingGuard,
    alt_svc: Option<http::HeaderValue>,
}

/// A connection's stream with its place under the caps: the permit lives as long as the stream, upgraded
/// connections (WebSockets, tunnels) included.
struct Held<IO> {
    io: IO,
    _permit: Permit,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Held<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Held<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Conn {
    /// The `Alt-Svc` header of a TLS connection on a listener that serves HTTP/3.
    fn alt_svc(&self, tls: &Option<TlsConn>) -> Option<http::HeaderValue> {
        tls.as_ref().and(self.alt_svc.clone())
    }

    async fn run<IO>(self, mut stream: IO, tls: Option<TlsConn>, permit: Permit)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let remote_addr = self.info.remote_addr;
        let (prefix, protocol) = match h1::sniff(&mut stream, self.first_deadline).await {
            Ok(found) => found,
            Err(SniffError::TimedOut) => {
                tracing::debug!(%remote_addr, timeout = ?self.options.header_read_timeout, "no request within the header read timeout: closed");
                return;
            }
            Err(SniffError::Closed) => return,
            Err(SniffError::Io(e)) => {
                tracing::debug!(%remote_addr, "connection failed before its first request: {e}");
                return;
            }
        };
        let io = Held {
            io: Prefixed::new(prefix, stream),
            _permit: permit,
        };
        match protocol {
            Protocol::Http1 => {
                let io = H1Guard::new(
                    io,
                    self.options.header_read_timeout,
                    self.first_deadline,
                    remote_addr,
                );
                let alt_svc = self.alt_svc(&tls);
                let service = service(self.handler.clone(), self.info, tls, None, alt_svc);
                let conn = self
                    .http1
                    .serve_connection_with_upgrades(TokioIo::new(io), service);
                drive(conn, self.stop.clone(), None, remote_addr).await;
            }
            Protocol::Http2 => {
                let activity = Arc::new(Activity {
                    in_flight: AtomicUsize::new(0),
                    idle_since: Mutex::new(Instant::now()),
                });
                let alt_svc = self.alt_svc(&tls);
                let service = service(
                    self.handler.clone(),
                    self.info,
                    tls,
                    Some(activity.clone()),
                    alt_svc,
                );
                let conn = self
                    .http2
                    .serve_connection_with_upgrades(TokioIo::new(io), service);
                let idle = (activity, self.options.keepalive_timeout);
                drive(conn, self.stop.clone(), Some(idle), remote_addr).await;
            }
        }
        drop(self.serving);
    }
}

/// A TLS connection's facts, and the site its handshake was made with.
#[derive(Clone)]
pub(crate) struct TlsConn {
    pub(crate) info: Arc<ferry_http::TlsInfo>,
    pub(crate) site: Arc<crate::tls::Site>,
    pub(crate) sites: Arc<crate::tls::Sites>,
}

/// What every request gets before its handler, whatever the protocol: the connection's facts (the client's
/// address, and over TLS the protocol and the client's verified certificate chain). Over TLS, a request for a host
/// whose client-certificate settings differ from those of the handshake's name is answered here, 421
/// `misdirected_request`: `Some` then.
pub(crate) fn prepare_request(
    req: &mut Request<RequestBody>,
    info: ClientInfo,
    tls: Option<&TlsConn>,
) -> Option<Response<Body>> {
    req.extensions_mut().insert(info);
    let tls = tls?;
    let mut misdirected = None;
    let host = || {
        req.uri().host().or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
    };
    if !tls.sites.host_fits(&tls.site, host) {
        let host = host();
        tracing::info!(
            remote_addr = %info.remote_addr,
            host = host.unwrap_or(""),
            "request for a host with other client-certificate settings than the TLS handshake's name: 421"
        );
        let reply = ferry_proto::ErrorReply::new(
            ferry_proto::ErrorCode::MisdirectedRequest,
            "this host needs a TLS connection of its own (send its name in the handshake)",
        );
        misdirected = Some(ferry_http::error_response(
            &reply,
            &ferry_http::request_id(req),
        ));
    }
    req.extensions_mut().insert(tls.info.clone());
    misdirected
}

/// The service of one connection: every request is prepared ([`prepare_request`]), on HTTP/2 counts as activity
/// until its response body ends, and on a listener that serves HTTP/3 is answered with its `Alt-Svc` header.
fn service(
    handler: Handler,
    info: ClientInfo,
    tls: Option<TlsConn>,
    activity: Option<Arc<Activity>>,
    alt_svc: Option<http::HeaderValue>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(RequestBody::Hyper);
        let misdirected = prepare_request(&mut req, info, tls.as_ref());
        let active = activity.as_ref().map(|a| a.start());
        let fut: Result<_, Response<Body>> = match misdirected {
            Some(resp) => Err(resp),
            None => Ok(handler(req)),
        };
        let alt_svc = alt_svc.clone();
        async move {
            let mut resp = match fut {
                Ok(fut) => fut.await,
                Err(resp) => resp,
            };
            if let Some(alt_svc) = alt_svc {
                resp.headers_mut()
                    .entry(http::header::ALT_SVC)
                    .or_insert(alt_svc);
            }
            Ok::<_, Infallible>(match active {
                Some(guard) => resp.map(|b| ferry_http::Guarded::new(b, guard).boxed_unsync()),
                None => resp,
            })
        }
    })
}

/// Run a connection until it ends: shut it down gracefully when the node drains (HTTP/1.1 closes when idle,
/// HTTP/2 sends GOAWAY) or, on HTTP/2, when it has been idle for the keep-alive timeout.
async fn drive<C, E>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    idle: Option<(Arc<Activity>, Duration)>,
    remote_addr: SocketAddr,
) where
    C: Future<Output = Result<(), E>> + GracefulShutdown,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut shutting_down = *stop.borrow();
    if shutting_down {
        conn.as_mut().shutdown();
    }
    let far = Duration::from_secs(86_400 * 365);
    let check = tokio::time::sleep(far);
    tokio::pin!(check);
    let rearm = |check: Pin<&mut tokio::time::Sleep>| {
        let at = match &idle {
            Some((activity, keepalive)) => activity
                .idle_deadline(*keepalive)
                .unwrap_or_else(|| Instant::now() + *keepalive),
            None => Instant::now() + far,
        };
        check.reset(at);
    };
    rearm(check.as_mut());
    // once closed for idleness, a peer that does not take part in HTTP/2's graceful close (its PING unanswered)
    // is dropped after a moment
    let grace = tokio::time::sleep(far);
    tokio::pin!(grace);
    let mut idle_closing = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = grace.as_mut(), if idle_closing => {
                tracing::debug!(%remote_addr, "idle connection dropped");
                return;
            }
            changed = stop.changed(), if !shutting_down => {
                if changed.is_err() || *stop.borrow() {
                    shutting_down = true;
                    conn.as_mut().shutdown();
                }
            }
            () = check.as_mut(), if !shutting_down => {
                let expired = idle
                    .as_ref()
                    .and_then(|(a, k)| a.idle_deadline(*k))
                    .is_some_and(|at| at <= Instant::now());
                if expired {
                    tracing::debug!(%remote_addr, "idle connection closed");
                    shutting_down = true;
                    idle_closing = true;
                    grace.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                    conn.as_mut().shutdown();
                } else {
                    rearm(check.as_mut());
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote_addr, "connection ended with an error: {e}");
    }
}

/// hyper-util's connections, as [`drive`] shuts them down.
trait GracefulShutdown {
    fn shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulShutdown for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: auto::HttpServerConnExec<S::Future, B>,
{
    fn shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
