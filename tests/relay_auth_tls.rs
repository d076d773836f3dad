//! End to end, against the built `ferry` binary: connector authentication (the token endpoint, the tunnel
//! upgrade's token checks, the tenant coming only from the token) and TLS between connector and node.

use crate::common::{jwt_join, jwt_parts, tunnel_upgrade_request, BIN, H2_SERVER_SETTINGS};
use ferry_testkit::client::{client_builder, expect_ferry_error};
use ferry_testkit::raw::RawConn;
use ferry_testkit::{
    http_client, light_slot, within, Connector, ConnectorOptions, EchoReply, FerryServer,
    ServerOptions, TargetKind, TargetServer, TestPki,
};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(20);

/// `POST /oauth/token` with client credentials in the form; returns status and JSON body.
async fn token_request(
    server: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<(u16, serde_json::Value)> {
    let resp = http_client()
        .post(format!("{server}/oauth/token"))
        .form(form)
        .timeout(T)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let json = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("token reply {status} {text:?}: {e}"))?;
    Ok((status, json))
}

async fn token(server: &str, tenant: &str, secret: &str) -> anyhow::Result<String> {
    let (status, json) = token_request(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", tenant),
            ("client_secret", secret),
        ],
    )
    .await?;
    anyhow::ensure!(status == 200, "token request: {status} {json}");
    json["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no access_token in {json}"))
}

/// Send a tunnel upgrade; returns the connection and the response head.
async fn upgrade(
    addr: SocketAddr,
    token: Option<&str>,
    connector_id: &str,
    extra: &str,
) -> anyhow::Result<(RawConn, ferry_testkit::raw::RawHead)> {
    let mut conn = RawConn::connect(addr).await?;
    conn.send(tunnel_upgrade_request(addr, token, connector_id, extra).as_bytes())
        .await?;
    let head = within(T, "tunnel upgrade answer", conn.read_head()).await??;
    Ok((conn, head))
}

