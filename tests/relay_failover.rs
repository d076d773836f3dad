//! End to end, against the built `ferry` binary: several connectors of one tenant sharing requests, fail-over
//! when one dies (SIGKILL) or drains (SIGTERM), and the wait for a connector when none is online.

use crate::common::{named_body, NamedTarget, BIN};
use ferry_testkit::client::expect_ferry_error;
use ferry_testkit::raw::RawConn;
use ferry_testkit::{
    http_client, light_slot, within, Connector, ConnectorOptions, FerryServer, ServerOptions,
    TargetKind, TargetServer,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// A server, a tenant and `n` connectors, each serving target `app` with its own [`NamedTarget`] `c{i}`.
struct Fleet {
    server: FerryServer,
    connectors: Vec<Connector>,
    targets: Vec<NamedTarget>,
}

impl Fleet {
    async fn start(n: usize, server: ServerOptions) -> anyhow::Result<Self> {
        let server = FerryServer::start(BIN, server).await?;
        let secret = server.create_tenant("demo").await?;
        let mut targets = Vec::new();
        let mut connectors = Vec::new();
        for i in 0..n {
            let t = NamedTarget::start(&format!("c{i}")).await?;
            let c = Connector::start(
                BIN,
                server.url(),
                "demo",
                &secret,
                &[("app", &t.url())],
                ConnectorOptions::default(),
            )
            .await?;
            targets.push(t);
            connectors.push(c);
        }
        // every tunnel is attached on the server's side before the test starts
        server
            .output()
            .wait_stderr_count("tunnel attached", n, T)
            .await?;
        Ok(Self {
            server,
            connectors,
            targets,
        })
    }
}

/// What happened to one request of a load loop.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// 200 with the complete body of this target.
    Ok(String),
    /// 502 `connector_lost`.
    ConnectorLost,
    /// 200 whose body ended early (the connection was cut).
    Cut,
    /// Anything else (a wrong status or body, a hang): always a failure.
    Other(String),
}

#[derive(Debug, Clone)]
struct Record {
    id: u64,
    started: Instant,
    outcome: Outcome,
}

/// The query of request `id`: one in three waits before its head, one in three streams half its body then
/// waits, one in three answers at once.
fn load_query(id: u64, delay_ms: u64) -> String {
    match id % 3 {
        0 => format!("&head_ms={delay_ms}"),
        1 => format!("&body_ms={delay_ms}"),
        _ => String::new(),
    }
}

async fn one_request(client: &reqwest::Client, url: &str, id: u64) -> Outcome {
    let sent = async {
        let resp = match client.get(url).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Other(format!("send: {e:#}")),
        };
        let status = resp.status().as_u16();
        if status == 502
            && resp
                .headers()
                .get("ferry-error")
                .is_some_and(|v| v == "connector_lost")
        {
            return match expect_ferry_error(resp, 502, "connector_lost").await {
                Ok(_) => Outcome::ConnectorLost,
                Err(e) => Outcome::Other(format!("{e:#}")),
            };
        }
        if status != 200 {
            let headers = format!("{:?}", resp.headers());
            let body = resp.text().await.unwrap_or_default();
            return Outcome::Other(format!("status {status} {headers} {body:?}"));
        }
        let name = resp
            .headers()
            .get("x-target-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        match resp.bytes().await {
            Ok(body) if body.as_ref() == named_body(&name, id).as_bytes() => Outcome::Ok(name),
            Ok(body) => Outcome::Other(format!(
                "200 from {name:?} with a wrong body of {} bytes (a cut body must not look complete)",
                body.len()
            )),
            Err(_) => Outcome::Cut,
        }
    };
    match tokio::time::timeout(T, sent).await {
        Ok(o) => o,
        Err(_) => Outcome::Other(format!("no answer within {T:?} (hung)")),
    }
}

/// Run `total` requests with `workers` concurrent workers (bounded in count and by `deadline`); `on_done` is
/// told how many completed after each one.
async fn load(
    fleet_url: impl Fn(u64) -> String + Send + Sync + 'static,
    total: u64,
    workers: usize,
    deadline: Duration,
) -> (
    Arc<Mutex<Vec<Record>>>,
    Arc<AtomicUsize>,
    tokio::task::JoinSet<()>,
) {
    let client = ferry_testkit::client::client_builder()
        .pool_max_idle_per_host(workers)
        .build()
        .unwrap_or_else(|_| http_client());
    let next = Arc::new(AtomicU64::new(0));
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let fleet_url = Arc::new(fleet_url);
    let stop_at = Instant::now() + deadline;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, next, records, done, fleet_url) = (
            client.clone(),
            next.clone(),
            records.clone(),
            done.clone(),
            fleet_url.clone(),
        );
        set.spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::SeqCst);
                if id >= total || Instant::now() >= stop_at {
                    return;
                }
                let started = Instant::now();
                let outcome = one_request(&client, &fleet_url(id), id).await;
                if let Ok(mut r) = records.lock() {
                    r.push(Record {
                        id,
                        started,
                        outcome,
                    });
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    (records, done, set)
}

