//! In-process HTTP targets (the services a connector relays to), each a real HTTP/1.1 server on `127.0.0.1:0`.

use crate::pattern::{PatternStream, Sha256Hex};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What a target does with every request.
#[derive(Debug, Clone)]
pub enum TargetKind {
    /// Answers 200 with an [`EchoReply`] as JSON: method, raw path and query, version, all headers, body length
    /// and SHA-256, trailers. The body is read streaming, never held. Each request header
    /// `x-reply-header: NAME: VALUE` adds `NAME: VALUE` to the response (repeat it for several values).
    Echo,
    /// Answers 200 with `len` bytes of `PatternStream::new(seed, len)`, with `Content-Length` when
    /// `content_length`, chunked otherwise.
    Download {
        len: u64,
        seed: u64,
        content_length: bool,
    },
    /// Reads the whole body streaming; answers `{"len":N,"sha256":"…"}`.
    Sink,
    /// Answers 200 chunked with `chunks` chunks `chunk {i}\n`: the first at once, each next after `delay`.
    Slow { chunks: usize, delay: Duration },
    /// Answers `text/event-stream` with one `data: {event}` event per entry, the first at once, each next after
    /// `delay`.
    Sse {
        events: Vec<String>,
        delay: Duration,
    },
    /// Answers 200 chunked with these chunks, then these trailer fields (declared in a `Trailer` header).
    Trailers {
        chunks: Vec<String>,
        trailers: Vec<(String, String)>,
    },
    /// Upgrades `websocket` requests and echoes every text and binary message; answers the close handshake.
    WebSocketEcho,
    /// Accepts connections and reads requests but never answers; records when the peer closes the connection.
    Hang,
    /// Answers this status with the body `status N\n`.
    Status(u16),
}

/// The JSON an [`TargetKind::Echo`] target answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoReply {
    pub method: String,
    /// The request target exactly as received (path and query).
    pub uri: String,
    pub version: String,
    /// Every header field in order, as `(name, value)` (values lossily decoded as UTF-8).
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
    pub trailers: Vec<(String, String)>,
}

impl EchoReply {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// What a target saw: connections, requests, closes.
#[derive(Debug, Default)]
pub struct TargetStats {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    closed: AtomicUsize,
    closed_at: Mutex<Vec<Instant>>,
    request_at: Mutex<Vec<Instant>>,
    changed: Option<watch::Sender<u64>>,
}

impl TargetStats {
    fn bump(&self) {
        if let Some(c) = &self.changed {
            c.send_modify(|v| *v += 1);
        }
    }

    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        self.bump();
    }

    fn request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut v) = self.request_at.lock() {
            v.push(Instant::now());
        }
        self.bump();
    }

    fn closed(&self) {
        if let Ok(mut v) = self.closed_at.lock() {
            v.push(Instant::now());
        }
        self.closed.fetch_add(1, Ordering::SeqCst);
        self.bump();
    }
}

/// A running target; stops when dropped.
pub struct TargetServer {
    addr: SocketAddr,
    stats: Arc<TargetStats>,
    accept: tokio::task::JoinHandle<()>,
}

