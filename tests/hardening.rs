//! End to end, against the built `ferry` binary: the regression tests of the hardening issue, one or more per
//! defect a hostile client found (each names its defect). The raw-socket probe suite (`probe.rs`) covers the
//! wider ground: framing, smuggling, limits, paths, upgrades, Host and forwarding headers, slow and idle clients.

use crate::common::{write_file, TempDir};
use ferry_testkit::raw::{self, RawConn};
use ferry_testkit::{
    eventually, http_client, light_slot, within, EchoReply, FerryServer, ServerOptions, Stack,
    StackOptions, TargetKind, TargetServer,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(20);

fn raw_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\n\r\n")
}

/// Defect 3: `..%2f` and its mixtures escaped a target's base path, because a target that decodes `%2F` before
/// resolving (Python's `http.server`, many static servers) sees `../`. Encoded slashes and backslashes are
/// refused by default, and dot segments are judged after decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_and_dots_cannot_escape_the_base_path() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    let addr = stack.server.addr();
    for path in [
        "/relay/demo/app/files/..%2fsecret.txt",
        "/relay/demo/app/files/..%2Fsecret.txt",
        "/relay/demo/app/files/%2e%2e%2fsecret.txt",
        "/relay/demo/app/files/.%2E%2Fsecret.txt",
        "/relay/demo/app/files/..%5csecret.txt",
        "/relay/demo/app/files/..;/secret.txt",
        "/relay/demo/app/files/a%2Fb",
    ] {
        let resp = raw::request(addr, raw_get(path).as_bytes(), T).await?;
        resp.check_ferry_error(400, "path_escape")
            .map_err(|e| e.context(format!("GET {path}")))?;
    }
    let resp = raw::request(addr, raw_get("/relay/demo/app/a%00b").as_bytes(), T).await?;
    resp.check_ferry_error(400, "bad_request")?;
    assert_eq!(echo.requests(), 0, "nothing may reach the target");
    // harmless encodings still pass byte for byte, the query is not judged
    let resp = raw::request(
        addr,
        raw_get("/relay/demo/app/a%20b/..x?next=..%2f").as_bytes(),
        T,
    )
    .await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(reply.uri, "/a%20b/..x?next=..%2f");
    Ok(())
}

/// Defect 3, the setting: with `allow_encoded_slashes`, `%2F` passes untouched, but a dot segment it would create
/// (`..%2f`) is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_pass_when_allowed_but_never_make_dot_segments() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) =
        Stack::with_echo(BIN, |o| o.server_env("FERRY_ALLOW_ENCODED_SLASHES", "true")).await?;
    let addr = stack.server.addr();
    let resp = raw::request(addr, raw_get("/relay/demo/app/a%2Fb").as_bytes(), T).await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(reply.uri, "/a%2Fb");
    let resp = raw::request(addr, raw_get("/relay/demo/app/..%2fx").as_bytes(), T).await?;
    resp.check_ferry_error(400, "path_escape")?;
    assert_eq!(echo.requests(), 1);
    Ok(())
}

/// A target that answers `101` to any request with an `Upgrade` header and then echoes bytes, and `200 plain`
/// otherwise: what an h2c-capable or careless server does. Returns its address and the request heads it saw.
async fn upgrading_target() -> anyhow::Result<(SocketAddr, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if let Ok(mut r) = record.lock() {
                    r.push(text.clone());
                }
                if text.contains("\r\nupgrade:") {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                        )
                        .await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nplain\n")
                        .await;
                }
            });
        }
    });
    Ok((addr, seen))
}

/// Defect 5: any `Upgrade` token was piped, so `Upgrade: h2c` got a 101 and a raw pipe past every route rule and
/// relay path check. Only `websocket` is upgraded by default; other tokens are ignored (RFC 9110 §7.8 lets a
/// server ignore `Upgrade`): the request goes on as an ordinary one, without its `Upgrade`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_pass_by_default() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (target, seen) = upgrading_target().await?;
    let dir = TempDir::new("ferry-harden-upgrade-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            "[[gateway.routes]]\npath = \"/up\"\nupstream = \"up\"\n\n[gateway.upstreams.up]\nservers = [{{ url = \"http://{target}\" }}]\n"
        ),
    )?;
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("app", &format!("http://{target}"))
            .server_config(&config),
    )
    .await?;
    for path in ["/relay/demo/app/x", "/up/x"] {
        for protocol in ["h2c", "foo"] {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: ferry.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {protocol}\r\n\
                 HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
            );
            let mut conn = RawConn::connect(stack.server.addr()).await?;
            conn.send(req.as_bytes()).await?;
            let resp = within(T, "response", conn.read_response()).await??;
            assert_eq!(resp.status, 200, "{path} Upgrade: {protocol}: {resp:?}");
            assert_eq!(resp.body_text(), "plain\n");
        }
    }
    let heads = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(heads.len(), 4, "{heads:?}");
    for head in heads {
        assert!(
            !head.contains("\r\nupgrade:"),
            "the target saw an Upgrade: {head}"
        );
    }
    Ok(())
}

