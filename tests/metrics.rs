//! End to end: a real Prometheus (Debian's package, installed by `scripts/prometheus/ensure.sh`) scrapes a running
//! node's `/metrics` (admin listener) and a connector's metrics listener every second under a bounded load (a few
//! hundred relay requests, a few gateway requests, token requests, a refused tunnel); then every query of the
//! Grafana dashboard (`deploy/grafana/ferry.json`) must return data through Prometheus's HTTP API, and every
//! expression of the alert rules (`deploy/prometheus/alerts.yml`) must be accepted by it, with each metric it
//! names present. `promtool check rules` must pass on the rules.
//!
//! Without Prometheus (not root, no apt-get) the test prints `skipped: …`; with `CI` set it fails.

use crate::common::{free_port, write_file, TempDir, BIN};
use ferry_testkit::{
    http_client, Connector, ConnectorOptions, FerryServer, ServerOptions, TargetKind, TargetServer,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Prometheus cannot be had: an error under `CI`, else `Ok(None)` after printing `skipped: …`.
fn unavailable<T>(why: &str) -> anyhow::Result<Option<T>> {
    if std::env::var_os("CI").is_some() {
        anyhow::bail!("Prometheus is required when CI is set: {why}");
    }
    eprintln!("skipped: {why}");
    Ok(None)
}

/// The paths of `prometheus` and `promtool`, installed by the project's script when missing.
async fn ensure_prometheus() -> anyhow::Result<Option<(String, String)>> {
    let script = repo().join("scripts/prometheus/ensure.sh");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("bash")
            .arg(&script)
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let out = match out {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return unavailable(&format!("{}: {e}", script.display())),
        Err(_) => return unavailable("installing Prometheus took over 10 minutes"),
    };
    if !out.status.success() {
        return unavailable(&format!(
            "Prometheus unavailable: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    match (find("prometheus"), find("promtool")) {
        (Some(p), Some(t)) => Ok(Some((p, t))),
        _ => unavailable(&format!("ensure.sh printed no paths: {text}")),
    }
}

/// Every `expr` of the dashboard's panels.
fn dashboard_queries() -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/ferry.json"))?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&doc, &mut out);
    Ok(out)
}

/// Every `expr:` of the alert rules (one line each, as the file says).
fn alert_expressions() -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect())
}

/// The metric names an expression selects (words that are series names, not functions or labels).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    let mut in_braces = false;
    let mut in_quotes = false;
    let mut in_range = false;
    let mut flush = |word: &mut String, next: Option<char>| {
        let w = std::mem::take(word);
        let is_metric = (w.starts_with("ferry_") || w.starts_with("process_") || w == "up")
            && next != Some('(');
        if is_metric && !names.contains(&w) {
            names.push(w);
        }
    };
    let chars: Vec<char> = expr.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if in_quotes {
            if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '{' => in_braces = true,
            '}' => in_braces = false,
            '[' => in_range = true,
            ']' => in_range = false,
            _ => {}
        }
        if !in_braces && !in_range && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            let next = chars.get(i + 1).copied();
            if !next.is_some_and(|n| n.is_ascii_alphanumeric() || n == '_') {
                flush(&mut word, next);
            }
        } else {
            word.clear();
        }
    }
    names
}

