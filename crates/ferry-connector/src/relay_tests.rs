//! Tests of the per-stream service against real local targets on 127.0.0.1.

use super::*;
use ferry_config::TargetConfig;
use ferry_proto::headers::FERRY_ERROR;
use http::header::CONTENT_TYPE;
use hyper::body::Incoming;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn full(data: impl Into<Bytes>) -> TunnelBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn target_config(name: &str, url: &str, host: HostMode) -> TargetConfig {
    TargetConfig {
        name: name.parse().expect("name"),
        url: url.to_owned(),
        host,
    }
}

fn client_tls() -> rustls::ClientConfig {
    ferry_tunnel::client::client_config(rustls::RootCertStore::empty()).expect("tls")
}

fn relay_with(targets: Vec<TargetConfig>, timeouts: Timeouts) -> Relay {
    let targets = targets
        .iter()
        .map(|t| Target::parse(t).expect("target"))
        .collect();
    Relay::new("demo".to_owned(), targets, client_tls(), timeouts)
}

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    response: Duration::from_secs(10),
};

fn relay(url: &str, host: HostMode) -> Relay {
    relay_with(vec![target_config("app", url, host)], TIMEOUTS)
}

/// What a target saw of a request.
#[derive(Debug, Clone, Default)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// A hyper HTTP/1.1 target that records each request and answers with `respond`.
async fn start_target<F, Fut>(respond: F) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>)
where
    F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TunnelBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let respond = respond.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let respond = respond.clone();
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let collected = body.collect().await.expect("request body");
                        let trailers = collected.trailers().cloned();
                        let seen = Seen {
                            method: parts.method.to_string(),
                            path_and_query: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body: collected.to_bytes(),
                            trailers,
                        };
                        log.lock().expect("lock").push(seen.clone());
                        Ok::<_, Infallible>(respond(seen).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn echo_target() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    start_target(|seen: Seen| async move {
        let mut res = Response::new(full(seen.body.clone()));
        res.headers_mut()
            .insert("x-kept", HeaderValue::from_static("1"));
        res.headers_mut()
            .insert("ferry-error", HeaderValue::from_static("spoofed"));
        res.headers_mut()
            .insert("ferry-whatever", HeaderValue::from_static("x"));
        res.headers_mut()
            .insert("connection", HeaderValue::from_static("x-hop"));
        res.headers_mut()
            .insert("x-hop", HeaderValue::from_static("1"));
        res
    })
    .await
}

fn stream_request(target: &str, path: &str, body: TunnelBody) -> Request<TunnelBody> {
    Request::post(format!("http://client.example{path}"))
        .header(TARGET, target)
        .header(REQUEST_ID, "rid-1")
        .body(body)
        .expect("request")
}

