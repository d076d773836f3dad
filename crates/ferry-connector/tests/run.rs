//! `run` end to end, in process: a fake Ferry node (token endpoint + tunnel endpoint, built on ferry-tunnel's
//! server end), the connector, and a hyper target, all on 127.0.0.1.

use bytes::Bytes;
use ferry_config::{ConnectorConfig, HostMode, Secret, TargetConfig};
use ferry_tunnel::server::{self, Handshake};
use ferry_tunnel::{TunnelBody, TunnelOptions};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};

const WAIT: Duration = Duration::from_secs(10);

fn full(data: impl Into<Bytes>) -> TunnelBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

type Tunnel = (SendRequest<TunnelBody>, Handshake, String);

struct Node {
    url: String,
    tunnels: mpsc::Receiver<Tunnel>,
    token_requests: Arc<AtomicUsize>,
}

/// A node that issues tokens, refuses the first `refuse` tunnel attempts with 401, then accepts tunnels.
async fn start_node(refuse: usize) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(4);
    let token_requests = Arc::new(AtomicUsize::new(0));
    let refusals = Arc::new(AtomicUsize::new(refuse));
    let tokens = token_requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            let tokens = tokens.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    let tokens = tokens.clone();
                    let refusals = refusals.clone();
                    async move { Ok::<_, Infallible>(node_handle(req, tx, tokens, refusals).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Node {
        url: format!("http://{addr}"),
        tunnels: rx,
        token_requests,
    }
}

fn plain(status: StatusCode, code: Option<&str>, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    if let Some(code) = code {
        res.headers_mut()
            .insert("ferry-error", code.parse().expect("value"));
    }
    res
}

async fn node_handle(
    mut req: Request<Incoming>,
    tx: mpsc::Sender<Tunnel>,
    tokens: Arc<AtomicUsize>,
    refusals: Arc<AtomicUsize>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/oauth/token" => {
            assert_eq!(req.method(), Method::POST);
            assert_eq!(
                req.headers()["content-type"],
                "application/x-www-form-urlencoded"
            );
            // The client authenticates with HTTP Basic (RFC 6749 §2.3.1): `demo:s3cret`.
            let basic_ok = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v == "Basic ZGVtbzpzM2NyZXQ=");
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).expect("form");
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            if get("grant_type") != Some("client_credentials") || !basic_ok {
                return plain(
                    StatusCode::UNAUTHORIZED,
                    None,
                    r#"{"error":"invalid_client"}"#.to_owned(),
                );
            }
            let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
            plain(
                StatusCode::OK,
                None,
                format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":600}}"#),
            )
        }
        "/_ferry/tunnel" => {
            let auth = req.headers()["authorization"]
                .to_str()
                .expect("ascii")
                .to_owned();
            assert!(auth.starts_with("Bearer tok-"), "{auth}");
            if refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return plain(
                    StatusCode::UNAUTHORIZED,
                    Some("unauthorized"),
                    "unauthorized: token expired (request id r1)\n".to_owned(),
                );
            }
            let hs = match server::parse_handshake(req.headers()) {
                Ok(hs) => hs,
                Err(reply) => {
                    return plain(
                        reply.code.status(),
                        Some(reply.code.as_str()),
                        reply.body("r"),
                    )
                }
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let io = on_upgrade.await.expect("upgrade");
                let (sender, conn) = server::open(io, &TunnelOptions::default())
                    .await
                    .expect("open");
                tokio::spawn(conn);
                let _ = tx.send((sender, hs, auth)).await;
            });
            let mut res = plain(StatusCode::SWITCHING_PROTOCOLS, None, String::new());
            *res.headers_mut() = server::switching_protocols_headers("node-a");
            res
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            Some("not_found"),
            "not_found\n".to_owned(),
        ),
    }
}

