//! End to end, against the built `ferry` binary: a tenant changed at run time in the store, by another process
//! than the node (as the CLI in local mode would, telling no node), reaches the node and its connectors without a
//! restart, through the node's safety-net store poll (set to 1 s here; changes made through the management API
//! arrive as events at once, `tests/cluster.rs`):
//! settings are pushed to connectors and applied by the node, a revoked secret or a deleted tenant cuts the
//! tunnels within seconds, and the node records its connections, its heartbeat, statistics and the request log.

use crate::common::{PgDatabase, BIN};
use ferry_proto::{TenantName, TenantSettings};
use ferry_store::{ConnectionQuery, SqliteStore, Store, TenantFields};
use ferry_testkit::client::expect_ferry_error;
use ferry_testkit::{eventually, http_client, light_slot, within, Stack, TargetKind, TargetServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// The node's store, opened from the test process as a second node would (SQLite is safe to share between
/// processes; PostgreSQL when the node was started with `FERRY_DATABASE_URL`).
async fn store_of(stack: &Stack) -> anyhow::Result<Arc<dyn Store>> {
    Ok(ferry_store::open_url(stack.server.database_url(), stack.server.data_dir()).await?)
}

async fn set_settings(
    store: &dyn Store,
    tenant: &TenantName,
    settings: TenantSettings,
) -> anyhow::Result<()> {
    let current = store
        .get_tenant(tenant)
        .await?
        .ok_or_else(|| anyhow::anyhow!("tenant missing"))?;
    let fields = TenantFields {
        display_name: current.display_name,
        description: current.description,
        settings,
    };
    store.update_tenant(tenant, &fields).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_the_node_and_the_connector_without_a_restart() -> anyhow::Result<()> {
    settings_reach_the_connector(None).await
}

/// The same with the node on PostgreSQL, the store a cluster shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_revocations_on_postgres() -> anyhow::Result<()> {
    let Some(db) = PgDatabase::create().await? else {
        return Ok(());
    };
    let settings = settings_reach_the_connector(Some(&db.url)).await;
    db.drop_now().await?;
    settings?;
    let Some(db) = PgDatabase::create().await? else {
        return Ok(());
    };
    let revoking = revoking_cuts_the_tunnel(Some(&db.url)).await;
    db.drop_now().await?;
    revoking
}

async fn settings_reach_the_connector(database_url: Option<&str>) -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let hang = TargetServer::start(TargetKind::Hang).await?;
    let (_echo, stack) = Stack::with_echo(BIN, |o| {
        let o = o
            .target("hang", &hang.url())
            .server_env("FERRY_STORE_POLL_INTERVAL", "1s");
        match database_url {
            Some(url) => o.server_env("FERRY_DATABASE_URL", url),
            None => o,
        }
    })
    .await?;
    let store = store_of(&stack).await?;
    let tenant: TenantName = stack.tenant.parse()?;
    let client = http_client();

    // Before: a 2 KiB body passes.
    let resp = client
        .post(stack.relay_url("app", "/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await?;
    assert_eq!(resp.status(), 200);

    set_settings(
        &*store,
        &tenant,
        TenantSettings {
            target_response_timeout_ms: Some(400),
            max_body_size: Some(1024),
            ..Default::default()
        },
    )
    .await?;
    stack
        .connector
        .output()
        .wait_stderr("settings pushed by the node", T)
        .await?;

    // The node applies the body limit…
    let resp = client
        .post(stack.relay_url("app", "/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await?;
    expect_ferry_error(resp, 413, "payload_too_large").await?;
    // …and the connector the response timeout (its configured one is 60 s).
    let started = Instant::now();
    let resp = within(T, "hang", client.get(stack.relay_url("hang", "/")).send()).await??;
    expect_ferry_error(resp, 504, "target_timeout").await?;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the pushed 400 ms timeout applied, took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connector_gets_the_settings_when_it_attaches() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = ferry_testkit::FerryServer::start(BIN, Default::default()).await?;
    let secret = server.create_tenant("early").await?;
    let store = SqliteStore::open_in(server.data_dir()).await?;
    set_settings(
        &store,
        &"early".parse()?,
        TenantSettings {
            reconnect_min_delay_ms: Some(50),
            reconnect_max_delay_ms: Some(100),
            ..Default::default()
        },
    )
    .await?;
    let connector = ferry_testkit::Connector::start(
        BIN,
        server.url(),
        "early",
        &secret,
        &[("app", &echo.url())],
        Default::default(),
    )
    .await?;
    connector
        .output()
        .wait_stderr("settings pushed by the node", T)
        .await?;
    assert!(connector
        .output()
        .stderr()
        .contains(r#""reconnect_min_delay_ms":50"#));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_secret_cuts_the_tunnel_and_keeps_it_out() -> anyhow::Result<()> {
    revoking_cuts_the_tunnel(None).await
}

async fn revoking_cuts_the_tunnel(database_url: Option<&str>) -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) = Stack::with_echo(BIN, |o| match database_url {
        Some(url) => o
            .server_env("FERRY_DATABASE_URL", url)
            .server_env("FERRY_STORE_POLL_INTERVAL", "1s"),
        None => o.server_env("FERRY_STORE_POLL_INTERVAL", "1s"),
    })
    .await?;
    let store = store_of(&stack).await?;
    let tenant: TenantName = stack.tenant.parse()?;
    let client = http_client();
    assert_eq!(
        client
            .get(stack.relay_url("app", "/"))
            .send()
            .await?
            .status(),
        200
    );

    let secrets = store.list_secrets(&tenant).await?;
    assert_eq!(secrets.len(), 1);
    let revoked_at = Instant::now();
    assert!(store.revoke_secret(&tenant, &secrets[0].id).await?);
    stack
        .server
        .output()
        .wait_stderr("secret revoked: its tunnels were cut", T)
        .await?;
    let took = revoked_at.elapsed();
    eprintln!("tunnel cut {took:?} after the revocation");
    assert!(
        took < Duration::from_secs(8),
        "cut within seconds: {took:?}"
    );
    // The connector cannot come back: its cached token names the revoked secret, a new one is refused.
    stack
        .connector
        .output()
        .wait_stderr("node refused the tunnel", T)
        .await?;
    let resp = client.get(stack.relay_url("app", "/")).send().await?;
    expect_ferry_error(resp, 503, "no_connector").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_tenant_cuts_its_tunnels() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) =
        Stack::with_echo(BIN, |o| o.server_env("FERRY_STORE_POLL_INTERVAL", "1s")).await?;
    let store = store_of(&stack).await?;
    let tenant: TenantName = stack.tenant.parse()?;
    assert!(store.delete_tenant(&tenant).await?);
    // "tenant deleted: …", or "secret revoked: …" when the deletion lands while the node still re-checks the new
    // tunnel's secret (tests/cluster.rs): cut either way
    stack
        .server
        .output()
        .wait_stderr(&format!("its tunnels were cut tenant={tenant}"), T)
        .await?;
    let resp = eventually(T, || async {
        let resp = http_client()
            .get(stack.relay_url("app", "/"))
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 404, "still {}", resp.status());
        Ok(resp)
    })
    .await?;
    expect_ferry_error(resp, 404, "unknown_tenant").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_nodes_statistics_and_the_request_log_are_recorded() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, mut stack) =
        Stack::with_echo(BIN, |o| o.server_env("FERRY_REQUEST_LOG", "true")).await?;
    let store = store_of(&stack).await?;
    let tenant: TenantName = stack.tenant.parse()?;
    let client = http_client();
    for i in 0..5 {
        let resp = client
            .post(stack.relay_url("app", &format!("/item/{i}?q=1")))
            .body("hello")
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        resp.bytes().await?;
    }
    let resp = client.get(stack.relay_url("nope", "/")).send().await?;
    assert_eq!(resp.status(), 404);

    let live = eventually(T, || async {
        let page = store
            .list_connections(&ConnectionQuery {
                tenant: Some(tenant.clone()),
                live_only: true,
                limit: 10,
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(page.items.len() == 1, "live: {:?}", page.items);
        Ok(page.items)
    })
    .await?;
    assert!(live[0].remote_addr.starts_with("127.0.0.1:"));

    // Heartbeat, statistics and the log are written every 10 s.
    let nodes = eventually(Duration::from_secs(25), || async {
        let nodes = store.list_nodes().await?;
        anyhow::ensure!(!nodes.is_empty(), "no node yet");
        Ok(nodes)
    })
    .await?;
    assert_eq!(nodes[0].address, stack.server.url().trim_end_matches('/'));
    let stats = eventually(Duration::from_secs(25), || async {
        let rows = store.stats(Some(&tenant), 0, i64::MAX / 2).await?;
        let total: u64 = rows.iter().map(|r| r.requests).sum();
        anyhow::ensure!(total >= 6, "counted so far: {total}");
        Ok(rows)
    })
    .await?;
    let sum = |f: fn(&ferry_store::StatsRecord) -> u64| stats.iter().map(f).sum::<u64>();
    assert_eq!(sum(|r| r.requests), 6);
    assert_eq!(sum(|r| r.status_classes[1]), 5, "five 2xx");
    assert_eq!(sum(|r| r.status_classes[3]), 1, "one 4xx (unknown target)");
    assert_eq!(sum(|r| r.bytes_in), 25, "five bodies of 5 bytes");
    assert!(sum(|r| r.bytes_out) > 0);
    assert_eq!(
        sum(|r| r.latency_buckets.iter().sum::<u64>()),
        6,
        "every request is in the histogram"
    );
    let log = eventually(Duration::from_secs(25), || async {
        let log = store.request_log(Some(&tenant), None, 100).await?;
        anyhow::ensure!(log.len() >= 6, "logged so far: {}", log.len());
        Ok(log)
    })
    .await?;
    let item = log
        .iter()
        .find(|e| e.path == "/item/4")
        .ok_or_else(|| anyhow::anyhow!("no entry for /item/4 in {log:?}"))?;
    assert_eq!(item.method, "POST");
    assert_eq!(item.target, "app");
    assert_eq!(item.status, 200);
    assert_eq!(item.bytes_in, 5);
    assert_eq!(item.request_id.len(), 32);

    // The connector leaves: its connection moves to the history.
    stack.connector.sigterm()?;
    stack.connector.wait_exit(T).await?;
    eventually(T, || async {
        let page = store
            .list_connections(&ConnectionQuery {
                tenant: Some(tenant.clone()),
                live_only: false,
                limit: 10,
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(
            page.items.len() == 1 && page.items[0].disconnected_at.is_some(),
            "history: {:?}",
            page.items
        );
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_may_require_client_tokens() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) =
        Stack::with_echo(BIN, |o| o.server_env("FERRY_STORE_POLL_INTERVAL", "1s")).await?;
    let other_secret = stack.server.create_tenant("other").await?;
    let store = store_of(&stack).await?;
    let tenant: TenantName = stack.tenant.parse()?;
    set_settings(
        &*store,
        &tenant,
        TenantSettings {
            require_client_auth: Some(true),
            ..Default::default()
        },
    )
    .await?;
    let client = http_client();
    // Within a poll or two the node requires the token.
    let resp = eventually(T, || async {
        let resp = client.get(stack.relay_url("app", "/")).send().await?;
        anyhow::ensure!(resp.status() == 401, "still {}", resp.status());
        Ok(resp)
    })
    .await?;
    expect_ferry_error(resp, 401, "unauthorized").await?;

    let token = |tenant: String, secret: String, scope: &'static str| {
        let client = client.clone();
        let url = format!("{}/oauth/token", stack.server.url().trim_end_matches('/'));
        async move {
            let resp = client
                .post(url)
                .basic_auth(tenant, Some(secret))
                .form(&[("grant_type", "client_credentials"), ("scope", scope)])
                .send()
                .await?;
            anyhow::ensure!(resp.status() == 200, "token: {}", resp.status());
            let body: serde_json::Value = resp.json().await?;
            body["access_token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no access_token in {body}"))
        }
    };
    // A client token (scope relay) passes; so does a connector's own tunnel token.
    let own = token(stack.tenant.clone(), stack.secret.clone(), "relay").await?;
    let resp = client
        .get(stack.relay_url("app", "/"))
        .bearer_auth(&own)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let tunnel_token = token(stack.tenant.clone(), stack.secret.clone(), "tunnel").await?;
    let resp = client
        .get(stack.relay_url("app", "/"))
        .bearer_auth(&tunnel_token)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    // A client token opens no tunnel.
    let resp = client
        .get(format!(
            "{}/_ferry/tunnel",
            stack.server.url().trim_end_matches('/')
        ))
        .bearer_auth(&own)
        .header("connection", "upgrade")
        .header("upgrade", "ferry-tunnel/1")
        .header("ferry-connector-id", "intruder")
        .header("ferry-targets", "app")
        .send()
        .await?;
    expect_ferry_error(resp, 401, "unauthorized").await?;

    // Another tenant's token is not enough; neither is garbage.
    let foreign = token("other".to_owned(), other_secret, "relay").await?;
    let resp = client
        .get(stack.relay_url("app", "/"))
        .bearer_auth(&foreign)
        .send()
        .await?;
    expect_ferry_error(resp, 401, "unauthorized").await?;
    let resp = client
        .get(stack.relay_url("app", "/"))
        .bearer_auth("not.a.token")
        .send()
        .await?;
    expect_ferry_error(resp, 401, "unauthorized").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_the_management_api_reach_the_connectors() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (_echo, stack) = Stack::with_echo(BIN, |o| o).await?;
    let key = stack.server.create_admin_key("ops").await?;
    let api = stack
        .server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
        .to_owned();
    let client = http_client();
    let tenant = &stack.tenant;

    let resp = client
        .patch(format!("{api}/api/v1/tenants/{tenant}/settings"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"target_response_timeout_ms": 1234}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    stack
        .connector
        .output()
        .wait_stderr(r#""target_response_timeout_ms":1234"#, T)
        .await?;

    let secrets: serde_json::Value = client
        .get(format!("{api}/api/v1/tenants/{tenant}/secrets"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let id = secrets["items"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no secret id in {secrets}"))?
        .to_owned();
    let resp = client
        .delete(format!("{api}/api/v1/tenants/{tenant}/secrets/{id}"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(resp.status(), 204);
    stack
        .server
        .output()
        .wait_stderr("secret revoked: its tunnels were cut", T)
        .await?;
    Ok(())
}

/// Two tenants with a target of the same name: each tenant's requests reach only its own connector, and a
/// connector secret of one tenant cannot call the management API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let (echo_a, stack) = Stack::with_echo(BIN, |o| o).await?;
    let echo_b = TargetServer::start(TargetKind::Echo).await?;
    let secret_b = stack.server.create_tenant("bravo").await?;
    let _connector_b = ferry_testkit::Connector::start(
        BIN,
        stack.server.url(),
        "bravo",
        &secret_b,
        &[("app", &echo_b.url())],
        Default::default(),
    )
    .await?;
    let client = http_client();
    for _ in 0..10 {
        let resp = client.get(stack.relay_url("app", "/a")).send().await?;
        assert_eq!(resp.status(), 200);
        let resp = client
            .get(format!(
                "{}/relay/bravo/app/b",
                stack.server.url().trim_end_matches('/')
            ))
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        echo_a.requests(),
        10,
        "tenant A's target saw only A's requests"
    );
    assert_eq!(
        echo_b.requests(),
        10,
        "tenant B's target saw only B's requests"
    );

    let api = stack
        .server
        .admin_url()
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
        .to_owned();
    for credential in [stack.secret.as_str(), secret_b.as_str()] {
        let resp = client
            .get(format!("{api}/api/v1/tenants"))
            .bearer_auth(credential)
            .send()
            .await?;
        assert_eq!(resp.status(), 401, "a connector secret is no admin key");
    }
    let metrics = client
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for tenant in [stack.tenant.as_str(), "bravo"] {
        let line = format!("ferry_relay_tunnels{{tenant=\"{tenant}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    Ok(())
}