async fn wait_done(done: &AtomicUsize, n: usize, timeout: Duration) -> anyhow::Result<()> {
    ferry_testkit::eventually(timeout, || async {
        anyhow::ensure!(
            done.load(Ordering::SeqCst) >= n,
            "{} of {n} done",
            done.load(Ordering::SeqCst)
        );
        Ok(())
    })
    .await
}

async fn join_all(mut set: tokio::task::JoinSet<()>, timeout: Duration) -> anyhow::Result<()> {
    within(timeout, "load loop", async {
        while let Some(r) = set.join_next().await {
            r?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_connectors_of_one_tenant_share_requests_fairly() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let fleet = Fleet::start(3, ServerOptions::default()).await?;
    let base = fleet.server.url().to_owned();
    let (records, _done, set) = load(
        move |id| format!("{base}/relay/demo/app/r?id={id}&head_ms=10"),
        200,
        8,
        Duration::from_secs(60),
    )
    .await;
    join_all(set, Duration::from_secs(90)).await?;
    let records = records.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(records.len(), 200, "every request has an outcome");
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        match &r.outcome {
            Outcome::Ok(name) => *per.entry(name.clone()).or_default() += 1,
            other => panic!("request {} failed: {other:?}", r.id),
        }
    }
    eprintln!("share per connector: {per:?}");
    assert_eq!(per.len(), 3, "all three connectors got requests: {per:?}");
    for (name, n) in &per {
        // a fair share is 66.7; least-in-flight with round-robin ties should stay close to it
        assert!(
            *n >= 45,
            "connector {name} got only {n} of 200 requests: {per:?}"
        );
    }
    // the targets agree with what the clients saw
    for t in &fleet.targets {
        assert_eq!(
            t.seen().len(),
            per[&t.name],
            "target {} saw {:?}",
            t.name,
            t.seen().len()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_connector_under_load_loses_nothing_and_hangs_nothing() -> anyhow::Result<()>
{
    let _slot = light_slot().await;
    let mut fleet = Fleet::start(3, ServerOptions::default()).await?;
    let base = fleet.server.url().to_owned();
    const TOTAL: u64 = 240;
    let (records, done, set) = load(
        move |id| format!("{base}/relay/demo/app/r?id={id}{}", load_query(id, 400)),
        TOTAL,
        16,
        Duration::from_secs(60),
    )
    .await;
    wait_done(&done, 60, Duration::from_secs(30)).await?;
    let victim_seen_before = fleet.targets[0].seen().len();
    fleet.connectors[0].kill().await?; // SIGKILL and reaped
    let killed_at = Instant::now();
    // the server notices the dead tunnel
    fleet
        .server
        .output()
        .wait_for(T, "the killed connector's tunnel detached", |_, err| {
            err.lines()
                .any(|l| l.contains("tunnel lost") || l.contains("tunnel closed"))
                .then_some(())
        })
        .await?;
    let detached_at = Instant::now();
    join_all(set, Duration::from_secs(90)).await?;

    let records = records.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(
        records.len() as u64,
        TOTAL,
        "every request has an outcome (none lost)"
    );
    let ids: HashSet<u64> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids.len() as u64, TOTAL);
    let survivors_seen: HashSet<u64> = fleet.targets[1..].iter().flat_map(|t| t.seen()).collect();
    let victim_seen: HashSet<u64> = fleet.targets[0].seen().into_iter().collect();
    let mut failed = Vec::new();
    let mut problems = Vec::new();
    for r in &records {
        match &r.outcome {
            Outcome::Ok(name) => {
                if name == "c0" && r.started >= detached_at {
                    problems.push(format!(
                        "request {} started after the kill was answered by c0",
                        r.id
                    ));
                }
            }
            Outcome::ConnectorLost | Outcome::Cut => {
                failed.push((r.id, r.outcome.clone()));
                if r.started >= detached_at {
                    problems.push(format!(
                        "request {} started {:?} after the server detached the killed tunnel and failed: {:?}",
                        r.id,
                        r.started - detached_at,
                        r.outcome
                    ));
                }
                if survivors_seen.contains(&r.id) {
                    problems.push(format!(
                        "request {} reached a surviving connector's target yet failed: {:?}",
                        r.id, r.outcome
                    ));
                }
                if r.outcome == Outcome::Cut && !victim_seen.contains(&r.id) {
                    problems.push(format!(
                        "request {} was cut but never reached the killed target",
                        r.id
                    ));
                }
                if r.outcome == Outcome::Cut && r.id % 3 != 1 {
                    problems.push(format!(
                        "request {} was cut but its body was not streaming",
                        r.id
                    ));
                }
            }
            Outcome::Other(e) => problems.push(format!("request {}: {e}", r.id)),
        }
    }
    let between: Vec<&Record> = records
        .iter()
        .filter(|r| r.started >= killed_at && r.started < detached_at)
        .collect();
    eprintln!(
        "killed c0 after it had seen {victim_seen_before} requests; {} failed ({:?}); {} requests started \
         between the kill and the detach ({:?})",
        failed.len(),
        failed,
        between.len(),
        detached_at - killed_at
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        !failed.is_empty(),
        "with 16 concurrent slow requests over 3 connectors, some must have been in flight on the killed one"
    );
    let after: Vec<&Record> = records
        .iter()
        .filter(|r| r.started >= detached_at)
        .collect();
    assert!(
        after.len() >= 20,
        "the load went on after the kill: only {} requests after it",
        after.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_one_of_two_connectors_under_load_fails_no_request() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let mut fleet = Fleet::start(2, ServerOptions::default()).await?;
    let base = fleet.server.url().to_owned();
    const TOTAL: u64 = 180;
    let (records, done, set) = load(
        move |id| format!("{base}/relay/demo/app/r?id={id}{}", load_query(id, 300)),
        TOTAL,
        12,
        Duration::from_secs(60),
    )
    .await;
    wait_done(&done, 40, Duration::from_secs(30)).await?;
    fleet.connectors[0].sigterm()?;
    let termed_at = Instant::now();
    let status = fleet.connectors[0]
        .wait_exit(Duration::from_secs(20))
        .await?;
    let exited_at = Instant::now();
    join_all(set, Duration::from_secs(90)).await?;

    let records = records.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(records.len() as u64, TOTAL, "every request has an outcome");
    let failures: Vec<String> = records
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Ok(_)))
        .map(|r| {
            format!(
                "request {} (started {:?} after the SIGTERM): {:?}",
                r.id,
                r.started.saturating_duration_since(termed_at),
                r.outcome
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "a graceful drain must fail no request:\n{}",
        failures.join("\n")
    );
    assert!(
        status.success(),
        "the drained connector exits 0, got {status:?}"
    );
    let c0_after = records
        .iter()
        .filter(|r| r.started >= exited_at && r.outcome == Outcome::Ok("c0".into()))
        .count();
    assert_eq!(
        c0_after, 0,
        "no request started after the drain went to the drained connector"
    );
    let after = records.iter().filter(|r| r.started >= exited_at).count();
    assert!(
        after >= 20,
        "the load went on after the drain: only {after} requests after it"
    );
    assert!(
        fleet.connectors[0].stderr_contains("tunnel drained"),
        "{}",
        fleet.connectors[0].output().tail(20)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connector_online_is_503_no_connector_after_connector_wait() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_CONNECTOR_WAIT", "2s"),
    )
    .await?;
    server.create_tenant("demo").await?;
    let started = Instant::now();
    let resp = http_client()
        .get(format!("{}/relay/demo/app/x", server.url()))
        .timeout(T)
        .send()
        .await?;
    let took = started.elapsed();
    let err = expect_ferry_error(resp, 503, "no_connector").await?;
    assert!(
        took >= Duration::from_millis(1900),
        "answered after {took:?}, before the 2 s connector wait"
    );
    assert!(
        took < Duration::from_secs(5),
        "answered after {took:?}, long after the 2 s connector wait"
    );
    assert!(
        err.body.contains("demo"),
        "the message names the tenant: {:?}",
        err.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_coming_online_within_the_wait_gets_the_waiting_request() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_CONNECTOR_WAIT", "15s"),
    )
    .await?;
    let secret = server.create_tenant("demo").await?;
    // the request is on the wire before the connector process even starts
    let started = Instant::now();
    let mut conn = RawConn::connect(server.addr()).await?;
    conn.send(b"GET /relay/demo/app/waiting?x=1 HTTP/1.1\r\nHost: ferry.test\r\nConnection: close\r\n\r\n")
        .await?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default(),
    )
    .await?;
    let connected_after = started.elapsed();
    let resp = within(T, "the waiting request's answer", conn.read_response()).await??;
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "{resp:?}");
    let reply: ferry_testkit::EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(reply.uri, "/waiting?x=1");
    assert_eq!(echo.requests(), 1);
    assert!(
        took < Duration::from_secs(15),
        "answered after {took:?}, not within the wait; the connector was up after {connected_after:?}"
    );
    drop(connector);
    Ok(())
}