/// `GET /api/v1/query?query=…`: the result vector, or the error Prometheus gave.
async fn query(base: &str, q: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let resp: serde_json::Value = http_client()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .timeout(T)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(resp["status"] == "success", "{q}: {resp}");
    Ok(resp["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"sum by (tenant) (rate(ferry_relay_requests_total{class="5xx",x="ferry_no"}[5m])) / ferry_a > 0"#
        ),
        vec!["ferry_relay_requests_total", "ferry_a"]
    );
    assert_eq!(metric_names(r#"up{job="ferry"} == 0"#), vec!["up"]);
    assert_eq!(
        metric_names("process_open_fds / process_max_fds > 0.8"),
        vec!["process_open_fds", "process_max_fds"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_every_dashboard_and_alert_query_answers() -> anyhow::Result<()> {
    let Some((prometheus, promtool)) = ensure_prometheus().await? else {
        return Ok(());
    };
    let started = Instant::now();
    let rules = repo().join("deploy/prometheus/alerts.yml");
    let checked = tokio::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .await?;
    anyhow::ensure!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // a node with a gateway route to an upstream, a tenant, and a connector with its metrics listener
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let dir = TempDir::new("ferry-metrics-")?;
    let config = write_file(
        dir.path(),
        "ferry.toml",
        &format!(
            r#"
[[gateway.routes]]
name = "web"
path = "/web"
upstream = "web"

[gateway.upstreams.web]
servers = [{{ url = "{}" }}]
"#,
            echo.url()
        ),
    )?;
    let server = FerryServer::start(BIN, ServerOptions::default().config(&config)).await?;
    let admin = server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
        .to_owned();
    let secret = server.create_tenant("demo").await?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .arg("--metrics-listen")
            .arg("127.0.0.1:0"),
    )
    .await?;
    let connector_metrics = connector
        .output()
        .wait_for(T, "the connector's metrics listener", |_, err| {
            err.lines()
                .find(|l| l.contains("metrics listener started"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_owned)
        })
        .await?;

    // Prometheus, scraping both every second
    let port = free_port()?;
    let prom_config = write_file(
        dir.path(),
        "prometheus.yml",
        &format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: ferry
    static_configs:
      - targets: ["{node}"]
  - job_name: ferry-connector
    static_configs:
      - targets: ["{connector}"]
"#,
            rules = rules.display(),
            node = admin.trim_start_matches("http://"),
            connector = connector_metrics,
        ),
    )?;
    let base = format!("http://127.0.0.1:{port}");
    let mut prom = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    // the load: relay requests, gateway requests, token requests (one refused) and a refused tunnel
    let client = http_client();
    for i in 0..300 {
        let r = client
            .get(format!("{}/relay/demo/app/load/{i}", server.url()))
            .timeout(T)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "relay request {i}: {}", r.status());
        r.bytes().await?;
    }
    for i in 0..5 {
        let r = client
            .get(format!("{}/web/page/{i}", server.url()))
            .timeout(T)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "gateway request {i}: {}", r.status());
    }
    let r = client
        .get(format!("{}/relay/demo/nothere/x", server.url()))
        .timeout(T)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_client_error(),
        "unknown target: {}",
        r.status()
    );
    let refused = client
        .post(format!("{}/oauth/token", server.url()))
        .basic_auth("demo", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .timeout(T)
        .send()
        .await?;
    anyhow::ensure!(
        refused.status() == 401,
        "wrong secret: {}",
        refused.status()
    );
    let tunnel = client
        .get(format!("{}/_ferry/tunnel", server.url()))
        .timeout(T)
        .send()
        .await?;
    anyhow::ensure!(
        tunnel.status() == 401,
        "tunnel without token: {}",
        tunnel.status()
    );

    // wait until Prometheus has both targets up and a few samples of the load
    let ready_by = Instant::now() + T;
    loop {
        let up = query(&base, "sum(up)").await.ok().and_then(|r| {
            r.first()
                .and_then(|v| v["value"][1].as_str().map(str::to_owned))
        });
        let scraped = query(
            &base,
            "count_over_time(ferry_relay_requests_total{class=\"2xx\"}[1m])",
        )
        .await
        .ok()
        .and_then(|r| {
            r.first()
                .and_then(|v| v["value"][1].as_str()?.parse::<f64>().ok())
        });
        if up.as_deref() == Some("2") && scraped.is_some_and(|n| n >= 3.0) {
            break;
        }
        if let Ok(Some(status)) = prom.try_wait() {
            anyhow::bail!("prometheus exited: {status}");
        }
        anyhow::ensure!(
            Instant::now() < ready_by,
            "Prometheus did not scrape both targets in time (up = {up:?}, samples = {scraped:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // the load shows in the node's own numbers
    let relayed = query(
        &base,
        r#"sum(ferry_relay_requests_total{tenant="demo",target="app",class="2xx"})"#,
    )
    .await?;
    let n: f64 = relayed
        .first()
        .and_then(|v| v["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0);
    anyhow::ensure!(n >= 300.0, "relayed 2xx counted: {n}");

    let mut failures = Vec::new();
    let dashboard = dashboard_queries()?;
    anyhow::ensure!(
        dashboard.len() >= 20,
        "dashboard queries: {}",
        dashboard.len()
    );
    for q in &dashboard {
        match query(&base, q).await {
            Ok(r) if !r.is_empty() => {}
            Ok(_) => failures.push(format!("dashboard query returned no data: {q}")),
            Err(e) => failures.push(format!("dashboard query failed: {e:#}")),
        }
    }
    let alerts = alert_expressions()?;
    anyhow::ensure!(alerts.len() >= 15, "alert expressions: {}", alerts.len());
    for e in &alerts {
        if let Err(err) = query(&base, e).await {
            failures.push(format!("alert expression refused: {err:#}"));
        }
        let names = metric_names(e);
        if names.is_empty() {
            failures.push(format!("no metric found in alert expression: {e}"));
        }
        for name in names {
            match query(&base, &format!("count({{__name__=\"{name}\"}})")).await {
                Ok(r) if !r.is_empty() => {}
                Ok(_) => failures.push(format!("{name} (in alert {e}) has no series")),
                Err(err) => failures.push(format!("{name}: {err:#}")),
            }
        }
    }
    let _ = prom.start_kill();
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}",
        failures.len(),
        dashboard.len() + alerts.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} dashboard queries and {} alert expressions answered in {:?}",
        dashboard.len(),
        alerts.len(),
        started.elapsed()
    );
    Ok(())
}
