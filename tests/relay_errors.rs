//! End to end, against the built `ferry` binary: every error the relay answers, with its status, its
//! `ferry-error` code, an `x-request-id` and the one-line body.

use ferry_testkit::client::expect_ferry_error;
use ferry_testkit::raw::{self, RawConn};
use ferry_testkit::{
    http_client, light_slot, within, FerryServer, ServerOptions, Stack, StackOptions, TargetKind,
    TargetServer,
};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(20);

async fn echo_stack(
    opts: impl FnOnce(StackOptions) -> StackOptions,
) -> anyhow::Result<(TargetServer, Stack)> {
    Stack::with_echo(BIN, opts).await
}

async fn get(url: &str) -> anyhow::Result<reqwest::Response> {
    Ok(http_client().get(url).timeout(T).send().await?)
}

fn raw_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_is_404_unknown_tenant() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) = echo_stack(|o| o).await?;
    let resp = get(&format!("{}/relay/nosuch/app/x", stack.server.url())).await?;
    expect_ferry_error(resp, 404, "unknown_tenant").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target_is_404_unknown_target() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = echo_stack(|o| o).await?;
    let resp = get(&stack.relay_url("other", "/x")).await?;
    expect_ferry_error(resp, 404, "unknown_target").await?;
    assert_eq!(echo.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_not_found() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let resp = get(&format!("{}/no/such/route", server.url())).await?;
    expect_ferry_error(resp, 404, "not_found").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_the_token_endpoint_is_405_method_not_allowed_with_allow() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let resp = get(&format!("{}/oauth/token", server.url())).await?;
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    expect_ferry_error(resp, 405, "method_not_allowed").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_400_bad_request() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = echo_stack(|o| o).await?;
    for path in [
        "/relay/Demo/app/x",
        "/relay/demo/App/x",
        "/relay/de.mo/app/x",
        "/relay/demo/a.pp/x",
        "/relay/demo/-app/x",
        "/relay/demo",
        "/relay/",
    ] {
        let resp = raw::request(stack.server.addr(), raw_get(path).as_bytes(), T).await?;
        resp.check_ferry_error(400, "bad_request")
            .map_err(|e| e.context(format!("GET {path}")))?;
    }
    assert_eq!(echo.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_400_path_escape() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = echo_stack(|o| o).await?;
    for path in [
        "/relay/demo/app/../x",
        "/relay/demo/app/a/../../x",
        "/relay/demo/app/%2e%2e/x",
        "/relay/demo/app/%2E%2E/x",
        "/relay/demo/app/.%2e/x",
        "/relay/demo/app/a/..",
        "/relay/demo/app/./x",
    ] {
        let resp = raw::request(stack.server.addr(), raw_get(path).as_bytes(), T).await?;
        resp.check_ferry_error(400, "path_escape")
            .map_err(|e| e.context(format!("GET {path}")))?;
    }
    assert_eq!(echo.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connector_online_is_503_no_connector_after_the_wait() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_CONNECTOR_WAIT", "1s"),
    )
    .await?;
    server.create_tenant("demo").await?;
    let started = Instant::now();
    let resp = get(&format!("{}/relay/demo/app/x", server.url())).await?;
    let took = started.elapsed();
    expect_ferry_error(resp, 503, "no_connector").await?;
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}, before the 1 s connector wait"
    );
    assert!(
        took < Duration::from_secs(4),
        "answered after {took:?}, long after the 1 s connector wait"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_is_502_target_unreachable() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let stack = Stack::start(
        BIN,
        StackOptions::default().target("down", &format!("http://127.0.0.1:{closed_port}")),
    )
    .await?;
    let resp = get(&stack.relay_url("down", "/x")).await?;
    expect_ferry_error(resp, 502, "target_unreachable").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_not_answering_is_504_target_timeout_and_cancelled_at_target() -> anyhow::Result<()>
{
    let _slot = light_slot().await;
    let hang = TargetServer::start(TargetKind::Hang).await?;
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("hang", &hang.url())
            .connector_env("FERRY_RESPONSE_TIMEOUT", "1s"),
    )
    .await?;
    let started = Instant::now();
    let resp = get(&stack.relay_url("hang", "/x")).await?;
    let took = started.elapsed();
    expect_ferry_error(resp, 504, "target_timeout").await?;
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}, before the 1 s response timeout"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(hang.requests(), 1);
    // the connector gave up on the request: the target sees its connection closed
    hang.wait_closed(1, Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_with_content_length_above_max_is_413() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = echo_stack(|o| o.server_env("FERRY_MAX_BODY_SIZE", "1000")).await?;
    let client = http_client();
    let resp = client
        .post(stack.relay_url("app", "/up"))
        .body(vec![b'x'; 1000])
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "a body of exactly the limit passes");
    let resp = client
        .post(stack.relay_url("app", "/up"))
        .body(vec![b'x'; 2000])
        .timeout(T)
        .send()
        .await?;
    expect_ferry_error(resp, 413, "payload_too_large").await?;
    assert_eq!(
        echo.requests(),
        1,
        "the oversized request must not reach the target"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_above_max_is_cut_with_413() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) = echo_stack(|o| o.server_env("FERRY_MAX_BODY_SIZE", "1000")).await?;
    let mut req = String::from(
        "POST /relay/demo/app/up HTTP/1.1\r\nHost: ferry.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..6 {
        req.push_str(&format!("1f4\r\n{}\r\n", "y".repeat(500)));
    }
    req.push_str("0\r\n\r\n");
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    resp.check_ferry_error(413, "payload_too_large")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = echo_stack(|o| o.server_env("FERRY_MAX_HEADER_SIZE", "4096")).await?;
    let req = format!(
        "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "z".repeat(8000)
    );
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    resp.check_ferry_error(431, "headers_too_large")?;
    assert_eq!(echo.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_is_400() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = echo_stack(|o| o).await?;
    for line in [
        "THIS IS NOT HTTP\r\n\r\n",
        "GET /relay/demo/app/x HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(stack.server.addr()).await?;
        conn.send(line.as_bytes()).await?;
        let head = within(T, "response to a malformed request", conn.read_head()).await??;
        assert_eq!(head.status, 400, "{line:?}: {head:?}");
        assert!(
            conn.closed_within(T).await,
            "{line:?}: connection should be closed"
        );
    }
    assert_eq!(echo.requests(), 0);
    Ok(())
}

