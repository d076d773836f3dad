//! The connector's own metrics (docs/metrics.md), served on the optional listener `connector.metrics_listen`
//! (`--metrics-listen`, `FERRY_CONNECTOR_METRICS_LISTEN`; off by default): requests forwarded by target and
//! status class, their duration, the tunnel's state and reconnects, and the process's CPU, memory and files.
//! Each target's handles are made once at start (targets are configured), so a request only bumps atomics.

use ferry_metrics::prometheus_client::metrics::counter::Counter;
use ferry_metrics::prometheus_client::metrics::family::Family;
use ferry_metrics::prometheus_client::metrics::gauge::Gauge;
use ferry_metrics::prometheus_client::registry::Registry;
use ferry_metrics::{ByClass, Histogram, Labels};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// One target's handles.
#[derive(Debug, Clone)]
pub(crate) struct TargetMetrics {
    pub classes: ByClass,
    pub duration: Histogram,
}

/// The connector's families.
#[derive(Default)]
pub(crate) struct ConnectorMetrics {
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    /// 1 while a tunnel is up.
    pub tunnel_up: Gauge,
    /// Tunnels established.
    pub connects: Counter,
    /// Times the connector waited to try again: a failed attempt or a tunnel that ended.
    pub reconnects: Counter,
}

impl ConnectorMetrics {
    /// The handles of the target named `name`.
    pub fn target(&self, name: &str) -> TargetMetrics {
        let labels: Labels = vec![("target", name.to_owned())];
        TargetMetrics {
            classes: ByClass::of(&self.requests, &labels),
            duration: self.durations.get_or_create_owned(&labels),
        }
    }

    /// A registry with the families and the process's metrics.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "ferry_connector_requests",
            "Requests forwarded to targets, by target and status class of the answer (the target's, or the \
             connector's error reply).",
            self.requests.clone(),
        );
        r.register(
            "ferry_connector_request_duration_seconds",
            "Time from a request's arrival on the tunnel to its response head, by target.",
            self.durations.clone(),
        );
        r.register(
            "ferry_connector_tunnel_up",
            "1 while the connector's tunnel to the node is up.",
            self.tunnel_up.clone(),
        );
        r.register(
            "ferry_connector_tunnel_connects",
            "Tunnels established to the node.",
            self.connects.clone(),
        );
        r.register(
            "ferry_connector_reconnects",
            "Waits before trying again: a failed attempt (token, dial, refused) or a tunnel that ended.",
            self.reconnects.clone(),
        );
        ferry_metrics::ProcessCollector::register(&mut r);
        r
    }
}

/// Serve `GET /metrics` from `registry` on `listener` until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(answer(&req, &registry)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Full<bytes::Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            ferry_metrics::CONTENT_TYPE,
            ferry_metrics::render(registry),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the connector serves only GET /metrics here\n".to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// Bind `addr` and serve the metrics on it in a task; the handle stops it when aborted.
pub(crate) async fn spawn(
    addr: SocketAddr,
    registry: Registry,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(listener, Arc::new(registry)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listener_serves_metrics() {
        let m = ConnectorMetrics::default();
        let t = m.target("app");
        t.classes.inc(200);
        t.duration.observe(std::time::Duration::from_millis(3));
        m.tunnel_up.set(1);
        let (addr, task) = spawn(([127, 0, 0, 1], 0).into(), m.registry())
            .await
            .expect("bind");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        task.abort();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains("ferry_connector_requests_total{target=\"app\",class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("ferry_connector_tunnel_up 1"), "{text}");
        assert!(
            text.contains("ferry_connector_request_duration_seconds_count{target=\"app\"} 1"),
            "{text}"
        );
    }
}