/// The upgrade with `token` is refused with `401 unauthorized` in Ferry's error shape.
async fn expect_refused(addr: SocketAddr, token: Option<&str>, what: &str) -> anyhow::Result<()> {
    let (mut conn, head) = upgrade(addr, token, "0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e5f", "").await?;
    let resp = within(T, "refusal body", conn.read_body(&head, false)).await??;
    resp.check_ferry_error(401, "unauthorized")
        .map_err(|e| e.context(format!("tunnel upgrade with {what}")))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_with_wrong_secret_never_gets_a_tunnel() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_CONNECTOR_WAIT", "1s"),
    )
    .await?;
    let secret = server.create_tenant("demo").await?;
    let wrong = format!("{secret}x");
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &wrong,
        &[("app", &echo.url())],
        ConnectorOptions {
            no_wait: true,
            ..Default::default()
        }
        .env("FERRY_RECONNECT_MIN_DELAY", "100ms")
        .env("FERRY_RECONNECT_MAX_DELAY", "400ms")
        .env("FERRY_AUTH_FAILURE_DELAY", "200ms"),
    )
    .await?;
    // it keeps trying (at the auth-failure delay) and keeps being refused, saying so as an error
    connector
        .output()
        .wait_stderr_count("refused this connector's credentials", 3, T)
        .await?;
    let log = connector.output().stderr();
    assert!(
        log.lines().any(|l| l.contains(" ERROR ")
            && l.contains("client_id=demo")
            && l.contains("retrying will not help")),
        "{log}"
    );
    server
        .output()
        .wait_stderr("token request refused", T)
        .await?;
    let resp = http_client()
        .get(format!("{}/relay/demo/app/x", server.url()))
        .timeout(T)
        .send()
        .await?;
    expect_ferry_error(resp, 503, "no_connector").await?;
    assert!(
        !connector.stderr_contains("tunnel established"),
        "{}",
        connector.output().tail(20)
    );
    assert!(
        !server.stderr_contains("tunnel attached"),
        "{}",
        server.output().tail(20)
    );
    assert!(
        !server.stderr_contains(&wrong),
        "the server must not log the secret it was sent"
    );
    assert!(
        !connector.stderr_contains(&wrong),
        "the connector must not log its secret"
    );
    assert_eq!(echo.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_answers_client_credentials_per_rfc6749() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let secret = server.create_tenant("demo").await?;
    let url = server.url();

    // right secret in the form
    let (status, json) = token_request(
        url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "demo"),
            ("client_secret", &secret),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["token_type"], "Bearer", "{json}");
    assert!(json["expires_in"].as_u64().is_some_and(|s| s > 0), "{json}");
    let access = json["access_token"].as_str().unwrap_or_default();
    let (header, claims, _) = jwt_parts(access)?;
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(claims["tenant"], "demo", "{claims}");
    assert_eq!(claims["sub"], "demo", "{claims}");
    assert_eq!(claims["aud"], "ferry-tunnel", "{claims}");
    assert_eq!(claims["iss"], "ferry", "{claims}");
    assert!(
        claims["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|s| s == "tunnel")),
        "{claims}"
    );

    // the secret as HTTP Basic authentication
    let resp = http_client()
        .post(format!("{url}/oauth/token"))
        .basic_auth("demo", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await?;
    assert!(
        json["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3),
        "{json}"
    );

    // wrong secret, unknown tenant (not told apart), wrong secret by Basic
    let wrong = format!("{secret}x");
    for (what, form) in [
        (
            "wrong secret",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "demo"),
                ("client_secret", wrong.as_str()),
            ],
        ),
        (
            "unknown tenant",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nosuch"),
                ("client_secret", secret.as_str()),
            ],
        ),
    ] {
        let (status, json) = token_request(url, &form).await?;
        assert_eq!(status, 401, "{what}: {json}");
        assert_eq!(json["error"], "invalid_client", "{what}: {json}");
        assert!(json.get("access_token").is_none(), "{what}: {json}");
    }
    let resp = http_client()
        .post(format!("{url}/oauth/token"))
        .basic_auth("demo", Some(&wrong))
        .form(&[("grant_type", "client_credentials")])
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let json: serde_json::Value = resp.json().await?;
    assert_eq!(
        json["error"], "invalid_client",
        "basic with a wrong secret: {json}"
    );

    // malformed requests
    let (status, json) =
        token_request(url, &[("client_id", "demo"), ("client_secret", &secret)]).await?;
    assert_eq!(status, 400, "missing grant_type: {json}");
    assert_eq!(
        json["error"], "invalid_request",
        "missing grant_type: {json}"
    );
    let (status, json) = token_request(
        url,
        &[
            ("grant_type", "password"),
            ("client_id", "demo"),
            ("client_secret", &secret),
        ],
    )
    .await?;
    assert_eq!(status, 400, "grant_type=password: {json}");
    assert_eq!(
        json["error"], "unsupported_grant_type",
        "grant_type=password: {json}"
    );

    server
        .output()
        .wait_stderr("token request refused", T)
        .await?;
    assert!(
        !server.stderr_contains(&secret),
        "the server must not log secrets"
    );
    assert!(
        !server.stderr_contains(&wrong),
        "the server must not log secrets"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_upgrade_without_or_with_forged_token_is_401_unauthorized() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let secret = server.create_tenant("alpha").await?;
    server.create_tenant("bravo").await?;
    // another node has its own Ed25519 signing key: its tokens are well-formed but foreign
    let other = FerryServer::start(BIN, ServerOptions::default()).await?;
    let other_secret = other.create_tenant("alpha").await?;
    let addr = server.addr();

    let genuine = token(server.url(), "alpha", &secret).await?;
    let foreign = token(other.url(), "alpha", &other_secret).await?;
    let (gh, gp, gsig) = jwt_parts(&genuine)?;
    let (fh, fp, fsig) = jwt_parts(&foreign)?;
    assert_ne!(gh["kid"], fh["kid"], "two nodes, two keys");

    expect_refused(addr, None, "no token").await?;
    expect_refused(addr, Some("not-a-jwt"), "garbage").await?;
    expect_refused(addr, Some(&foreign), "a token signed by another node's key").await?;
    let mut forged_header = fh.clone();
    forged_header["kid"] = gh["kid"].clone();
    expect_refused(
        addr,
        Some(&jwt_join(&forged_header, &fp, &fsig)),
        "a token signed by another key under this node's kid",
    )
    .await?;
    let mut other_tenant = gp.clone();
    other_tenant["tenant"] = "bravo".into();
    other_tenant["sub"] = "bravo".into();
    expect_refused(
        addr,
        Some(&jwt_join(&gh, &other_tenant, &gsig)),
        "a genuine token whose tenant was changed",
    )
    .await?;
    let mut later = gp.clone();
    later["exp"] = (gp["exp"].as_u64().unwrap_or(0) + 3600).into();
    expect_refused(
        addr,
        Some(&jwt_join(&gh, &later, &gsig)),
        "a genuine token whose exp was changed",
    )
    .await?;
    let mut none_header = gh.clone();
    none_header["alg"] = "none".into();
    expect_refused(addr, Some(&jwt_join(&none_header, &gp, "")), "alg none").await?;
    assert!(
        !server.stderr_contains("tunnel attached"),
        "{}",
        server.output().tail(30)
    );
    assert!(server.stderr_contains("tunnel refused"));

    // the genuine token does open a tunnel with the very same request (so the refusals were about the token)
    let (mut conn, head) = upgrade(
        addr,
        Some(&genuine),
        "0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
        "",
    )
    .await?;
    assert_eq!(head.status, 101, "{head:?}");
    conn.send(&H2_SERVER_SETTINGS).await?;
    server.output().wait_stderr("tunnel attached", T).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tunnel_token_is_401_unauthorized() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server =
        FerryServer::start(BIN, ServerOptions::default().env("FERRY_TOKEN_TTL", "1s")).await?;
    let secret = server.create_tenant("demo").await?;
    let (status, json) = token_request(
        server.url(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "demo"),
            ("client_secret", &secret),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["expires_in"], 1, "{json}");
    let tok = json["access_token"].as_str().unwrap_or_default().to_owned();
    let exp = jwt_parts(&tok)?.1["exp"].as_u64().unwrap_or(0);
    // fresh, it opens a tunnel
    let (mut conn, head) = upgrade(
        server.addr(),
        Some(&tok),
        "0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e51",
        "",
    )
    .await?;
    assert_eq!(head.status, 101, "{head:?}");
    conn.send(&H2_SERVER_SETTINGS).await?;
    server.output().wait_stderr("tunnel attached", T).await?;
    drop(conn);
    // past exp and the verifier's leeway (30 s, ferry_auth::LEEWAY), it does not; this waits for the clock
    let leeway = 30;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let until = exp as f64 + leeway as f64 + 1.5;
    if until > now {
        tokio::time::sleep(Duration::from_secs_f64(until - now)).await;
    }
    expect_refused(server.addr(), Some(&tok), "an expired token").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_tenant_comes_only_from_the_token() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().env("FERRY_CONNECTOR_WAIT", "1s"),
    )
    .await?;
    let secret = server.create_tenant("alpha").await?;
    server.create_tenant("bravo").await?;
    let alpha = token(server.url(), "alpha", &secret).await?;
    let id = "0d5c6f1e-1b2a-4c3d-9e8f-00000000a1fa";
    let (mut conn, head) = upgrade(
        server.addr(),
        Some(&alpha),
        id,
        "Ferry-Tenant: bravo\r\nX-Ferry-Tenant: bravo\r\nX-Tenant: bravo\r\nX-Forwarded-Host: bravo\r\n",
    )
    .await?;
    assert_eq!(head.status, 101, "{head:?}");
    conn.send(&H2_SERVER_SETTINGS).await?;
    let line = server
        .output()
        .wait_for(T, "tunnel attached", |_, err| {
            err.lines()
                .find(|l| l.contains("tunnel attached") && l.contains(id))
                .map(str::to_owned)
        })
        .await?;
    assert!(
        line.contains("tenant=alpha"),
        "the tunnel belongs to the token's tenant: {line}"
    );
    assert!(
        !line.contains("bravo"),
        "no header chooses the tenant: {line}"
    );
    // bravo still has no connector
    let resp = http_client()
        .get(format!("{}/relay/bravo/app/x", server.url()))
        .timeout(T)
        .send()
        .await?;
    expect_ferry_error(resp, 503, "no_connector").await?;
    assert_eq!(server.output().stderr_count("tunnel attached"), 1);
    drop(conn);
    Ok(())
}

