//! What the floors of lighter designs share (`mux.rs`, `h2raw.rs`, `ferrymux.rs`, `raw.rs`): a runtime per core or
//! per tunnel, serving clients with hyper's HTTP/1.1 server, a request head written as text, an answer head read
//! with `httparse`, and idle origin connections.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs `core` on a thread of its own with a single-threaded runtime, once per core, until they all end.
pub fn per_core<F, Fut>(core: F) -> Result<(), BoxError>
where
    F: Fn() -> Fut + Send + Copy + 'static,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let handles: Vec<_> = (0..threads())
        .map(|_| {
            std::thread::spawn(move || -> Result<(), String> {
                runtime()
                    .map_err(|e| e.to_string())?
                    .block_on(core())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a core's thread panicked")??;
    }
    Ok(())
}

/// Accepts tunnel connections on `listen`, each served by `serve` on a thread of its own with a single-threaded
/// runtime.
pub fn per_tunnel<F, Fut>(listen: SocketAddr, serve: F) -> Result<(), BoxError>
where
    F: Fn(TcpStream) -> Fut + Send + Copy + 'static,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let listener = std::net::TcpListener::bind(listen)?;
    for conn in listener.incoming() {
        let conn = conn?;
        std::thread::spawn(move || {
            let served = runtime().map_err(BoxError::from).and_then(|rt| {
                rt.block_on(async move {
                    conn.set_nonblocking(true)?;
                    let conn = TcpStream::from_std(conn)?;
                    conn.set_nodelay(true)?;
                    serve(conn).await
                })
            });
            if let Err(e) = served {
                eprintln!("connection: tunnel: {e}");
            }
        });
    }
    Ok(())
}

/// Serves every client of `listener` with hyper's HTTP/1.1 server and the service `make` gives.
pub async fn serve_clients<M, S, B>(listener: TcpListener, make: M) -> Result<(), BoxError>
where
    M: Fn() -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    loop {
        let (client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        let service = make();
        tokio::spawn(async move {
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .await
            {
                eprintln!("connection: {e}");
            }
        });
    }
}

/// A response of `code` with an empty body of type `B`.
pub fn status<B: Default>(code: StatusCode) -> Response<B> {
    let mut r = Response::new(B::default());
    *r.status_mut() = code;
    r
}

/// A request's head as HTTP/1.1 text, as the node passes it on.
pub fn request_head(parts: &hyper::http::request::Parts) -> Bytes {
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(parts.method.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    head.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // hyper answers `Expect: 100-continue` to the client itself; the hop-by-hop headers are the client
        // connection's (a `Connection: close` would end the pooled origin connection after its answer)
        if name == hyper::header::EXPECT
            || name == hyper::header::CONNECTION
            || name.as_str() == "keep-alive"
        {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    head.freeze()
}

/// A response with the status and headers of an answer's head (the header values are slices of `head`).
pub fn response_from_head<B>(head: &Bytes, body: B) -> Result<Response<B>, BoxError> {
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut answer = httparse::Response::new(&mut parsed);
    if !matches!(answer.parse(head), Ok(httparse::Status::Complete(_))) {
        return Err("a malformed answer head".into());
    }
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(answer.code.unwrap_or(502))?;
    let headers = response.headers_mut();
    for h in answer.headers.iter() {
        let value = head.slice_ref(h.value);
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes())?,
            HeaderValue::from_maybe_shared(value)?,
        );
    }
    Ok(response)
}

/// A listener of its own for one core's runtime, on an address the other cores share (`SO_REUSEPORT`).
pub fn reuseport_listener(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseport(true)?;
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(1024)
}

pub fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// An idle connection to the origin with what it has read beyond the last answer (nothing, for a well-behaved
/// origin).
pub struct OriginConn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// The origin said `Connection: close` on its last answer: not to be reused.
    pub closing: bool,
}

impl OriginConn {
    pub async fn connect(origin: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(origin).await?;
        stream.set_nodelay(true)?;
        Ok(OriginConn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            closing: false,
        })
    }

    /// Writes a request head on an idle connection, or on a new one when there is none or the idle one fails the
    /// write (the origin closed it meanwhile; nothing of the request has reached the origin then).
    pub async fn send_head(
        idle: Option<Self>,
        origin: SocketAddr,
        head: &[u8],
    ) -> std::io::Result<Self> {
        if let Some(mut conn) = idle {
            if conn.stream.write_all(head).await.is_ok() {
                return Ok(conn);
            }
        }
        let mut conn = Self::connect(origin).await?;
        conn.stream.write_all(head).await?;
        Ok(conn)
    }
}

pub type Pool = Arc<Mutex<Vec<OriginConn>>>;

/// Reads an origin's answer head into `conn.buf` (skipping interim answers): its length there and the length of
/// the body after it (`None`: neither `Content-Length` nor a status without a body, not handled by these floors).
pub async fn read_answer_head(conn: &mut OriginConn) -> Result<(usize, Option<usize>), BoxError> {
    loop {
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut parsed);
        if let httparse::Status::Complete(n) = answer.parse(&conn.buf)? {
            if matches!(answer.code, Some(100..=199)) {
                conn.buf.advance(n); // an interim answer: not relayed by these floors
                continue;
            }
            let length = answer
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                });
            let no_body = matches!(answer.code, Some(204 | 304));
            conn.closing = answer.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
            });
            return Ok((n, if no_body { Some(0) } else { length }));
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(8 * 1024);
        }
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            return Err("the origin closed before its answer".into());
        }
    }
}
