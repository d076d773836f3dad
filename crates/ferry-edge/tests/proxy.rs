//! The gateway in process, in front of real upstream servers on loopback: balancing, headers, limits, retries,
//! timeouts, h2c and https upstreams, WebSockets, relay routes and reload.

use bytes::Bytes;
use ferry_config::GatewayConfig;
use ferry_edge::{Gateway, RelayBackend, RelayFuture};
use ferry_gateway::{Handler, Listener, ServeOptions, TlsFiles};
use ferry_http::RequestBody as Incoming;
use ferry_http::{full, Body};
use ferry_testkit::{EchoReply, TargetKind, TargetServer, TestPki};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

struct FakeRelay;

impl RelayBackend for FakeRelay {
    fn relay(&self, tenant: &str, target: &str, req: Request<Incoming>) -> RelayFuture {
        let body = format!("relay {tenant}/{target} {}", req.uri());
        Box::pin(async move { Response::new(full(body)) })
    }
}

fn options() -> ServeOptions {
    ServeOptions {
        max_header_size: 64 * 1024,
        header_read_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(1),
        max_connections: 0,
        max_connections_per_ip: 0,
        cores: None,
    }
}

/// Serve `handler` on a fresh loopback listener; returns its URL and the task (aborted on drop of the guard).
async fn serve(handler: Handler, tls: Option<&TlsFiles>) -> (String, AbortOnDrop) {
    let l = Listener::bind(([127, 0, 0, 1], 0).into(), tls)
        .await
        .expect("bind");
    let url = l.url();
    let task = tokio::spawn(ferry_gateway::serve(
        l,
        handler,
        options(),
        std::future::pending(),
    ));
    (url, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the gateway for `toml_text` (the inside of `[gateway]`) is refused at load; panics when it loads.
fn refusal(toml_text: &str) -> String {
    let config: GatewayConfig = toml::from_str(toml_text).expect("toml");
    Gateway::new(&config, Arc::new(FakeRelay))
        .err()
        .expect("refused")
        .to_string()
}

/// The gateway for `toml` (the inside of `[gateway]`), served on loopback.
async fn front(toml_text: &str) -> (String, Arc<Gateway>, AbortOnDrop) {
    let config: GatewayConfig = toml::from_str(toml_text).expect("gateway config");
    let gw = Gateway::new(&config, Arc::new(FakeRelay)).expect("gateway");
    let g = gw.clone();
    let handler: Handler = Arc::new(move |req| {
        let g = g.clone();
        Box::pin(async move {
            match g.route(&req) {
                Some(m) => g.handle(m, req).await,
                None => {
                    let mut r = Response::new(full("no route"));
                    *r.status_mut() = http::StatusCode::NOT_FOUND;
                    r
                }
            }
        })
    });
    let (url, guard) = serve(handler, None).await;
    (url, gw, guard)
}

/// An upstream that answers `name` and what it saw, over whatever protocol the connection speaks.
async fn named_upstream(name: &'static str, tls: Option<&TlsFiles>) -> (String, AbortOnDrop) {
    let handler: Handler = Arc::new(move |req: Request<Incoming>| {
        Box::pin(async move {
            let version = format!("{:?}", req.version());
            let mut r: Response<Body> =
                Response::new(full(format!("{name} {version} {}", req.uri().path())));
            r.headers_mut()
                .insert("x-upstream", http::HeaderValue::from_static(name));
            r
        })
    });
    serve(handler, tls).await
}

fn client() -> reqwest::Client {
    ferry_testkit::http_client()
}

async fn echo(resp: reqwest::Response) -> EchoReply {
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("echo json")
}

#[tokio::test]
async fn routes_balance_and_forwarding_headers() {
    let a = TargetServer::start(TargetKind::Echo).await.expect("a");
    let b = TargetServer::start(TargetKind::Echo).await.expect("b");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/api"
        strip_prefix = true
        upstream = "echo"
        [[routes]]
        path = "/old"
        redirect = {{ to = "https://new.example.com/", status = 301 }}
        [[routes]]
        hosts = ["fixed.example.com"]
        respond = {{ status = 418, body = "teapot" }}
        [[routes]]
        path = "/tenant"
        relay = "acme/app"
        [upstreams.echo]
        servers = [{{ url = "{}" }}, {{ url = "{}" }}]
        "#,
        a.url(),
        b.url()
    ))
    .await;
    let c = client();
    for i in 0..10 {
        let r = c
            .get(format!("{url}/api/v1/items?i={i}"))
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "secret")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-request-id", format!("req-{i}"))
            .header("x-ssl-client-verify", "SUCCESS")
            .header("x-forwarded-client-cert", "By=forged")
            .send()
            .await
            .expect("send");
        assert_eq!(r.headers()["x-request-id"], format!("req-{i}").as_str());
        let e = echo(r).await;
        assert_eq!(e.uri, format!("/v1/items?i={i}"));
        assert!(!e.has_header("x-hop"), "hop-by-hop header forwarded");
        assert!(
            !e.has_header("x-ssl-client-verify"),
            "forged client-cert header"
        );
        assert!(
            !e.has_header("x-forwarded-client-cert"),
            "forged client-cert header"
        );
        assert_eq!(e.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(e.header("x-forwarded-proto"), Some("http"));
        assert_eq!(
            e.header("forwarded")
                .map(|f| f.starts_with("for=127.0.0.1;proto=http")),
            Some(true)
        );
        assert_eq!(e.header("x-request-id"), Some(format!("req-{i}").as_str()));
        assert!(e
            .header("host")
            .is_some_and(|h| h.starts_with("127.0.0.1:")));
    }
    assert_eq!((a.requests(), b.requests()), (5, 5), "round robin");

    let r = c
        .get(format!("{url}/old/page?q=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        "https://new.example.com/old/page?q=1"
    );

    let r = c
        .get(format!("{url}/anything"))
        .header("host", "fixed.example.com")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 418);
    assert_eq!(r.text().await.expect("body"), "teapot");

    let r = c
        .get(format!("{url}/tenant/x?y=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.text().await.expect("body"),
        "relay acme/app /tenant/x?y=1"
    );

    let r = c.get(format!("{url}/nothing")).send().await.expect("send");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn bodies_stream_and_the_limit_answers_413() {
    let sink = TargetServer::start(TargetKind::Sink).await.expect("sink");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/small"
        max_body_size = 1000
        upstream = "sink"
        [[routes]]
        upstream = "sink"
        [upstreams.sink]
        servers = [{{ url = "{}" }}]
        "#,
        sink.url()
    ))
    .await;
    let c = client();
    // 8 MiB streamed through, chunked
    let chunks = (0..128).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 64 * 1024])));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = c
        .post(format!("{url}/big"))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["len"], 8 * 1024 * 1024);

    let r = c
        .post(format!("{url}/small"))
        .body(vec![0u8; 2000])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["ferry-error"], "payload_too_large");
    // chunked (no Content-Length): cut while streaming
    let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 600])));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = c
        .post(format!("{url}/small"))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn connect_failures_retry_idempotent_requests_and_eject() {
    let good = TargetServer::start(TargetKind::Echo).await.expect("good");
    // a port with nothing listening
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        upstream = "p"
        [upstreams.p]
        servers = [{{ url = "http://{dead_addr}" }}, {{ url = "{}" }}]
        max_fails = 2
        fail_timeout = "30s"
        "#,
        good.url()
    ))
    .await;
    let c = client();
    for _ in 0..6 {
        let r = c.get(format!("{url}/x")).send().await.expect("send");
        assert_eq!(r.status(), 200, "GET retried on the other server");
    }
    // the dead server is ejected: POSTs (not retried) all land on the good one now
    for _ in 0..4 {
        let r = c
            .post(format!("{url}/x"))
            .body("b")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(good.requests(), 10);
}

