//! End to end, against the built `ferry` binary: bodies stream through the relay (both ways, with bounded
//! memory), chunking, Content-Length and trailers are kept, and one tunnel carries many requests at once.

use ferry_testkit::raw::{self, RawConn};
use ferry_testkit::{
    heavy_slot, http_client, light_slot, pattern_sha256, peak_rss_kib, rss_kib, within, EchoReply,
    PatternStream, Sha256Hex, Stack, StackOptions, TargetKind, TargetServer,
};
use futures_util::StreamExt;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(20);
const GIB: u64 = 1024 * 1024 * 1024;
/// How much a process's peak RSS may grow over its idle RSS while 2 GiB go through it.
const MAX_GROWTH_KIB: u64 = 64 * 1024;
const BIG_TIMEOUT: Duration = Duration::from_secs(180);

async fn stack_with(name: &str, kind: TargetKind) -> anyhow::Result<(TargetServer, Stack)> {
    let target = TargetServer::start(kind).await?;
    let stack = Stack::start(BIN, StackOptions::default().target(name, &target.url())).await?;
    Ok((target, stack))
}

struct Idle {
    server: u64,
    connector: u64,
}

/// Idle RSS after one small request went through (so lazily built state exists).
async fn idle_rss(stack: &Stack, warmup_url: &str) -> anyhow::Result<Idle> {
    let resp = http_client()
        .post(warmup_url)
        .body("warm")
        .timeout(T)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "warm-up: {}", resp.status());
    resp.bytes().await?;
    Ok(Idle {
        server: rss_kib(stack.server.pid())?,
        connector: rss_kib(stack.connector.pid())?,
    })
}