/// Defect 7: a request with two `Host` headers was accepted and both went upstream (routing used the first).
/// RFC 9112 §3.2: a server must answer 400 to a request with more than one `Host`, and to an HTTP/1.1 request with
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_or_missing_host_is_400() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    for req in [
        "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nHost: evil.example\r\n\r\n",
        "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nhost: ferry.test\r\n\r\n",
        "GET /relay/demo/app/x HTTP/1.1\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(stack.server.addr()).await?;
        conn.send(req.as_bytes()).await?;
        let resp = within(T, "response", conn.read_response()).await??;
        resp.check_ferry_error(400, "bad_request")
            .map_err(|e| e.context(format!("{req:?}")))?;
    }
    assert_eq!(echo.requests(), 0);
    Ok(())
}

/// Defect 8: on the relay, a client's `Forwarded` passed untouched and its `X-Forwarded-For` was extended, where
/// gateway routes replace them. The same rule everywhere now: replaced from untrusted clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_replaces_forged_forwarding_headers() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    let req = "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\n\
               X-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9;proto=https\r\n\
               X-Real-IP: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n";
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(reply.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        reply.header_all("forwarded"),
        ["for=127.0.0.1;proto=http;host=\"ferry.test\""]
    );
    assert_eq!(reply.header("x-forwarded-proto"), Some("http"));
    assert!(!reply.has_header("x-real-ip"), "{:?}", reply.headers);
    Ok(())
}

/// Defect 8, the other half: from an address in `trusted_proxies` the chain is extended, as on gateway routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_extends_forwarding_headers_of_trusted_proxies() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let dir = TempDir::new("ferry-harden-trusted-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        "[gateway]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )?;
    let (_echo, stack) = Stack::with_echo(BIN, |o| o.server_config(&config)).await?;
    let req = "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\n\
               X-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\n\r\n";
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(
        reply.header_all("x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(
        reply.header_all("forwarded"),
        ["for=203.0.113.9, for=127.0.0.1;proto=http;host=\"ferry.test\""]
    );
    Ok(())
}

/// Defect 11: without `public_url`, the discovery document named the request's `Host` and was served with
/// `Cache-Control: public`, so a shared cache could be poisoned with another token endpoint. It is built from
/// configuration only (the listener's address) and never cached publicly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_ignores_the_host_header_and_is_not_cached_publicly() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let req = "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let resp = raw::request(server.addr(), req.as_bytes(), T).await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = resp.body_text();
    assert!(!body.contains("evil.example"), "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/oauth/token", server.url())
    );
    let cache = resp.header("cache-control").unwrap_or_default();
    assert!(!cache.contains("public"), "cache-control: {cache}");
    Ok(())
}

/// Defect 12: `Content-Length` with `Transfer-Encoding` is refused with 400 and the connection closed, as nginx
/// does since 1.23, instead of being framed by `Transfer-Encoding`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_400_and_closed() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    for req in [
        "POST /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nContent-Length: 60\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         GET /relay/demo/app/smuggled HTTP/1.1\r\nHost: ferry.test\r\n\r\n",
        "POST /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nTransfer-Encoding: chunked\r\n\
         Content-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(stack.server.addr()).await?;
        conn.send(req.as_bytes()).await?;
        let head = within(T, "response", conn.read_head()).await??;
        assert_eq!(head.status, 400, "{req:?}: {head:?}");
        assert!(conn.closed_within(T).await, "the connection must be closed");
    }
    // the same on the second request of a kept-alive connection
    let mut conn = RawConn::connect(stack.server.addr()).await?;
    conn.send(
        b"POST /relay/demo/app/first HTTP/1.1\r\nHost: ferry.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\n\
          POST /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await?;
    let first = within(T, "first response", conn.read_response()).await??;
    assert_eq!(first.status, 200, "{first:?}");
    let head = within(T, "second response", conn.read_head()).await??;
    assert_eq!(head.status, 400, "{head:?}");
    assert!(conn.closed_within(T).await);
    assert_eq!(echo.requests(), 1, "only the first, well-framed request");
    Ok(())
}

