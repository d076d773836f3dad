//! The soak test: steady mixed traffic (small, large, uploads, streaming, WebSocket) through a node while its
//! tenant's connectors are killed and restarted at random. Bounded in time: `FERRY_SOAK_SECONDS` (default 60, as
//! in CI; set e.g. 600 for a longer run). It asserts that
//!
//! - every request completes or gets a defined error (Ferry's error with a `ferry-error` code, or a cut
//!   connection once a response had started, docs/operations.md);
//! - no request is executed twice after acceptance (the target counts request ids);
//! - no response is silently truncated (every complete body is checked by length and SHA-256 or content);
//! - the node's open files and memory come back to their baseline after the load.
//!
//! Across a cluster, with relay nodes and the broker killed as well: `tests/cluster.rs`,
//! `nats_soak_while_nodes_and_the_broker_die`.

use bytes::Bytes;
use ferry_testkit::{
    heavy_slot, http_client, pattern_sha256, process::ConnectorOptions, rss_kib, Connector,
    FerryServer, PatternStream, ServerOptions, Sha256Hex, TargetKind, TargetServer,
};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const LARGE: u64 = 2 << 20;
const UPLOAD: usize = 512 << 10;
const STREAM_CHUNKS: usize = 8;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The soak's target: counts every request id it executes, answers by path.
#[derive(Default)]
struct Executed(Mutex<HashMap<String, u32>>);

async fn soak_target(executed: Arc<Executed>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let executed = executed.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let executed = executed.clone();
                    async move { Ok::<_, Infallible>(answer(req, &executed).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(req: Request<Incoming>, executed: &Executed) -> Response<Body> {
    let id = req
        .headers()
        .get("x-soak-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if let Ok(mut m) = executed.0.lock() {
        *m.entry(id.clone()).or_default() += 1;
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/large" => {
            let stream = PatternStream::new(7, LARGE).into_stream::<Infallible>();
            let mut r =
                Response::new(StreamBody::new(stream.map(|c| c.map(Frame::data))).boxed_unsync());
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(LARGE));
            r
        }
        "/upload" => {
            let mut sha = Sha256Hex::new();
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            sha.update(d);
                        }
                    }
                    Err(_) => {
                        return Response::new(
                            Full::new(Bytes::from_static(b"broken")).boxed_unsync(),
                        )
                    }
                }
            }
            let text = format!("{} {}", sha.len(), sha.finish());
            Response::new(Full::new(Bytes::from(text)).boxed_unsync())
        }
        "/stream" => {
            let chunks = futures_util::stream::iter(0..STREAM_CHUNKS).then(|i| async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk {i}\n"))))
            });
            Response::new(StreamBody::new(chunks).boxed_unsync())
        }
        _ => Response::new(Full::new(Bytes::from(format!("ok {id}"))).boxed_unsync()),
    }
}

/// How requests ended.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Ferry's errors with a code (no_connector, connector_lost, …).
    ferry_errors: AtomicU64,
    /// Connections cut (a response cut after it started; a request the client's tunnel lost).
    cut: AtomicU64,
    /// Anything else: a failure of the test.
    bad: Mutex<Vec<String>>,
}

impl Tally {
    fn bad(&self, what: String) {
        if let Ok(mut b) = self.bad.lock() {
            b.push(what);
        }
    }
}

