//! The raw-socket probe suite: what a hostile or careless client sends, byte for byte, against the built `ferry`
//! binary, and what comes back. Each case states what the RFC asks (or nginx does) and what Ferry does; a case
//! fails when Ferry does anything else. Areas: framing and smuggling, header limits and counts, paths and
//! encodings, upgrades, `Host`, hop-by-hop and forwarding headers, slow and idle clients.
//!
//! One node (with a connector serving an echo target) per area, every case on a connection of its own.

use ferry_testkit::raw::RawConn;
use ferry_testkit::{light_slot, within, EchoReply, Stack};
use std::net::SocketAddr;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(20);

/// What a case expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status, and then the connection closed.
    StatusThenClose(u16),
    /// Ferry's error: this status and `ferry-error` code.
    Ferry(u16, &'static str),
    /// 200 from the echo target, whose reply the check judges.
    Echo(fn(&EchoReply) -> Result<(), String>),
}

/// One probe.
struct Case {
    name: &'static str,
    /// What the RFC asks or nginx does, and so what Ferry does.
    reference: &'static str,
    request: String,
    expect: Expect,
}

fn case(name: &'static str, reference: &'static str, request: &str, expect: Expect) -> Case {
    Case {
        name,
        reference,
        request: request.to_owned(),
        expect,
    }
}