/// An idempotent request with a body (PUT) whose connection failed is retried on the next server with its body
/// whole, chunked or not: nothing of it was sent.
#[tokio::test]
async fn a_put_with_a_body_is_retried_whole_after_a_connect_failure() {
    let good = TargetServer::start(TargetKind::Echo).await.expect("good");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        upstream = "p"
        [upstreams.p]
        servers = [{{ url = "http://{dead_addr}" }}, {{ url = "{}" }}]
        max_fails = 0
        "#,
        good.url()
    ))
    .await;
    let c = client();
    for i in 0..4 {
        let payload = vec![b'x'; 10_000 + i];
        let r = if i % 2 == 0 {
            c.put(format!("{url}/doc/{i}")).body(payload.clone())
        } else {
            let chunks = payload
                .chunks(3000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>();
            c.put(format!("{url}/doc/{i}"))
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                )))
        }
        .send()
        .await
        .expect("send");
        assert_eq!(r.status(), 200, "PUT {i} retried on the other server");
        let e: EchoReply = r.json().await.expect("echo");
        assert_eq!(e.body_len, payload.len() as u64, "PUT {i} arrived whole");
    }
    assert_eq!(good.requests(), 4);
}

/// Regression: the error body of a failed upstream named the server's address and the connect error
/// (`upstream p (127.0.0.1:47099): connect ... refused`); the address belongs in the log line only.
#[tokio::test]
async fn upstream_errors_never_show_the_server_address() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        upstream = "p"
        [upstreams.p]
        servers = [{{ url = "http://{dead_addr}" }}]
        "#
    ))
    .await;
    let c = client();
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let r = c
            .request(method.clone(), format!("{url}/x"))
            .body("b")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 502, "{method}");
        assert_eq!(r.headers()["ferry-error"], "target_unreachable");
        let body = r.text().await.expect("body");
        assert!(body.starts_with("target_unreachable: "), "{body}");
        // the request id is hex and could hold the port's digits by chance
        let text = body.split(" (request id").next().unwrap_or_default();
        for leak in [
            dead_addr.to_string(),
            dead_addr.port().to_string(),
            "127.0.0.1".to_owned(),
            "refused".to_owned(),
        ] {
            assert!(!text.contains(&leak), "{method}: {leak:?} in {body:?}");
        }
    }
}

#[tokio::test]
async fn post_to_a_dead_server_is_not_retried() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let good = TargetServer::start(TargetKind::Echo).await.expect("good");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        upstream = "p"
        [upstreams.p]
        servers = [{{ url = "http://{dead_addr}" }}, {{ url = "{}" }}]
        max_fails = 0
        "#,
        good.url()
    ))
    .await;
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c
            .post(format!("{url}/x"))
            .body("b")
            .send()
            .await
            .expect("send");
        statuses.push(r.status().as_u16());
        if r.status() == 502 {
            assert_eq!(r.headers()["ferry-error"], "target_unreachable");
        }
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 502, 502]);
}

