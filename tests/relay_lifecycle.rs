//! End to end, against the built `ferry` binary: the life of a request (cancellation, the tenant cap,
//! expiration, the target connect timeout) and of the processes around it (reconnecting with backoff,
//! keep-alive on a dead connection, draining a connector and a node).

use crate::common::{
    delay_field, named_body, serve_on, write_file, HungAddr, NamedTarget, TcpProxy, BIN,
};
use ferry_testkit::client::expect_ferry_error;
use ferry_testkit::raw::RawConn;
use ferry_testkit::{
    http_client, light_slot, within, Connector, ConnectorOptions, FerryServer, ServerOptions,
    Stack, StackOptions, TargetKind, TargetServer,
};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn raw_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: ferry.test\r\n\r\n")
}

/// Read a streaming reqwest response to its end, bounded.
async fn read_all(mut resp: reqwest::Response, first: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut body = first;
    within(T, "the rest of the body", async {
        while let Some(chunk) = resp.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    Ok(body)
}

fn slow_body(chunks: usize) -> String {
    (0..chunks).map(|i| format!("chunk {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hanging_up_cancels_the_request_at_the_target() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let hang = TargetServer::start(TargetKind::Hang).await?;
    let stack = Stack::start(BIN, StackOptions::default().target("hang", &hang.url())).await?;
    let mut conn = RawConn::connect(stack.server.addr()).await?;
    conn.send(raw_get("/relay/demo/hang/x").as_bytes()).await?;
    hang.wait_requests(1, T).await?;
    assert_eq!(
        hang.closed(),
        0,
        "the target's connection is open while the client waits"
    );
    drop(conn);
    let hung_up = Instant::now();
    hang.wait_closed(1, Duration::from_secs(3))
        .await
        .map_err(|e| {
            e.context("the target should see its connection closed soon after the client hung up")
        })?;
    eprintln!(
        "target saw the close {:?} after the client hung up",
        hung_up.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_request_over_tenant_cap_is_429_tenant_busy_with_retry_after() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let hang = TargetServer::start(TargetKind::Hang).await?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("hang", &hang.url())
            .target("app", &echo.url())
            .server_env("FERRY_MAX_CONCURRENT_REQUESTS", "2"),
    )
    .await?;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut conn = RawConn::connect(stack.server.addr()).await?;
        conn.send(raw_get(&format!("/relay/demo/hang/held{i}")).as_bytes())
            .await?;
        held.push(conn);
    }
    hang.wait_requests(2, T).await?;
    let resp = http_client()
        .get(stack.relay_url("app", "/third"))
        .timeout(T)
        .send()
        .await?;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    expect_ferry_error(resp, 429, "tenant_busy").await?;
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "429 tenant_busy carries Retry-After: 1"
    );
    assert_eq!(
        echo.requests(),
        0,
        "the refused request is not queued or relayed"
    );
    // releasing the held requests frees the slots
    drop(held);
    hang.wait_closed(2, T).await?;
    ferry_testkit::eventually(Duration::from_secs(10), || async {
        let resp = http_client()
            .get(stack.relay_url("app", "/after"))
            .timeout(T)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_target_past_request_expiration_is_504_request_expired() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let slow = NamedTarget::start("slow").await?;
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("app", &slow.url())
            .server_env("FERRY_REQUEST_EXPIRATION", "1s"),
    )
    .await?;
    let started = Instant::now();
    let resp = http_client()
        .get(stack.relay_url("app", "/r?id=1&head_ms=4000"))
        .timeout(T)
        .send()
        .await?;
    let took = started.elapsed();
    expect_ferry_error(resp, 504, "request_expired").await?;
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}, before the 1 s expiration"
    );
    assert!(
        took < Duration::from_secs(3),
        "answered after {took:?}, long after the 1 s expiration"
    );
    // the expiration runs to the start of the response: a response that started in time may stream on
    let resp = http_client()
        .get(stack.relay_url("app", "/r?id=2&body_ms=2000"))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await?, named_body("slow", 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_connect_hanging_is_504_target_connect_timeout() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(hung) = HungAddr::new().await? else {
        eprintln!("SKIPPED: a connect to a full listen queue does not hang on this machine");
        return Ok(());
    };
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("app", &format!("http://{}", hung.addr))
            .connector_env("FERRY_CONNECT_TIMEOUT", "1s"),
    )
    .await?;
    let started = Instant::now();
    let resp = http_client()
        .get(stack.relay_url("app", "/x"))
        .timeout(T)
        .send()
        .await?;
    let took = started.elapsed();
    expect_ferry_error(resp, 504, "target_connect_timeout").await?;
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}, before the 1 s connect timeout"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_reconnects_with_backoff_after_server_restart() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let data = crate::common::TempDir::new("ferry-restart-")?;
    let mut server = FerryServer::start(
        BIN,
        ServerOptions {
            data_dir: Some(data.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    let addr = server.addr();
    let secret = server.create_tenant("demo").await?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .env("FERRY_RECONNECT_MIN_DELAY", "200ms")
            .env("FERRY_RECONNECT_MAX_DELAY", "1600ms"),
    )
    .await?;
    let url = format!("http://{addr}/relay/demo/app/x");
    assert_eq!(
        http_client().get(&url).timeout(T).send().await?.status(),
        200
    );

    server.kill().await?;
    let is_retry_line = |l: &&str| l.contains(" WARN ") && l.contains(" delay=");
    // six delays: the first after the loss, then one per failed attempt
    let delays = connector
        .output()
        .wait_for(Duration::from_secs(20), "six reconnect delays", |_, err| {
            let d: Vec<(String, std::time::Duration)> = err
                .lines()
                .filter(is_retry_line)
                .filter_map(|l| delay_field(l).map(|d| (l.to_owned(), d)))
                .collect();
            (d.len() >= 6).then_some(d)
        })
        .await?;
    let (min, max) = (Duration::from_millis(200), Duration::from_millis(1600));
    let eps = Duration::from_millis(2);
    let mut step = min;
    for (i, (line, d)) in delays.iter().take(6).enumerate() {
        assert!(
            *d + eps >= step / 2 && *d <= step + eps,
            "delay {i} is {d:?}, not in [{:?}, {step:?}] (min {min:?}, max {max:?}): {line}",
            step / 2
        );
        step = (step * 2).min(max);
    }
    assert!(
        delays[3].1 > delays[0].1,
        "delays grow: {:?}",
        delays.iter().map(|d| d.1).collect::<Vec<_>>()
    );
    assert!(!connector.stderr_contains("panicked"));

    // the node comes back on the same address with the same data directory
    let mut restarted = serve_on(addr, data.path(), &[]).await?;
    connector
        .wait_tunnels(2, Duration::from_secs(20))
        .await
        .map_err(|e| e.context("the connector should reconnect by itself"))?;
    restarted
        .logs
        .wait_for(T, "tunnel attached on the restarted node", |_, e| {
            e.contains("tunnel attached").then_some(())
        })
        .await?;
    let resp = http_client().get(&url).timeout(T).send().await?;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    restarted.sigterm()?;
    assert!(restarted.wait_exit(T).await?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_detects_a_blackholed_tunnel_and_connector_reconnects() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let dir = crate::common::TempDir::new("ferry-ka-")?;
    let server_conf = write_file(
        dir.path(),
        "server.toml",
        "version = 1\n[server.tunnel]\nkeepalive_interval = \"1s\"\nkeepalive_timeout = \"1s\"\n",
    )?;
    let connector_conf = write_file(
        dir.path(),
        "connector.toml",
        "version = 1\n[connector]\nkeepalive_interval = \"1s\"\nkeepalive_timeout = \"1s\"\n",
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&server_conf)).await?;
    let secret = server.create_tenant("demo").await?;
    let proxy = TcpProxy::start(server.addr()).await?;
    let connector = Connector::start(
        BIN,
        &proxy.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .config(&connector_conf)
            .env("FERRY_CONNECT_TIMEOUT", "2s")
            .env("FERRY_RECONNECT_MIN_DELAY", "100ms")
            .env("FERRY_RECONNECT_MAX_DELAY", "1s"),
    )
    .await?;
    server.output().wait_stderr("tunnel attached", T).await?;
    let url = format!("{}/relay/demo/app/x", server.url());
    assert_eq!(
        http_client().get(&url).timeout(T).send().await?.status(),
        200
    );

    proxy.blackhole();
    let blackholed = Instant::now();
    connector
        .output()
        .wait_stderr("tunnel lost", Duration::from_secs(6))
        .await
        .map_err(|e| e.context("the connector's keep-alive should notice the dead tunnel"))?;
    let connector_noticed = blackholed.elapsed();
    server
        .output()
        .wait_for(
            Duration::from_secs(6),
            "the server detaches the tunnel",
            |_, err| {
                err.lines()
                    .any(|l| l.contains("tunnel lost") || l.contains("tunnel closed"))
                    .then_some(())
            },
        )
        .await
        .map_err(|e| e.context("the server's keep-alive should notice the dead tunnel"))?;
    let server_noticed = blackholed.elapsed();
    eprintln!("connector noticed after {connector_noticed:?}, server after {server_noticed:?}");
    assert!(!connector.stderr_contains("panicked"));

    proxy.forward();
    connector
        .wait_tunnels(2, Duration::from_secs(20))
        .await
        .map_err(|e| e.context("once the proxy forwards again the connector should reconnect"))?;
    server
        .output()
        .wait_stderr_count("tunnel attached", 2, T)
        .await?;
    let resp = http_client().get(&url).timeout(T).send().await?;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_sigterm_lets_an_inflight_slow_request_finish_and_exits_0() -> anyhow::Result<()>
{
    let _slot = light_slot().await;
    let slow = TargetServer::start(TargetKind::Slow {
        chunks: 8,
        delay: Duration::from_millis(250),
    })
    .await?;
    let mut stack = Stack::start(BIN, StackOptions::default().target("slow", &slow.url())).await?;
    let mut resp = http_client()
        .get(stack.relay_url("slow", "/s"))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let first = within(T, "first chunk", resp.chunk())
        .await??
        .unwrap_or_default()
        .to_vec();
    assert!(!first.is_empty());
    stack.connector.sigterm()?;
    let body = read_all(resp, first).await?;
    assert_eq!(
        String::from_utf8_lossy(&body),
        slow_body(8),
        "the in-flight response completes"
    );
    let status = stack.connector.wait_exit(Duration::from_secs(10)).await?;
    assert!(
        status.success(),
        "the connector exits 0 after draining, got {status:?}"
    );
    assert!(
        stack.connector.stderr_contains("tunnel drained"),
        "{}",
        stack.connector.output().tail(20)
    );
    Ok(())
}

/// A connector with several tunnels (`--tunnels 3`, each on a thread of its own): all three attach, the node
/// spreads requests over them (three slow requests at once take one tunnel each: the fewest in flight wins),
/// and SIGTERM drains every tunnel, each letting its request finish, before the connector exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_with_several_tunnels_spreads_requests_and_drains_every_tunnel(
) -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let slow = TargetServer::start(TargetKind::Slow {
        chunks: 8,
        delay: Duration::from_millis(250),
    })
    .await?;
    let mut options = StackOptions::default().target("slow", &slow.url());
    options.connector = options.connector.tunnels(3);
    let mut stack = Stack::start(BIN, options).await?;
    stack
        .connector
        .wait_tunnels(3, Duration::from_secs(15))
        .await?;
    stack
        .server
        .output()
        .wait_stderr_count("tunnel attached", 3, Duration::from_secs(5))
        .await?;
    let client = http_client();
    let mut responses = Vec::new();
    for i in 0..3 {
        let mut resp = client
            .get(stack.relay_url("slow", &format!("/s/{i}")))
            .timeout(T)
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        let first = within(T, "first chunk", resp.chunk())
            .await??
            .unwrap_or_default()
            .to_vec();
        responses.push((resp, first));
    }
    stack.connector.sigterm()?;
    for (resp, first) in responses {
        let body = read_all(resp, first).await?;
        assert_eq!(String::from_utf8_lossy(&body), slow_body(8));
    }
    let status = stack.connector.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "{status:?}");
    let log = stack.connector.output().stderr();
    assert_eq!(
        log.matches("tunnel drained").count(),
        3,
        "each tunnel drained with a request in flight:\n{}",
        stack.connector.output().tail(30)
    );
    assert!(
        log.contains("tunnels=3") && log.matches("connector stopped").count() == 1,
        "{}",
        stack.connector.output().tail(30)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigterm_lets_an_inflight_slow_request_finish_is_never_ready_and_exits_0(
) -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let slow = TargetServer::start(TargetKind::Slow {
        chunks: 12,
        delay: Duration::from_millis(250),
    })
    .await?;
    let mut stack = Stack::start(BIN, StackOptions::default().target("slow", &slow.url())).await?;
    let base = stack.server.url().to_owned();
    // an HTTP/2 connection opened before the drain, to ask /readyz on an open connection during it
    let h2 = ferry_testkit::client::client_builder()
        .http2_prior_knowledge()
        .build()?;
    assert_eq!(
        h2.get(format!("{base}/readyz"))
            .timeout(T)
            .send()
            .await?
            .status(),
        200
    );
    assert_eq!(
        http_client()
            .get(format!("{base}/readyz"))
            .timeout(T)
            .send()
            .await?
            .status(),
        200
    );

    let mut resp = http_client()
        .get(stack.relay_url("slow", "/s"))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let first = within(T, "first chunk", resp.chunk())
        .await??
        .unwrap_or_default()
        .to_vec();
    stack.server.sigterm()?;
    stack
        .server
        .output()
        .wait_stderr("shutdown requested", T)
        .await?;
    // during the drain the node never says it is ready: /readyz answers 503 where it still answers at all
    let mut observed = Vec::new();
    for (what, client) in [
        ("open h2 connection", &h2),
        ("new connection", &http_client()),
    ] {
        let r = client
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                observed.push(format!("{what}: {status}"));
                assert_eq!(status, 503, "/readyz on a {what} during the drain");
            }
            Err(e) => observed.push(format!("{what}: no answer ({e})")),
        }
    }
    eprintln!("/readyz during the drain: {observed:?}");
    let drain_still_running = stack
        .server
        .wait_exit(Duration::from_millis(1))
        .await
        .is_err();
    assert!(
        drain_still_running,
        "the node must not exit while a request is in flight"
    );
    let body = read_all(resp, first).await?;
    assert_eq!(
        String::from_utf8_lossy(&body),
        slow_body(12),
        "the in-flight response completes"
    );
    let status = stack.server.wait_exit(Duration::from_secs(15)).await?;
    assert!(
        status.success(),
        "the node exits 0 after draining, got {status:?}"
    );
    Ok(())
}