/// The relay over HTTP/3 (`FERRY_HTTP3=true`): a request and a request body reach the target through the
/// connector as over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_answers_over_http3() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let pki = TestPki::new()?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .env("FERRY_HTTP3", "true"),
    )
    .await?;
    let secret = server.create_tenant("demo").await?;
    let _connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .arg("--ca-file")
            .arg(&pki.ca_path().display().to_string()),
    )
    .await?;
    server.output().wait_stderr("tunnel attached", T).await?;
    let mut h3 =
        ferry_testkit::H3Client::connect(server.addr(), "localhost", &pki.ca_path(), None).await?;
    let resp = h3.get("/relay/demo/app/h3/get?q=1").await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(reply.uri, "/h3/get?q=1");
    assert_eq!(reply.header("x-forwarded-proto"), Some("https"));
    let body = bytes::Bytes::from(vec![b'x'; 200 * 1024]);
    let resp = h3
        .request(http::Method::POST, "/relay/demo/app/h3/post", &[], body)
        .await?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let reply: EchoReply = serde_json::from_slice(&resp.body)?;
    assert_eq!(
        (reply.method.as_str(), reply.body_len),
        ("POST", 200 * 1024)
    );
    let resp = h3.get("/relay/nobody/app/x").await?;
    assert_eq!(resp.status, 404, "{resp:?}");
    h3.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_over_tls_with_ca_file_relays_https_requests() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let pki = TestPki::new()?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().tls(pki.cert_path(), pki.key_path()),
    )
    .await?;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let secret = server.create_tenant("demo").await?;
    let _connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .arg("--ca-file")
            .arg(&pki.ca_path().display().to_string()),
    )
    .await?;
    server.output().wait_stderr("tunnel attached", T).await?;
    let client = client_builder()
        .add_root_certificate(pki.reqwest_ca()?)
        .build()?;
    for i in 0..5 {
        let resp = client
            .get(format!("{}/relay/demo/app/tls/{i}", server.url()))
            .timeout(T)
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        let reply: EchoReply = resp.json().await?;
        assert_eq!(reply.uri, format!("/tls/{i}"));
        assert_eq!(
            reply.header("x-forwarded-proto"),
            Some("https"),
            "{:?}",
            reply.headers
        );
    }
    assert_eq!(echo.requests(), 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_without_the_ca_never_connects_to_a_tls_server() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let pki = TestPki::new()?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .tls(pki.cert_path(), pki.key_path())
            .env("FERRY_CONNECTOR_WAIT", "1s"),
    )
    .await?;
    let secret = server.create_tenant("demo").await?;
    let connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions {
            no_wait: true,
            ..Default::default()
        }
        .env("FERRY_RECONNECT_MIN_DELAY", "100ms")
        .env("FERRY_RECONNECT_MAX_DELAY", "400ms"),
    )
    .await?;
    // it tries (and fails) several times
    connector
        .output()
        .wait_for(T, "three failed attempts", |_, err| {
            (err.lines()
                .filter(|l| l.contains(" WARN ") && l.contains(" delay="))
                .count()
                >= 3)
                .then_some(())
        })
        .await?;
    let log = connector.output().stderr();
    let lower = log.to_lowercase();
    assert!(
        lower.contains("certificate")
            || lower.contains("unknownissuer")
            || lower.contains("unknown issuer"),
        "the connector's log should name the certificate verification failure:\n{log}"
    );
    assert!(!log.contains("tunnel established"), "{log}");
    assert!(!server.stderr_contains("tunnel attached"));
    let client = client_builder()
        .add_root_certificate(pki.reqwest_ca()?)
        .build()?;
    let resp = client
        .get(format!("{}/relay/demo/app/x", server.url()))
        .timeout(T)
        .send()
        .await?;
    expect_ferry_error(resp, 503, "no_connector").await?;
    assert_eq!(echo.requests(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_whose_secret_is_refused_exits_3_when_asked_to() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    server.create_tenant("demo").await?;
    let out = within(
        T,
        "ferry connector --exit-on-auth-failure",
        tokio::process::Command::new(BIN)
            .args([
                "connector",
                "--server",
                server.url(),
                "--tenant",
                "nosuchtenant",
                "--target",
                &format!("app={}", echo.url()),
                "--exit-on-auth-failure",
            ])
            .env("FERRY_SECRET", "fsec_wrong")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(" ERROR ") && stderr.contains("client_id=nosuchtenant"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid_client"), "{stderr}");
    Ok(())
}

/// A self-signed certificate that is its own CA, as `openssl req -x509` makes it, for 127.0.0.1.
fn openssl_style_self_signed(
    dir: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.self_signed(&key)?;
    let cert_path = dir.join("self.pem");
    let key_path = dir.join("self-key.pem");
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(cert.der().as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((cert_path, key_path, hex))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_certificate_as_the_nodes_says_what_to_do_and_can_be_pinned() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let dir = tempfile::tempdir()?;
    let (cert, key, fingerprint) = openssl_style_self_signed(dir.path())?;
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(BIN, ServerOptions::default().tls(&cert, &key)).await?;
    let secret = server.create_tenant("demo").await?;
    // Trusted as a CA, it is still refused as the server's own certificate: the log says what to do instead.
    let refused = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions {
            no_wait: true,
            ..Default::default()
        }
        .arg("--ca-file")
        .arg(&cert.display().to_string())
        .env("FERRY_RECONNECT_MIN_DELAY", "100ms")
        .env("FERRY_RECONNECT_MAX_DELAY", "400ms"),
    )
    .await?;
    refused
        .output()
        .wait_stderr("a CA certificate used as a server certificate", T)
        .await?;
    let log = refused.output().stderr();
    assert!(
        log.contains("ferry cert dev") && log.contains("--pin-sha256"),
        "{log}"
    );
    drop(refused);
    // Pinned by its SHA-256, it is trusted.
    let _pinned = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .arg("--pin-sha256")
            .arg(&fingerprint),
    )
    .await?;
    let client = client_builder().danger_accept_invalid_certs(true).build()?;
    let resp = client
        .get(format!("{}/relay/demo/app/pinned", server.url()))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_ferry_cert_dev_serve_a_tls_node() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("tls");
    let made = within(
        T,
        "ferry cert dev",
        tokio::process::Command::new(BIN)
            .args([
                "cert",
                "dev",
                "--name",
                "localhost",
                "--name",
                "127.0.0.1",
                "--out",
            ])
            .arg(&out)
            .output(),
    )
    .await??;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let echo = TargetServer::start(TargetKind::Echo).await?;
    let server = FerryServer::start(
        BIN,
        ServerOptions::default().tls(out.join("server.pem"), out.join("server-key.pem")),
    )
    .await?;
    let secret = server.create_tenant("demo").await?;
    let _connector = Connector::start(
        BIN,
        server.url(),
        "demo",
        &secret,
        &[("app", &echo.url())],
        ConnectorOptions::default()
            .arg("--ca-file")
            .arg(&out.join("ca.pem").display().to_string()),
    )
    .await?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(out.join("ca.pem"))?)?;
    let client = client_builder().add_root_certificate(ca).build()?;
    let resp = client
        .get(format!("{}/relay/demo/app/dev", server.url()))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

/// The first hour: the default issuer `ferry` is not a URL, and OpenID Connect libraries refuse a discovery
/// document whose `issuer` is not the address it came from. With `public_url` set and no issuer of its own, the
/// issuer is the public URL; tokens issued before under the old default still open tunnels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_follows_the_public_url_and_earlier_tokens_stay_good() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let dir = tempfile::tempdir()?;
    let on_dir = || ServerOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..ServerOptions::default()
    };
    let mut before = FerryServer::start(BIN, on_dir()).await?;
    let secret = before.create_tenant("demo").await?;
    let earlier = token(before.url(), "demo", &secret).await?;
    assert_eq!(jwt_parts(&earlier)?.1["iss"], "ferry");
    before.kill().await?;

    let public = "https://ferry.example.test";
    let server =
        FerryServer::start(BIN, on_dir().env("FERRY_PUBLIC_URL", &format!("{public}/"))).await?;
    let doc: serde_json::Value = http_client()
        .get(format!("{}/.well-known/openid-configuration", server.url()))
        .timeout(T)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(doc["issuer"], public, "{doc}");
    assert_eq!(
        doc["token_endpoint"],
        format!("{public}/oauth/token"),
        "{doc}"
    );
    let current = token(server.url(), "demo", &secret).await?;
    assert_eq!(jwt_parts(&current)?.1["iss"], public);
    for (what, token) in [
        ("a token of the old issuer", &earlier),
        ("a new token", &current),
    ] {
        let (_conn, head) = upgrade(
            server.addr(),
            Some(token),
            "0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
            "",
        )
        .await?;
        assert_eq!(head.status, 101, "{what}: {head:?}");
    }
    Ok(())
}
