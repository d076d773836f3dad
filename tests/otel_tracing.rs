//! End to end, against the built `ferry` binary: OpenTelemetry tracing. A node and a connector export spans over
//! OTLP/HTTP to a small receiver (`scripts/otlp-receiver/`, PyPI's `opentelemetry-proto`, installed into `.tools/`
//! on first use); a request with a known `traceparent` must come out as one trace: client → node → connector →
//! target, each span the parent of the next.

use ferry_testkit::{
    http_client, light_slot, EchoReply, FerryServer, ServerOptions, Stack, TargetKind, TargetServer,
};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");
const T: Duration = Duration::from_secs(20);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Python with venv, or `None` after saying `skipped: …` (an error under CI).
pub(crate) fn python() -> anyhow::Result<Option<String>> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import venv, ensurepip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(Some(python));
    }
    if std::env::var_os("CI").is_some() {
        anyhow::bail!("{python} with venv and ensurepip is required for the tracing test under CI");
    }
    eprintln!("skipped: {python} with venv is not available, the OTLP receiver cannot run");
    Ok(None)
}

/// The receiver, killed on drop, and the port it listens on.
pub(crate) async fn receiver(
    python: &str,
    out: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, u16)> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/otlp-receiver/run.sh"
    );
    let mut child = tokio::process::Command::new("bash")
        .arg(script)
        .arg(out)
        .env("PYTHON", python)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    // the first run installs opentelemetry-proto into .tools/ (seconds to a minute)
    let line = tokio::time::timeout(Duration::from_secs(240), lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("the OTLP receiver did not start within 4 minutes"))??
        .ok_or_else(|| anyhow::anyhow!("the OTLP receiver exited before listening"))?;
    let port = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected first line from the receiver: {line:?}"))?;
    Ok((child, port))
}

/// The spans of `trace_id` in `out`, once one of `service` `name` has come for each pair in `wanted`.
pub(crate) async fn spans_of(
    out: &std::path::Path,
    trace_id: &str,
    wanted: &[(&str, &str)],
) -> anyhow::Result<Vec<Value>> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let spans: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|s| s["trace_id"] == trace_id)
            .collect();
        let complete = wanted.iter().all(|(service, name)| {
            spans
                .iter()
                .any(|s| s["service"] == *service && s["name"] == *name)
        });
        if complete {
            return Ok(spans);
        }
        if started.elapsed() > T {
            anyhow::bail!("spans of trace {trace_id} after {T:?}: {spans:#?}\nall:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn find<'a>(spans: &'a [Value], service: &str, name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["service"] == service && s["name"] == name)
        .expect("found by spans_of")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_client_through_node_and_connector_to_target() -> anyhow::Result<()> {
    let Some(python) = python()? else {
        return Ok(());
    };
    let _slot = light_slot().await;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("spans.jsonl");
    let (_receiver, port) = receiver(&python, &out).await?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let log = "info,ferry_relay=debug,ferry_connector=debug";
    let (_echo, stack) = Stack::with_echo(BIN, |o| {
        o.server_env("FERRY_OTLP_ENDPOINT", &endpoint)
            .server_env("FERRY_OTLP_SERVICE_NAME", "ferry-node")
            .server_env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .server_env("RUST_LOG", log)
            .connector_env("FERRY_OTLP_ENDPOINT", &endpoint)
            .connector_env("FERRY_OTLP_SERVICE_NAME", "ferry-connector")
            .connector_env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .connector_env("RUST_LOG", log)
    })
    .await?;

    let request_id = "0123456789abcdef0123456789abcdef";
    let resp = http_client()
        .get(stack.relay_url("app", "/traced"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .header("x-request-id", request_id)
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let echo: EchoReply = resp.json().await?;
    let at_target = echo
        .header("traceparent")
        .ok_or_else(|| anyhow::anyhow!("the target got no traceparent: {:?}", echo.headers))?
        .to_owned();
    let parts: Vec<&str> = at_target.split('-').collect();
    assert_eq!(parts.len(), 4, "{at_target}");
    assert_eq!(
        parts[1], TRACE_ID,
        "the target's traceparent continues the client's trace"
    );
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the target's parent is the connector's span, not the client's"
    );

    let spans = spans_of(
        &out,
        TRACE_ID,
        &[
            ("ferry-node", "relay.request"),
            ("ferry-connector", "connector.request"),
        ],
    )
    .await?;
    let node = find(&spans, "ferry-node", "relay.request");
    let connector = find(&spans, "ferry-connector", "connector.request");
    assert_eq!(node["parent_span_id"], CLIENT_SPAN, "node ← client: {node}");
    assert_eq!(
        connector["parent_span_id"], node["span_id"],
        "connector ← node: {connector} {node}"
    );
    assert_eq!(parts[2], connector["span_id"], "target ← connector");
    assert_eq!(node["attributes"]["request_id"], request_id, "{node}");
    assert_eq!(node["attributes"]["tenant"], "demo", "{node}");
    assert_eq!(node["attributes"]["target"], "app", "{node}");
    assert_eq!(
        connector["attributes"]["request_id"], request_id,
        "{connector}"
    );

    // the request's log lines carry its request id and its trace id
    let line = format!("trace_id={TRACE_ID}");
    for (who, stderr) in [
        ("node", stack.server.output().stderr()),
        ("connector", stack.connector.output().stderr()),
    ] {
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(request_id)).collect();
        assert!(
            !lines.is_empty(),
            "{who}: no log line of the request:\n{stderr}"
        );
        for l in &lines {
            assert!(l.contains(&line), "{who}: a line without the trace id: {l}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_route_continues_the_trace_to_its_upstream() -> anyhow::Result<()> {
    let Some(python) = python()? else {
        return Ok(());
    };
    let _slot = light_slot().await;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("spans.jsonl");
    let (_receiver, port) = receiver(&python, &out).await?;
    let upstream = TargetServer::start(TargetKind::Echo).await?;
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[[gateway.routes]]\nname = \"web\"\nupstream = \"web\"\n\n[gateway.upstreams.web]\nservers = [{{ url = \"{}\" }}]\n",
            upstream.url()
        ),
    )?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .config(&config)
            .env("FERRY_OTLP_ENDPOINT", &format!("http://127.0.0.1:{port}"))
            .env("FERRY_OTLP_SERVICE_NAME", "ferry-gateway")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    )
    .await?;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let resp = http_client()
        .get(format!("{}/page", server.url()))
        .header("traceparent", format!("00-{trace_id}-{CLIENT_SPAN}-01"))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let echo: EchoReply = resp.json().await?;
    let at_upstream = echo.header("traceparent").unwrap_or_default().to_owned();
    let parts: Vec<&str> = at_upstream.split('-').collect();
    assert_eq!(parts.len(), 4, "{:?}", echo.headers);
    assert_eq!(parts[1], trace_id);
    let spans = spans_of(&out, trace_id, &[("ferry-gateway", "gateway.request")]).await?;
    let gateway = find(&spans, "ferry-gateway", "gateway.request");
    assert_eq!(gateway["parent_span_id"], CLIENT_SPAN, "{gateway}");
    assert_eq!(parts[2], gateway["span_id"], "upstream ← gateway");
    assert_eq!(gateway["attributes"]["route"], "web", "{gateway}");
    Ok(())
}
