//! End to end, in process: a node (hyper HTTP/1.1 server accepting the upgrade) and a connector (dial + serve)
//! on 127.0.0.1, with a simple echo service behind the tunnel.

use bytes::Bytes;
use ferry_proto::TargetName;
use ferry_tunnel::client::{self, DialError, DialOptions};
use ferry_tunnel::server;
use ferry_tunnel::{BoxError, Transport, TunnelBody, TunnelIo, TunnelOptions};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};

fn body(data: impl Into<Bytes>) -> TunnelBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty() -> TunnelBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A node that accepts tunnels and hands each tunnel's sender to the test.
async fn start_node() -> (String, mpsc::Receiver<SendRequest<TunnelBody>>) {
    start_node_with(TunnelOptions::default()).await
}

async fn start_node_with(opts: TunnelOptions) -> (String, mpsc::Receiver<SendRequest<TunnelBody>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let opts = opts.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    let tx = tx.clone();
                    let opts = opts.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/_ferry/tunnel");
                        assert_eq!(req.headers()["authorization"], "Bearer tok");
                        let hs = match server::parse_handshake(req.headers()) {
                            Ok(hs) => hs,
                            Err(reply) => {
                                let res = Response::builder()
                                    .status(reply.code.status())
                                    .header("ferry-error", reply.code.as_str())
                                    .body(Full::new(Bytes::from(reply.body("rid"))))
                                    .expect("response");
                                return Ok::<_, Infallible>(res);
                            }
                        };
                        assert!(!hs.targets.is_empty());
                        let on_upgrade = hyper::upgrade::on(&mut req);
                        let headers = server::accept_headers(&hs, "node-1");
                        let transport = hs.transport;
                        tokio::spawn(async move {
                            let io = on_upgrade.await.expect("upgrade");
                            let io = TunnelIo::new(io, transport, false).await;
                            let (sender, conn) = server::open(io, &opts).await.expect("open");
                            tokio::spawn(conn);
                            let _ = tx.send(sender).await;
                        });
                        let mut res = Response::new(Full::new(Bytes::new()));
                        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        *res.headers_mut() = headers;
                        Ok(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

/// What the echo service of the connector side shares with the test.
#[derive(Default)]
struct Control {
    /// `/hold` requests wait for this before answering.
    release: Notify,
    /// Told when a `/hold` request arrived.
    held: Notify,
}

async fn echo(
    req: Request<Incoming>,
    control: Arc<Control>,
) -> Result<Response<TunnelBody>, Infallible> {
    let mut req = req;
    if req.extensions().get::<hyper::ext::Protocol>().is_some() {
        let protocol = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.expect("server side upgrade");
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            loop {
                let n = io.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                io.write_all(&reply).await.expect("write");
            }
        });
        return Ok(Response::builder()
            .header("x-protocol", protocol)
            .body(empty())
            .expect("response"));
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/hold" => {
            control.held.notify_one();
            control.release.notified().await;
            Ok(Response::new(body("released")))
        }
        "/fail" => {
            // Data, then (a little later, as a target would) a failure: the stream must be reset, never ended
            // cleanly.
            let stream = futures_util::stream::unfold(0u8, |state| async move {
                match state {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"partial"))), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Err::<Frame<Bytes>, BoxError>("target broke".into()), 2))
                    }
                    _ => None,
                }
            });
            Ok(Response::new(StreamBody::new(stream).boxed_unsync()))
        }
        "/big" => {
            // 4 MiB, more than a stream window: the sender blocks once the reader stops reading.
            let chunks =
                (0..64).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))));
            let stream = futures_util::stream::iter(chunks);
            Ok(Response::new(StreamBody::new(stream).boxed_unsync()))
        }
        _ => {
            let data = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Ok(Response::builder()
                .header("x-path", path)
                .body(body(data))
                .expect("response"))
        }
    }
}

struct Connector {
    drain: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), hyper::Error>>,
    control: Arc<Control>,
}

