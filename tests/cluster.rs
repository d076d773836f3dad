//! The cluster: `ferry serve` processes with different roles on one PostgreSQL database, joined by the real NATS
//! (`FERRY_TEST_NATS_URL`, default `nats://127.0.0.1:4222`) or RabbitMQ (`FERRY_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`); every scenario runs once on each bus. Without a broker or PostgreSQL
//! a test prints `skipped: …`; with `CI` set it fails.
//!
//! Each test is a cluster of its own (`FERRY_CLUSTER_NAME`), so tests on one broker never hear each other. Tests
//! that restart a broker hold that broker's lock for their whole run, and every other test on the same broker
//! takes the lock shared, so that no test sees a restart it did not ask for.

use crate::common::{named_body, NamedTarget, PgDatabase, BIN};
use ferry_testkit::process::{create_tenant_in, run_ferry};
use ferry_testkit::{
    http_client, pattern_sha256, relay_url, Connector, ConnectorOptions, FerryServer,
    ServerOptions, TargetKind, TargetServer,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::RwLock;

/// The buses a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Nats,
    Amqp,
}

static NATS_LOCK: RwLock<()> = RwLock::const_new(());
static AMQP_LOCK: RwLock<()> = RwLock::const_new(());

impl Bus {
    fn url(self) -> String {
        match self {
            Bus::Nats => std::env::var("FERRY_TEST_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned()),
            Bus::Amqp => std::env::var("FERRY_TEST_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
        }
    }

    fn lock(self) -> &'static RwLock<()> {
        match self {
            Bus::Nats => &NATS_LOCK,
            Bus::Amqp => &AMQP_LOCK,
        }
    }

    /// `host:port` of the broker's URL.
    fn addr(url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_owned()
    }

    /// Whether the broker answers; `Err` under CI when it does not.
    async fn available(self) -> anyhow::Result<bool> {
        let addr = Self::addr(&self.url());
        let reachable = matches!(
            tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&addr)).await,
            Ok(Ok(_))
        );
        if reachable {
            return Ok(true);
        }
        if std::env::var_os("CI").is_some() {
            anyhow::bail!("{self:?} is required under CI at {addr}");
        }
        eprintln!("skipped: {self:?} not reachable at {addr}");
        Ok(false)
    }
}

/// A cluster under test: a fresh database, a bus, and the nodes started so far.
pub struct Rig {
    pub db: PgDatabase,
    pub transport: String,
    /// Extra environment for every node (timings).
    pub env: Vec<(String, String)>,
}

impl Rig {
    /// `None` when PostgreSQL or the broker is missing outside CI.
    pub async fn new(bus: Bus) -> anyhow::Result<Option<Self>> {
        if !bus.available().await? {
            return Ok(None);
        }
        let Some(db) = PgDatabase::create().await? else {
            return Ok(None);
        };
        Ok(Some(Self {
            db,
            transport: bus.url(),
            env: vec![
                // a cluster of its own on the shared broker: tests running at once never hear each other
                ("FERRY_CLUSTER_NAME".into(), format!("t{}", uuid_like())),
                ("FERRY_HEARTBEAT_INTERVAL".into(), "200ms".into()),
                ("FERRY_NODE_EXPIRY".into(), "1500ms".into()),
                ("FERRY_CLAIM_TIMEOUT".into(), "500ms".into()),
            ],
        }))
    }

    /// Start a node with `roles` (its admin listener only with the management role).
    pub async fn node(&self, id: &str, roles: &str) -> anyhow::Result<FerryServer> {
        let mut opts = ServerOptions::default()
            .env("FERRY_DATABASE_URL", &self.db.url)
            .env("FERRY_TRANSPORT", &self.transport)
            .env("FERRY_ROLES", roles)
            .env("FERRY_NODE_ID", id);
        for (k, v) in &self.env {
            opts = opts.env(k, v);
        }
        opts.no_admin = !roles.contains("management") && roles != "all";
        FerryServer::start(BIN, opts).await
    }

    /// Create a tenant in the shared database (the CLI in local mode); returns its connector secret.
    pub async fn tenant(&self, name: &str) -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        create_tenant_in(BIN, dir.path(), Some(&self.db.url), name).await
    }

    /// An admin key in the shared database.
    pub async fn admin_key(&self) -> anyhow::Result<String> {
        let out = run_ferry(
            BIN,
            &["admin-key", "create", "cluster-test"],
            &[("FERRY_DATABASE_URL", &self.db.url)],
        )
        .await?;
        anyhow::ensure!(out.status.success(), "admin-key create: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.db.drop_now().await
    }
}

/// 16 hex characters, different for every call.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    format!(
        "{:08x}{:08x}",
        (nanos ^ u64::from(std::process::id())) as u32,
        NEXT.fetch_add(1, Ordering::Relaxed) as u32
    )
}

/// Start a connector of `tenant` on `server` serving `targets`.
pub async fn connector(
    server: &str,
    tenant: &str,
    secret: &str,
    targets: &[(&str, &str)],
) -> anyhow::Result<Connector> {
    Connector::start(
        BIN,
        server,
        tenant,
        secret,
        targets,
        ConnectorOptions::default().env("FERRY_RECONNECT_MAX_DELAY", "500ms"),
    )
    .await
}

/// Poll `check` every 50 ms until it is true, at most `timeout`; says how long it took.
pub async fn eventually<F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{what}: not within {timeout:?}")
}

fn sha256(bytes: &[u8]) -> String {
    let mut h = ferry_testkit::Sha256Hex::new();
    h.update(bytes);
    h.finish()
}

/// The management API's node list.
async fn nodes(admin: &str, key: &str) -> anyhow::Result<serde_json::Value> {
    let resp = http_client()
        .get(format!("{admin}/api/v1/nodes"))
        .bearer_auth(key)
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "nodes: {}", resp.status());
    Ok(resp.json().await?)
}