/// Defect 1: a connection that never sends anything was kept forever. Now the first request's head must arrive
/// within `header_read_timeout`, an idle keep-alive or HTTP/2 connection is closed after `keepalive_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .env("FERRY_HEADER_READ_TIMEOUT", "1s")
            .env("FERRY_KEEPALIVE_TIMEOUT", "2s"),
    )
    .await?;
    let addr = server.addr();
    let limit = Duration::from_secs(6);
    // nothing at all
    let mut silent = RawConn::connect(addr).await?;
    // half a request head
    let mut partial = RawConn::connect(addr).await?;
    partial
        .send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await?;
    // the HTTP/2 preface and settings, then nothing
    let mut h2 = RawConn::connect(addr).await?;
    h2.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await?;
    // a kept-alive HTTP/1.1 connection after one request
    let mut kept = RawConn::connect(addr).await?;
    kept.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let resp = within(T, "healthz", kept.read_response()).await??;
    assert_eq!(resp.status, 200);
    let started = std::time::Instant::now();
    let (a, b, c, d) = tokio::join!(
        silent.closed_within(limit),
        partial.closed_within(limit),
        h2.closed_within(limit),
        kept.closed_within(limit)
    );
    assert!(a, "a silent connection stays open");
    assert!(b, "a half-sent head stays open");
    assert!(c, "an idle HTTP/2 connection stays open");
    assert!(d, "an idle keep-alive connection stays open");
    assert!(started.elapsed() < limit);
    Ok(())
}

/// Defect 1: caps on connections. Beyond `max_connections_per_ip` the newest connection of that address gets a
/// `503` and is closed, while other addresses (here 127.0.0.2) are still served, `/healthz` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_cap_are_shed() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_MAX_CONNECTIONS_PER_IP", "5"),
    )
    .await?;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(RawConn::connect(addr).await?);
    }
    // the five are served
    held[0]
        .send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    assert_eq!(
        within(T, "healthz", held[0].read_response()).await??.status,
        200
    );
    let mut sixth = RawConn::connect(addr).await?;
    let head = within(T, "shed", sixth.read_head()).await??;
    assert_eq!(head.status, 503, "{head:?}");
    assert_eq!(head.header("ferry-error"), Some("too_many_connections"));
    assert!(sixth.closed_within(T).await);
    // another address is still served
    let other = tokio::net::TcpSocket::new_v4()?;
    other.bind("127.0.0.2:0".parse()?)?;
    let stream = other.connect(addr).await?;
    let mut other = RawConn::from_stream(stream)?;
    other
        .send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    assert_eq!(
        within(T, "healthz", other.read_response()).await??.status,
        200
    );
    // one of the five goes, a new one fits
    drop(held.pop());
    eventually(T, || async {
        let mut c = RawConn::connect(addr).await?;
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let r = c.read_response().await?;
        anyhow::ensure!(r.status == 200, "{}", r.status);
        Ok(())
    })
    .await?;
    Ok(())
}

/// Defect 6: a client's broken chunked body was blamed on the connector (`502 connector_lost`, WARN) and on the
/// gateway on the upstream (`502 target_unreachable`, the server ejected). It is the client's: `400`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_client_body_is_the_clients_fault() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let upstream = TargetServer::start(TargetKind::Sink).await?;
    let dir = TempDir::new("ferry-harden-body-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            "[[gateway.routes]]\npath = \"/up\"\nupstream = \"up\"\n\n[gateway.upstreams.up]\nservers = [{{ url = \"{}\" }}]\nmax_fails = 1\n",
            upstream.url()
        ),
    )?;
    let sink = TargetServer::start(TargetKind::Sink).await?;
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("app", &sink.url())
            .server_config(&config),
    )
    .await?;
    for path in ["/relay/demo/app/upload", "/up/upload"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: ferry.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\nzz\r\nnot a chunk\r\n"
        );
        let mut conn = RawConn::connect(stack.server.addr()).await?;
        conn.send(req.as_bytes()).await?;
        let resp = within(T, "response", conn.read_response()).await??;
        resp.check_ferry_error(400, "bad_request")
            .map_err(|e| e.context(path))?;
    }
    // the upstream server was not counted as failed: a normal request still goes to it at once
    let resp = raw::request(
        stack.server.addr(),
        b"POST /up/x HTTP/1.1\r\nHost: ferry.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        T,
    )
    .await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let logs = stack.server.output().stderr();
    assert!(!logs.contains("connector_lost"), "{logs}");
    assert!(!logs.contains("upstream request failed"), "{logs}");
    Ok(())
}