async fn text(res: Response<TunnelBody>) -> String {
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn builds_uris_without_reencoding() {
    let t = Target::parse(&target_config(
        "app",
        "http://10.0.0.1:8080/api",
        HostMode::Target,
    ))
    .expect("t");
    assert_eq!(
        t.uri("/x%2Fy/%20z?q=%41&b=c%2F").expect("uri").to_string(),
        "http://10.0.0.1:8080/api/x%2Fy/%20z?q=%41&b=c%2F"
    );
    assert_eq!(
        t.uri("/").expect("uri").to_string(),
        "http://10.0.0.1:8080/api/"
    );
    let t = Target::parse(&target_config(
        "app",
        "https://svc.internal/",
        HostMode::Target,
    ))
    .expect("t");
    assert_eq!(
        t.uri("/a?b").expect("uri").to_string(),
        "https://svc.internal/a?b"
    );
    let t = Target::parse(&target_config("app", "http://svc:81", HostMode::Target)).expect("t");
    assert_eq!(t.uri("/a").expect("uri").to_string(), "http://svc:81/a");
    assert_eq!(t.uri("*").expect("uri").to_string(), "http://svc:81/");
    for bad in ["ftp://x", "http://u:p@x/", "http://x/?q=1", "/relative"] {
        assert!(
            Target::parse(&target_config("app", bad, HostMode::Target)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn cleans_request_headers() {
    let mut h = HeaderMap::new();
    h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
    h.insert("x-hop", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(TE, HeaderValue::from_static("gzip, trailers"));
    h.insert(TRAILER, HeaderValue::from_static("x-checksum"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    h.insert("proxy-authorization", HeaderValue::from_static("x"));
    h.insert(TARGET, HeaderValue::from_static("app"));
    h.insert(REQUEST_ID, HeaderValue::from_static("r"));
    h.insert(HOST_MODE, HeaderValue::from_static("client"));
    h.insert("ferry-error", HeaderValue::from_static("x"));
    h.insert(HOST, HeaderValue::from_static("client.example"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    clean_request_headers(&mut h);
    let mut names: Vec<&str> = h.keys().map(http::HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["te", "trailer", "x-kept"]);
    assert_eq!(h[TE], "trailers");

    let mut h = HeaderMap::new();
    h.insert(TE, HeaderValue::from_static("gzip"));
    clean_request_headers(&mut h);
    assert!(h.is_empty());

    // an HTTP/2 client's cookie crumbs reach the HTTP/1.1 target as one field (RFC 9113 §8.2.3)
    let mut h = HeaderMap::new();
    h.append(http::header::COOKIE, HeaderValue::from_static("a=1"));
    h.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
    clean_request_headers(&mut h);
    let cookies: Vec<_> = h.get_all(http::header::COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
}

#[tokio::test]
async fn relays_path_headers_and_body() {
    let (addr, seen) = echo_target().await;
    let relay = relay(&format!("http://{addr}/base"), HostMode::Target);
    let mut req = stream_request("app", "/x%2Fy/a%20b?q=%41&r=%2F", full("hello"));
    req.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("x-hop"));
    req.headers_mut()
        .insert("x-hop", HeaderValue::from_static("1"));
    req.headers_mut()
        .insert("x-custom", HeaderValue::from_static("v"));
    req.headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
    let res = relay.handle(req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-kept"], "1");
    assert!(
        !res.headers().contains_key("ferry-error"),
        "target's ferry-* headers are dropped"
    );
    assert!(!res.headers().contains_key("ferry-whatever"));
    assert!(!res.headers().contains_key("x-hop"));
    assert!(!res.headers().contains_key(CONNECTION));
    assert_eq!(text(res).await, "hello");

    let seen = seen.lock().expect("lock")[0].clone();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, "/base/x%2Fy/a%20b?q=%41&r=%2F");
    assert_eq!(seen.headers[HOST], addr.to_string());
    assert_eq!(seen.headers[X_REQUEST_ID], "rid-1");
    assert_eq!(seen.headers["x-custom"], "v");
    assert_eq!(seen.headers["x-forwarded-for"], "1.2.3.4");
    assert!(!seen.headers.contains_key("x-hop"));
    assert!(
        seen.headers
            .keys()
            .all(|n| !n.as_str().starts_with("ferry-")),
        "{:?}",
        seen.headers
    );
}

#[tokio::test]
async fn host_modes() {
    let (addr, seen) = echo_target().await;
    // host = client in the target's config: the stream's :authority.
    let relay_client = relay(&format!("http://{addr}"), HostMode::Client);
    relay_client
        .handle(stream_request("app", "/", full("")))
        .await;
    // host = target, but the node asks for the client's host.
    let relay_target = relay(&format!("http://{addr}"), HostMode::Target);
    let mut req = stream_request("app", "/", full(""));
    req.headers_mut()
        .insert(HOST_MODE, HeaderValue::from_static("client"));
    relay_target.handle(req).await;
    // No :authority: fall back to x-forwarded-host.
    let mut req = Request::post("/no-authority")
        .header(TARGET, "app")
        .header(X_FORWARDED_HOST, "fwd.example:8443, other")
        .body(full(""))
        .expect("request");
    req.headers_mut()
        .insert(HOST_MODE, HeaderValue::from_static("client"));
    relay_target.handle(req).await;
    // Default: the target's own authority.
    relay_target
        .handle(stream_request("app", "/", full("")))
        .await;

    let seen = seen.lock().expect("lock");
    let hosts: Vec<&str> = seen
        .iter()
        .map(|s| s.headers[HOST].to_str().expect("host"))
        .collect();
    let own = addr.to_string();
    assert_eq!(
        hosts,
        [
            "client.example",
            "client.example",
            "fwd.example:8443",
            own.as_str()
        ]
    );
    // Without ferry-request-id a request id is generated and sent.
    assert!(ferry_proto::is_valid_request_id(
        seen[2].headers[X_REQUEST_ID].to_str().expect("id")
    ));
}

#[tokio::test]
async fn unknown_target_is_404() {
    let relay = relay("http://127.0.0.1:9", HostMode::Target);
    let res = relay.handle(stream_request("other", "/", full(""))).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()[FERRY_ERROR], "unknown_target");
    assert_eq!(res.headers()[X_REQUEST_ID], "rid-1");
    assert_eq!(res.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(
        text(res).await,
        "unknown_target: this connector has no target \"other\" (request id rid-1)\n"
    );
}

#[tokio::test]
async fn refused_port_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let relay = relay(&format!("http://127.0.0.1:{port}"), HostMode::Target);
    let res = relay.handle(stream_request("app", "/", full(""))).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()[FERRY_ERROR], "target_unreachable");
    assert!(text(res).await.starts_with("target_unreachable: "));
}

#[tokio::test]
async fn dns_failure_is_502() {
    let relay = relay("http://ferry-test.invalid", HostMode::Target);
    let res = relay.handle(stream_request("app", "/", full(""))).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()[FERRY_ERROR], "target_unreachable");
}

#[tokio::test]
async fn tls_failure_is_502() {
    // An https target that speaks plain HTTP: the TLS handshake fails.
    let (addr, _) = echo_target().await;
    let relay = relay(&format!("https://{addr}"), HostMode::Target);
    let res = relay.handle(stream_request("app", "/", full(""))).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()[FERRY_ERROR], "target_unreachable");
}

#[tokio::test]
async fn silent_target_is_504_target_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp); // read nothing, answer nothing
        }
    });
    let relay = relay_with(
        vec![target_config(
            "app",
            &format!("http://{addr}"),
            HostMode::Target,
        )],
        Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_millis(200),
        },
    );
    let started = Instant::now();
    let res = relay.handle(stream_request("app", "/", full("x"))).await;
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()[FERRY_ERROR], "target_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connect_timeout_is_504_target_connect_timeout() {
    // A listener whose accept queue is full drops further SYNs, so connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let relay = relay_with(
        vec![target_config(
            "app",
            &format!("http://{addr}"),
            HostMode::Target,
        )],
        Timeouts {
            connect: Duration::from_millis(200),
            response: Duration::from_secs(10),
        },
    );
    let res = relay.handle(stream_request("app", "/", full(""))).await;
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()[FERRY_ERROR], "target_connect_timeout");
}