fn node_ids(list: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = list["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------------------------

/// A gateway node, two relay nodes (one also management and worker): requests through the gateway reach
/// connectors on both relay nodes (load spread), bodies stream both ways intact, server-sent events arrive as
/// sent, WebSockets work, the nodes endpoint shows every node with its roles, and a node without the gateway role
/// refuses `/relay/…`.
/// How requests cross between nodes in a test: over the node links (the default) or through the broker only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crossing {
    Links,
    BusOnly,
}

impl Crossing {
    fn apply(self, rig: &mut Rig) {
        if self == Crossing::BusOnly {
            rig.env.push(("FERRY_CLUSTER_LINKS".into(), "false".into()));
        }
    }

    /// The gateway node's log says whether it opened a node link, as this way of crossing expects.
    fn check(self, gateway: &FerryServer) -> anyhow::Result<()> {
        let linked = gateway.stderr_contains("node link up");
        anyhow::ensure!(
            linked == (self == Crossing::Links),
            "{self:?}: the gateway {} a node link",
            if linked { "opened" } else { "never opened" }
        );
        Ok(())
    }
}

async fn three_nodes(bus: Bus, crossing: Crossing) -> anyhow::Result<()> {
    let _shared = bus.lock().read().await;
    let _slot = ferry_testkit::light_slot().await;
    let Some(mut rig) = Rig::new(bus).await? else {
        return Ok(());
    };
    crossing.apply(&mut rig);
    rig.env
        .push(("FERRY_MAX_BODY_SIZE".into(), (32u64 << 20).to_string()));
    let r1 = rig.node("r1", "relay,management,worker").await?;
    let r2 = rig.node("r2", "relay").await?;
    let g = rig.node("g", "gateway").await?;
    let secret = rig.tenant("acme").await?;
    let a = NamedTarget::start("A").await?;
    let b = NamedTarget::start("B").await?;
    let sink = TargetServer::start(TargetKind::Sink).await?;
    let download = TargetServer::start(TargetKind::Download {
        len: 24 << 20,
        seed: 7,
        content_length: false,
    })
    .await?;
    let sse = TargetServer::start(TargetKind::Sse {
        events: (0..4).map(|i| format!("event {i}")).collect(),
        delay: Duration::from_millis(400),
    })
    .await?;
    let ws = TargetServer::start(TargetKind::WebSocketEcho).await?;
    let hang = TargetServer::start(TargetKind::Hang).await?;
    let _ca = connector(r1.url(), "acme", &secret, &[("app", &a.url())]).await?;
    let (sink_url, down_url, sse_url, ws_url) = (sink.url(), download.url(), sse.url(), ws.url());
    let hang_url = hang.url();
    let _cb = connector(
        r2.url(),
        "acme",
        &secret,
        &[
            ("app", &b.url()),
            ("sink", &sink_url),
            ("down", &down_url),
            ("sse", &sse_url),
            ("ws", &ws_url),
            ("hang", &hang_url),
        ],
    )
    .await?;
    let client = http_client();
    // presence reaches the gateway (the connector on r2 attached a moment ago): both connectors serve `app`
    eventually(
        Duration::from_secs(10),
        "both connectors serve app",
        || async {
            let mut seen = std::collections::HashSet::new();
            for i in 0..4u64 {
                if let Ok(resp) = client
                    .get(relay_url(g.url(), "acme", "app", &format!("/n?id={i}")))
                    .send()
                    .await
                {
                    if let Ok(text) = resp.text().await {
                        seen.insert(text.split(' ').next().unwrap_or_default().to_owned());
                    }
                }
            }
            seen.len() == 2
        },
    )
    .await?;
    let mut served = std::collections::HashMap::new();
    for i in 0..60u64 {
        let resp = client
            .get(relay_url(g.url(), "acme", "app", &format!("/n?id={i}")))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "request {i}: {}", resp.status());
        let text = resp.text().await?;
        let who = text.split(' ').next().unwrap_or_default().to_owned();
        anyhow::ensure!(text == named_body(&who, i), "request {i}: wrong body");
        *served.entry(who).or_insert(0) += 1;
    }
    anyhow::ensure!(
        served.get("A").copied().unwrap_or(0) > 5 && served.get("B").copied().unwrap_or(0) > 5,
        "load spreads over the connectors on both nodes: {served:?}"
    );
    // a 16 MiB upload of unknown length, through the gateway, to a target on r2
    let upload: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = sha256(&upload);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = upload
        .chunks(100_000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let resp = client
        .post(relay_url(g.url(), "acme", "sink", "/up"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "upload: {}", resp.status());
    let sunk: serde_json::Value = resp.json().await?;
    anyhow::ensure!(sunk["len"] == 16u64 << 20, "upload length: {sunk}");
    anyhow::ensure!(sunk["sha256"] == expected, "upload checksum: {sunk}");
    // a 24 MiB download
    let resp = client
        .get(relay_url(g.url(), "acme", "down", "/"))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "download: {}", resp.status());
    let got = resp.bytes().await?;
    anyhow::ensure!(got.len() == 24 << 20, "download length {}", got.len());
    anyhow::ensure!(
        sha256(&got) == pattern_sha256(7, 24 << 20),
        "download checksum"
    );
    // server-sent events arrive one by one, as sent
    let mut resp = client
        .get(relay_url(g.url(), "acme", "sse", "/"))
        .send()
        .await?;
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await?
        .transpose()
        .ok_or_else(|| anyhow::anyhow!("no first event"))??;
    anyhow::ensure!(
        String::from_utf8_lossy(&first).contains("event 0"),
        "first event: {first:?}"
    );
    anyhow::ensure!(
        started.elapsed() < Duration::from_millis(350),
        "the first event came only after {:?}: held back",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(c) = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await?? {
        rest.extend_from_slice(&c);
    }
    anyhow::ensure!(
        String::from_utf8_lossy(&rest).contains("event 3"),
        "every event arrives"
    );
    // a WebSocket across nodes
    let ws_relay = relay_url(g.url(), "acme", "ws", "/chat").replacen("http://", "ws://", 1);
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_relay).await?;
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        for i in 0..5 {
            socket.send(Message::text(format!("hello {i}"))).await?;
            let echo = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("socket closed"))??;
            anyhow::ensure!(echo == Message::text(format!("hello {i}")), "echo {echo:?}");
        }
        socket.close(None).await?;
    }
    // the nodes endpoint shows the cluster, with roles
    let key = rig.admin_key().await?;
    let admin = r1.admin_url().unwrap_or_default().to_owned();
    let list = nodes(&admin, &key).await?;
    anyhow::ensure!(node_ids(&list) == ["g", "r1", "r2"], "nodes: {list}");
    let g_view = list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == "g"))
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(
        g_view["roles"] == serde_json::json!(["gateway"]),
        "{g_view}"
    );
    let live: serde_json::Value = client
        .get(format!("{admin}/api/v1/connections?live=true"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let on: Vec<&str> = live["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["node"].as_str()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        on.contains(&"r1") && on.contains(&"r2"),
        "live connections: {live}"
    );
    // a client that hangs up cancels the request at the target, two nodes away
    let gone = client
        .get(relay_url(g.url(), "acme", "hang", "/"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    anyhow::ensure!(gone.is_err(), "the hanging target answered");
    hang.wait_requests(1, Duration::from_secs(5)).await?;
    hang.wait_closed(1, Duration::from_secs(5)).await?;
    if crossing == Crossing::Links {
        // more requests in flight to one node than one HTTP/2 connection takes (200 streams): the link opens more
        // connections, and a request behind them is served at once instead of waiting for a stream
        const HELD: usize = 240;
        let held: Vec<_> = (0..HELD)
            .map(|_| {
                let client = client.clone();
                let url = relay_url(g.url(), "acme", "hang", "/held");
                tokio::spawn(async move {
                    client
                        .get(url)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                })
            })
            .collect();
        hang.wait_requests(1 + HELD, Duration::from_secs(15))
            .await?;
        // `sink` is on r2 only, like `hang`: the request takes the same link
        let quick = client
            .post(relay_url(g.url(), "acme", "sink", "/quick"))
            .body("quick")
            .timeout(Duration::from_secs(3))
            .send()
            .await?;
        anyhow::ensure!(
            quick.status() == 200,
            "behind {HELD} held requests: {}",
            quick.status()
        );
        for h in held {
            h.abort();
        }
        hang.wait_closed(1 + HELD, Duration::from_secs(10)).await?;
    }
    // a body over the limit is refused before anything is sent across
    let before = sink.requests();
    let mut raw = TcpStream::connect(g.addr()).await?;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        raw.write_all(
            b"POST /relay/acme/sink/up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
        )
        .await?;
        let mut head = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut head)).await??;
        let head = String::from_utf8_lossy(&head[..n]);
        anyhow::ensure!(head.starts_with("HTTP/1.1 413"), "over the limit: {head}");
    }
    anyhow::ensure!(sink.requests() == before, "the sink saw the refused body");
    // a relay-only node does not serve clients
    let resp = client
        .get(relay_url(r2.url(), "acme", "app", "/"))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 404, "relay node: {}", resp.status());
    anyhow::ensure!(
        resp.text().await?.contains("does not run the gateway role"),
        "says why"
    );
    crossing.check(&g)?;
    drop((g, r1, r2));
    rig.finish().await
}