fn check_peaks(stack: &Stack, idle: &Idle) -> anyhow::Result<()> {
    let server_peak = peak_rss_kib(stack.server.pid())?;
    let connector_peak = peak_rss_kib(stack.connector.pid())?;
    eprintln!(
        "rss (KiB): server idle {} peak {}, connector idle {} peak {}",
        idle.server, server_peak, idle.connector, connector_peak
    );
    assert!(
        server_peak.saturating_sub(idle.server) < MAX_GROWTH_KIB,
        "server peak RSS {server_peak} KiB is more than 64 MiB above its idle {} KiB",
        idle.server
    );
    assert!(
        connector_peak.saturating_sub(idle.connector) < MAX_GROWTH_KIB,
        "connector peak RSS {connector_peak} KiB is more than 64 MiB above its idle {} KiB",
        idle.connector
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_2_gib_streams_intact_with_bounded_memory() -> anyhow::Result<()> {
    let _slot = heavy_slot().await;
    let len = 2 * GIB;
    let seed = 11;
    let expected = tokio::task::spawn_blocking(move || pattern_sha256(seed, len));
    let (_sink, stack) = stack_with("sink", TargetKind::Sink).await?;
    let url = stack.relay_url("sink", "/upload");
    let idle = idle_rss(&stack, &url).await?;

    let body =
        reqwest::Body::wrap_stream(PatternStream::new(seed, len).into_stream::<std::io::Error>());
    let started = Instant::now();
    let reply: serde_json::Value = within(BIG_TIMEOUT, "2 GiB upload", async {
        let resp = http_client()
            .post(&url)
            .header("content-length", len.to_string())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "upload status {}", resp.status());
        Ok(resp.json().await?)
    })
    .await??;
    eprintln!("2 GiB upload took {:?}", started.elapsed());
    assert_eq!(reply["len"], len, "{reply}");
    assert_eq!(reply["sha256"], expected.await?, "{reply}");
    check_peaks(&stack, &idle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_2_gib_streams_intact_with_bounded_memory() -> anyhow::Result<()> {
    let _slot = heavy_slot().await;
    let len = 2 * GIB;
    let seed = 12;
    let expected = tokio::task::spawn_blocking(move || pattern_sha256(seed, len));
    let download = TargetServer::start(TargetKind::Download {
        len,
        seed,
        content_length: false,
    })
    .await?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("big", &download.url())
            .target("echo", &echo.url()),
    )
    .await?;
    let idle = idle_rss(&stack, &stack.relay_url("echo", "/warm")).await?;

    let started = Instant::now();
    let hash = within(BIG_TIMEOUT, "2 GiB download", async {
        let resp = http_client()
            .get(stack.relay_url("big", "/file"))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "download status {}", resp.status());
        let mut hash = Sha256Hex::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            hash.update(&chunk?);
        }
        Ok(hash)
    })
    .await??;
    eprintln!("2 GiB download took {:?}", started.elapsed());
    assert_eq!(hash.len(), len);
    assert_eq!(hash.finish(), expected.await?);
    check_peaks(&stack, &idle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_first_chunk_arrives_long_before_the_last() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let delay = Duration::from_millis(500);
    let chunks = 5;
    let (_slow, stack) = stack_with("slow", TargetKind::Slow { chunks, delay }).await?;
    let started = Instant::now();
    let resp = http_client()
        .get(stack.relay_url("slow", "/"))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut received = Vec::new();
    let mut first_at = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        first_at.get_or_insert_with(|| started.elapsed());
        received.extend_from_slice(&chunk);
    }
    let last_at = started.elapsed();
    let first_at = first_at.ok_or_else(|| anyhow::anyhow!("no body"))?;
    let want: String = (0..chunks).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&received), want);
    // the last chunk is sent 2 s after the first: the first must not wait for it
    assert!(
        first_at < Duration::from_millis(1000),
        "first chunk after {first_at:?}"
    );
    assert!(
        last_at >= delay * (chunks as u32 - 1),
        "whole body after {last_at:?}"
    );
    assert!(
        last_at - first_at >= Duration::from_millis(1500),
        "first {first_at:?} last {last_at:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_stays_chunked() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (len, seed) = (300_001, 3);
    let (_t, stack) = stack_with(
        "dl",
        TargetKind::Download {
            len,
            seed,
            content_length: false,
        },
    )
    .await?;
    let req = format!(
        "GET /relay/demo/dl/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        stack.server.addr()
    );
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    assert_eq!(resp.status, 200);
    assert!(
        resp.chunked,
        "response should stay chunked: {:?}",
        resp.headers
    );
    assert_eq!(resp.header("content-length"), None, "{:?}", resp.headers);
    let mut h = Sha256Hex::new();
    h.update(&resp.body);
    assert_eq!(h.len(), len);
    assert_eq!(h.finish(), pattern_sha256(seed, len));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_response_keeps_its_exact_content_length() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (len, seed) = (123_457, 4);
    let (_t, stack) = stack_with(
        "dl",
        TargetKind::Download {
            len,
            seed,
            content_length: true,
        },
    )
    .await?;
    let req = format!(
        "GET /relay/demo/dl/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        stack.server.addr()
    );
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    assert_eq!(resp.status, 200);
    assert!(
        !resp.chunked,
        "response should not be chunked: {:?}",
        resp.headers
    );
    assert_eq!(resp.header_all("content-length"), [len.to_string()]);
    let mut h = Sha256Hex::new();
    h.update(&resp.body);
    assert_eq!(h.finish(), pattern_sha256(seed, len));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_reach_the_client() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_t, stack) = stack_with(
        "tr",
        TargetKind::Trailers {
            chunks: vec!["hello ".into(), "world".into()],
            trailers: vec![("x-checksum".into(), "abc123".into())],
        },
    )
    .await?;
    let req = format!(
        "GET /relay/demo/tr/ HTTP/1.1\r\nHost: {}\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        stack.server.addr()
    );
    let resp = raw::request(stack.server.addr(), req.as_bytes(), T).await?;
    assert_eq!(resp.status, 200);
    assert!(resp.chunked, "{:?}", resp.headers);
    assert_eq!(resp.body_text(), "hello world");
    assert_eq!(
        resp.trailer("x-checksum"),
        Some("abc123"),
        "headers {:?} trailers {:?}",
        resp.headers,
        resp.trailers
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_requests_share_one_tunnel() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = stack_with("app", TargetKind::Echo).await?;
    let n = 300;
    let client = http_client();
    let results = within(Duration::from_secs(90), "300 concurrent requests", async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let client = client.clone();
                let url = stack.relay_url("app", &format!("/req/{i}"));
                tokio::spawn(async move {
                    let resp = client
                        .post(url)
                        .body(format!("body {i}"))
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status() == 200, "request {i}: {}", resp.status());
                    let echo: EchoReply = resp.json().await?;
                    anyhow::ensure!(
                        echo.uri == format!("/req/{i}"),
                        "request {i} got {}",
                        echo.uri
                    );
                    Ok(())
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await);
        }
        results
    })
    .await?;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {n} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(echo.requests(), n);
    assert_eq!(
        stack
            .connector
            .output()
            .stderr_count(ferry_testkit::process::TUNNEL_ESTABLISHED),
        1,
        "all requests must have used the one tunnel"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_does_not_stall_fast_ones() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let slow = TargetServer::start(TargetKind::Slow {
        chunks: 10,
        delay: Duration::from_millis(400),
    })
    .await?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let stack = Stack::start(
        BIN,
        StackOptions::default()
            .target("slow", &slow.url())
            .target("fast", &echo.url()),
    )
    .await?;
    // the slow one: started, first chunk in, the rest still to come (3.6 s)
    let mut conn = RawConn::connect(stack.server.addr()).await?;
    conn.send(b"GET /relay/demo/slow/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let head = within(T, "slow head", conn.read_head()).await??;
    assert_eq!(head.status, 200);
    let first = within(T, "slow first chunk", conn.read_chunk()).await??;
    assert_eq!(first.as_deref(), Some(&b"chunk 0\n"[..]));
    let slow_done = tokio::spawn(async move {
        let mut n = 1;
        while let Some(_chunk) = conn.read_chunk().await? {
            n += 1;
        }
        anyhow::Ok((n, Instant::now()))
    });

    // fast ones, while it is in progress
    let client = http_client();
    let started = Instant::now();
    for i in 0..20 {
        let resp = client
            .get(stack.relay_url("fast", &format!("/f{i}")))
            .timeout(T)
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        resp.bytes().await?;
    }
    let fast_done = Instant::now();
    let fast_took = fast_done - started;
    let (chunks, slow_end) = within(T, "slow body", slow_done).await???;
    assert_eq!(chunks, 10);
    assert!(
        fast_done < slow_end,
        "fast requests finished only after the slow one"
    );
    assert!(
        fast_took < Duration::from_secs(2),
        "20 fast requests took {fast_took:?} beside a slow one"
    );
    Ok(())
}