async fn start_connector_over(
    server: &str,
    transport: Transport,
) -> Result<(Connector, String), DialError> {
    let opts = DialOptions {
        server: server.to_owned(),
        token: "tok".to_owned(),
        connector_id: "0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e5f".to_owned(),
        targets: vec![TargetName::new("app").expect("name")],
        tls: client::tls_config(None).expect("tls"),
        transport,
        proxy: None,
        protocol: 1,
        max_streams: 1000,
    };
    start_connector_with(opts, TunnelOptions::default()).await
}

async fn start_connector_with(
    opts: DialOptions,
    tunnel_opts: TunnelOptions,
) -> Result<(Connector, String), DialError> {
    let client::Dialled { io, node_id, .. } = client::dial(&opts).await?;
    let control = Arc::new(Control::default());
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let c = control.clone();
    let done = tokio::spawn(async move {
        let svc = service_fn(move |req| echo(req, c.clone()));
        client::serve(io, svc, &tunnel_opts, async {
            let _ = drain_rx.await;
        })
        .await
    });
    Ok((
        Connector {
            drain: Some(drain_tx),
            done,
            control,
        },
        node_id,
    ))
}

async fn tunnel() -> (SendRequest<TunnelBody>, Connector) {
    tunnel_over(Transport::Upgrade).await
}

async fn tunnel_over(transport: Transport) -> (SendRequest<TunnelBody>, Connector) {
    let (server, mut tunnels) = start_node().await;
    let (connector, node_id) = start_connector_over(&server, transport)
        .await
        .expect("dial");
    assert_eq!(node_id, "node-1");
    let sender = tokio::time::timeout(Duration::from_secs(5), tunnels.recv())
        .await
        .expect("tunnel in time")
        .expect("tunnel");
    (sender, connector)
}

fn get(path: &str, b: TunnelBody) -> Request<TunnelBody> {
    Request::post(format!("http://app.example{path}"))
        .body(b)
        .expect("request")
}

async fn text(res: Response<Incoming>) -> String {
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn many_concurrent_requests_share_one_tunnel() {
    let (sender, _connector) = tunnel().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let res = sender
                .send_request(get(&format!("/item/{i}?q=%2F"), body(format!("body-{i}"))))
                .await
                .expect("response");
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["x-path"], format!("/item/{i}"));
            assert_eq!(text(res).await, format!("body-{i}"));
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test]
async fn a_slow_stream_does_not_stall_the_others() {
    let (mut sender, _connector) = tunnel().await;
    // A response nobody reads: it fills its own stream window and no more.
    let unread = sender
        .send_request(get("/big", empty()))
        .await
        .expect("big");
    assert_eq!(unread.status(), 200);
    // A response held by the target.
    let mut held_sender = sender.clone();
    let held = tokio::spawn(async move { held_sender.send_request(get("/hold", empty())).await });
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let res = sender
                .send_request(get("/x", body(vec![b'y'; 100 * 1024 + i])))
                .await
                .expect("response");
            assert_eq!(text(res).await.len(), 100 * 1024 + i);
        }));
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        for t in tasks {
            t.await.expect("task");
        }
    })
    .await
    .expect("other streams went on");
    assert!(!held.is_finished());
    // The unread response is still readable in full.
    let n = unread
        .into_body()
        .collect()
        .await
        .expect("big body")
        .to_bytes()
        .len();
    assert_eq!(n, 4 * 1024 * 1024);
}

#[tokio::test]
async fn extended_connect_upgrades_both_sides() {
    let (mut sender, _connector) = tunnel().await;
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri("http://app.example/chat?room=1")
        .header("sec-websocket-version", "13")
        .body(empty())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut res = sender.send_request(req).await.expect("connect");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-protocol"], "websocket");
    let upgraded = hyper::upgrade::on(&mut res)
        .await
        .expect("client side upgrade");
    let mut io = TokioIo::new(upgraded);
    for msg in ["hello", "world"] {
        io.write_all(msg.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 5 + msg.len()];
        io.read_exact(&mut buf).await.expect("read");
        assert_eq!(buf, format!("echo:{msg}").as_bytes());
    }
    // Ordinary requests still work beside it.
    let res = sender
        .send_request(get("/after", body("x")))
        .await
        .expect("after");
    assert_eq!(text(res).await, "x");
}