/// A target: `/slow` waits for `release`; an `Upgrade: websocket` request gets 101 and an echo; anything else is
/// echoed with its path in `x-path`.
async fn start_target(release: Arc<Notify>, arrived: Arc<Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let release = release.clone();
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    let release = release.clone();
                    let arrived = arrived.clone();
                    async move {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default();
                        if req
                            .headers()
                            .get("upgrade")
                            .is_some_and(|v| v == "websocket")
                        {
                            assert_eq!(req.method(), Method::GET);
                            let on_upgrade = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let mut io =
                                    TokioIo::new(on_upgrade.await.expect("target upgrade"));
                                let mut buf = [0u8; 256];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 {
                                        break;
                                    }
                                    let mut out = b"ws:".to_vec();
                                    out.extend_from_slice(&buf[..n]);
                                    if io.write_all(&out).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            let res = Response::builder()
                                .status(101)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .header("sec-websocket-accept", "acc")
                                .header("x-path", path)
                                .body(Full::new(Bytes::new()))
                                .expect("response");
                            return Ok::<_, Infallible>(res);
                        }
                        if path == "/base/slow" {
                            arrived.notify_one();
                            release.notified().await;
                            return Ok(Response::new(Full::new(Bytes::from_static(b"slow done"))));
                        }
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        Ok(Response::builder()
                            .header("x-path", path)
                            .body(Full::new(body))
                            .expect("response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

struct Harness {
    node: Node,
    release: Arc<Notify>,
    arrived: Arc<Notify>,
    shutdown: Option<oneshot::Sender<()>>,
    run: tokio::task::JoinHandle<Result<(), ferry_connector::ConnectorError>>,
}

/// One tunnel: the tests below follow one tunnel's life.
async fn start(refuse: usize) -> Harness {
    start_with(refuse, 1).await
}

async fn start_with(refuse: usize, tunnels: u32) -> Harness {
    let node = start_node(refuse).await;
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    let target = start_target(release.clone(), arrived.clone()).await;
    let config = ConnectorConfig {
        server: Some(node.url.clone()),
        tenant: Some("demo".parse().expect("tenant")),
        secret: Some(Secret::new("s3cret")),
        targets: vec![TargetConfig {
            name: "app".parse().expect("name"),
            url: format!("http://{target}/base"),
            host: HostMode::Target,
        }],
        reconnect_min_delay: Duration::from_millis(10),
        reconnect_max_delay: Duration::from_millis(50),
        drain_timeout: Duration::from_secs(5),
        tunnels,
        ..ConnectorConfig::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let run = tokio::spawn(ferry_connector::run(config, async move {
        let _ = rx.await;
    }));
    Harness {
        node,
        release,
        arrived,
        shutdown: Some(tx),
        run,
    }
}

/// Signal shutdown and wait for `run` to return `Ok`.
async fn shut_down(mut h: Harness) {
    h.shutdown
        .take()
        .expect("shutdown")
        .send(())
        .expect("running");
    let result = tokio::time::timeout(WAIT, h.run)
        .await
        .expect("run ended")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
}

async fn next_tunnel(node: &mut Node) -> Tunnel {
    tokio::time::timeout(WAIT, node.tunnels.recv())
        .await
        .expect("a tunnel in time")
        .expect("tunnel")
}

fn stream(method: Method, path: &str, body: TunnelBody) -> Request<TunnelBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://client.example{path}"))
        .header("ferry-target", "app")
        .header("ferry-request-id", "rid-9")
        .body(body)
        .expect("request")
}

async fn text(res: Response<Incoming>) -> String {
    String::from_utf8_lossy(&res.into_body().collect().await.expect("body").to_bytes()).into_owned()
}

#[tokio::test]
async fn relays_requests_and_upgrades_over_the_tunnel() {
    let mut h = start(0).await;
    let (mut sender, hs, _) = next_tunnel(&mut h.node).await;
    assert_eq!(hs.targets.len(), 1);
    assert_eq!(hs.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));

    let res = sender
        .send_request(stream(Method::POST, "/a%2Fb?q=%41", full("ping")))
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-path"], "/base/a%2Fb?q=%41");
    assert_eq!(text(res).await, "ping");

    // Unknown target: answered by the connector.
    let mut req = stream(Method::GET, "/", full(""));
    req.headers_mut()
        .insert("ferry-target", "nope".parse().expect("value"));
    let res = sender.send_request(req).await.expect("response");
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["ferry-error"], "unknown_target");

    // Extended CONNECT → HTTP/1.1 upgrade at the target → bytes both ways.
    let mut req = stream(
        Method::CONNECT,
        "/ws?room=1",
        Empty::new().map_err(|never| match never {}).boxed_unsync(),
    );
    req.headers_mut()
        .insert("sec-websocket-key", "k".parse().expect("value"));
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut res = sender.send_request(req).await.expect("connect");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["sec-websocket-accept"], "acc");
    assert_eq!(res.headers()["x-path"], "/base/ws?room=1");
    assert!(!res.headers().contains_key("connection"));
    assert!(!res.headers().contains_key("upgrade"));
    let mut io = TokioIo::new(hyper::upgrade::on(&mut res).await.expect("upgraded"));
    for msg in ["one", "two"] {
        io.write_all(msg.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 3 + msg.len()];
        io.read_exact(&mut buf).await.expect("read");
        assert_eq!(buf, format!("ws:{msg}").as_bytes());
    }
    // Closing the upgraded stream ends the bridge, so the drain below has nothing left to wait for.
    io.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    io.read_to_end(&mut rest)
        .await
        .expect("target side closed too");
    drop(io);

    let started = std::time::Instant::now();
    shut_down(h).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drain waited for a finished stream"
    );
}