/// Defect 9: a client token outlived the revocation of its secret by up to its lifetime. Now it stops working
/// within the store poll (2 s) of the revocation, and Ferry's token never reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_stops_working_when_its_secret_is_revoked() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    // the CLI in local mode tells no node: the node learns through its store poll, 1 s here
    let (_echo, stack) =
        Stack::with_echo(BIN, |o| o.server_env("FERRY_STORE_POLL_INTERVAL", "1s")).await?;
    let data_dir = stack.server.data_dir().display().to_string();
    let out = ferry_testkit::process::run_ferry(
        BIN,
        &[
            "tenant",
            "update",
            "demo",
            "--set",
            "require_client_auth=true",
            "--data-dir",
            &data_dir,
        ],
        &[],
    )
    .await?;
    anyhow::ensure!(out.status.success(), "{out:?}");
    let store = ferry_store::open_url(None, stack.server.data_dir()).await?;
    let tenant: ferry_proto::TenantName = "demo".parse()?;
    let connector_secrets: Vec<String> = store
        .list_secrets(&tenant)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let out = ferry_testkit::process::run_ferry(
        BIN,
        &["secret", "create", "demo", "--data-dir", &data_dir],
        &[],
    )
    .await?;
    anyhow::ensure!(out.status.success(), "{out:?}");
    let client_secret = String::from_utf8(out.stdout)?.trim().to_owned();
    let client = http_client();
    // the node learns of the setting within its store poll
    eventually(T, || async {
        let resp = client.get(stack.relay_url("app", "/x")).send().await?;
        anyhow::ensure!(resp.status() == 401, "still {}", resp.status());
        Ok(())
    })
    .await?;
    let resp = client
        .post(format!("{}/oauth/token", stack.server.url()))
        .basic_auth("demo", Some(&client_secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "relay")])
        .send()
        .await?;
    let body: serde_json::Value = resp.json().await?;
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
    let reply = eventually(T, || async {
        let resp = client
            .get(stack.relay_url("app", "/x"))
            .bearer_auth(&token)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "{}", resp.status());
        Ok(resp.json::<EchoReply>().await?)
    })
    .await?;
    assert!(
        !reply.has_header("authorization"),
        "Ferry's own token reached the target: {:?}",
        reply.headers
    );
    // revoke the client's secret (not the connector's) behind the node's back, as another node's API would
    let client_secret_id = store
        .list_secrets(&tenant)
        .await?
        .into_iter()
        .map(|s| s.id)
        .find(|id| !connector_secrets.contains(id))
        .ok_or_else(|| anyhow::anyhow!("the client's secret is not in the store"))?;
    assert!(store.revoke_secret(&tenant, &client_secret_id).await?);
    let revoked = std::time::Instant::now();
    eventually(T, || async {
        let resp = client
            .get(stack.relay_url("app", "/x"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 401, "still {}", resp.status());
        Ok(())
    })
    .await?;
    assert!(
        revoked.elapsed() < Duration::from_secs(8),
        "{:?}",
        revoked.elapsed()
    );
    Ok(())
}

/// Defect 10: the data directory was created 0755 and `ferry.db` 0644, so any local user could read the token
/// signing key. Now 0700 and 0600, and a warning at start when an existing one is wider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _slot = light_slot().await;
    let dir = TempDir::new("ferry-harden-perms-")?;
    let data = dir.path().join("fresh");
    let mut server = FerryServer::start(
        BIN,
        ServerOptions {
            data_dir: Some(data.clone()),
            ..Default::default()
        },
    )
    .await?;
    // the store is opened after the listener is bound
    server.output().wait_stderr("node started", T).await?;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode(&data), 0o700, "data directory");
    for entry in std::fs::read_dir(&data)? {
        let path = entry?.path();
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is readable by others",
            path.display()
        );
    }
    assert!(!server.stderr_contains("is readable by other users"));
    // killed and reaped, so that its lock on the store is gone before the next node takes it
    server.kill().await?;
    // an existing directory that is too open is named at start
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
    let server = FerryServer::start(
        BIN,
        ServerOptions {
            data_dir: Some(data.clone()),
            ..Default::default()
        },
    )
    .await?;
    server
        .output()
        .wait_stderr("is readable by other users", T)
        .await?;
    Ok(())
}