/// Run every case on a fresh connection; collect every failure, so that one run names them all.
async fn run(addr: SocketAddr, cases: &[Case]) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for c in cases {
        if let Err(e) = run_one(addr, c).await {
            failures.push(format!(
                "{}: {e:#}\n    reference: {}\n    request: {:?}",
                c.name, c.reference, c.request
            ));
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} probes failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

async fn run_one(addr: SocketAddr, c: &Case) -> anyhow::Result<()> {
    let mut conn = RawConn::connect(addr).await?;
    conn.send(c.request.as_bytes()).await?;
    match c.expect {
        Expect::StatusThenClose(status) => {
            let head = within(T, "response", conn.read_head()).await??;
            anyhow::ensure!(head.status == status, "got {} ({head:?})", head.status);
            anyhow::ensure!(conn.closed_within(T).await, "the connection stayed open");
        }
        Expect::Ferry(status, code) => {
            let resp = within(T, "response", conn.read_response()).await??;
            resp.check_ferry_error(status, code)?;
        }
        Expect::Echo(check) => {
            let resp = within(T, "response", conn.read_response()).await??;
            anyhow::ensure!(
                resp.status == 200,
                "got {} ({})",
                resp.status,
                resp.body_text()
            );
            let reply: EchoReply = serde_json::from_slice(&resp.body)?;
            check(&reply).map_err(|e| anyhow::anyhow!("{e}; the target saw {reply:?}"))?;
        }
    }
    Ok(())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_framing_and_smuggling() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    let p = "POST /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\n";
    let cases = [
        case(
            "CL.TE",
            "RFC 9112 §6.1: reject, or frame by TE and close; nginx ≥ 1.23: 400 and close. Ferry: 400 and close",
            &format!("{p}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /relay/demo/app/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
            Expect::StatusThenClose(400),
        ),
        case(
            "TE.CL",
            "as CL.TE, with the fields the other way round",
            &format!("{p}Transfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /relay/demo/app/smuggled HTTP/1.1\r\n\r\n"),
            Expect::StatusThenClose(400),
        ),
        case(
            "differing Content-Length values",
            "RFC 9112 §6.3: an unrecoverable error, 400 and close; nginx: 400",
            &format!("{p}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            Expect::StatusThenClose(400),
        ),
        case(
            "Content-Length list",
            "RFC 9110 §8.6 allows `5, 5` to be read as 5 or refused; nginx refuses duplicates: 400. Ferry: 400",
            &format!("{p}Content-Length: 5, 5\r\n\r\nhello"),
            Expect::StatusThenClose(400),
        ),
        case(
            "Transfer-Encoding not ending in chunked",
            "RFC 9112 §6.3: 400 and close; nginx: 501. Ferry: 400",
            &format!("{p}Transfer-Encoding: gzip\r\n\r\nabc"),
            Expect::StatusThenClose(400),
        ),
        case(
            "whitespace before the colon",
            "RFC 9112 §5.1: MUST be rejected with 400; nginx: 400",
            &format!("{p}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
            Expect::StatusThenClose(400),
        ),
        case(
            "obsolete line folding",
            "RFC 9112 §5.2: reject with 400 (or unfold); nginx: 400. Ferry: 400",
            &format!("{p}X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
            Expect::StatusThenClose(400),
        ),
        case(
            "Transfer-Encoding in HTTP/1.0",
            "RFC 9112 §6.1: a 1.0 message with TE is faulty, close after it; nginx ≥ 1.23: 400",
            "POST /relay/demo/app/x HTTP/1.0\r\nHost: ferry.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Expect::StatusThenClose(400),
        ),
        case(
            "chunk size overflow",
            "a size beyond 64 bits is malformed framing: nginx 400. Ferry: 400 bad_request (the client's fault)",
            &format!("{p}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"),
            Expect::Ferry(400, "bad_request"),
        ),
        case(
            "invalid chunk size",
            "malformed chunked framing from the client: nginx 400. Ferry: 400 bad_request, never 502",
            &format!("{p}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"),
            Expect::Ferry(400, "bad_request"),
        ),
        case(
            "a request line that is not HTTP",
            "RFC 9112 §3: 400; nginx: 400",
            "THIS IS NOT HTTP\r\n\r\n",
            Expect::StatusThenClose(400),
        ),
        case(
            "a request target that is not origin-form",
            "RFC 9112 §3.2: 400; nginx: 400",
            "GET relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\n\r\n",
            Expect::StatusThenClose(400),
        ),
        case(
            "a well-framed chunked body with trailers",
            "RFC 9112 §7.1: accepted; the body arrives whole",
            &format!("{p}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
            Expect::Echo(|r| {
                (r.body_len == 5).then_some(()).ok_or_else(|| format!("body of {} bytes", r.body_len))
            }),
        ),
    ];
    run(stack.server.addr(), &cases).await?;
    // Nothing smuggled ever reached the target: only the well-framed upload, and the two uploads whose bodies
    // broke off (they may have started towards the target before the client's bad chunk arrived; they are cut).
    let reached = echo.requests();
    anyhow::ensure!(reached <= 3, "{reached} requests reached the target");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_header_limits_host_and_forwarding() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo, stack) =
        Stack::with_echo(BIN, |o| o.server_env("FERRY_MAX_HEADER_SIZE", "4096")).await?;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        case(
            "a head above max_header_size",
            "nginx: 400 (large_client_header_buffers); RFC 6585 §5: 431. Ferry: 431 headers_too_large",
            &format!("GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(6000)),
            Expect::Ferry(431, "headers_too_large"),
        ),
        case(
            "more than 100 header fields",
            "the parser's field count limit: 431 and close (nginx has none beyond the size)",
            &format!("GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\n{many}\r\n"),
            Expect::StatusThenClose(431),
        ),
        case(
            "a header name with a space",
            "RFC 9110 §5.1: a field name is a token; 400",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nBad Name: x\r\n\r\n",
            Expect::StatusThenClose(400),
        ),
        case(
            "a NUL in a header value",
            "RFC 9110 §5.5: NUL is never allowed; 400",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nX-A: a\0b\r\n\r\n",
            Expect::StatusThenClose(400),
        ),
        case(
            "two Host fields",
            "RFC 9112 §3.2: 400; nginx: 400. Ferry: 400 bad_request",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            Expect::Ferry(400, "bad_request"),
        ),
        case(
            "no Host in HTTP/1.1",
            "RFC 9112 §3.2: 400; nginx: 400. Ferry: 400 bad_request",
            "GET /relay/demo/app/x HTTP/1.1\r\nConnection: close\r\n\r\n",
            Expect::Ferry(400, "bad_request"),
        ),
        case(
            "no Host in HTTP/1.0",
            "RFC 9112 §3.2 requires Host in 1.1 only; nginx serves it",
            "GET /relay/demo/app/x HTTP/1.0\r\n\r\n",
            Expect::Echo(|_| Ok(())),
        ),
        case(
            "forged forwarding headers",
            "nginx with `proxy_set_header X-Forwarded-For $remote_addr`: replaced from untrusted clients; so here",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.9\r\n\r\n",
            Expect::Echo(|r| {
                let ok = r.header_all("x-forwarded-for") == ["127.0.0.1"]
                    && r.header_all("forwarded") == ["for=127.0.0.1;proto=http;host=\"ferry.test\""]
                    && r.header("x-forwarded-host") == Some("ferry.test")
                    && r.header("x-forwarded-proto") == Some("http")
                    && !r.has_header("x-real-ip");
                ok.then_some(()).ok_or_else(|| "forwarding headers not replaced".to_owned())
            }),
        ),
        case(
            "headers named by Connection",
            "RFC 9110 §7.6.1: a proxy removes the fields Connection names; nginx does",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic eA==\r\n\r\n",
            Expect::Echo(|r| {
                (!r.has_header("x-secret") && !r.has_header("keep-alive") && !r.has_header("proxy-authorization"))
                    .then_some(())
                    .ok_or_else(|| "hop-by-hop headers reached the target".to_owned())
            }),
        ),
        case(
            "Ferry's own control headers from a client",
            "a client must not speak for the node: every ferry-* header is removed",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\nFerry-Target: other\r\nFerry-Control: settings\r\nFerry-Host-Mode: client\r\n\r\n",
            Expect::Echo(|r| {
                (!r.headers.iter().any(|(n, _)| n.to_ascii_lowercase().starts_with("ferry-")))
                    .then_some(())
                    .ok_or_else(|| "a ferry-* header reached the target".to_owned())
            }),
        ),
    ];
    run(stack.server.addr(), &cases).await?;
    anyhow::ensure!(
        echo.requests() == 4,
        "{} requests reached the target",
        echo.requests()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_paths_and_upgrades() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    let escape = "nginx normalises and would pass ..%2f on decoded; Ferry forwards byte for byte, so refuses what a \
                  decoding target would resolve out of its base: 400 path_escape";
    let mut cases: Vec<Case> = [
        "/relay/demo/app/../x",
        "/relay/demo/app/a/%2e%2e/x",
        "/relay/demo/app/.%2E/x",
        "/relay/demo/app/files/..%2fsecret",
        "/relay/demo/app/files/%2e%2e%2fsecret",
        "/relay/demo/app/files/..%5Csecret",
        "/relay/demo/app/files/..;/secret",
        "/relay/demo/app/a%2Fb",
    ]
    .into_iter()
    .map(|p| {
        case(
            "an escaping path",
            escape,
            &get(p),
            Expect::Ferry(400, "path_escape"),
        )
    })
    .collect();
    cases.extend([
        case(
            "an encoded NUL",
            "C targets truncate at NUL; nginx passes it. Ferry: 400 bad_request",
            &get("/relay/demo/app/a%00b"),
            Expect::Ferry(400, "bad_request"),
        ),
        case(
            "harmless encodings",
            "RFC 3986 §2.1: forwarded untouched, the query never judged",
            &get("/relay/demo/app/a%20b/..x/...?next=..%2f"),
            Expect::Echo(|r| {
                (r.uri == "/a%20b/..x/...?next=..%2f")
                    .then_some(())
                    .ok_or_else(|| format!("target saw {}", r.uri))
            }),
        ),
        case(
            "Upgrade: h2c",
            "RFC 9113 §3.1 removed the h2c upgrade; RFC 9110 §7.8 lets a server ignore Upgrade; nginx passes no \
             Upgrade unless told. Ferry: relayed as a plain request without Upgrade",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
            Expect::Echo(|r| {
                (!r.has_header("upgrade") && !r.has_header("http2-settings"))
                    .then_some(())
                    .ok_or_else(|| "the target was asked to upgrade".to_owned())
            }),
        ),
        case(
            "Upgrade to an unlisted protocol",
            "only websocket upgrades by default; the request goes on as an ordinary one",
            "GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n",
            Expect::Echo(|r| {
                (!r.has_header("upgrade")).then_some(()).ok_or_else(|| "Upgrade passed".to_owned())
            }),
        ),
    ]);
    run(stack.server.addr(), &cases).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_slow_and_idle_clients() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) = Stack::with_echo(BIN, |o| {
        o.server_env("FERRY_HEADER_READ_TIMEOUT", "2s")
            .server_env("FERRY_KEEPALIVE_TIMEOUT", "3s")
    })
    .await?;
    let addr = stack.server.addr();
    let bound = Duration::from_secs(8);
    // nginx's client_header_timeout: a head sent a byte at a time is cut at the deadline even though bytes keep
    // coming (slowloris)
    let slowloris = async {
        let mut c = RawConn::connect(addr).await?;
        let started = std::time::Instant::now();
        let head = b"GET /relay/demo/app/x HTTP/1.1\r\nHost: ferry.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if c.send(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > bound {
                anyhow::bail!("still open after {bound:?} of a byte every 100 ms");
            }
        }
        anyhow::ensure!(c.closed_within(bound).await, "slowloris connection kept");
        anyhow::ensure!(
            started.elapsed() < bound,
            "closed after {:?}",
            started.elapsed()
        );
        Ok(())
    };
    // a connection that says nothing: closed after header_read_timeout (nginx: client_header_timeout)
    let silent = async {
        let mut c = RawConn::connect(addr).await?;
        anyhow::ensure!(c.closed_within(bound).await, "silent connection kept");
        Ok(())
    };
    // an idle keep-alive connection: closed after keepalive_timeout (nginx: keepalive_timeout)
    let idle = async {
        let mut c = RawConn::connect(addr).await?;
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let r = within(T, "healthz", c.read_response()).await??;
        anyhow::ensure!(r.status == 200);
        let started = std::time::Instant::now();
        anyhow::ensure!(c.closed_within(bound).await, "idle keep-alive kept");
        anyhow::ensure!(
            started.elapsed() >= Duration::from_secs(2),
            "closed too early: {:?}",
            started.elapsed()
        );
        Ok(())
    };
    // an HTTP/2 connection after its preface, without a stream: closed (GOAWAY) after keepalive_timeout
    let h2_idle = async {
        let mut c = RawConn::connect(addr).await?;
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await?;
        anyhow::ensure!(c.closed_within(bound).await, "idle HTTP/2 connection kept");
        Ok(())
    };
    let (a, b, c, d) = tokio::join!(slowloris, silent, idle, h2_idle);
    a.map_err(|e| e.context("slowloris"))?;
    b.map_err(|e| e.context("silent"))?;
    c.map_err(|e| e.context("idle keep-alive"))?;
    d.map_err(|e| e.context("idle HTTP/2"))?;
    Ok(())
}