#[tokio::test]
async fn slow_heads_time_out_with_504() {
    let hang = TargetServer::start(TargetKind::Hang).await.expect("hang");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        upstream = "p"
        [upstreams.p]
        servers = [{{ url = "{}" }}]
        header_timeout = "300ms"
        "#,
        hang.url()
    ))
    .await;
    let started = std::time::Instant::now();
    let r = client().get(format!("{url}/x")).send().await.expect("send");
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["ferry-error"], "target_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// nginx's `proxy_next_upstream timeout`: a bodiless idempotent request whose server gave no head in time goes to
/// the next server; one with a body does not (it cannot be sent again as it was); `max_conns` passes a full server
/// over, and a pool whose servers are all full answers `503 upstream_busy`; a backup waits for the primaries.
#[tokio::test]
async fn timeouts_retry_within_the_budget_and_full_servers_are_passed_over() {
    let hang = TargetServer::start(TargetKind::Hang).await.expect("hang");
    let good = TargetServer::start(TargetKind::Echo).await.expect("good");
    let spare = TargetServer::start(TargetKind::Echo).await.expect("spare");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/retry"
        upstream = "p"
        [[routes]]
        path = "/full"
        upstream = "full"
        [upstreams.p]
        servers = [{{ url = "{hang}" }}, {{ url = "{good}" }}, {{ url = "{spare}", backup = true }}]
        header_timeout = "300ms"
        max_fails = 0
        [upstreams.full]
        servers = [{{ url = "{hang}", max_conns = 1 }}]
        header_timeout = "2s"
        "#,
        hang = hang.url(),
        good = good.url(),
        spare = spare.url()
    ))
    .await;
    for _ in 0..4 {
        let r = client()
            .get(format!("{url}/retry/x"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "a GET is retried on the next server");
    }
    assert_eq!(
        spare.requests(),
        0,
        "the backup took nothing while a primary was live"
    );
    let mut refused = 0;
    for _ in 0..4 {
        let r = client()
            .post(format!("{url}/retry/x"))
            .body("once")
            .send()
            .await
            .expect("send");
        match r.status().as_u16() {
            200 => {}
            504 => refused += 1,
            other => panic!("POST: {other}"),
        }
    }
    assert!(
        refused > 0,
        "a POST that met the hanging server is not retried"
    );
    // one request in flight fills the only server; the next is refused at once
    let first = tokio::spawn(client().get(format!("{url}/full/a")).send());
    let until = std::time::Instant::now() + T;
    while hang.requests() == 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = client()
        .get(format!("{url}/full/b"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["ferry-error"], "upstream_busy");
    assert_eq!(r.headers()["retry-after"], "1");
    let first = first.await.expect("join").expect("send");
    assert_eq!(first.status(), 504);
}

/// nginx's `error_page`: a page of the route's own for Ferry's errors (status, `ferry-error`, request id kept),
/// and with `intercept_errors` for the upstream's error responses too; other statuses pass untouched.
#[tokio::test]
async fn error_pages_replace_error_bodies() {
    let missing = TargetServer::start(TargetKind::Status(404))
        .await
        .expect("404");
    let dir = tempfile_dir();
    let page = dir.join("502.html");
    std::fs::write(&page, "<h1>we will be right back</h1>\n").expect("page");
    let nf = dir.join("404.txt");
    std::fs::write(&nf, "nothing here\n").expect("page");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/down"
        upstream = "dead"
        error_pages = {{ 502 = "{page}" }}
        [[routes]]
        path = "/missing"
        upstream = "missing"
        error_pages = {{ 404 = "{nf}" }}
        intercept_errors = true
        [[routes]]
        path = "/plain"
        upstream = "missing"
        error_pages = {{ 404 = "{nf}" }}
        [upstreams.dead]
        servers = [{{ url = "http://127.0.0.1:9" }}]
        [upstreams.missing]
        servers = [{{ url = "{missing}" }}]
        "#,
        page = page.display(),
        nf = nf.display(),
        missing = missing.url()
    ))
    .await;
    let r = client()
        .get(format!("{url}/down/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["ferry-error"], "target_unreachable");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        r.text().await.expect("body"),
        "<h1>we will be right back</h1>\n"
    );
    let r = client()
        .get(format!("{url}/missing/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.expect("body"), "nothing here\n");
    // without intercept_errors the upstream's own 404 goes through
    let r = client()
        .get(format!("{url}/plain/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.expect("body"), "status 404\n");
    // a page that cannot be read stops the config with its key
    let bad: GatewayConfig = toml::from_str(
        r#"
        [[routes]]
        respond = { body = "x" }
        error_pages = { 502 = "/nonexistent/502.html" }
        "#,
    )
    .expect("toml");
    let e = Gateway::new(&bad, Arc::new(FakeRelay))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.starts_with("gateway.routes[0].error_pages.502"), "{e}");
}

#[tokio::test]
async fn h2c_and_https_upstreams_and_http2_clients() {
    let pki = TestPki::new().expect("pki");
    let tls = TlsFiles {
        cert: pki.cert_path(),
        key: pki.key_path(),
    };
    let (h2c, _a) = named_upstream("h2c-up", None).await;
    let (https, _b) = named_upstream("tls-up", Some(&tls)).await;
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/h2c"
        upstream = "h2c"
        [[routes]]
        path = "/tls"
        upstream = "tls"
        [upstreams.h2c]
        servers = [{{ url = "{}" }}]
        [upstreams.tls]
        servers = [{{ url = "https://localhost:{}" }}]
        ca_file = "{}"
        "#,
        h2c.replace("http://", "h2c://"),
        https.rsplit(':').next().expect("port"),
        pki.ca_path().display()
    ))
    .await;
    let c = client();
    let r = c.get(format!("{url}/h2c/x")).send().await.expect("send");
    assert_eq!(r.text().await.expect("body"), "h2c-up HTTP/2.0 /h2c/x");
    let r = c.get(format!("{url}/tls/y")).send().await.expect("send");
    assert_eq!(
        r.text().await.expect("body"),
        "tls-up HTTP/2.0 /tls/y",
        "h2 by ALPN"
    );
    // an HTTP/2 (prior knowledge) client through the gateway to an HTTP/1.1 upstream
    let echo_up = TargetServer::start(TargetKind::Echo).await.expect("echo");
    let (url2, _gw2, _g2) = front(&format!(
        "[[routes]]\nupstream = \"e\"\n[upstreams.e]\nservers = [{{ url = \"{}\" }}]\n",
        echo_up.url()
    ))
    .await;
    let h2 = ferry_testkit::client::client_builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = h2.get(format!("{url2}/z")).send().await.expect("send");
    assert_eq!(r.version(), http::Version::HTTP_2);
    let e = echo(r).await;
    assert_eq!(e.version, "HTTP/1.1");
    assert!(e
        .header("host")
        .is_some_and(|h| h.starts_with("127.0.0.1:")));
}

#[tokio::test]
async fn https_upstream_with_an_unknown_ca_is_refused() {
    let pki = TestPki::new().expect("pki");
    let other = TestPki::new().expect("other pki");
    let tls = TlsFiles {
        cert: pki.cert_path(),
        key: pki.key_path(),
    };
    let (https, _b) = named_upstream("tls-up", Some(&tls)).await;
    let (url, _gw, _g) = front(&format!(
        "[[routes]]\nupstream = \"t\"\n[upstreams.t]\nservers = [{{ url = \"{https}\" }}]\nca_file = \"{}\"\n",
        other.ca_path().display()
    ))
    .await;
    let r = client().get(format!("{url}/x")).send().await.expect("send");
    assert_eq!(r.status(), 502);
}

/// A client certificate signed by `pki`'s CA, for the gateway: its certificate and key files.
fn gateway_client_identity(pki: &TestPki) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::from_pem(&pki.ca_key_pem).expect("ca key");
    // the test CA as an issuer: its name and key are what signing needs
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "ferry test ca");
    let ca = ca.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ferry gateway");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
    let client_cert = pki.dir().join("gateway-client.pem");
    let client_key = pki.dir().join("gateway-client-key.pem");
    std::fs::write(&client_cert, cert.pem()).expect("write");
    std::fs::write(&client_key, key.serialize_pem()).expect("write");
    (client_cert, client_key)
}

/// TLS settings of an upstream listener with `pki`'s server certificate that requires client certificates of
/// `pki`'s CA.
fn mtls_options(pki: &TestPki) -> ferry_gateway::TlsOptions {
    let mut tls = ferry_gateway::TlsOptions::single(TlsFiles {
        cert: pki.cert_path(),
        key: pki.key_path(),
    });
    tls.client_auth = ferry_gateway::ClientAuth::Required;
    tls.client_ca = Some(pki.ca_path());
    tls
}