/// A secret revoked, and a tenant deleted, through one node's management API cut the tunnels on another node
/// within one second.
async fn revocation_reaches_every_node(bus: Bus) -> anyhow::Result<()> {
    let _shared = bus.lock().read().await;
    let _slot = ferry_testkit::light_slot().await;
    let Some(mut rig) = Rig::new(bus).await? else {
        return Ok(());
    };
    // the store poll must not be what does it
    rig.env
        .push(("FERRY_STORE_POLL_INTERVAL".into(), "1h".into()));
    let m = rig.node("m", "management,worker,gateway").await?;
    let r = rig.node("r", "relay").await?;
    let secret = rig.tenant("acme").await?;
    let key = rig.admin_key().await?;
    let admin = m.admin_url().unwrap_or_default().to_owned();
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let c = connector(r.url(), "acme", &secret, &[("app", &echo.url())]).await?;
    let client = http_client();
    eventually(Duration::from_secs(5), "served through m", || async {
        matches!(client.get(relay_url(m.url(), "acme", "app", "/")).send().await, Ok(r) if r.status() == 200)
    })
    .await?;
    let secrets: serde_json::Value = client
        .get(format!("{admin}/api/v1/tenants/acme/secrets"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let id = secrets["items"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no secret: {secrets}"))?
        .to_owned();
    let resp = client
        .delete(format!("{admin}/api/v1/tenants/acme/secrets/{id}"))
        .bearer_auth(&key)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "revoke: {}", resp.status());
    let revoked_at = Instant::now();
    r.output()
        .wait_stderr(
            "secret revoked: its tunnels were cut",
            Duration::from_secs(1),
        )
        .await?;
    eprintln!(
        "revocation cut the tunnel on another node after {:?}",
        revoked_at.elapsed()
    );
    drop(c);
    // a tenant deleted on m cuts a new tenant's tunnel on r
    let secret2 = rig.tenant("beta").await?;
    let _c2 = connector(r.url(), "beta", &secret2, &[("app", &echo.url())]).await?;
    let resp = client
        .delete(format!("{admin}/api/v1/tenants/beta"))
        .bearer_auth(&key)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "delete: {}", resp.status());
    // "tenant deleted: its tunnels were cut tenant=beta", or, when the deletion (secrets first) lands while r
    // still re-checks the new tunnel's secret, "secret revoked: its tunnels were cut tenant=beta": cut either way
    r.output()
        .wait_stderr("its tunnels were cut tenant=beta", Duration::from_secs(1))
        .await?;
    drop((m, r));
    rig.finish().await
}

/// A TCP front that sends each new connection to the first of its backends that accepts it: the connectors'
/// load balancer, so that a connector whose node died reconnects to another.
struct Front {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(backends);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for b in backends.iter() {
                        if let Ok(mut server) = TcpStream::connect(b).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `kill -9` of a relay node in the middle of a streamed response: requests carried by other nodes are
/// unaffected, the one it carried fails (no hang, no silent truncation), presence forgets it within the node
/// expiry, and its connector reconnects to the other relay node and serves again.
async fn relay_node_killed(bus: Bus) -> anyhow::Result<()> {
    let _shared = bus.lock().read().await;
    let _slot = ferry_testkit::light_slot().await;
    let Some(rig) = Rig::new(bus).await? else {
        return Ok(());
    };
    let r1 = rig.node("r1", "relay,management,worker").await?;
    let mut r2 = rig.node("r2", "relay").await?;
    let g = rig.node("g", "gateway").await?;
    let secret = rig.tenant("acme").await?;
    let key = rig.admin_key().await?;
    let admin = r1.admin_url().unwrap_or_default().to_owned();
    let a = NamedTarget::start("A").await?;
    let slow = TargetServer::start(TargetKind::Slow {
        chunks: 100,
        delay: Duration::from_millis(50),
    })
    .await?;
    let _ca = connector(r1.url(), "acme", &secret, &[("app", &a.url())]).await?;
    // the second connector reaches r2 through a front that falls back to r1
    let front = Front::start(vec![r2.addr(), r1.addr()]).await?;
    // it serves app too: requests for app sent to r2 after its death (before presence forgets it) must reach r1
    let cb = connector(
        &front.url(),
        "acme",
        &secret,
        &[("slow", &slow.url()), ("app", &a.url())],
    )
    .await?;
    let client = http_client();
    let mut resp = client
        .get(relay_url(g.url(), "acme", "slow", "/"))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "slow: {}", resp.status());
    let first = resp.chunk().await?;
    anyhow::ensure!(first.is_some(), "a first chunk");
    r2.kill().await?;
    let killed = Instant::now();
    // requests for app right after the kill, while the gateway's presence still shows app on r2: none is lost
    // (on NATS a request sent to the dead node's inbox bounces back and goes through the queue to r1)
    let during = {
        let client = client.clone();
        let url = g.url().to_owned();
        tokio::spawn(async move {
            for i in 0..20u64 {
                let resp = client
                    .get(relay_url(&url, "acme", "app", &format!("/k?id={i}")))
                    .send()
                    .await?;
                anyhow::ensure!(
                    resp.status() == 200,
                    "app right after the kill: {}",
                    resp.status()
                );
            }
            Ok::<_, anyhow::Error>(killed.elapsed())
        })
    };
    // the stream in flight fails rather than hanging or ending cleanly
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match ended {
        Err(_) => anyhow::bail!("the stream hung after its relay node died"),
        Ok(Ok(())) => anyhow::bail!("the stream ended cleanly although its relay node died"),
        Ok(Err(e)) => eprintln!("the stream failed after {:?}: {e}", killed.elapsed()),
    }
    let took = during.await??;
    eprintln!("20 requests for app right after the kill answered within {took:?}");
    // requests on the other node are unaffected
    for i in 0..10u64 {
        let resp = client
            .get(relay_url(g.url(), "acme", "app", &format!("/n?id={i}")))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "app during the failure: {}",
            resp.status()
        );
    }
    // presence forgets r2
    let forgotten = eventually(Duration::from_secs(5), "r2 forgotten", || async {
        nodes(&admin, &key)
            .await
            .map(|l| node_ids(&l) == ["g", "r1"])
            .unwrap_or(false)
    })
    .await?;
    eprintln!(
        "presence forgot the killed node {:?} after the kill",
        killed.elapsed()
    );
    let _ = forgotten;
    // the connector came back through the front, to r1, and serves again
    cb.wait_tunnels(2, Duration::from_secs(10)).await?;
    eventually(Duration::from_secs(10), "slow served again", || async {
        match client
            .get(relay_url(g.url(), "acme", "slow", "/"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
            _ => false,
        }
    })
    .await?;
    drop((g, r1));
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_three_nodes_serve_across_nodes() -> anyhow::Result<()> {
    three_nodes(Bus::Nats, Crossing::Links).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_three_nodes_serve_through_the_bus_only() -> anyhow::Result<()> {
    three_nodes(Bus::Nats, Crossing::BusOnly).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_three_nodes_serve_through_the_bus_only() -> anyhow::Result<()> {
    three_nodes(Bus::Amqp, Crossing::BusOnly).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_revocation_and_deletion_reach_every_node() -> anyhow::Result<()> {
    revocation_reaches_every_node(Bus::Nats).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_revocation_and_deletion_reach_every_node() -> anyhow::Result<()> {
    revocation_reaches_every_node(Bus::Amqp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_relay_node_killed_mid_stream() -> anyhow::Result<()> {
    relay_node_killed(Bus::Nats).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_relay_node_killed_mid_stream() -> anyhow::Result<()> {
    relay_node_killed(Bus::Amqp).await
}

/// A NATS server of this test's own, on a port the OS chose, that the test can stop and start again.
struct OwnNats {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnNats {
    async fn start() -> anyhow::Result<Option<Self>> {
        let bin = std::path::Path::new("/usr/sbin/nats-server");
        if !bin.exists() {
            if std::env::var_os("CI").is_some() {
                anyhow::bail!("nats-server is required under CI");
            }
            eprintln!("skipped: no nats-server binary to restart");
            return Ok(None);
        }
        let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let mut me = Self { port, child: None };
        me.up().await?;
        Ok(Some(me))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn up(&mut self) -> anyhow::Result<()> {
        let child = tokio::process::Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), "nats-server up", || async {
            TcpStream::connect(&addr).await.is_ok()
        })
        .await?;
        Ok(())
    }

    async fn down(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("rabbitmqctl")
            .args(args)
            .output(),
    )
    .await??;
    anyhow::ensure!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
    Ok(())
}

/// The broker restarts under load: requests during the outage get defined errors within their expiration (no
/// hang), no request runs twice, and once the broker is back the nodes serve again by themselves.
async fn broker_restart(bus: Bus) -> anyhow::Result<()> {
    // RabbitMQ is restarted for real: nobody else may use it meanwhile; NATS is a server of this test's own
    let _exclusive = match bus {
        Bus::Amqp => Some(bus.lock().write().await),
        Bus::Nats => None,
    };
    let Some(mut rig) = Rig::new(bus).await? else {
        return Ok(());
    };
    let mut own = None;
    if bus == Bus::Nats {
        let Some(nats) = OwnNats::start().await? else {
            return Ok(());
        };
        rig.transport = nats.url();
        own = Some(nats);
    }
    rig.env
        .push(("FERRY_REQUEST_EXPIRATION".into(), "5s".into()));
    rig.env.push(("FERRY_CONNECTOR_WAIT".into(), "2s".into()));
    let r = rig.node("r", "relay,management,worker").await?;
    let g = rig.node("g", "gateway").await?;
    let secret = rig.tenant("acme").await?;
    let a = NamedTarget::start("A").await?;
    let _c = connector(r.url(), "acme", &secret, &[("app", &a.url())]).await?;
    let client = http_client();
    let url = |i: u64| relay_url(g.url(), "acme", "app", &format!("/n?id={i}"));
    eventually(
        Duration::from_secs(10),
        "served before the restart",
        || async { matches!(client.get(url(0)).send().await, Ok(r) if r.status() == 200) },
    )
    .await?;
    // steady requests while the broker goes down and comes back
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let client = client.clone();
        let g_url = g.url().to_owned();
        tokio::spawn(async move {
            let mut outcomes: Vec<(u64, Result<u16, String>, Duration)> = Vec::new();
            let mut i = 1000u64;
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(120)
                && i < 1_000_000
            {
                i += 1;
                let t = Instant::now();
                let sent = client
                    .get(relay_url(&g_url, "acme", "app", &format!("/n?id={i}")))
                    .timeout(Duration::from_secs(15))
                    .send()
                    .await;
                let outcome = match sent {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let code = resp
                            .headers()
                            .get("ferry-error")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        match resp.bytes().await {
                            Ok(_) if status == 200 || !code.is_empty() => Ok(status),
                            Ok(_) => Err(format!("{status} without a ferry-error code")),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                outcomes.push((i, outcome, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    match bus {
        Bus::Nats => {
            let nats = own.as_mut().ok_or_else(|| anyhow::anyhow!("own nats"))?;
            nats.down().await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            nats.up().await?;
        }
        Bus::Amqp => {
            rabbitmqctl(&["stop_app"]).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            rabbitmqctl(&["start_app"]).await?;
            rabbitmqctl(&["await_startup"]).await?;
        }
    }
    let back = Instant::now();
    // serving again, with no Ferry restart
    let took = eventually(
        Duration::from_secs(30),
        "served again after the restart",
        || async { matches!(client.get(url(1)).send().await, Ok(r) if r.status() == 200) },
    )
    .await?;
    eprintln!("{bus:?}: serving again {took:?} after the broker was back");
    let _ = back;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcomes = load.await?;
    let failures: Vec<_> = outcomes.iter().filter(|(_, o, _)| o.is_err()).collect();
    anyhow::ensure!(failures.is_empty(), "undefined outcomes: {failures:?}");
    let slowest = outcomes
        .iter()
        .map(|(_, _, d)| *d)
        .max()
        .unwrap_or_default();
    anyhow::ensure!(
        slowest < Duration::from_secs(8),
        "a request took {slowest:?}: longer than its expiration"
    );
    let errors = outcomes
        .iter()
        .filter(|(_, o, _)| !matches!(o, Ok(200)))
        .count();
    eprintln!(
        "{bus:?}: {} requests during the restart, {errors} answered with a defined error",
        outcomes.len()
    );
    let mut seen = a.seen();
    let total = seen.len();
    seen.sort_unstable();
    seen.dedup();
    anyhow::ensure!(seen.len() == total, "a request ran twice at the target");
    drop((g, r));
    drop(own);
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_restart() -> anyhow::Result<()> {
    broker_restart(Bus::Nats).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_broker_restart() -> anyhow::Result<()> {
    broker_restart(Bus::Amqp).await
}

/// Five nodes (two gateways, three relay nodes) and 1,000 tenants with 2 connectors each on two different relay
/// nodes (the connectors run in this process): every tenant answers through every gateway node.
async fn thousand_tenants(bus: Bus) -> anyhow::Result<()> {
    const TENANTS: usize = 1000;
    let _shared = bus.lock().read().await;
    let Some(mut rig) = Rig::new(bus).await? else {
        return Ok(());
    };
    // thousands of tunnel changes at once: the default heartbeat is enough, and quieter
    rig.env
        .retain(|(k, _)| k != "FERRY_HEARTBEAT_INTERVAL" && k != "FERRY_NODE_EXPIRY");
    let started = Instant::now();
    let r1 = rig.node("r1", "relay,management,worker").await?;
    let r2 = rig.node("r2", "relay").await?;
    let r3 = rig.node("r3", "relay").await?;
    let g1 = rig.node("g1", "gateway").await?;
    let g2 = rig.node("g2", "gateway").await?;
    let key = rig.admin_key().await?;
    let admin = r1.admin_url().unwrap_or_default().to_owned();
    let target = NamedTarget::start("T").await?;
    let client = http_client();
    // Tenants and secrets straight into the shared database. The secrets' argon2 hashes are made with the
    // smallest parameters (argon2 reads them from the hash when it verifies), so that 2,000 token requests cost
    // seconds instead of minutes on two cores; the nodes verify them exactly as they verify any secret.
    let names: Vec<String> = (0..TENANTS).map(|i| format!("t{i:04}")).collect();
    let secrets: Vec<String> = {
        let dir = tempfile::tempdir()?;
        let store = ferry_store::open_url(Some(&rig.db.url), dir.path()).await?;
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let mut secrets = Vec::with_capacity(TENANTS);
        for (i, name) in names.iter().enumerate() {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let tenant: ferry_proto::TenantName = name.parse()?;
            store
                .create_tenant(&tenant, &ferry_store::TenantFields::default())
                .await?;
            let secret = format!("fsec_cluster_test_{i}_{}", uuid_like());
            let salt = SaltString::encode_b64(format!("salt{i:012}").as_bytes())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let hash = argon
                .hash_password(secret.as_bytes(), &salt)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_string();
            store.add_secret(&tenant, &hash, None).await?;
            secrets.push(secret);
        }
        secrets
    };
    eprintln!(
        "{bus:?}: {TENANTS} tenants created after {:?}",
        started.elapsed()
    );
    // two connectors per tenant, on two different relay nodes, all in this process
    let relays = [
        r1.url().to_owned(),
        r2.url().to_owned(),
        r3.url().to_owned(),
    ];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connectors = Vec::new();
    for (i, (name, secret)) in names.iter().zip(&secrets).enumerate() {
        for k in 0..2 {
            let config = ferry_config::ConnectorConfig {
                server: Some(relays[(i + k) % 3].clone()),
                tenant: Some(name.parse()?),
                secret: Some(ferry_config::Secret::new(secret.clone())),
                targets: vec![ferry_config::TargetConfig::parse_spec(&format!(
                    "app={}",
                    target.url()
                ))
                .map_err(|e| anyhow::anyhow!(e))?],
                reconnect_max_delay: Duration::from_secs(2),
                // one tunnel each, served by this process's runtime: 2,000 connectors, not 2,000 threads
                tunnels: 1,
                ..Default::default()
            };
            let mut stop = stop_rx.clone();
            connectors.push(tokio::spawn(async move {
                let _ =
                    ferry_connector::run_on(config, ferry_connector::Threads::Caller, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        }
    }
    // presence shows all 2,000 connectors on the three relay nodes
    let up = eventually(
        Duration::from_secs(240),
        "2,000 connectors in presence",
        || async {
            nodes(&admin, &key)
                .await
                .map(|l| {
                    l["items"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|n| n["connectors"].as_u64())
                                .sum::<u64>()
                        })
                        .unwrap_or(0)
                        == 2 * TENANTS as u64
                })
                .unwrap_or(false)
        },
    )
    .await?;
    eprintln!(
        "{bus:?}: {} connectors up {up:?} later ({:?} in all)",
        2 * TENANTS,
        started.elapsed()
    );
    // every tenant through every gateway node
    let gateways = [g1.url().to_owned(), g2.url().to_owned()];
    let requests: Vec<(String, String, u64)> = names
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            gateways
                .iter()
                .enumerate()
                .map(move |(j, g)| (g.clone(), name.clone(), (i * 2 + j) as u64))
        })
        .collect();
    let served = Instant::now();
    {
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(requests)
            .map(|(g, name, id)| {
                let client = client.clone();
                async move {
                    let resp = client
                        .get(relay_url(&g, &name, "app", &format!("/n?id={id}")))
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status() == 200, "{name} via {g}: {}", resp.status());
                    let body = resp.text().await?;
                    anyhow::ensure!(body == named_body("T", id), "{name} via {g}: wrong body");
                    Ok(())
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await?;
    }
    eprintln!(
        "{bus:?}: {} requests, every tenant through both gateways, in {:?}",
        2 * TENANTS,
        served.elapsed()
    );
    stop_tx.send_replace(true);
    for c in connectors {
        c.abort();
    }
    drop((g1, g2, r1, r2, r3));
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_five_nodes_thousand_tenants() -> anyhow::Result<()> {
    thousand_tenants(Bus::Nats).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_five_nodes_thousand_tenants() -> anyhow::Result<()> {
    thousand_tenants(Bus::Amqp).await
}

/// 2 GiB up and 2 GiB down through a gateway node, the bus and a relay node arrive intact, while neither node's
/// memory grows by more than [`MAX_GROWTH_KIB`] (credit-based flow control: at most 1 MiB in flight per stream and
/// direction).
async fn two_gib_across_nodes(bus: Bus, crossing: Crossing) -> anyhow::Result<()> {
    const GIB: u64 = 1 << 30;
    const MAX_GROWTH_KIB: u64 = 64 * 1024;
    let _shared = bus.lock().read().await;
    let _slot = ferry_testkit::heavy_slot().await;
    let Some(mut rig) = Rig::new(bus).await? else {
        return Ok(());
    };
    crossing.apply(&mut rig);
    let r = rig.node("r", "relay,management,worker").await?;
    let g = rig.node("g", "gateway").await?;
    let secret = rig.tenant("acme").await?;
    let sink = TargetServer::start(TargetKind::Sink).await?;
    let big = TargetServer::start(TargetKind::Download {
        len: 2 * GIB,
        seed: 21,
        content_length: false,
    })
    .await?;
    let (sink_url, big_url) = (sink.url(), big.url());
    let _c = connector(
        r.url(),
        "acme",
        &secret,
        &[("sink", &sink_url), ("big", &big_url)],
    )
    .await?;
    let client = http_client();
    let up_url = relay_url(g.url(), "acme", "sink", "/up");
    eventually(Duration::from_secs(10), "warm-up upload", || async {
        match client.post(&up_url).body(vec![1u8; 200_000]).send().await {
            Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
            _ => false,
        }
    })
    .await?;
    let idle = (
        ferry_testkit::rss_kib(g.pid())?,
        ferry_testkit::rss_kib(r.pid())?,
    );
    let expected_up = tokio::task::spawn_blocking(|| pattern_sha256(22, 2 * GIB));
    let started = Instant::now();
    let body = reqwest::Body::wrap_stream(
        ferry_testkit::PatternStream::new(22, 2 * GIB).into_stream::<std::io::Error>(),
    );
    let resp = tokio::time::timeout(
        Duration::from_secs(300),
        client.post(&up_url).body(body).send(),
    )
    .await??;
    anyhow::ensure!(resp.status() == 200, "upload: {}", resp.status());
    let sunk: serde_json::Value = resp.json().await?;
    anyhow::ensure!(sunk["len"] == 2 * GIB, "upload length: {sunk}");
    anyhow::ensure!(
        sunk["sha256"] == expected_up.await?,
        "upload checksum: {sunk}"
    );
    eprintln!("{bus:?}: 2 GiB up across nodes in {:?}", started.elapsed());
    let expected_down = tokio::task::spawn_blocking(|| pattern_sha256(21, 2 * GIB));
    let started = Instant::now();
    let resp = client
        .get(relay_url(g.url(), "acme", "big", "/"))
        .send()
        .await?;
    anyhow::ensure!(resp.status() == 200, "download: {}", resp.status());
    let mut hash = ferry_testkit::Sha256Hex::new();
    {
        use futures_util::StreamExt;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await?
        {
            hash.update(&chunk?);
        }
    }
    anyhow::ensure!(hash.len() == 2 * GIB, "download length {}", hash.len());
    anyhow::ensure!(hash.finish() == expected_down.await?, "download checksum");
    eprintln!(
        "{bus:?}: 2 GiB down across nodes in {:?}",
        started.elapsed()
    );
    let peaks = (
        ferry_testkit::peak_rss_kib(g.pid())?,
        ferry_testkit::peak_rss_kib(r.pid())?,
    );
    eprintln!(
        "{bus:?}: RSS KiB gateway node idle {} peak {}, relay node idle {} peak {}",
        idle.0, peaks.0, idle.1, peaks.1
    );
    anyhow::ensure!(
        peaks.0.saturating_sub(idle.0) < MAX_GROWTH_KIB
            && peaks.1.saturating_sub(idle.1) < MAX_GROWTH_KIB,
        "a node's memory grew by more than {MAX_GROWTH_KIB} KiB: idle {idle:?}, peak {peaks:?}"
    );
    crossing.check(&g)?;
    drop((g, r));
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_gib_both_ways_in_bounded_memory() -> anyhow::Result<()> {
    two_gib_across_nodes(Bus::Nats, Crossing::Links).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_two_gib_both_ways_through_the_bus_in_bounded_memory() -> anyhow::Result<()> {
    two_gib_across_nodes(Bus::Amqp, Crossing::BusOnly).await
}

/// Two worker nodes: one holds the lease (the nodes endpoint says which); `kill -9` of it, and the other takes over
/// within the lease time plus two retry intervals.
async fn worker_takeover(bus: Bus) -> anyhow::Result<()> {
    let _shared = bus.lock().read().await;
    let _slot = ferry_testkit::light_slot().await;
    let Some(mut rig) = Rig::new(bus).await? else {
        return Ok(());
    };
    rig.env.push(("FERRY_WORKER_LEASE_TTL".into(), "2s".into()));
    let m = rig.node("m", "management,gateway").await?;
    let mut w1 = rig.node("w1", "worker").await?;
    let key = rig.admin_key().await?;
    let admin = m.admin_url().unwrap_or_default().to_owned();
    let active = |list: &serde_json::Value| -> Vec<String> {
        list["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|n| n["worker_active"] == true)
                    .filter_map(|n| n["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually(Duration::from_secs(10), "w1 active", || async {
        nodes(&admin, &key)
            .await
            .map(|l| active(&l) == ["w1"])
            .unwrap_or(false)
    })
    .await?;
    let w2 = rig.node("w2", "worker").await?;
    eventually(Duration::from_secs(5), "w2 known", || async {
        nodes(&admin, &key)
            .await
            .map(|l| node_ids(&l).contains(&"w2".to_owned()) && active(&l) == ["w1"])
            .unwrap_or(false)
    })
    .await?;
    w1.kill().await?;
    let killed = Instant::now();
    let took = eventually(Duration::from_secs(10), "w2 takes over", || async {
        nodes(&admin, &key)
            .await
            .map(|l| active(&l) == ["w2"])
            .unwrap_or(false)
    })
    .await?;
    eprintln!(
        "{bus:?}: the standby worker took over {:?} after the kill -9 (lease 2 s, retry 1 s)",
        killed.elapsed()
    );
    // the bound: the lease (2 s) + two retry intervals (2 s) + presence (a heartbeat, 200 ms) + slack
    anyhow::ensure!(took < Duration::from_secs(6), "takeover took {took:?}");
    drop((m, w2));
    rig.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_worker_takeover_after_kill() -> anyhow::Result<()> {
    worker_takeover(Bus::Nats).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_worker_takeover_after_kill() -> anyhow::Result<()> {
    worker_takeover(Bus::Amqp).await
}

/// The soak across a cluster (issue 15's soak, with nodes and the broker): steady requests through a gateway node
/// while relay nodes are killed (`kill -9`) and started again on the same address, the broker (a NATS server of
/// this test's own) is stopped and started, and connectors are killed and restarted, all at random. Every request
/// completes or gets a defined error, none runs twice, no body is truncated, and once the chaos stops everything
/// is served again. Bounded in time: half of `FERRY_SOAK_SECONDS` (default 60, so 30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_soak_while_nodes_and_the_broker_die() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let _shared = Bus::Nats.lock().read().await;
    let _slot = ferry_testkit::heavy_slot().await;
    let seconds: u64 = std::env::var("FERRY_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        / 2;
    let Some(mut rig) = Rig::new(Bus::Nats).await? else {
        return Ok(());
    };
    let Some(mut nats) = OwnNats::start().await? else {
        return Ok(());
    };
    rig.transport = nats.url();
    rig.env
        .push(("FERRY_REQUEST_EXPIRATION".into(), "10s".into()));
    rig.env.push(("FERRY_CONNECTOR_WAIT".into(), "3s".into()));
    let env: Vec<(String, String)> = rig
        .env
        .iter()
        .cloned()
        .chain([
            ("FERRY_DATABASE_URL".into(), rig.db.url.clone()),
            ("FERRY_TRANSPORT".into(), rig.transport.clone()),
        ])
        .collect();
    // two relay nodes on fixed addresses, so that a killed one comes back where the connectors' front looks
    let dirs = tempfile::tempdir()?;
    let mut relays = Vec::new();
    for (i, roles) in ["relay,management,worker", "relay"].iter().enumerate() {
        let addr: SocketAddr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let id = format!("r{}", i + 1);
        let mut env = env.clone();
        env.push(("FERRY_ROLES".into(), (*roles).to_owned()));
        env.push(("FERRY_NODE_ID".into(), id.clone()));
        let data = dirs.path().join(&id);
        relays.push((addr, data, env, None::<crate::common::Proc>));
    }
    for r in relays.iter_mut() {
        let env: Vec<(&str, &str)> = r.2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        r.3 = Some(crate::common::serve_on(r.0, &r.1, &env).await?);
    }
    let g = rig.node("g", "gateway").await?;
    let secret = rig.tenant("acme").await?;
    let target = NamedTarget::start("T").await?;
    let front = Front::start(relays.iter().map(|r| r.0).collect()).await?;
    let (front_url, target_url) = (front.url(), target.url());
    let start_connector = || {
        let (front_url, secret, target_url) =
            (front_url.clone(), secret.clone(), target_url.clone());
        async move { connector(&front_url, "acme", &secret, &[("app", &target_url)]).await }
    };
    let mut connectors = vec![start_connector().await?, start_connector().await?];
    let client = http_client();
    let url = |i: u64| relay_url(g.url(), "acme", "app", &format!("/n?id={i}"));
    eventually(
        Duration::from_secs(10),
        "served before the chaos",
        || async { matches!(client.get(url(0)).send().await, Ok(r) if r.status() == 200) },
    )
    .await?;

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let next = Arc::new(AtomicU64::new(1));
    let ok = Arc::new(AtomicUsize::new(0));
    let defined = Arc::new(AtomicUsize::new(0));
    let bad: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (client, g_url, next, ok, defined, bad) = (
            client.clone(),
            g.url().to_owned(),
            next.clone(),
            ok.clone(),
            defined.clone(),
            bad.clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let sent = client
                    .get(relay_url(&g_url, "acme", "app", &format!("/n?id={id}")))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await;
                let outcome = match sent {
                    Err(e) if e.is_timeout() => Err(format!("{id}: timed out")),
                    Err(_) => Ok(false),
                    Ok(resp) => {
                        let status = resp.status();
                        let code = resp
                            .headers()
                            .get("ferry-error")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        match (status.as_u16(), code.as_deref()) {
                            (200, _) => match resp.text().await {
                                Ok(body) if body == named_body("T", id) => Ok(true),
                                Ok(body) => Err(format!(
                                    "{id}: a wrong or short body ({} bytes)",
                                    body.len()
                                )),
                                // cut while the body streamed: defined
                                Err(_) => Ok(false),
                            },
                            (
                                _,
                                Some(
                                    "no_connector"
                                    | "connector_lost"
                                    | "request_expired"
                                    | "cluster_unavailable"
                                    | "draining"
                                    | "unknown_target",
                                ),
                            ) => Ok(false),
                            (s, c) => Err(format!("{id}: status {s} with ferry-error {c:?}")),
                        }
                    }
                };
                match outcome {
                    Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => defined.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        if let Ok(mut b) = bad.lock() {
                            b.push(e);
                        }
                        0
                    }
                };
            }
        }));
    }
    // chaos until 5 s before the deadline
    let mut kills = (0, 0, 0);
    let mut pick = 0u64;
    while Instant::now() + Duration::from_secs(5) < deadline {
        tokio::time::sleep(Duration::from_millis(1500 + (pick * 7919) % 1500)).await;
        pick += 1;
        match pick % 3 {
            0 => {
                let r = &mut relays[(pick / 3 % 2) as usize];
                if let Some(mut p) = r.3.take() {
                    p.child.kill().await?;
                }
                tokio::time::sleep(Duration::from_millis(300 + (pick * 104_729) % 1000)).await;
                let env: Vec<(&str, &str)> =
                    r.2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                r.3 = Some(crate::common::serve_on(r.0, &r.1, &env).await?);
                kills.0 += 1;
            }
            1 => {
                nats.down().await?;
                tokio::time::sleep(Duration::from_millis(500 + (pick * 31) % 1000)).await;
                nats.up().await?;
                kills.1 += 1;
            }
            _ => {
                let i = (pick % connectors.len() as u64) as usize;
                let mut victim = connectors.swap_remove(i);
                victim.kill().await?;
                drop(victim);
                connectors.push(start_connector().await?);
                kills.2 += 1;
            }
        }
    }
    for w in workers {
        w.await?;
    }
    let bad = bad.lock().map(|b| b.clone()).unwrap_or_default();
    let (ok, defined) = (ok.load(Ordering::Relaxed), defined.load(Ordering::Relaxed));
    eprintln!(
        "cluster soak: {seconds} s, {} relay node kills, {} broker restarts, {} connector kills; {ok} ok, {defined} defined errors or cuts, {} undefined",
        kills.0, kills.1, kills.2, bad.len()
    );
    anyhow::ensure!(bad.is_empty(), "undefined outcomes:\n{}", bad.join("\n"));
    anyhow::ensure!(ok > 50, "only {ok} requests succeeded");
    let mut seen = target.seen();
    let total = seen.len();
    seen.sort_unstable();
    seen.dedup();
    anyhow::ensure!(
        seen.len() == total,
        "{} requests ran twice at the target",
        total - seen.len()
    );
    // after the chaos, served again with no restart of anything
    eventually(
        Duration::from_secs(30),
        "served after the chaos",
        || async {
            matches!(client.get(url(u64::MAX / 2)).send().await, Ok(r) if r.status() == 200)
        },
    )
    .await?;
    drop((g, connectors));
    rig.finish().await
}

/// One trace across the cluster: a client asks node `a` for a connector on node `b`; the request crosses the node
/// link, and node `a`'s `relay.request`, node `b`'s `cluster.link` and the connector's `connector.request` come out
/// as one trace, each the parent of the next (docs/operations.md, "Tracing").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_one_trace_across_a_node_link() -> anyhow::Result<()> {
    use crate::otel_tracing::{find, python, receiver, spans_of};
    const TRACE_ID: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
    const CLIENT_SPAN: &str = "10f067aa0ba902b8";
    let Some(python) = python()? else {
        return Ok(());
    };
    let _shared = Bus::Nats.lock().read().await;
    let Some(mut rig) = Rig::new(Bus::Nats).await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("spans.jsonl");
    let (_receiver, port) = receiver(&python, &out).await?;
    let endpoint = format!("http://127.0.0.1:{port}");
    rig.env
        .push(("FERRY_OTLP_ENDPOINT".into(), endpoint.clone()));
    rig.env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    rig.env
        .push(("FERRY_OTLP_SERVICE_NAME".into(), "ferry-node-a".into()));
    let a = rig.node("a", "all").await?;
    rig.env.pop();
    rig.env
        .push(("FERRY_OTLP_SERVICE_NAME".into(), "ferry-node-b".into()));
    let b = rig.node("b", "relay").await?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let secret = rig.tenant("demo").await?;
    let _connector = Connector::start(
        BIN,
        b.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .env("FERRY_RECONNECT_MAX_DELAY", "500ms")
            .env("FERRY_OTLP_ENDPOINT", &endpoint)
            .env("FERRY_OTLP_SERVICE_NAME", "ferry-connector")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    )
    .await?;
    let client = http_client();
    let url = relay_url(a.url(), "demo", "app", "/traced");
    // node a learns of b's connector from presence
    eventually(
        Duration::from_secs(20),
        "node a relays to b's connector",
        || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await?;
    let resp = client
        .get(&url)
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .timeout(Duration::from_secs(20))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let spans = spans_of(
        &out,
        TRACE_ID,
        &[
            ("ferry-node-a", "relay.request"),
            ("ferry-node-b", "cluster.link"),
            ("ferry-connector", "connector.request"),
        ],
    )
    .await?;
    let origin = find(&spans, "ferry-node-a", "relay.request");
    let link = find(&spans, "ferry-node-b", "cluster.link");
    let connector = find(&spans, "ferry-connector", "connector.request");
    assert_eq!(
        origin["parent_span_id"], CLIENT_SPAN,
        "a ← client: {origin}"
    );
    assert_eq!(
        link["parent_span_id"], origin["span_id"],
        "b ← a: {link} {origin}"
    );
    assert_eq!(
        connector["parent_span_id"], link["span_id"],
        "connector ← b: {connector} {link}"
    );
    drop((a, b));
    rig.finish().await
}
