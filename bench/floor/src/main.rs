//! The floor: the least a proxy or relay built on hyper and tokio spends per request, to set Ferry's figures
//! against (bench/callgrind.sh). Requests pass through unchanged: no routing, no header rules, no timeouts, no
//! request ids, no limits.
//!
//!   ferry-bench-floor proxy LISTEN UPSTREAM            HTTP/1.1 in, HTTP/1.1 out (the gateway's shape): each
//!                                                      client connection gets one upstream connection
//!   ferry-bench-floor relay-node LISTEN TUNNEL         HTTP/1.1 in, every request a stream of one HTTP/2
//!                                                      connection to TUNNEL (the relay node's shape)
//!   ferry-bench-floor relay-connector TUNNEL UPSTREAM  HTTP/2 in on TUNNEL, each stream sent on an idle
//!                                                      HTTP/1.1 connection to UPSTREAM (the connector's shape)
//!
//!   ferry-bench-floor relay-mux-node LISTEN TUNNEL     the same relay over a plain framing instead of HTTP/2,
//!   ferry-bench-floor relay-mux-connector TUNNEL UPSTREAM   a runtime per core or per tunnel (`mux.rs`)
//!   ferry-bench-floor relay-h2raw-node LISTEN TUNNEL   the mux pair with HTTP/2 (the h2 crate) carrying
//!   ferry-bench-floor relay-h2raw-connector TUNNEL UPSTREAM  HTTP/1.1 bytes in DATA frames (`h2raw.rs`)
//!   ferry-bench-floor relay-fmux-node LISTEN TUNNEL    the mux pair on Ferry's own protocol 2 connection
//!   ferry-bench-floor relay-fmux-connector TUNNEL UPSTREAM   (`ferry_tunnel::mux`; `ferrymux.rs`)
//!   ferry-bench-floor proxy-raw LISTEN UPSTREAM        the proxy with the upstream side by hand (`raw.rs`)
//!
//! The relay pair uses the tunnel's HTTP/2 settings (frame size, windows); in Ferry the connector dials the node
//! and the node is the HTTP/2 client over that connection, here the node dials: per request it is the same work.

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod common;
mod ferrymux;
mod h2raw;
mod mux;
mod raw;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Ferry's tunnel settings (ferry-tunnel: `MAX_FRAME_SIZE`, `TunnelOptions::default`).
const MAX_FRAME_SIZE: u32 = 256 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// The error of a relay service: a concrete type, because a boxed error there trips the compiler's lifetime
/// inference once the connection future is spawned.
#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

fn failed(e: impl std::fmt::Display) -> Failed {
    Failed(e.to_string())
}

const USAGE: &str = "usage: ferry-bench-floor \
    proxy|relay-node|relay-connector|relay-mux-node|relay-mux-connector|proxy-raw|relay-h2raw-node|relay-h2raw-connector|\
    relay-fmux-node|relay-fmux-connector LISTEN_ADDR NEXT_ADDR";

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    let listen: SocketAddr = args.next().ok_or(USAGE)?.parse()?;
    let next: SocketAddr = args.next().ok_or(USAGE)?.parse()?;
    match mode.as_str() {
        "relay-mux-node" => mux::node(listen, next),
        "relay-mux-connector" => mux::connector(listen, next),
        "proxy-raw" => raw::proxy(listen, next),
        "relay-h2raw-node" => h2raw::node(listen, next),
        "relay-fmux-node" => ferrymux::node(listen, next),
        "relay-fmux-connector" => ferrymux::connector(listen, next),
        "relay-h2raw-connector" => h2raw::connector(listen, next),
        // one worker thread per core, as Ferry's default; `TOKIO_WORKER_THREADS=1` for the one-thread comparisons
        // of docs/performance.md ("Worker threads")
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(hyper_floor(mode, listen, next)),
    }
}

async fn hyper_floor(mode: String, listen: SocketAddr, next: SocketAddr) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen).await?;
    let tunnel = match mode.as_str() {
        "proxy" | "relay-connector" => None,
        "relay-node" => {
            let tunnel = TcpStream::connect(next).await?;
            tunnel.set_nodelay(true)?;
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(MAX_FRAME_SIZE)
                .handshake(TokioIo::new(tunnel))
                .await?;
            tokio::spawn(conn);
            Some(sender)
        }
        _ => return Err(USAGE.into()),
    };
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let proxying = mode == "proxy";
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (tunnel, pool) = (tunnel.clone(), pool.clone());
        tokio::spawn(async move {
            let served = match tunnel {
                Some(tunnel) => relay_node(stream, tunnel).await,
                None if proxying => proxy(stream, next).await,
                None => relay_connector(stream, next, pool).await,
            };
            if let Err(e) = served {
                eprintln!("connection: {e}");
            }
        });
    }
}

async fn proxy(client: TcpStream, upstream: SocketAddr) -> Result<(), BoxError> {
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(up)).await?;
    tokio::spawn(conn);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = service_fn(move |req: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            sender.ready().await?;
            let resp: Response<Incoming> = sender.send_request(req).await?;
            Ok::<_, hyper::Error>(resp)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}

async fn relay_node(
    client: TcpStream,
    tunnel: http2::SendRequest<Incoming>,
) -> Result<(), BoxError> {
    let service = service_fn(move |req: Request<Incoming>| {
        let mut tunnel = tunnel.clone();
        async move {
            // An HTTP/2 request carries no connection-specific headers and an absolute URI (`:authority`).
            let (mut parts, body) = req.into_parts();
            let host = parts.headers.remove(hyper::header::HOST);
            let authority = host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("floor");
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("http://{authority}{path}")
                .parse()
                .map_err(failed)?;
            parts.version = hyper::Version::HTTP_2;
            let resp = tunnel
                .send_request(Request::from_parts(parts, body))
                .await
                .map_err(failed)?;
            Ok::<_, Failed>(resp)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}

/// Idle HTTP/1.1 connections to the upstream, last in first out. A connection goes back when its response head
/// has arrived; `ready()` then waits for that response's body to end before the next request (small bodies end
/// with their head, so the wait is nil in the benchmark).
type Pool = Arc<Mutex<Vec<http1::SendRequest<Incoming>>>>;

async fn relay_connector(
    tunnel: TcpStream,
    upstream: SocketAddr,
    pool: Pool,
) -> Result<(), BoxError> {
    let host = hyper::header::HeaderValue::from_str(&upstream.to_string())?;
    let service = service_fn(move |req: Request<Incoming>| {
        let pool = pool.clone();
        let host = host.clone();
        async move {
            let idle = pool.lock().map_err(failed)?.pop();
            let mut sender = match idle {
                Some(sender) => sender,
                None => {
                    let up = TcpStream::connect(upstream).await.map_err(failed)?;
                    up.set_nodelay(true).map_err(failed)?;
                    let (sender, conn) =
                        http1::handshake(TokioIo::new(up)).await.map_err(failed)?;
                    tokio::spawn(conn);
                    sender
                }
            };
            sender.ready().await.map_err(failed)?;
            let (mut parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = path.parse().map_err(failed)?;
            parts.version = hyper::Version::HTTP_11;
            parts.headers.insert(hyper::header::HOST, host);
            let resp = sender
                .send_request(Request::from_parts(parts, body))
                .await
                .map_err(failed)?;
            pool.lock().map_err(failed)?.push(sender);
            Ok::<_, Failed>(resp)
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(1000)
        .serve_connection(TokioIo::new(tunnel), service)
        .await?;
    Ok(())
}