/// A target that answers every request with 256 MiB of zeros, written as fast as it is taken.
async fn blasting_target() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let len: u64 = 256 << 20;
                let chunk = vec![0u8; 64 << 10];
                if s.write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
                )
                .await
                .is_err()
                {
                    return;
                }
                for _ in 0..(len / chunk.len() as u64) {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Defect 2: nine clients that never read a large download filled the tunnel's connection window and stalled
/// every other request of the tenant. A slow reader now costs only its own stream: with many of them stuck, a
/// normal request still answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cost_only_their_own_streams() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let big = blasting_target().await?;
    let (_echo, stack) =
        Stack::with_echo(BIN, |o| o.target("big", &format!("http://{big}"))).await?;
    let mut stuck = Vec::new();
    for i in 0..24 {
        // a small receive buffer: the client's kernel takes little, so the stream's window fills soon
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut c = RawConn::from_stream(socket.connect(stack.server.addr()).await?)?;
        c.send(format!("GET /relay/demo/big/{i} HTTP/1.1\r\nHost: ferry.test\r\n\r\n").as_bytes())
            .await?;
        stuck.push(c);
    }
    // for a while, as the stuck downloads fill whatever they can, normal requests answer quickly
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let client = http_client();
    let mut answered = 0;
    while std::time::Instant::now() < until {
        let started = std::time::Instant::now();
        // the whole response, body included: a head passes a full window (HEADERS are not flow-controlled), the
        // body's DATA frames do not
        let ping = async {
            let resp = client.get(stack.relay_url("app", "/ping")).send().await?;
            let status = resp.status();
            resp.bytes().await?;
            Ok::<_, reqwest::Error>(status)
        };
        let status = tokio::time::timeout(Duration::from_secs(3), ping)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "a normal request hung behind {} stuck downloads",
                    stuck.len()
                )
            })??;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        answered += 1;
    }
    assert!(answered > 3);
    Ok(())
}

/// Defect 4: gateway routes matched the path as received, so `/gw/x/../admin` got past a `respond 403` route for
/// `/gw/admin` and `/static/../secret.txt` left the route's prefix. Paths are normalised before matching, and the
/// normalised path is what goes upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_paths_are_normalised_before_matching() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-harden-normalise-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
name = "deny"
path = "/gw/admin"
respond = {{ status = 403, body = "denied\n" }}

[[gateway.routes]]
name = "gw"
path = "/gw"
upstream = "echo"

[[gateway.routes]]
name = "static"
path = "/static/"
strip_prefix = true
upstream = "echo"

[gateway.upstreams.echo]
servers = [{{ url = "{}" }}]
"#,
            echo.url()
        ),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let addr = server.addr();
    for path in [
        "/gw/x/../admin",
        "/gw/./admin",
        "/gw//admin",
        "/gw/%61dmin",
        "/gw/x/%2e%2e/admin",
        "/gw/x/.%2E/admin/",
        "/static/../gw/admin",
    ] {
        let resp = raw::request(addr, raw_get(path).as_bytes(), T).await?;
        assert_eq!(resp.status, 403, "{path}: {resp:?}");
    }
    // above the root: refused
    let resp = raw::request(addr, raw_get("/static/../../etc/passwd").as_bytes(), T).await?;
    resp.check_ferry_error(400, "path_escape")?;
    // leaving the prefix: another route (or none) answers, never the static one
    let resp = raw::request(addr, raw_get("/static/../secret.txt").as_bytes(), T).await?;
    resp.check_ferry_error(404, "not_found")?;
    // the normalised path goes upstream
    let resp = raw::request(addr, raw_get("/gw/a/./b/../c%7e?q=%2e%2e").as_bytes(), T).await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(reply.uri, "/gw/a/c~?q=%2e%2e");
    let resp = raw::request(addr, raw_get("/static/a/../b").as_bytes(), T).await?;
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(reply.uri, "/b");
    assert_eq!(echo.requests(), 2);
    Ok(())
}