/// Mutual TLS towards an upstream (nginx's `proxy_ssl_certificate`): an upstream that requires client
/// certificates is reached with the pool's `client_cert`/`client_key`, and refuses the pool without them (502).
#[tokio::test]
async fn https_upstreams_that_require_client_certificates() {
    let pki = TestPki::new().expect("pki");
    let (client_cert, client_key) = gateway_client_identity(&pki);
    let upstream = Listener::bind_with(([127, 0, 0, 1], 0).into(), Some(mtls_options(&pki)))
        .await
        .expect("bind");
    let port = upstream.local_addr().port();
    let handler: Handler = Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let verified = req
                .extensions()
                .get::<Arc<ferry_http::TlsInfo>>()
                .is_some_and(|t| t.client_verified());
            Response::new(full(format!("verified={verified}")))
        })
    });
    let _up = AbortOnDrop(tokio::spawn(ferry_gateway::serve(
        upstream,
        handler,
        options(),
        std::future::pending(),
    )));
    let pool = |identity: &str| {
        format!(
            "[[routes]]\nupstream = \"t\"\n[upstreams.t]\nservers = [{{ url = \"https://localhost:{port}\" }}]\nca_file = \"{}\"\n{identity}",
            pki.ca_path().display()
        )
    };
    let (url, _gw, _g) = front(&pool(&format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"\n",
        client_cert.display(),
        client_key.display()
    )))
    .await;
    let r = client().get(format!("{url}/x")).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "verified=true");
    let (url, _gw2, _g2) = front(&pool("")).await;
    let r = client().get(format!("{url}/x")).send().await.expect("send");
    assert_eq!(r.status(), 502, "no client certificate, no upstream");
    // a key without its certificate is refused at load, naming the key
    let e = refusal(&pool(&format!(
        "client_key = \"{}\"\n",
        client_key.display()
    )));
    assert!(e.contains("client_cert"), "{e}");
}

/// `static_dir` serves files (index, precompressed siblings, 404, 405, no way out of the directory), and
/// `compress` gzips an upstream's response for a client that accepts it, and only then.
#[tokio::test]
async fn static_files_and_compression() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("dir");
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("docs")).expect("dir");
    std::fs::write(site.join("index.html"), "<h1>home</h1>").expect("write");
    std::fs::write(site.join("docs/index.html"), "<h1>docs</h1>").expect("write");
    let script = "console.log('hello');\n".repeat(50);
    std::fs::write(site.join("app.js"), &script).expect("write");
    std::fs::write(site.join("app.js.gz"), b"not really gzip").expect("write");
    std::fs::write(dir.path().join("secret.txt"), "outside").expect("write");
    let echo = TargetServer::start(TargetKind::Echo).await.expect("echo");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/site"
        strip_prefix = true
        static_dir = "{}"
        [[routes]]
        path = "/api"
        upstream = "e"
        compress = true
        [upstreams.e]
        servers = [{{ url = "{}" }}]
        "#,
        site.display(),
        echo.url()
    ))
    .await;
    let c = client();
    let get = |path: &str, accept: Option<&str>| {
        let mut r = c.get(format!("{url}{path}"));
        if let Some(a) = accept {
            r = r.header("accept-encoding", a);
        }
        r.send()
    };
    let r = get("/site/", None).await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "<h1>home</h1>");
    let r = get("/site/docs/", None).await.expect("send");
    assert_eq!(r.text().await.expect("body"), "<h1>docs</h1>");
    let r = get("/site/app.js", None).await.expect("send");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/javascript")
    );
    assert_eq!(r.text().await.expect("body"), script);
    // the precompressed sibling goes to a client that accepts gzip
    let r = get("/site/app.js", Some("gzip")).await.expect("send");
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    assert_eq!(r.text().await.expect("body"), "not really gzip");
    assert_eq!(
        get("/site/missing.js", None).await.expect("send").status(),
        404
    );
    // normalised before any rule: `..` cannot leave the directory
    assert_eq!(
        get("/site/../secret.txt", None)
            .await
            .expect("send")
            .status(),
        404
    );
    assert_eq!(
        get("/site/%2e%2e/secret.txt", None)
            .await
            .expect("send")
            .status(),
        404
    );
    let r = c
        .post(format!("{url}/site/app.js"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);

    let r = get(
        "/api/x?pad=0123456789012345678901234567890123456789",
        Some("gzip"),
    )
    .await
    .expect("send");
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let zipped = r.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .expect("gzip");
    let e: EchoReply = serde_json::from_str(&text).expect("echo json");
    assert!(e.uri.starts_with("/api/x?pad="), "{}", e.uri);
    let r = get("/api/x", None).await.expect("send");
    assert!(r.headers().get("content-encoding").is_none());
    serde_json::from_slice::<EchoReply>(&r.bytes().await.expect("body")).expect("plain json");

    // a static_dir that is not a directory is refused at load, naming the key
    let e = refusal(&format!(
        "[[routes]]\nstatic_dir = \"{}\"\n",
        dir.path().join("secret.txt").display()
    ));
    assert!(e.contains("static_dir"), "{e}");
}

/// A single-page app: `static_fallback` answers paths that name no file with the app's `index.html` (200), files
/// still come as themselves; `compress_types` compresses only the types it lists (the HTML, not the script, not
/// the upstream's JSON).
#[tokio::test]
async fn single_page_app_fallback_and_compress_types() {
    let dir = tempfile::tempdir().expect("dir");
    let app = "<html><body><div id=app></div></body></html>\n".repeat(4);
    std::fs::write(dir.path().join("index.html"), &app).expect("write");
    let script = "console.log('hello');\n".repeat(50);
    std::fs::write(dir.path().join("main.js"), &script).expect("write");
    let echo = TargetServer::start(TargetKind::Echo).await.expect("echo");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/app"
        strip_prefix = true
        static_dir = "{}"
        static_fallback = "index.html"
        compress = true
        compress_types = ["text/html"]
        [[routes]]
        path = "/api"
        upstream = "e"
        compress = true
        compress_types = ["TEXT/*"]
        [upstreams.e]
        servers = [{{ url = "{}" }}]
        "#,
        dir.path().display(),
        echo.url()
    ))
    .await;
    let c = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let get = |path: &str, accept: &str| {
        c.get(format!("{url}{path}"))
            .header("accept-encoding", accept)
            .send()
    };
    let encoding = |r: &reqwest::Response| {
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // a client-side route loads the app
    let r = get("/app/settings/profile", "identity")
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), app);
    // a file is itself, and not compressed: text/javascript is not listed
    let r = get("/app/main.js", "gzip").await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(encoding(&r), None);
    assert_eq!(r.text().await.expect("body"), script);
    // the HTML is
    let r = get("/app/settings", "gzip").await.expect("send");
    assert_eq!(encoding(&r).as_deref(), Some("gzip"));
    // other methods are still refused
    let r = c
        .post(format!("{url}/app/settings"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);
    // the upstream's JSON is not text/*
    let r = get(
        "/api/x?pad=0123456789012345678901234567890123456789",
        "gzip",
    )
    .await
    .expect("send");
    assert_eq!(encoding(&r), None);
    serde_json::from_slice::<EchoReply>(&r.bytes().await.expect("body")).expect("plain json");

    // a fallback outside the directory, or a list without compress, is refused at load naming the key
    for (extra, key) in [
        ("static_fallback = \"../index.html\"", "static_fallback"),
        ("compress_types = [\"text/html\"]", "compress_types"),
    ] {
        let e = refusal(&format!(
            "[[routes]]\nstatic_dir = \"{}\"\n{extra}\n",
            dir.path().display()
        ));
        assert!(e.contains(&format!("routes[0].{key}")), "{e}");
    }
}