/// One request of a kind chosen by `n`; classified into `tally`.
async fn one(client: &reqwest::Client, base: &str, ws: &str, n: u64, tally: &Tally) {
    let id = format!("{:032x}", (u128::from(n) << 64) | u128::from(rand_u64()));
    let kind = n % 5;
    let outcome: Result<(), Failure> = async {
        match kind {
            0 => {
                let resp =
                    send(client.get(format!("{base}/small")).header("x-soak-id", &id)).await?;
                let text = resp.text().await.map_err(|_| Failure::Cut)?;
                check(text == format!("ok {id}"), || {
                    format!("small body {text:?}")
                })
            }
            1 => {
                let resp =
                    send(client.get(format!("{base}/large")).header("x-soak-id", &id)).await?;
                let mut sha = Sha256Hex::new();
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    sha.update(&chunk.map_err(|_| Failure::Cut)?);
                }
                let len = sha.len();
                let got = sha.finish();
                check(len == LARGE && got == *large_sha(), || {
                    format!("large body of {len} bytes, sha {got}: silently truncated or corrupt")
                })
            }
            2 => {
                let data = vec![(n % 251) as u8; UPLOAD];
                let mut sha = Sha256Hex::new();
                sha.update(&data);
                let want = format!("{} {}", UPLOAD, sha.finish());
                let resp = send(
                    client
                        .post(format!("{base}/upload"))
                        .header("x-soak-id", &id)
                        .body(data),
                )
                .await?;
                let text = resp.text().await.map_err(|_| Failure::Cut)?;
                check(text == want, || {
                    format!("upload answer {text:?}, wanted {want:?}")
                })
            }
            3 => {
                let resp = send(
                    client
                        .get(format!("{base}/stream"))
                        .header("x-soak-id", &id),
                )
                .await?;
                let text = resp.text().await.map_err(|_| Failure::Cut)?;
                let want: String = (0..STREAM_CHUNKS).map(|i| format!("chunk {i}\n")).collect();
                check(text == want, || {
                    format!("stream body {text:?}: silently truncated")
                })
            }
            _ => websocket(ws, n).await,
        }
    }
    .await;
    match outcome {
        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
        Err(Failure::Ferry) => tally.ferry_errors.fetch_add(1, Ordering::Relaxed),
        Err(Failure::Cut) => tally.cut.fetch_add(1, Ordering::Relaxed),
        Err(Failure::Bad(what)) => {
            tally.bad(format!("request {id} (kind {kind}): {what}"));
            0
        }
    };
}

enum Failure {
    /// Ferry's error with a code: defined.
    Ferry,
    /// The connection was cut: defined once a response started (and for a request whose tunnel broke).
    Cut,
    /// Not defined: the test fails.
    Bad(String),
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), Failure> {
    if ok {
        Ok(())
    } else {
        Err(Failure::Bad(what()))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
    let resp = req
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                Failure::Bad(format!("timed out: {e}"))
            } else {
                Failure::Cut
            }
        })?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let code = resp
        .headers()
        .get("ferry-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match code.as_deref() {
        Some(
            "no_connector" | "connector_lost" | "request_expired" | "target_unreachable"
            | "draining" | "tenant_busy",
        ) => Err(Failure::Ferry),
        _ => Err(Failure::Bad(format!(
            "status {} with ferry-error {code:?}",
            resp.status()
        ))),
    }
}

async fn websocket(url: &str, n: u64) -> Result<(), Failure> {
    let connect = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(url),
    )
    .await;
    let mut ws = match connect {
        Err(_) => return Err(Failure::Bad("websocket connect timed out".into())),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            return match resp.headers().get("ferry-error") {
                Some(_) => Err(Failure::Ferry),
                None => Err(Failure::Bad(format!(
                    "websocket refused with {}",
                    resp.status()
                ))),
            }
        }
        Ok(Err(_)) => return Err(Failure::Cut),
        Ok(Ok((ws, _))) => ws,
    };
    for i in 0..5 {
        let text = format!("message {n}.{i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .map_err(|_| Failure::Cut)?;
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(m))) => {
                let got = m.into_text().map_err(|_| Failure::Bad("not text".into()))?;
                check(got.as_str() == text, || {
                    format!("websocket echoed {got:?} for {text:?}")
                })?;
            }
            Ok(_) => return Err(Failure::Cut),
            Err(_) => return Err(Failure::Bad("websocket echo timed out".into())),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// The SHA-256 of the large body, worked out once.
fn large_sha() -> &'static String {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| pattern_sha256(7, LARGE))
}

