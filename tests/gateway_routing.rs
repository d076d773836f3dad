//! End to end, against the built `ferry` binary: the gateway's route table in front of real upstreams, driven
//! by curl over HTTP/1.1 and HTTP/2 (TLS, ALPN) with certificates generated here. Routing by host and path,
//! round robin, redirects, forwarding headers, and the relay and Ferry's own paths still answering when no route
//! claims them.

use crate::common::{start_with_config, write_file, TempDir, BIN};
use ferry_testkit::{EchoReply, FerryServer, ServerOptions, TargetKind, TargetServer, TestPki};
use std::path::Path;
use std::time::Duration;

/// What curl reported: status, HTTP version (`1.1`, `2`), response headers and body.
struct Curled {
    status: u16,
    version: String,
    headers: String,
    body: String,
}

/// `curl` with `--http1.1` or `--http2`, trusting `ca`, sending `Host: host`.
async fn curl(http: &str, ca: &Path, host: &str, url: &str) -> anyhow::Result<Curled> {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", http, "--cacert"])
            .arg(ca)
            .args(["-H", &format!("Host: {host}"), "-D", "-"])
            .args(["-w", "\n@@%{http_code} %{http_version}", url])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (rest, tail) = text
        .rsplit_once("\n@@")
        .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
    let (code, version) = tail
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("bad tail {tail:?}"))?;
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Ok(Curled {
        status: code.parse()?,
        version: version.to_owned(),
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

#[tokio::test]
async fn routes_by_host_and_path_over_http1_and_http2() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let web = TargetServer::start(TargetKind::Echo).await?;
    let api1 = TargetServer::start(TargetKind::Echo).await?;
    let api2 = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-routing-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
name = "web"
hosts = ["www.example.test", "*.web.example.test"]
upstream = "web"

[[gateway.routes]]
name = "api"
path = "/api"
strip_prefix = true
upstream = "api"

[[gateway.routes]]
name = "old"
hosts = ["old.example.test"]
redirect = {{ to = "https://www.example.test" }}

[gateway.upstreams.web]
servers = [{{ url = "{}" }}]

[gateway.upstreams.api]
servers = [{{ url = "{}" }}, {{ url = "{}" }}]
"#,
            web.url(),
            api1.url(),
            api2.url()
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .config(&config),
    )
    .await?;
    let base = server.url().replace("127.0.0.1", "localhost");
    let ca = pki.ca_path();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        // by host, exact and wildcard
        for host in ["www.example.test", "shop.web.example.test"] {
            let r = curl(flag, &ca, host, &format!("{base}/page?x=1")).await?;
            assert_eq!((r.status, r.version.as_str()), (200, version), "{host}");
            let e: EchoReply = serde_json::from_str(&r.body)?;
            assert_eq!(e.uri, "/page?x=1");
            assert_eq!(e.header("host"), Some(host));
            assert_eq!(e.header("x-forwarded-proto"), Some("https"));
            assert_eq!(e.header("x-forwarded-host"), Some(host));
            assert_eq!(e.header("x-forwarded-for"), Some("127.0.0.1"));
            assert!(e.header("x-request-id").is_some_and(|v| v.len() == 32));
        }
        // by path, balanced round robin over two servers
        for i in 0..10 {
            let r = curl(
                flag,
                &ca,
                "any.example.test",
                &format!("{base}/api/items/{i}"),
            )
            .await?;
            assert_eq!((r.status, r.version.as_str()), (200, version));
            let e: EchoReply = serde_json::from_str(&r.body)?;
            assert_eq!(e.uri, format!("/items/{i}"));
        }
        // a redirect answered by the gateway
        let r = curl(flag, &ca, "old.example.test", &format!("{base}/a/b?c=d")).await?;
        assert_eq!(r.status, 308);
        assert!(
            r.headers
                .contains("location: https://www.example.test/a/b?c=d"),
            "{}",
            r.headers
        );
        // no route claims these: Ferry's own paths and the relay answer as before
        let r = curl(flag, &ca, "any.example.test", &format!("{base}/healthz")).await?;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        let r = curl(
            flag,
            &ca,
            "any.example.test",
            &format!("{base}/relay/nobody/app/x"),
        )
        .await?;
        assert_eq!(r.status, 404);
        assert!(
            r.headers.contains("ferry-error: unknown_tenant"),
            "{}",
            r.headers
        );
        let r = curl(flag, &ca, "any.example.test", &format!("{base}/elsewhere")).await?;
        assert_eq!(r.status, 404);
        assert!(
            r.headers.contains("ferry-error: not_found"),
            "{}",
            r.headers
        );
    }
    assert_eq!(web.requests(), 4);
    assert_eq!((api1.requests(), api2.requests()), (10, 10));
    // one request at a time: each upstream server was reached over kept-alive connections, one per core of the
    // node at most (each core keeps its own, `runtime.per_core`; each curl is a connection, on one core or the
    // other)
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (server, accepted) in [
        ("web", web.accepted()),
        ("api1", api1.accepted()),
        ("api2", api2.accepted()),
    ] {
        assert!(
            (1..=cores).contains(&accepted),
            "{server}: {accepted} connections for {cores} cores"
        );
    }

    // Per-route and per-upstream metrics on the admin listener.
    let admin = server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?;
    let metrics = ferry_testkit::http_client()
        .get(format!("{admin}/metrics"))
        .send()
        .await?;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await?;
    for line in [
        "ferry_gateway_responses_total{route=\"api\",class=\"2xx\"} 20",
        "ferry_gateway_responses_total{route=\"old\",class=\"3xx\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let api_server = api1.addr().to_string();
    assert!(
        metrics.contains(&format!(
            "ferry_gateway_upstream_requests_total{{upstream=\"api\",server=\"{api_server}\"}} 10"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE ferry_relay_tunnels gauge"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_gateway_config_stops_the_start_with_its_key() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-bad-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        "[[gateway.routes]]\nupstream = \"nowhere\"\n",
    )?;
    let started = FerryServer::start(BIN, ServerOptions::default().config(&config)).await;
    let err = match started {
        Ok(_) => anyhow::bail!("the server started with a bad gateway config"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("gateway.routes[0].upstream: no upstream named \"nowhere\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn websockets_through_a_gateway_route() -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws = TargetServer::start(TargetKind::WebSocketEcho).await?;
    let dir = TempDir::new("ferry-gw-ws-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            "[[gateway.routes]]\npath = \"/chat\"\nupstream = \"ws\"\n\n[gateway.upstreams.ws]\nservers = [{{ url = \"{}\" }}]\n",
            ws.url()
        ),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let url = format!("{}/chat/room", server.url().replace("http://", "ws://"));
    let (mut sock, resp) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(url),
    )
    .await??;
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("message {i}");
        sock.send(Message::text(text.clone())).await?;
        let echoed = tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed"))??;
        assert_eq!(echoed.into_text()?.as_str(), text);
    }
    let big = vec![7u8; 256 * 1024];
    sock.send(Message::binary(big.clone())).await?;
    let echoed = tokio::time::timeout(Duration::from_secs(10), sock.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("closed"))??;
    assert!(echoed.into_data() == big, "binary message changed");
    sock.close(None).await?;
    Ok(())
}

/// What an HTTP/1.1 upstream receives must be HTTP/1.1: an HTTP/2 client's cookie crumbs arrive joined into one
/// `Cookie` (RFC 9113 §8.2.3), and the `Host` sent upstream is the host the request was routed by: the
/// absolute-form target's, not a `Host` header that disagrees with it (RFC 9112 §3.2.2).
#[tokio::test]
async fn upstreams_get_one_cookie_and_the_host_routing_used() -> anyhow::Result<()> {
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let other = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-h1-upstream-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
hosts = ["a.example.test"]
upstream = "a"

[[gateway.routes]]
upstream = "other"

[gateway.upstreams.a]
servers = [{{ url = "{}" }}]

[gateway.upstreams.other]
servers = [{{ url = "{}" }}]
"#,
            echo.url(),
            other.url()
        ),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("a.example.test", server.addr())
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = h2
        .get(format!(
            "http://a.example.test:{}/crumbs",
            server.addr().port()
        ))
        .header("cookie", "session=s1")
        .header("cookie", "theme=dark")
        .send()
        .await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let e: EchoReply = resp.json().await?;
    let cookies: Vec<&str> = e
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["session=s1; theme=dark"], "{:?}", e.headers);

    let resp = ferry_testkit::raw::request(
        server.addr(),
        b"GET http://a.example.test/absolute HTTP/1.1\r\nHost: b.example.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let e: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(e.uri, "/absolute");
    assert_eq!(e.header("host"), Some("a.example.test"), "{:?}", e.headers);
    Ok(())
}

/// A WebSocket through a gateway route lives within the pool's timeouts: traffic keeps it open past
/// `idle_timeout`, silence for `idle_timeout` closes it, and so does `total_timeout` however busy it is.
#[tokio::test]
async fn websockets_close_after_the_pools_idle_and_total_timeouts() -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws = TargetServer::start(TargetKind::WebSocketEcho).await?;
    let dir = TempDir::new("ferry-gw-ws-timeouts-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
path = "/idle"
upstream = "idle"

[[gateway.routes]]
path = "/total"
upstream = "total"

[gateway.upstreams.idle]
servers = [{{ url = "{0}" }}]
idle_timeout = "1s"

[gateway.upstreams.total]
servers = [{{ url = "{0}" }}]
total_timeout = "2s"
"#,
            ws.url()
        ),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let base = server.url().replace("http://", "ws://");
    let connect = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let (sock, _) = tokio::time::timeout(
                Duration::from_secs(20),
                tokio_tungstenite::connect_async(url),
            )
            .await??;
            anyhow::Ok(sock)
        }
    };
    // Waits for the socket to end; how long it took.
    async fn closed_after<S>(sock: &mut S) -> anyhow::Result<Duration>
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let start = std::time::Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), sock.next()).await? {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(start.elapsed()),
                Some(Ok(_)) => {}
            }
        }
    }

    // messages every 400 ms keep it open for 2 s, past the 1 s idle timeout; then silence closes it
    let mut sock = connect("/idle/a").await?;
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        sock.send(Message::text(format!("m{i}"))).await?;
        let echoed = tokio::time::timeout(Duration::from_secs(5), sock.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed while busy"))??;
        assert_eq!(echoed.into_text()?.as_str(), format!("m{i}"));
    }
    let quiet = closed_after(&mut sock).await?;
    assert!(quiet < Duration::from_secs(3), "closed after {quiet:?}");
    server
        .output()
        .wait_stderr("upgraded connection idle", Duration::from_secs(5))
        .await?;

    // busy all the time, still closed at the 2 s total timeout
    let mut sock = connect("/total/b").await?;
    let start = std::time::Instant::now();
    let mut cut = false;
    for i in 0..40 {
        if sock.send(Message::text(format!("t{i}"))).await.is_err() {
            cut = true;
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), sock.next()).await? {
            Some(Ok(Message::Text(_))) => {}
            _ => {
                cut = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed();
    assert!(cut, "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
    Ok(())
}

/// nginx's `location` rules (`=`, `~`, the longest prefix), rewrites with captures, and header control: set,
/// remove and add with variables, the `Host` sent upstream (the upstream's, `$host`, a fixed value), and no
/// HSTS on plain HTTP.
#[tokio::test]
async fn location_rules_rewrites_and_header_control() -> anyhow::Result<()> {
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-locations-")?;
    let server = start_with_config(
        dir.path(),
        &format!(
            r#"
[[gateway.routes]]
name = "users-by-id"
path_regex = '^/users/(?<id>\d+)$'
rewrite = "/api/v2/users/${{id}}"
upstream = "echo"
upstream_host = "upstream"
hsts = "max-age=63072000"
request_headers = {{ set = {{ "X-Real-IP" = "$remote_addr", "X-Route" = "$route", "X-Who" = "$http_x_user" }}, remove = ["X-Debug"] }}
response_headers = {{ set = {{ "X-Frame-Options" = "DENY" }}, remove = ["Content-Type"] }}

[[gateway.routes]]
name = "me"
path_exact = "/users/me"
respond = {{ status = 200, body = "me\n" }}
response_headers = {{ add = {{ "X-Exact" = "yes" }} }}

[[gateway.routes]]
name = "users"
path = "/users"
replace_prefix = "/people"
upstream = "echo"
upstream_host = "$host"

[[gateway.routes]]
name = "fixed-host"
path = "/fixed"
upstream = "echo"
upstream_host = "internal.example"

[gateway.upstreams.echo]
servers = [{{ url = "{}" }}]
"#,
            echo.url()
        ),
    )
    .await?;
    let client = ferry_testkit::http_client();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", server.url()))
            .timeout(Duration::from_secs(10))
    };

    let resp = get("/users/42")
        .header("x-user", "ann")
        .header("x-debug", "1")
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert!(
        resp.headers().get("content-type").is_none(),
        "{:?}",
        resp.headers()
    );
    assert!(
        resp.headers().get("strict-transport-security").is_none(),
        "no HSTS on plain HTTP"
    );
    let e: EchoReply = resp.json().await?;
    assert_eq!(e.uri, "/api/v2/users/42");
    let upstream = echo.url().trim_start_matches("http://").to_owned();
    assert_eq!(e.header("host"), Some(upstream.as_str()), "{:?}", e.headers);
    assert_eq!(e.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(e.header("x-route"), Some("users-by-id"));
    assert_eq!(e.header("x-who"), Some("ann"));
    assert_eq!(e.header("x-debug"), None);

    let resp = get("/users/me").send().await?;
    assert_eq!(resp.headers()["x-exact"], "yes");
    assert_eq!(resp.text().await?, "me\n");
    // normalised before any rule looks at it: `/users/7/../me` is the exact route's
    let raw = ferry_testkit::raw::request(
        server.addr(),
        b"GET /users/7/../me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(String::from_utf8_lossy(&raw.body), "me\n");

    let e: EchoReply = get("/users/ann?x=1").send().await?.json().await?;
    assert_eq!(e.uri, "/people/ann?x=1");
    assert_eq!(e.header("host"), Some("127.0.0.1"), "$host has no port");

    let e: EchoReply = get("/fixed/a").send().await?.json().await?;
    assert_eq!(e.header("host"), Some("internal.example"));
    assert_eq!(e.uri, "/fixed/a");
    Ok(())
}

/// Gateway routes have a request body limit by default (`[gateway] max_body_size`, 100 MiB unless set; a route's
/// own wins, `0` lifts it), counted on streamed bodies too, relay routes included (there the relay counts).
#[tokio::test]
async fn request_bodies_have_a_default_limit_on_every_kind_of_route() -> anyhow::Result<()> {
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-gw-body-limit-")?;
    let server = start_with_config(
        dir.path(),
        &format!(
            r#"
[gateway]
max_body_size = 1000

[[gateway.routes]]
path = "/up"
upstream = "echo"

[[gateway.routes]]
path = "/big"
upstream = "echo"
max_body_size = 0

[[gateway.routes]]
path = "/rel"
strip_prefix = true
relay = "acme/app"

[gateway.upstreams.echo]
servers = [{{ url = "{}" }}]
"#,
            echo.url()
        ),
    )
    .await?;
    let secret = server.create_tenant("acme").await?;
    let _connector = ferry_testkit::Connector::start(
        BIN,
        server.url(),
        "acme",
        &secret,
        &[("app", &echo.url())],
        Default::default(),
    )
    .await?;
    let client = ferry_testkit::http_client();
    // a body of `len` bytes, sent with a declared length or streamed (chunked)
    let post = |path: &str, len: usize, streamed: bool| {
        let body = vec![b'x'; len];
        let body = if streamed {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                body.chunks(300).map(|c| Ok(c.to_vec())).collect();
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
        } else {
            reqwest::Body::from(body)
        };
        client
            .post(format!("{}{path}", server.url()))
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
    };
    for path in ["/up/x", "/rel/x"] {
        for streamed in [false, true] {
            let ok = post(path, 1000, streamed).await?;
            assert_eq!(ok.status(), 200, "{path} streamed={streamed}");
            let refused = post(path, 1001, streamed).await?;
            assert_eq!(refused.status(), 413, "{path} streamed={streamed}");
            assert_eq!(
                refused.headers()["ferry-error"],
                "payload_too_large",
                "{path} streamed={streamed}"
            );
        }
    }
    let free = post("/big/x", 200_000, true).await?;
    assert_eq!(free.status(), 200);
    Ok(())
}

/// Behind an L4 balancer speaking the PROXY protocol: the client's address comes from the header (v1 or v2) and
/// reaches the upstream as `X-Forwarded-For`; a connection without a header is closed unanswered, and the
/// balancer's own `LOCAL` connection keeps its address.
#[tokio::test]
async fn proxy_protocol_listeners_take_the_client_from_the_header() -> anyhow::Result<()> {
    let dir = TempDir::new("ferry-gw-proxy-protocol-")?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = start_with_config(
        dir.path(),
        &format!(
            "[server]\nproxy_protocol = true\n[[gateway.routes]]\nupstream = \"echo\"\n[gateway.upstreams.echo]\nservers = [{{ url = \"{}\" }}]\n",
            echo.url()
        ),
    )
    .await?;
    let addr = server.addr();
    let t = Duration::from_secs(10);
    let get = b"GET /who HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n";
    let v1 = [
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".as_slice(),
        get.as_slice(),
    ]
    .concat();
    let resp = ferry_testkit::raw::request(addr, &v1, t).await?;
    assert_eq!(resp.status, 200);
    let e: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(e.header("x-forwarded-for"), Some("203.0.113.7"));

    // version 2, IPv6
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::9]:40000".parse::<std::net::SocketAddr>()?,
            "[2001:db8::1]:443".parse::<std::net::SocketAddr>()?,
        ),
    )
    .build()?;
    let resp =
        ferry_testkit::raw::request(addr, &[v2.as_slice(), get.as_slice()].concat(), t).await?;
    let e: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(e.header("x-forwarded-for"), Some("2001:db8::9"));

    // the balancer's health check (LOCAL): its own address
    let local = ppp::v2::Builder::new(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::AddressFamily::Unspecified | ppp::v2::Protocol::Unspecified,
    )
    .build()?;
    let resp = ferry_testkit::raw::request(
        addr,
        &[
            local.as_slice(),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".as_slice(),
        ]
        .concat(),
        t,
    )
    .await?;
    assert_eq!(resp.status, 200);

    // no header: closed without an answer
    let plain = ferry_testkit::raw::request(addr, get, t).await;
    assert!(plain.is_err(), "{plain:?}");
    Ok(())
}
