//! The accept loop: one task per connection, HTTP/1.1 or HTTP/2 (by ALPN over TLS, by preface over plain TCP),
//! upgrades allowed, and a graceful shutdown that lets in-flight requests finish until a deadline.

use crate::Listener;
use ferry_http::{Body, ClientInfo};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What answers requests: called once per request.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Per-connection limits and the drain deadline.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Ferry checks the header size itself (to answer with its own 431); hyper's buffer is set above it.
    pub max_header_size: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        .header_read_timeout(options.header_read_timeout)
        // Above Ferry's own limit, so that Ferry answers 431 in its own format; far above it, hyper refuses.
        .max_buf_size(options.max_header_size * 2 + 32 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size((options.max_header_size * 2) as u32)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote_addr) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let info = ClientInfo {
            remote_addr,
            tls: listener.tls.is_some(),
        };
        let handler = handler.clone();
        // Every request carries the connection's facts: the client's address, and over TLS the protocol and
        // the client's verified certificate chain (for the gateway's client-certificate headers).
        let service_for = move |tls_info: Option<Arc<ferry_http::TlsInfo>>| {
            let handler = handler.clone();
            service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(info);
                if let Some(tls_info) = &tls_info {
                    req.extensions_mut().insert(tls_info.clone());
                }
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            })
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = listener.tls.clone();
        let client_check = listener.client_check();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service_for(None));
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let tls_stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote_addr, "tls handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote_addr, "tls handshake timed out");
                                return;
                            }
                        };
                    let tls_info = Arc::new(crate::listener::connection_info(
                        tls_stream.get_ref().1,
                        client_check.as_deref(),
                    ));
                    let conn = builder.serve_connection_with_upgrades(
                        TokioIo::new(tls_stream),
                        service_for(Some(tls_info)),
                    );
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote_addr, "connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("listener closed, draining open connections");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all client connections drained"),
        _ = tokio::time::sleep(options.drain_timeout) => {
            tracing::warn!(timeout = ?options.drain_timeout, "drain deadline reached, cutting remaining connections");
        }
    }
}