/// Far above the limit (more than twice `max_header_size` plus 32 KiB), the HTTP parser refuses the head itself,
/// before Ferry's handler runs: a bare 431 and a closed connection (documented in docs/operations.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_far_above_max_are_431_from_the_parser() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = echo_stack(|o| o.server_env("FERRY_MAX_HEADER_SIZE", "4096")).await?;
    let req = format!(
        "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "z".repeat(100_000)
    );
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_eq!(echo.requests(), 0);
    Ok(())
}

/// Outside the relay path too, oversized headers are 431 in Ferry's format, not a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_on_any_path_are_431() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_MAX_HEADER_SIZE", "4096"),
    )
    .await?;
    let req = format!(
        "GET /nowhere HTTP/1.1\r\nHost: ferry.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "z".repeat(6000)
    );
    let resp = raw::request(server.addr(), req.as_bytes(), T).await?;
    resp.check_ferry_error(431, "headers_too_large")?;
    Ok(())
}

/// Clients that give up the moment they have asked (a load tool stopping, a burst of cancelled requests) make
/// the node reset streams that the connector has not taken up yet. That must cost those requests only: the tunnel
/// stays up and the next request goes through it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_abandoned_requests_keeps_the_tunnel() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let hang = TargetServer::start(TargetKind::Hang).await?;
    let (_echo, stack) = echo_stack(|o| o.target("hang", &hang.url())).await?;
    let addr = stack.server.addr();
    let path = stack
        .relay_url("hang", "/x")
        .split_once("/relay/")
        .map(|(_, rest)| format!("/relay/{rest}"))
        .unwrap_or_default();
    for _ in 0..5 {
        let mut conns = Vec::new();
        for _ in 0..200 {
            let mut c = tokio::net::TcpStream::connect(addr).await?;
            tokio::io::AsyncWriteExt::write_all(&mut c, raw_get(&path).as_bytes()).await?;
            conns.push(c);
        }
        // all of them hang up at once
        drop(conns);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let resp = get(&stack.relay_url("app", "/after")).await?;
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !stack.connector.stderr_contains("tunnel lost"),
        "the tunnel broke: {}",
        stack.connector.output().tail(20)
    );
    Ok(())
}