/// `buffer_request_body`: a chunked upload reaches the upstream whole, with `Content-Length` and no
/// `Transfer-Encoding`; a PUT whose first server hangs is sent again, body and all, to the next; the route's
/// limit still holds; a route without a small enough limit is refused at load.
#[tokio::test]
async fn buffered_request_bodies() {
    let hang = TargetServer::start(TargetKind::Hang).await.expect("hang");
    let echo = TargetServer::start(TargetKind::Echo).await.expect("echo");
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        path = "/plain"
        upstream = "e"
        buffer_request_body = true
        max_body_size = 1048576
        [[routes]]
        path = "/retry"
        upstream = "p"
        buffer_request_body = true
        max_body_size = 1048576
        [upstreams.e]
        servers = [{{ url = "{echo}" }}]
        [upstreams.p]
        servers = [{{ url = "{hang}" }}, {{ url = "{echo}" }}]
        header_timeout = "300ms"
        max_fails = 0
        "#,
        hang = hang.url(),
        echo = echo.url(),
    ))
    .await;
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..8)
        .map(|i| Ok(Bytes::from(vec![b'a' + i; 1000])))
        .collect();
    let r = client()
        .post(format!("{url}/plain/up"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let e: EchoReply = r.json().await.expect("echo");
    assert_eq!(e.body_len, 8000);
    assert_eq!(e.header("content-length"), Some("8000"));
    assert_eq!(e.header("transfer-encoding"), None);

    for _ in 0..4 {
        let r = client()
            .put(format!("{url}/retry/doc"))
            .body("the same body, every attempt")
            .send()
            .await
            .expect("send");
        assert_eq!(
            r.status(),
            200,
            "a buffered PUT is retried after the timeout"
        );
        let e: EchoReply = r.json().await.expect("echo");
        assert_eq!(e.body_len, 28);
    }
    let r = client()
        .post(format!("{url}/plain/big"))
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);

    let e = refusal(&format!(
        "[[routes]]\nupstream = \"e\"\nbuffer_request_body = true\nmax_body_size = 0\n[upstreams.e]\nservers = [{{ url = \"{}\" }}]\n",
        echo.url()
    ));
    assert!(
        e.contains("buffer_request_body") && e.contains("limit"),
        "{e}"
    );
}