#[tokio::test]
async fn goaway_drain_finishes_in_flight_and_gives_new_requests_back() {
    let (mut sender, mut connector) = tunnel().await;
    let held_future = sender.try_send_request(get("/hold", empty()));
    let held = tokio::spawn(held_future);
    tokio::time::timeout(Duration::from_secs(5), connector.control.held.notified())
        .await
        .expect("held request reached the service");

    connector
        .drain
        .take()
        .expect("drain")
        .send(())
        .expect("serve running");
    // Once the node has read the GOAWAY, a new request is refused without being sent and given back for
    // re-routing. Until then a probe may still be served (or refused by the connector); poll, bounded.
    let req = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sender.try_send_request(get("/new", body("payload"))).await {
                Err(mut err) => {
                    if let Some(req) = err.take_message() {
                        return req;
                    }
                }
                Ok(res) => assert_eq!(res.status(), 200),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a request given back after goaway");
    assert_eq!(req.uri().path(), "/new");
    assert_eq!(
        req.into_body()
            .collect()
            .await
            .expect("body intact")
            .to_bytes(),
        "payload"
    );
    assert!(
        sender.is_closed(),
        "the sender reports the closed tunnel once it was used"
    );
    let mut err = sender
        .try_send_request(get("/new", empty()))
        .await
        .expect_err("refused");
    assert!(err.take_message().is_some());

    // The in-flight request finishes, then serve returns.
    assert!(!connector.done.is_finished());
    connector.control.release.notify_one();
    let res = held.await.expect("task").expect("held response");
    assert_eq!(text(res).await, "released");
    let served = tokio::time::timeout(Duration::from_secs(5), connector.done)
        .await
        .expect("serve returned after drain")
        .expect("task");
    assert!(served.is_ok(), "{served:?}");
}

#[tokio::test]
async fn refusals_carry_status_code_and_body() {
    let (server, _tunnels) = start_node().await;
    let opts = DialOptions {
        server: server.clone(),
        token: "tok".to_owned(),
        connector_id: "c1".to_owned(),
        targets: Vec::new(),
        tls: client::tls_config(None).expect("tls"),
        transport: Transport::Upgrade,
        proxy: None,
        protocol: 1,
        max_streams: 1000,
    };
    let Err(err) = start_connector_with(opts, TunnelOptions::default()).await else {
        panic!("dial without targets succeeded");
    };
    match err {
        DialError::Refused { status, code, body } => {
            assert_eq!(status, 400);
            assert_eq!(code.as_deref(), Some("bad_request"));
            assert!(body.starts_with("bad_request: ferry-targets"), "{body}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn dial_errors() {
    // A refused port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let opts = DialOptions {
        server: format!("http://127.0.0.1:{port}"),
        token: "tok".to_owned(),
        connector_id: "c1".to_owned(),
        targets: vec![TargetName::new("app").expect("name")],
        tls: client::tls_config(None).expect("tls"),
        transport: Transport::Upgrade,
        proxy: None,
        protocol: 1,
        max_streams: 1000,
    };
    assert!(matches!(
        client::dial(&opts).await,
        Err(DialError::Connect { .. })
    ));
    // TLS to a plain HTTP node fails in the handshake.
    let (server, _tunnels) = start_node().await;
    let opts = DialOptions {
        server: server.replace("http://", "https://"),
        ..opts
    };
    assert!(matches!(
        client::dial(&opts).await,
        Err(DialError::Tls { .. })
    ));
}

#[tokio::test]
async fn a_failing_response_body_resets_the_stream() {
    let (mut sender, _connector) = tunnel().await;
    let res = sender
        .send_request(get("/fail", empty()))
        .await
        .expect("head");
    assert_eq!(res.status(), 200);
    let err = res
        .into_body()
        .collect()
        .await
        .expect_err("reset, not a clean end");
    assert!(format!("{err:?}").contains("INTERNAL_ERROR"), "{err:?}");
    // The tunnel is fine afterwards.
    let res = sender
        .send_request(get("/ok", body("x")))
        .await
        .expect("after");
    assert_eq!(text(res).await, "x");
}

type Half<T> = Box<T>;

/// A TCP proxy that can freeze: once frozen it forwards nothing more and closes nothing, like a NAT that
/// silently dropped the connection.
async fn start_freezable_proxy(upstream: &str) -> (String, Arc<AtomicBool>) {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let frozen = Arc::new(AtomicBool::new(false));
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            let pipes: [(
                Half<dyn AsyncRead + Unpin + Send>,
                Half<dyn AsyncWrite + Unpin + Send>,
            ); 2] = [
                (Box::new(down_r), Box::new(up_w)),
                (Box::new(up_r), Box::new(down_w)),
            ];
            for (mut r, mut w) in pipes {
                let f = f.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if f.load(Ordering::SeqCst) {
                            // Hold both halves open, forward nothing.
                            std::future::pending::<()>().await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (format!("http://{addr}"), frozen)
}

#[tokio::test]
async fn keepalive_detects_a_silently_dropped_connection_on_both_ends() {
    let opts = TunnelOptions {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
        ..TunnelOptions::default()
    };
    let (node, mut tunnels) = start_node_with(opts.clone()).await;
    let (proxy, frozen) = start_freezable_proxy(&node).await;
    let dial = DialOptions {
        server: proxy,
        token: "tok".to_owned(),
        connector_id: "c1".to_owned(),
        targets: vec![TargetName::new("app").expect("name")],
        tls: client::tls_config(None).expect("tls"),
        transport: Transport::Upgrade,
        proxy: None,
        protocol: 1,
        max_streams: 1000,
    };
    let (connector, _) = start_connector_with(dial, opts).await.expect("dial");
    let mut sender = tokio::time::timeout(Duration::from_secs(5), tunnels.recv())
        .await
        .expect("tunnel in time")
        .expect("tunnel");
    let res = sender
        .send_request(get("/x", body("1")))
        .await
        .expect("works");
    assert_eq!(text(res).await, "1");
    // Idle for several intervals: pings keep it alive.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!connector.done.is_finished());
    let res = sender
        .send_request(get("/x", body("2")))
        .await
        .expect("still works");
    assert_eq!(text(res).await, "2");

    frozen.store(true, Ordering::SeqCst);
    // The connector's serve ends with an error (PING not acknowledged)...
    let served = tokio::time::timeout(Duration::from_secs(5), connector.done)
        .await
        .expect("connector noticed the dead tunnel")
        .expect("task");
    assert!(served.is_err(), "{served:?}");
    // ...and the node's side closes too.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("node noticed the dead tunnel");
}

#[tokio::test]
async fn the_websocket_transport_carries_the_same_tunnel() {
    let (mut sender, _connector) = tunnel_over(Transport::WebSocket).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut s = sender.clone();
        tasks.push(tokio::spawn(async move {
            s.ready().await.expect("ready");
            let res = s
                .send_request(get(&format!("/r{i}"), body(format!("body {i}"))))
                .await
                .expect("response");
            assert_eq!(res.headers()["x-path"], format!("/r{i}"));
            assert_eq!(text(res).await, format!("body {i}"));
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // More than a stream window, in frames larger than one WebSocket write.
    sender.ready().await.expect("ready");
    let res = sender
        .send_request(get("/big", empty()))
        .await
        .expect("big");
    let len = res
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .len();
    assert_eq!(len, 4 * 1024 * 1024);
}