#[tokio::test]
async fn trailers_travel_both_ways() {
    let (addr, seen) = start_target(|_seen: Seen| async move {
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"data"))),
            Ok(Frame::trailers({
                let mut t = HeaderMap::new();
                t.insert("x-res-sum", HeaderValue::from_static("42"));
                t
            })),
        ];
        let mut res = Response::new(
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync(),
        );
        res.headers_mut()
            .insert(TRAILER, HeaderValue::from_static("x-res-sum"));
        res
    })
    .await;
    let relay = relay(&format!("http://{addr}"), HostMode::Target);
    let frames = vec![
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"up"))),
        Ok(Frame::trailers({
            let mut t = HeaderMap::new();
            t.insert("x-req-sum", HeaderValue::from_static("7"));
            t
        })),
    ];
    let mut req = stream_request(
        "app",
        "/",
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync(),
    );
    req.headers_mut()
        .insert(TE, HeaderValue::from_static("trailers"));
    req.headers_mut()
        .insert(TRAILER, HeaderValue::from_static("x-req-sum"));
    let res = relay.handle(req).await;
    assert_eq!(res.status(), 200);
    let collected = res.into_body().collect().await.expect("body");
    assert_eq!(
        collected.trailers().expect("response trailers")["x-res-sum"],
        "42"
    );
    assert_eq!(collected.to_bytes(), "data");
    let seen = seen.lock().expect("lock")[0].clone();
    assert_eq!(seen.body, "up");
    assert_eq!(seen.trailers.expect("request trailers")["x-req-sum"], "7");
}

/// A raw target: reads one request head (then tells `got`), writes `head` and `first` bytes, then reports when
/// the connection is closed by the connector (read returns 0 or fails).
async fn raw_target(
    head: &'static str,
    first: &'static str,
    close_after: bool,
) -> (SocketAddr, oneshot::Receiver<()>, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (got_tx, got_rx) = oneshot::channel();
    let (closed_tx, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = got_tx.send(());
        let _ = tcp.write_all(head.as_bytes()).await;
        let _ = tcp.write_all(first.as_bytes()).await;
        if close_after {
            return;
        }
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = closed_tx.send(());
    });
    (addr, got_rx, closed_rx)
}

