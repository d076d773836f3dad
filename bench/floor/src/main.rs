//! A minimal reverse proxy on hyper: each client connection gets one upstream HTTP/1.1 connection, and requests
//! pass through unchanged (no routing, no header rules, no timeouts). It is what any hyper-based proxy spends at
//! least, so Ferry's gateway can be compared with it as well as with nginx.
//!
//!   ferry-bench-floor LISTEN_ADDR UPSTREAM_ADDR

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ferry-bench-floor LISTEN_ADDR UPSTREAM_ADDR";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(client, upstream).await {
                eprintln!("connection: {e}");
            }
        });
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr) -> Result<(), BoxError> {
    client.set_nodelay(true)?;
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
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