/// A buffered body larger than `body_buffer_memory` goes to a file of `body_buffer_dir` (nothing named is left
/// there) and reaches the upstream whole, with its length, on every attempt of a retry; a directory that
/// is missing at load is refused, and one gone later answers 500 without saying where.
#[tokio::test]
async fn request_bodies_buffered_to_disk() {
    use sha2::Digest;
    let hang = TargetServer::start(TargetKind::Hang).await.expect("hang");
    let echo = TargetServer::start(TargetKind::Echo).await.expect("echo");
    let dir = tempfile::tempdir().expect("dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool");
    let (url, _gw, _g) = front(&format!(
        r#"
        body_buffer_memory = 65536
        body_buffer_dir = "{spool}"
        [[routes]]
        path = "/plain"
        upstream = "e"
        buffer_request_body = true
        max_body_size = 8388608
        [[routes]]
        path = "/retry"
        upstream = "p"
        buffer_request_body = true
        [upstreams.e]
        servers = [{{ url = "{echo}" }}]
        [upstreams.p]
        servers = [{{ url = "{hang}" }}, {{ url = "{echo}" }}]
        header_timeout = "300ms"
        max_fails = 0
        "#,
        spool = spool.display(),
        hang = hang.url(),
        echo = echo.url(),
    ))
    .await;
    // 3 MiB in 16 KiB chunks, each chunk different
    let chunks: Vec<Vec<u8>> = (0..192u32)
        .map(|i| vec![(i % 251) as u8; 16 * 1024])
        .collect();
    let digest = |parts: &[Vec<u8>]| {
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update(p);
        }
        format!("{:x}", h.finalize())
    };
    let whole = digest(&chunks);
    let stream: Vec<Result<Bytes, std::io::Error>> =
        chunks.iter().map(|c| Ok(Bytes::from(c.clone()))).collect();
    let r = client()
        .post(format!("{url}/plain/up"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            stream,
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let e: EchoReply = r.json().await.expect("echo");
    assert_eq!(e.body_len, 3 * 1024 * 1024);
    assert_eq!(e.body_sha256, whole);
    assert_eq!(e.header("content-length"), Some("3145728"));
    assert_eq!(e.header("transfer-encoding"), None);
    assert_eq!(
        std::fs::read_dir(&spool).expect("spool").count(),
        0,
        "the buffer files have no name"
    );

    // the first server hangs: the 1 MiB PUT is read from its file again for the second
    let doc = vec![7u8; 1024 * 1024];
    let r = client()
        .put(format!("{url}/retry/doc"))
        .body(doc.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "a PUT buffered to disk is retried whole");
    let e: EchoReply = r.json().await.expect("echo");
    assert_eq!(e.body_sha256, digest(&[doc]));

    // the directory goes away: small bodies still pass in memory, large ones get 500 naming no path
    std::fs::remove_dir(&spool).expect("remove spool");
    let r = client()
        .post(format!("{url}/plain/small"))
        .body(vec![1u8; 1000])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = client()
        .post(format!("{url}/plain/large"))
        .body(vec![1u8; 200 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 500);
    let text = r.text().await.expect("text");
    assert!(
        text.contains("could not be buffered") && !text.contains("spool"),
        "{text}"
    );

    let e = refusal(&format!(
        "body_buffer_dir = \"{}\"\n[[routes]]\nupstream = \"e\"\nbuffer_request_body = true\n[upstreams.e]\nservers = [{{ url = \"{}\" }}]\n",
        spool.display(),
        echo.url()
    ));
    assert!(e.contains("gateway.body_buffer_dir"), "{e}");
}

#[tokio::test]
async fn websockets_pass_through() {
    let ws = TargetServer::start(TargetKind::WebSocketEcho)
        .await
        .expect("ws");
    let (url, _gw, _g) = front(&format!(
        "[[routes]]\nupstream = \"ws\"\n[upstreams.ws]\nservers = [{{ url = \"{}\" }}]\n",
        ws.url()
    ))
    .await;
    let ws_url = url.replace("http://", "ws://") + "/chat";
    let (mut sock, resp) = tokio::time::timeout(T, tokio_tungstenite::connect_async(ws_url))
        .await
        .expect("in time")
        .expect("connect");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        sock.send(tokio_tungstenite::tungstenite::Message::text(format!(
            "hello {i}"
        )))
        .await
        .expect("send");
        let m = tokio::time::timeout(T, sock.next())
            .await
            .expect("in time")
            .expect("message")
            .expect("ok");
        assert_eq!(m.into_text().expect("text").as_str(), format!("hello {i}"));
    }
    sock.close(None).await.expect("close");
}

#[tokio::test]
async fn reload_swaps_routes_and_refuses_bad_config() {
    let (url, gw, _g) = front("[[routes]]\nrespond = { body = \"one\" }\n").await;
    let c = client();
    assert_eq!(
        c.get(&url)
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("b"),
        "one"
    );
    let bad: GatewayConfig = toml::from_str("[[routes]]\nupstream = \"missing\"\n").expect("parse");
    let err = gw.reload(&bad).expect_err("refused");
    assert!(
        err.to_string().contains("gateway.routes[0].upstream"),
        "{err}"
    );
    assert_eq!(
        c.get(&url)
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("b"),
        "one"
    );
    let good: GatewayConfig =
        toml::from_str("[[routes]]\nrespond = { body = \"two\" }\n").expect("parse");
    gw.reload(&good).expect("reload");
    assert_eq!(
        c.get(&url)
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("b"),
        "two"
    );
}

/// An upstream whose `/healthz` answers the status in `health`; other paths answer its name.
async fn checked_upstream(
    name: &'static str,
    health: Arc<std::sync::atomic::AtomicU16>,
) -> (String, AbortOnDrop) {
    let handler: Handler = Arc::new(move |req: Request<Incoming>| {
        let health = health.clone();
        Box::pin(async move {
            if req.uri().path() == "/healthz" {
                let mut r: Response<Body> = Response::new(full("health"));
                *r.status_mut() =
                    http::StatusCode::from_u16(health.load(std::sync::atomic::Ordering::SeqCst))
                        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                return r;
            }
            Response::new(full(name))
        })
    });
    serve(handler, None).await
}

#[tokio::test]
async fn health_checks_take_servers_out_and_back() {
    use std::sync::atomic::{AtomicU16, Ordering};
    let ha = Arc::new(AtomicU16::new(200));
    let hb = Arc::new(AtomicU16::new(200));
    let (a, _a) = checked_upstream("a", ha.clone()).await;
    let (b, _b) = checked_upstream("b", hb.clone()).await;
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        upstream = "p"
        [upstreams.p]
        servers = [{{ url = "{a}" }}, {{ url = "{b}" }}]
        health = {{ path = "/healthz", interval = "50ms", timeout = "1s", healthy_threshold = 2, unhealthy_threshold = 2 }}
        "#
    ))
    .await;
    let c = client();
    let names = |n: usize| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(c.get(&url).send().await?.text().await?);
            }
            anyhow::Ok(v)
        }
    };
    let both = names(4).await.expect("names");
    assert!(
        both.contains(&"a".to_owned()) && both.contains(&"b".to_owned()),
        "{both:?}"
    );
    ha.store(503, Ordering::SeqCst);
    ferry_testkit::eventually(T, || async {
        let v = names(6).await?;
        anyhow::ensure!(v.iter().all(|n| n == "b"), "a still used: {v:?}");
        Ok(())
    })
    .await
    .expect("a taken out");
    ha.store(200, Ordering::SeqCst);
    ferry_testkit::eventually(T, || async {
        let v = names(4).await?;
        anyhow::ensure!(v.contains(&"a".to_owned()), "a not back: {v:?}");
        Ok(())
    })
    .await
    .expect("a back");
}

#[tokio::test]
async fn sticky_sessions_fail_over_and_re_pin() {
    let mut ups = vec![
        Some(TargetServer::start(TargetKind::Echo).await.expect("a")),
        Some(TargetServer::start(TargetKind::Echo).await.expect("b")),
    ];
    let urls: Vec<String> = ups.iter().flatten().map(|u| u.url()).collect();
    let (url, _gw, _g) = front(&format!(
        r#"
        [[routes]]
        upstream = "p"
        [upstreams.p]
        servers = [{{ url = "{}" }}, {{ url = "{}" }}]
        sticky_cookie = "srv"
        "#,
        urls[0], urls[1]
    ))
    .await;
    let c = client();
    let counts = |ups: &Vec<Option<TargetServer>>| -> Vec<usize> {
        ups.iter()
            .map(|u| u.as_ref().map_or(0, |u| u.requests()))
            .collect()
    };
    let r = c.get(&url).send().await.expect("send");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.starts_with("srv=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pin = cookie.split(';').next().expect("pair").to_owned();
    let first = counts(&ups);
    let home = first
        .iter()
        .position(|&n| n == 1)
        .expect("one server served");
    for _ in 0..6 {
        let r = c
            .get(&url)
            .header("cookie", &pin)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("set-cookie").is_none(), "already pinned");
    }
    assert_eq!(counts(&ups)[home], 7, "the session stays on its server");
    // its server goes away: the request fails over and the session is re-pinned
    ups[home] = None;
    let r = c
        .get(&url)
        .header("cookie", &pin)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let repin = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let repin = repin.split(';').next().expect("pair").to_owned();
    assert_ne!(repin, pin);
    let other = 1 - home;
    for _ in 0..3 {
        let r = c
            .get(&url)
            .header("cookie", &repin)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("set-cookie").is_none());
    }
    assert_eq!(counts(&ups)[other], 4);
}