fn rand_u64() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let x = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_mixed_traffic_while_connectors_die() -> anyhow::Result<()> {
    let _slot = heavy_slot().await;
    let seconds: u64 = std::env::var("FERRY_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let executed = Arc::new(Executed::default());
    let app = soak_target(executed.clone()).await?;
    let ws_target = TargetServer::start(TargetKind::WebSocketEcho).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_CONNECTOR_WAIT", "3s"),
    )
    .await?;
    let secret = server.create_tenant("soak").await?;
    let app_url = format!("http://{app}");
    let ws_url = ws_target.url();
    let start_connector = || {
        let (server_url, secret, app_url, ws_url) = (
            server.url().to_owned(),
            secret.clone(),
            app_url.clone(),
            ws_url.clone(),
        );
        async move {
            let opts = ConnectorOptions::default().env("FERRY_RECONNECT_MIN_DELAY", "100ms");
            Connector::start(
                BIN,
                &server_url,
                "soak",
                &secret,
                &[("app", app_url.as_str()), ("ws", ws_url.as_str())],
                opts,
            )
            .await
        }
    };
    let mut connectors = vec![start_connector().await?, start_connector().await?];
    let base = format!("{}/relay/soak/app", server.url());
    let ws = format!("{}/relay/soak/ws/", server.url().replacen("http", "ws", 1));
    let client = http_client();

    // warm up, then the baseline
    for n in 0..20 {
        let tally = Tally::default();
        one(&client, &base, &ws, n, &tally).await;
    }
    let pid = server.pid();
    let base_files = open_files(pid);
    let base_rss = rss_kib(pid)?;

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(100));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (client, base, ws, tally, counter) = (
            client.clone(),
            base.clone(),
            ws.clone(),
            tally.clone(),
            counter.clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                one(&client, &base, &ws, n, &tally).await;
            }
        }));
    }
    // chaos: every 1.5 to 4 s a connector is killed (SIGKILL or SIGTERM) and started again 0.2 to 1.5 s later
    let mut kills = 0;
    while Instant::now() + Duration::from_secs(5) < deadline {
        tokio::time::sleep(Duration::from_millis(1500 + rand_u64() % 2500)).await;
        let i = (rand_u64() % connectors.len() as u64) as usize;
        let mut victim = connectors.swap_remove(i);
        if rand_u64().is_multiple_of(2) {
            victim.kill().await?;
        } else {
            victim.sigterm()?;
            let _ = victim.wait_exit(Duration::from_secs(10)).await;
        }
        drop(victim);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(200 + rand_u64() % 1300)).await;
        connectors.push(start_connector().await?);
    }
    for w in workers {
        w.await?;
    }
    let bad = tally.bad.lock().map(|b| b.clone()).unwrap_or_default();
    let (ok, errors, cut) = (
        tally.ok.load(Ordering::Relaxed),
        tally.ferry_errors.load(Ordering::Relaxed),
        tally.cut.load(Ordering::Relaxed),
    );
    eprintln!("soak: {seconds}s, {kills} connector kills, {ok} ok, {errors} ferry errors, {cut} cut, {} bad", bad.len());
    anyhow::ensure!(bad.is_empty(), "undefined outcomes:\n{}", bad.join("\n"));
    anyhow::ensure!(ok > 100, "only {ok} requests succeeded");
    anyhow::ensure!(kills >= 1 || seconds < 10, "no connector was killed");
    let twice: Vec<(String, u32)> = executed
        .0
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, n)| (k.clone(), *n))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        twice.is_empty(),
        "requests executed more than once: {twice:?}"
    );

    // back to the baseline once the clients' kept-alive connections are gone: open files (bounded poll), memory
    // within a margin
    drop(client);
    let settled = ferry_testkit::eventually(Duration::from_secs(30), || async {
        let now = open_files(pid);
        anyhow::ensure!(
            now <= base_files + 8,
            "{now} open files, baseline {base_files}"
        );
        Ok(now)
    })
    .await?;
    let rss = rss_kib(pid)?;
    eprintln!("soak: open files {base_files} -> {settled}, rss {base_rss} KiB -> {rss} KiB");
    anyhow::ensure!(
        rss <= base_rss + 96 * 1024,
        "rss grew from {base_rss} KiB to {rss} KiB"
    );
    Ok(())
}