/// Several tunnels, each on a thread of its own: they share one token, each relays, and all end on shutdown.
#[tokio::test]
async fn several_tunnels_share_one_token_and_each_relays() {
    let mut h = start_with(0, 3).await;
    let mut senders = Vec::new();
    for _ in 0..3 {
        let (sender, _, auth) = next_tunnel(&mut h.node).await;
        assert_eq!(auth, "Bearer tok-1");
        senders.push(sender);
    }
    assert_eq!(h.node.token_requests.load(Ordering::SeqCst), 1);
    for (i, sender) in senders.iter_mut().enumerate() {
        let res = sender
            .send_request(stream(Method::POST, &format!("/t{i}"), full("ping")))
            .await
            .expect("response");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-path"], format!("/base/t{i}"));
        assert_eq!(text(res).await, "ping");
    }
    shut_down(h).await;
}

#[tokio::test]
async fn retries_a_refused_tunnel_with_a_fresh_token() {
    let mut h = start(1).await;
    let (_sender, _, auth) = next_tunnel(&mut h.node).await;
    // The refused token was dropped and a new one fetched.
    assert_eq!(h.node.token_requests.load(Ordering::SeqCst), 2);
    assert_eq!(auth, "Bearer tok-2");
}

#[tokio::test]
async fn reconnects_after_losing_the_tunnel_and_reuses_a_valid_token() {
    let mut h = start(0).await;
    let (sender, hs1, _) = next_tunnel(&mut h.node).await;
    drop(sender); // the node closes the tunnel
    let (mut sender, hs2, auth) = next_tunnel(&mut h.node).await;
    assert_eq!(hs1.connector_id, hs2.connector_id, "one id per process");
    assert_eq!(
        auth, "Bearer tok-1",
        "a token valid for 10 more minutes is reused"
    );
    assert_eq!(h.node.token_requests.load(Ordering::SeqCst), 1);
    let res = sender
        .send_request(stream(Method::GET, "/again", full("")))
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn shutdown_drains_the_tunnel() {
    let mut h = start(0).await;
    let (mut sender, _, _) = next_tunnel(&mut h.node).await;
    let in_flight = tokio::spawn(sender.send_request(stream(Method::GET, "/slow", full(""))));
    tokio::time::timeout(WAIT, h.arrived.notified())
        .await
        .expect("slow request reached the target");

    h.shutdown
        .take()
        .expect("shutdown")
        .send(())
        .expect("running");
    // New requests are given back to the node once it has read the GOAWAY.
    tokio::time::timeout(WAIT, async {
        loop {
            match sender
                .try_send_request(stream(Method::GET, "/new", full("")))
                .await
            {
                Err(err) if err.message().is_some() => return,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .expect("new requests refused after goaway");
    assert!(!h.run.is_finished(), "waits for the request in flight");

    h.release.notify_one();
    let res = in_flight.await.expect("task").expect("in-flight response");
    assert_eq!(text(res).await, "slow done");
    let result = tokio::time::timeout(WAIT, h.run)
        .await
        .expect("run ended")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn shutdown_while_the_node_is_unreachable_returns_at_once() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = ConnectorConfig {
        server: Some(format!("http://127.0.0.1:{port}")),
        tenant: Some("demo".parse().expect("tenant")),
        secret: Some(Secret::new("s3cret")),
        targets: vec![TargetConfig::parse_spec("app=http://127.0.0.1:9").expect("target")],
        reconnect_min_delay: Duration::from_secs(60),
        reconnect_max_delay: Duration::from_secs(60),
        ..ConnectorConfig::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let run = tokio::spawn(ferry_connector::run(config, async move {
        let _ = rx.await;
    }));
    tx.send(()).expect("running");
    let result = tokio::time::timeout(WAIT, run)
        .await
        .expect("run ended")
        .expect("task");
    assert!(result.is_ok());
}