impl TargetServer {
    /// Bind `127.0.0.1:0` and serve `kind`.
    pub async fn start(kind: TargetKind) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(TargetStats {
            changed: Some(watch::channel(0).0),
            ..Default::default()
        });
        let kind = Arc::new(kind);
        let accept = {
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    while conns.try_join_next().is_some() {}
                    let _ = stream.set_nodelay(true);
                    stats.accepted();
                    let stats = stats.clone();
                    let kind = kind.clone();
                    conns.spawn(async move {
                        if matches!(*kind, TargetKind::Hang) {
                            hang(stream, &stats).await;
                        } else {
                            let svc_stats = stats.clone();
                            let svc = service_fn(move |req| {
                                let kind = kind.clone();
                                let stats = svc_stats.clone();
                                async move {
                                    stats.request();
                                    Ok::<_, Infallible>(handle(&kind, req).await)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                        stats.closed();
                    });
                }
            })
        };
        Ok(Self {
            addr,
            stats,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Requests received so far (for [`TargetKind::Hang`]: connections on which request bytes arrived).
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Connections that ended (closed by the peer, or done) so far.
    pub fn closed(&self) -> usize {
        self.stats.closed.load(Ordering::SeqCst)
    }

    /// When connections ended, in order.
    pub fn closed_times(&self) -> Vec<Instant> {
        self.stats
            .closed_at
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// When requests arrived, in order.
    pub fn request_times(&self) -> Vec<Instant> {
        self.stats
            .request_at
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    async fn wait(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let Some(changed) = &self.stats.changed else {
            anyhow::bail!("no change signal")
        };
        let mut rx = changed.subscribe();
        crate::within(timeout, what, async {
            loop {
                rx.borrow_and_update();
                if done() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await?;
        anyhow::ensure!(done(), "{what}: target stopped");
        Ok(())
    }

    /// Wait until at least `n` requests arrived.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait(timeout, &format!("{n} requests at the target"), || {
            self.requests() >= n
        })
        .await
    }

    /// Wait until at least `n` connections ended.
    pub async fn wait_closed(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait(
            timeout,
            &format!("{n} connections closed at the target"),
            || self.closed() >= n,
        )
        .await
    }
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn hang(mut stream: tokio::net::TcpStream, stats: &TargetStats) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = false;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !seen {
                    seen = true;
                    stats.request();
                }
            }
        }
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn response(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Read a body to its end, hashing it; returns the hash and the trailers.
async fn drain(mut body: Incoming) -> Result<(Sha256Hex, Vec<(String, String)>), hyper::Error> {
    let mut hash = Sha256Hex::new();
    let mut trailers = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => hash.update(&data),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.extend(pairs(&t));
                }
            }
        }
    }
    Ok((hash, trailers))
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn handle(kind: &TargetKind, mut req: Request<Incoming>) -> Response<Body> {
    match kind {
        TargetKind::Echo => {
            let method = req.method().to_string();
            let uri = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| req.uri().to_string());
            let version = format!("{:?}", req.version());
            let headers = pairs(req.headers());
            let reply_headers: Vec<(String, String)> = req
                .headers()
                .get_all("x-reply-header")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split_once(':'))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let (hash, trailers) = match drain(req.into_body()).await {
                Ok(r) => r,
                Err(e) => {
                    return response(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        full(format!("body: {e}\n")),
                    )
                }
            };
            let reply = EchoReply {
                method,
                uri,
                version,
                headers,
                body_len: hash.len(),
                body_sha256: hash.finish(),
                trailers,
            };
            let json = serde_json::to_vec(&reply).unwrap_or_default();
            let mut resp = response(StatusCode::OK, "application/json", full(json));
            for (n, v) in reply_headers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().append(n, v);
                }
            }
            resp
        }
        TargetKind::Sink => match drain(req.into_body()).await {
            Ok((hash, _)) => {
                let json = serde_json::json!({"len": hash.len(), "sha256": hash.finish()});
                response(StatusCode::OK, "application/json", full(json.to_string()))
            }
            Err(e) => response(
                StatusCode::BAD_REQUEST,
                "text/plain",
                full(format!("body: {e}\n")),
            ),
        },
        TargetKind::Download {
            len,
            seed,
            content_length,
        } => {
            let stream = PatternStream::new(*seed, *len)
                .into_stream::<BoxError>()
                .map(|r| r.map(Frame::data));
            let mut resp = response(
                StatusCode::OK,
                "application/octet-stream",
                StreamBody::new(stream).boxed_unsync(),
            );
            if *content_length {
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(*len));
            }
            resp
        }
        TargetKind::Slow { chunks, delay } => {
            let (chunks, delay) = (*chunks, *delay);
            let stream = futures_util::stream::unfold(0usize, move |i| async move {
                if i >= chunks {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                Some((
                    Ok::<_, BoxError>(Frame::data(Bytes::from(format!("chunk {i}\n")))),
                    i + 1,
                ))
            });
            response(
                StatusCode::OK,
                "text/plain",
                StreamBody::new(stream).boxed_unsync(),
            )
        }
        TargetKind::Sse { events, delay } => {
            let (events, delay) = (events.clone(), *delay);
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let events = events.clone();
                async move {
                    let event = events.get(i)?;
                    if i > 0 {
                        tokio::time::sleep(delay).await;
                    }
                    Some((
                        Ok::<_, BoxError>(Frame::data(Bytes::from(format!("data: {event}\n\n")))),
                        i + 1,
                    ))
                }
            });
            let mut resp = response(
                StatusCode::OK,
                "text/event-stream",
                StreamBody::new(stream).boxed_unsync(),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        TargetKind::Trailers { chunks, trailers } => {
            let mut map = http::HeaderMap::new();
            for (n, v) in trailers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    map.append(n, v);
                }
            }
            let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from(c.clone()))))
                .collect();
            frames.push(Ok(Frame::trailers(map)));
            let declared = trailers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = response(
                StatusCode::OK,
                "text/plain",
                StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync(),
            );
            if let Ok(v) = HeaderValue::from_str(&declared) {
                resp.headers_mut().insert(header::TRAILER, v);
            }
            resp
        }
        TargetKind::WebSocketEcho => {
            let is_ws = req
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
            let (true, Some(key)) = (is_ws, key) else {
                return response(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    full("websocket upgrade expected\n"),
                );
            };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(msg) = ws.next().await {
                    match msg {
                        Ok(m) if m.is_text() || m.is_binary() => {
                            if ws.send(m).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            let mut resp = response(
                StatusCode::SWITCHING_PROTOCOLS,
                "text/plain",
                full(Bytes::new()),
            );
            resp.headers_mut().remove(header::CONTENT_TYPE);
            let h = resp.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            resp
        }
        TargetKind::Hang => {
            // served by `hang` before hyper; never reached
            response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                full("unreachable\n"),
            )
        }
        TargetKind::Status(code) => {
            let _ = drain(req.into_body()).await;
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response(status, "text/plain", full(format!("status {code}\n")))
        }
    }
}