/// The node link (`/_ferry/link`, docs/cluster.md) sits on the public listener: it runs a request for any tenant,
/// so it must take nothing but a node's own token (scope `node`, signed by the cluster's key). No token, a forged
/// one, and a connector's tunnel or relay token are refused with `401 unauthorized`, and nothing reaches a target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_link_takes_only_a_nodes_token() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    let client = http_client();
    let token_of = |scope: &'static str| {
        let client = client.clone();
        let url = format!("{}/oauth/token", stack.server.url());
        let form = [
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", stack.tenant.clone()),
            ("client_secret", stack.secret.clone()),
            ("scope", scope.to_owned()),
        ];
        async move {
            let reply: serde_json::Value =
                client.post(url).form(&form).send().await?.json().await?;
            reply["access_token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no token: {reply}"))
        }
    };
    let tunnel = token_of("tunnel").await?;
    let relay = token_of("relay").await?;
    // a node's scope cannot be asked for at the token endpoint
    let asked = client
        .post(format!("{}/oauth/token", stack.server.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", stack.tenant.as_str()),
            ("client_secret", stack.secret.as_str()),
            ("scope", "node"),
        ])
        .send()
        .await?;
    assert_eq!(asked.status(), 400, "scope=node at the token endpoint");
    let forged = "eyJhbGciOiJFZERTQSIsImtpZCI6IngifQ.eyJzdWIiOiJ4Iiwic2NvcGUiOiJub2RlIn0.AAAA";
    for credential in [
        None,
        Some(forged),
        Some(tunnel.as_str()),
        Some(relay.as_str()),
    ] {
        let mut req = client
            .post(format!("{}/_ferry/link", stack.server.url()))
            .header("ferry-link-tenant", stack.tenant.as_str())
            .header("ferry-target", "app")
            .header("ferry-link-authority", "app.internal")
            .header("ferry-link-path", "/from-the-link")
            .header("ferry-link-deadline", u64::MAX.to_string())
            .body("payload");
        if let Some(token) = credential {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status(), 401, "credential {credential:?}");
        assert_eq!(
            resp.headers()
                .get("ferry-error")
                .and_then(|v| v.to_str().ok()),
            Some("unauthorized")
        );
    }
    assert_eq!(
        echo.requests(),
        0,
        "a refused link request reached the target"
    );
    Ok(())
}

/// An over-long header block on HTTP/2 is answered `431`, never `REFUSED_STREAM` (which tells a client the request
/// was not processed and may be retried as it is): up to twice `max_header_size` by Ferry itself (its error body
/// and `ferry-error: headers_too_large`), beyond that by the HTTP/2 layer's own `431`; a block so large that it
/// can only be an attack ends the connection with `ENHANCE_YOUR_CALM`. Driven with curl (nghttp2), which sends
/// whatever it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_http2_header_blocks_get_431_not_refused_stream() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_MAX_HEADER_SIZE", "4096"),
    )
    .await?;
    let dir = TempDir::new("ferry-h2-431-")?;
    let curl = |len: usize| {
        let file = dir.path().join(format!("h-{len}.txt"));
        let url = format!("{}/healthz", server.url());
        async move {
            std::fs::write(&file, format!("X-Big: {}\n", "a".repeat(len)))?;
            let out = tokio::time::timeout(
                T,
                tokio::process::Command::new("curl")
                    .args(["-sv", "--http2-prior-knowledge", "--max-time", "10", "-H"])
                    .arg(format!("@{}", file.display()))
                    .args(["-o", "/dev/null", "-w", "code=%{http_code}", &url])
                    .kill_on_drop(true)
                    .output(),
            )
            .await??;
            Ok::<_, anyhow::Error>((
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    };
    let (out, _) = curl(3000).await?;
    assert_eq!(out, "code=200");
    // within twice the limit: Ferry's own answer
    let (out, err) = curl(6000).await?;
    assert_eq!(out, "code=431", "{err}");
    assert!(err.contains("ferry-error: headers_too_large"), "{err}");
    // beyond: the HTTP/2 layer's 431
    let (out, err) = curl(20_000).await?;
    assert_eq!(out, "code=431", "{err}");
    // far beyond: the connection ends, and still no stream is refused
    let (out, err) = curl(60_000).await?;
    assert!(
        !err.contains("REFUSED_STREAM") && !err.contains("error=7"),
        "{err}"
    );
    assert!(
        out == "code=431" || err.contains("GOAWAY, error=11"),
        "{out} {err}"
    );
    Ok(())
}