#[tokio::test]
async fn a_routes_file_is_reloaded_on_change_and_a_bad_one_refused() {
    let dir = tempfile_dir();
    let file = dir.join("routes.toml");
    std::fs::write(&file, "[[routes]]\nrespond = { body = \"one\" }\n").expect("write");
    let config = GatewayConfig {
        file: Some(file.clone()),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(&config, Arc::new(FakeRelay)).expect("gateway");
    gw.spawn_reload(&config, None, ferry_edge::NodeReload::default());
    let g = gw.clone();
    let handler: Handler = Arc::new(move |req| {
        let g = g.clone();
        Box::pin(async move {
            match g.route(&req) {
                Some(m) => g.handle(m, req).await,
                None => Response::new(full("none")),
            }
        })
    });
    let (url, _g) = serve(handler, None).await;
    let c = client();
    let get = || async { anyhow::Ok(c.get(&url).send().await?.text().await?) };
    assert_eq!(get().await.expect("get"), "one");
    // a bad file is refused: the old routes stay (checked over more than one poll period)
    std::fs::write(&file, "[[routes]]\nupstream = \"missing\"\n").expect("write");
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        assert_eq!(get().await.expect("get"), "one");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&file, "[[routes]]\nrespond = { body = \"two\" }\n").expect("write");
    ferry_testkit::eventually(T, || async {
        let b = get().await?;
        anyhow::ensure!(b == "two", "still {b}");
        Ok(())
    })
    .await
    .expect("reloaded");
    // inline routes beside a file are refused
    let both = GatewayConfig {
        file: Some(file.clone()),
        routes: toml::from_str::<GatewayConfig>("[[routes]]\nrespond = {}\n")
            .expect("parse")
            .routes,
        ..GatewayConfig::default()
    };
    let e = Gateway::validate(&both).expect_err("refused");
    assert!(e.to_string().starts_with("gateway.file"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ferry-edge-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[tokio::test]
async fn metrics_count_routes_and_upstream_servers() {
    let up = TargetServer::start(TargetKind::Echo).await.expect("echo");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let (url, gw, _g) = front(&format!(
        r#"
        [[routes]]
        name = "app"
        upstream = "p"
        [[routes]]
        name = "gone"
        path = "/gone"
        respond = {{ status = 410 }}
        [upstreams.p]
        servers = [{{ url = "{}" }}, {{ url = "http://{dead_addr}" }}]
        max_fails = 1
        fail_timeout = "60s"
        "#,
        up.url()
    ))
    .await;
    let c = client();
    for _ in 0..4 {
        assert_eq!(
            c.get(format!("{url}/x"))
                .send()
                .await
                .expect("send")
                .status(),
            200
        );
    }
    assert_eq!(
        c.get(format!("{url}/gone"))
            .send()
            .await
            .expect("send")
            .status(),
        410
    );
    let m = gw.render_metrics();
    assert!(
        m.contains("ferry_gateway_responses_total{route=\"app\",class=\"2xx\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("ferry_gateway_responses_total{route=\"gone\",class=\"4xx\"} 1"),
        "{m}"
    );
    let server = up.url().replace("http://", "");
    assert!(
        m.contains(&format!(
            "ferry_gateway_upstream_requests_total{{upstream=\"p\",server=\"{server}\"}} 4"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "ferry_gateway_upstream_failures_total{{upstream=\"p\",server=\"{dead_addr}\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "ferry_gateway_upstream_up{{upstream=\"p\",server=\"{dead_addr}\"}} 0"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "ferry_gateway_upstream_in_flight{{upstream=\"p\",server=\"{server}\"}} 0"
        )),
        "{m}"
    );
}

#[tokio::test]
async fn client_certificate_details_replace_forged_headers() {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Clients CA");
    let ca = ca.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec!["c.example.test".to_owned()]).expect("p");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "client one");
    let der = p
        .signed_by(&key, &ca, &ca_key)
        .expect("sign")
        .der()
        .to_vec();

    let echo_up = TargetServer::start(TargetKind::Echo).await.expect("echo");
    let config: GatewayConfig = toml::from_str(&format!(
        r#"
        [[routes]]
        upstream = "e"
        client_cert_headers = "both"
        client_cert_header_names = {{ verify = "X-Client-Verify" }}
        [upstreams.e]
        servers = [{{ url = "{}" }}]
        "#,
        echo_up.url()
    ))
    .expect("config");
    let gw = Gateway::new(&config, Arc::new(FakeRelay)).expect("gateway");
    // what the accept loop attaches to requests of a TLS connection with a verified client certificate
    let info = Arc::new(ferry_http::TlsInfo {
        protocol: Some("TLSv1.3"),
        client_chain: vec![der],
        client_verify_error: None,
    });
    let handler: Handler = Arc::new(move |mut req| {
        let gw = gw.clone();
        req.extensions_mut().insert(info.clone());
        Box::pin(async move {
            match gw.route(&req) {
                Some(m) => gw.handle(m, req).await,
                None => Response::new(full("none")),
            }
        })
    });
    let (url, _g) = serve(handler, None).await;
    let r = client()
        .get(&url)
        .header("x-client-verify", "FORGED")
        .header("x-ssl-client-s-dn", "CN=admin")
        .header("x-forwarded-client-cert", "By=forged")
        .send()
        .await
        .expect("send");
    let e = echo(r).await;
    assert_eq!(e.header_all("x-client-verify"), vec!["SUCCESS"]);
    assert!(!e.has_header("x-ssl-client-verify"), "renamed");
    assert_eq!(e.header_all("x-ssl-client-s-dn"), vec!["CN=client one"]);
    assert_eq!(e.header("x-ssl-client-i-dn"), Some("CN=Clients CA"));
    assert_eq!(e.header("x-ssl-protocol"), Some("TLSv1.3"));
    let xfcc = e.header_all("x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1);
    assert!(
        xfcc[0].starts_with("Hash=") && xfcc[0].contains(";DNS=c.example.test"),
        "{xfcc:?}"
    );
}

#[tokio::test]
async fn rate_limited_routes_answer_429_with_retry_after() {
    let (url, _gw, _g) = front(
        r#"
        [[routes]]
        path = "/limited"
        respond = { body = "ok" }
        rate_limit = { requests = 2, per = "60s" }
        [[routes]]
        respond = { body = "free" }
        "#,
    )
    .await;
    let c = client();
    for _ in 0..2 {
        let r = c.get(format!("{url}/limited")).send().await.expect("send");
        assert_eq!(r.status(), 200);
    }
    let r = c.get(format!("{url}/limited")).send().await.expect("send");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ferry-error"], "route_rate_limited");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((25..=30).contains(&retry), "retry after {retry}");
    // other routes are not limited
    for _ in 0..5 {
        assert_eq!(
            c.get(format!("{url}/x"))
                .send()
                .await
                .expect("send")
                .status(),
            200
        );
    }
}

/// `proxy_protocol` on a pool: each client connection reaches the upstream on connections of its own, whose PROXY
/// header names that client connection (the upstream here is a Ferry listener that takes the header), and its
/// requests keep using them; health checks still pass (their connections say `LOCAL` / `UNKNOWN`).
#[tokio::test]
async fn proxy_protocol_headers_name_each_client_connection_to_upstreams() {
    for version in ["v1", "v2"] {
        let upstream = Listener::bind(([127, 0, 0, 1], 0).into(), None)
            .await
            .expect("bind")
            .with_proxy_protocol(true);
        let upstream_url = upstream.url();
        let handler: Handler = Arc::new(|req: Request<Incoming>| {
            Box::pin(async move {
                let client = req
                    .extensions()
                    .get::<ferry_http::ClientInfo>()
                    .map(|c| c.remote_addr.to_string())
                    .unwrap_or_default();
                Response::new(full(client))
            })
        });
        let _upstream = AbortOnDrop(tokio::spawn(ferry_gateway::serve(
            upstream,
            handler,
            options(),
            std::future::pending(),
        )));
        let (url, gw, _g) = front(&format!(
            r#"
            [[routes]]
            upstream = "p"
            [upstreams.p]
            servers = [{{ url = "{upstream_url}" }}]
            proxy_protocol = "{version}"
            health = {{ path = "/healthz", interval = "50ms", timeout = "1s", healthy_threshold = 1, unhealthy_threshold = 1 }}
            "#
        ))
        .await;
        let gateway: std::net::SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("gateway address");
        // let a few health checks run against the upstream that wants the header
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..2 {
            let stream = tokio::net::TcpStream::connect(gateway)
                .await
                .expect("connect");
            let me = stream.local_addr().expect("local address");
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            let _conn = AbortOnDrop(tokio::spawn(async move {
                let _ = conn.await;
            }));
            for _ in 0..3 {
                let req = Request::get("/")
                    .header(http::header::HOST, "app.example")
                    .body(ferry_http::empty())
                    .expect("request");
                let resp = send.send_request(req).await.expect("response");
                assert_eq!(resp.status(), 200, "{version}");
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .expect("body")
                    .to_bytes();
                assert_eq!(
                    String::from_utf8_lossy(&body),
                    me.to_string(),
                    "{version}: the upstream learns the client connection from the header"
                );
            }
        }
        let server = upstream_url.replace("http://", "");
        let m = gw.render_metrics();
        assert!(
            m.contains(&format!(
                "ferry_gateway_upstream_up{{upstream=\"p\",server=\"{server}\"}} 1"
            )),
            "{version}: health checks pass: {m}"
        );
    }
}

/// A TCP relay to `to` that counts the connections it is asked for: how many connections a client opened.
async fn counting_relay(
    to: std::net::SocketAddr,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>, AbortOnDrop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, count, AbortOnDrop(task))
}

/// `proxy_protocol` on pools of `https://` (with a client certificate: mutual TLS) and `h2c://` servers: the header
/// goes before the TLS handshake or the HTTP/2 preface (the upstream is a Ferry listener that takes it, then TLS
/// requiring a client certificate, or HTTP/2); each client connection's address arrives, its requests reuse one
/// upstream connection of its own (HTTP/2 by ALPN), and health checks pass on a connection of their own.
#[tokio::test]
async fn proxy_protocol_towards_https_and_h2c_upstreams() {
    let pki = TestPki::new().expect("pki");
    let (client_cert, client_key) = gateway_client_identity(&pki);
    for (scheme, version) in [
        ("https", "v1"),
        ("https", "v2"),
        ("h2c", "v1"),
        ("h2c", "v2"),
    ] {
        let tls = (scheme == "https").then(|| mtls_options(&pki));
        let upstream = Listener::bind_with(([127, 0, 0, 1], 0).into(), tls)
            .await
            .expect("bind")
            .with_proxy_protocol(true);
        let upstream_addr = upstream.local_addr();
        let handler: Handler = Arc::new(|req: Request<Incoming>| {
            Box::pin(async move {
                let client = req
                    .extensions()
                    .get::<ferry_http::ClientInfo>()
                    .map(|c| c.remote_addr.to_string())
                    .unwrap_or_default();
                let verified = req
                    .extensions()
                    .get::<Arc<ferry_http::TlsInfo>>()
                    .is_some_and(|t| t.client_verified());
                Response::new(full(format!(
                    "{client} {:?} verified={verified}",
                    req.version()
                )))
            })
        });
        let _upstream = AbortOnDrop(tokio::spawn(ferry_gateway::serve(
            upstream,
            handler,
            options(),
            std::future::pending(),
        )));
        let (port, connections, _relay) = counting_relay(upstream_addr).await;
        let tls_keys = if scheme == "https" {
            format!(
                "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
                pki.ca_path().display(),
                client_cert.display(),
                client_key.display()
            )
        } else {
            String::new()
        };
        let (url, gw, _g) = front(&format!(
            r#"
            [[routes]]
            upstream = "p"
            [upstreams.p]
            servers = [{{ url = "{scheme}://localhost:{port}" }}]
            proxy_protocol = "{version}"
            health = {{ path = "/healthz", interval = "50ms", timeout = "1s", healthy_threshold = 1, unhealthy_threshold = 1 }}
            {tls_keys}
            "#
        ))
        .await;
        let case = format!("{scheme} {version}");
        let gateway: std::net::SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("gateway address");
        // let a few health checks run: they keep one connection of their own
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{case}: the health checks' connection"
        );
        for n in 1..=2 {
            let stream = tokio::net::TcpStream::connect(gateway)
                .await
                .expect("connect");
            let me = stream.local_addr().expect("local address");
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            let _conn = AbortOnDrop(tokio::spawn(async move {
                let _ = conn.await;
            }));
            for _ in 0..3 {
                let req = Request::get("/")
                    .header(http::header::HOST, "app.example")
                    .body(ferry_http::empty())
                    .expect("request");
                let resp = send.send_request(req).await.expect("response");
                assert_eq!(resp.status(), 200, "{case}");
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .expect("body")
                    .to_bytes();
                assert_eq!(
                    String::from_utf8_lossy(&body),
                    format!("{me} HTTP/2.0 verified={}", scheme == "https"),
                    "{case}: the upstream learns the client connection from the header, over HTTP/2"
                );
            }
            assert_eq!(
                connections.load(std::sync::atomic::Ordering::SeqCst),
                1 + n,
                "{case}: one upstream connection per client connection, reused for its requests"
            );
        }
        let m = gw.render_metrics();
        assert!(
            m.contains(&format!(
                "ferry_gateway_upstream_up{{upstream=\"p\",server=\"localhost:{port}\"}} 1"
            )),
            "{case}: health checks pass: {m}"
        );
    }
}