/// Regression (2026-12-07): the header values of a target's answer were slices of the target connection's read
/// buffer, and the tunnel's HPACK table kept the ones it indexed, and with them whole read buffers of up to
/// 448 KiB, long after the answer (docs/performance.md, "Memory after load"). The values handed to the tunnel
/// now sit side by side in a block of their own: not between the names and line ends of the head they came in.
#[tokio::test]
async fn answer_header_values_do_not_keep_the_target_connections_read_buffer() {
    let (addr, _got, _closed) = raw_target(
        "HTTP/1.1 200 OK\r\nx-one: first\r\nx-two: second\r\ncontent-length: 2\r\n\r\n",
        "ok",
        false,
    )
    .await;
    let relay = relay(&format!("http://{addr}"), HostMode::Target);
    let res = relay.handle(stream_request("app", "/", full(""))).await;
    assert_eq!(res.status(), 200);
    let span = |name: &str| {
        let value = res.headers()[name].as_bytes();
        let start = value.as_ptr() as usize;
        start..start + value.len()
    };
    let (one, two) = (span("x-one"), span("x-two"));
    // in the head, "first\r\nx-two: second" (20 bytes); side by side, at most the three values (12 bytes)
    let reach = one.start.min(two.start)..one.end.max(two.end);
    assert!(
        reach.len() <= "first".len() + "second".len() + "2".len(),
        "x-one at {one:?} and x-two at {two:?} are {} bytes apart: the head's text is between them",
        reach.len()
    );
    assert_eq!(text(res).await, "ok");
}

#[tokio::test]
async fn target_failing_mid_body_is_an_error_not_an_end() {
    let (addr, _got, _closed) = raw_target(
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
        "only ten b",
        true,
    )
    .await;
    let relay = relay(&format!("http://{addr}"), HostMode::Target);
    let res = relay.handle(stream_request("app", "/", full(""))).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.into_body().collect().await.is_err(),
        "truncated body must end in an error"
    );
}

#[tokio::test]
async fn dropping_the_response_body_closes_the_target_connection() {
    let (addr, _got, closed) = raw_target(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        "5\r\nfirst\r\n",
        false,
    )
    .await;
    let relay = relay(&format!("http://{addr}"), HostMode::Target);
    let res = relay.handle(stream_request("app", "/", full(""))).await;
    let mut body = res.into_body();
    let frame = body.frame().await.expect("frame").expect("data");
    assert_eq!(frame.into_data().expect("data"), "first");
    drop(body); // the node reset the stream
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("target connection closed in time")
        .expect("closed");
}

#[tokio::test]
async fn cancelling_before_the_response_closes_the_target_connection() {
    let (addr, got, closed) = raw_target("", "", false).await;
    let relay = Arc::new(relay(&format!("http://{addr}"), HostMode::Target));
    let r = relay.clone();
    let task = tokio::spawn(async move { r.handle(stream_request("app", "/", full(""))).await });
    // Once the request reached the target, cancel the stream.
    tokio::time::timeout(Duration::from_secs(5), got)
        .await
        .expect("request reached the target in time")
        .expect("got");
    task.abort();
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("target connection closed in time")
        .expect("closed");
}

fn control_request(body: &str) -> Request<TunnelBody> {
    let mut req = Request::new(full(body.to_owned()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = Uri::from_static("http://ferry.invalid/_ferry/settings");
    req.headers_mut()
        .insert(CONTROL, HeaderValue::from_static(CONTROL_SETTINGS));
    req
}

#[tokio::test]
async fn a_settings_push_is_applied_and_never_relayed() {
    let relay = relay("http://127.0.0.1:9", HostMode::Target);
    let res = relay
        .handle(control_request(
            r#"{"target_response_timeout_ms":250,"reconnect_min_delay_ms":10}"#,
        ))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let pushed = relay.pushed_settings();
    assert_eq!(pushed.target_response_timeout_ms, Some(250));
    assert_eq!(pushed.reconnect_min_delay_ms, Some(10));
    assert_eq!(relay.response_timeout(), Duration::from_millis(250));

    // Garbage, unknown fields and oversized documents are refused; the settings stay.
    for bad in [
        "not json".to_owned(),
        r#"{"no_such_setting":1}"#.to_owned(),
        format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_CONTROL_BODY)),
    ] {
        let res = relay.handle(control_request(&bad)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(relay.response_timeout(), Duration::from_millis(250));
    }

    // A control header on a request for a target is not a control message (and is dropped as internal).
    let mut req = control_request("{}");
    req.headers_mut()
        .insert(TARGET, HeaderValue::from_static("nope"));
    let res = relay.handle(req).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
