//! End to end with a real OpenID Connect provider nobody here wrote: panva's `oidc-provider` from npm, run by
//! `scripts/oidc-provider/server.js` (installed here with `npm ci` when its `node_modules` is missing). Ferry is
//! configured with the provider as external issuer (discovery → JWKS); a connector gets its token from the
//! provider's token endpoint and a request is relayed through its tunnel; a token of the same provider for
//! another audience is refused at the tunnel; RS256, PS256, ES256 and EdDSA provider keys are all accepted.
//! Also the built-in issuer's discovery document, JWKS and failure limit, which need no provider. Dashboard
//! sign-in through the provider is `oidc_sign_in.rs`, which starts the provider with [`OidcProvider`].
//!
//! Needs `node` and `npm` (and the npm registry the first time). Without them the tests print `skipped: …`;
//! with `CI` set they fail.

use crate::common::{tunnel_upgrade_request, BIN};
use ferry_testkit::raw::RawConn;
use ferry_testkit::{
    http_client, light_slot, within, Connector, ConnectorOptions, EchoReply, FerryServer,
    ServerOptions, TargetKind, TargetServer,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const T: Duration = Duration::from_secs(20);
/// `npm ci` may download the packages the first time.
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(300);
const CLIENT_ID: &str = "demo";
const CLIENT_SECRET: &str = "demo-secret";
const OTHER_RESOURCE: &str = "urn:example:other";

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oidc-provider")
}

/// The provider cannot run here: an error under `CI`, else `Ok(None)` after printing `skipped: …`.
fn unavailable<T>(why: String) -> anyhow::Result<Option<T>> {
    if std::env::var_os("CI").is_some() {
        anyhow::bail!("the OIDC provider is required when CI is set: {why}");
    }
    eprintln!("skipped: {why}");
    Ok(None)
}

async fn runs(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(provider_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(NPM_CI_TIMEOUT, out).await {
        Err(_) => Err(format!("`{program} {}` timed out", args.join(" "))),
        Ok(Err(e)) => Err(format!("`{program}` cannot be run: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

/// Check node, and install the provider's packages once per test run (`npm ci`, from the committed lock file).
async fn prepare() -> Result<(), String> {
    static READY: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            runs("node", &["--version"]).await?;
            if !provider_dir()
                .join("node_modules/oidc-provider/package.json")
                .exists()
            {
                runs("npm", &["ci", "--no-audit", "--no-fund"]).await?;
            }
            Ok(())
        })
        .await
        .clone()
}

/// How long one start of the provider may take to print its listening line, and how many starts are tried.
const PROVIDER_START: Duration = Duration::from_secs(30);
const PROVIDER_STARTS: u32 = 3;

/// A running `node server.js`, killed on drop.
pub(crate) struct OidcProvider {
    _child: Child,
    pub(crate) issuer: String,
    stderr: Arc<Mutex<String>>,
}

impl OidcProvider {
    /// Start the provider signing with `alg`; `None` (skipped) when node or the packages are missing.
    pub(crate) async fn start(alg: &str) -> anyhow::Result<Option<Self>> {
        if let Err(why) = prepare().await {
            return unavailable(why);
        }
        // Under the whole suite, a provider now and then printed nothing for a minute after its first warning
        // (stuck before `new Provider`; not seen alone, cause unknown): one start at a time, and a stuck one is
        // killed and started again.
        static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _starting = STARTING.lock().await;
        let mut attempt = 1;
        loop {
            match Self::start_once(alg).await {
                Ok(p) => return Ok(Some(p)),
                Err(e) if attempt < PROVIDER_STARTS => {
                    eprintln!("oidc-provider start {attempt} failed, starting it again: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One start of the provider: spawn it and wait for its listening line.
    async fn start_once(alg: &str) -> anyhow::Result<Self> {
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(provider_dir())
            .env("PORT", "0")
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("OTHER_RESOURCE", OTHER_RESOURCE)
            .env("SIGNING_ALG", alg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let issuer = within(PROVIDER_START, "oidc-provider listening line", async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.trim().strip_prefix("oidc-provider listening on ") {
                    return Ok(url.to_owned());
                }
            }
            anyhow::bail!("oidc-provider exited before listening")
        })
        .await
        .and_then(|r| r)
        .map_err(|e| {
            let err = stderr.lock().map(|s| s.clone()).unwrap_or_default();
            anyhow::anyhow!("{e:#}\n{err}")
        })?;
        // Keep draining stdout so the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(OidcProvider {
            _child: child,
            issuer,
            stderr,
        })
    }

    fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// A client-credentials token straight from the provider, for `resource` (the default one: Ferry's).
    pub(crate) async fn token(&self, resource: Option<&str>) -> anyhow::Result<String> {
        self.token_of(CLIENT_ID, CLIENT_SECRET, resource).await
    }

    /// A client-credentials token of the client `id`.
    pub(crate) async fn token_of(
        &self,
        id: &str,
        secret: &str,
        resource: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut form = vec![("grant_type", "client_credentials"), ("scope", "tunnel")];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        let resp = http_client()
            .post(self.token_url())
            .basic_auth(id, Some(secret))
            .form(&form)
            .timeout(T)
            .send()
            .await?;
        let status = resp.status();
        let json: serde_json::Value = resp.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "provider token request: {status} {json}\n{}",
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        );
        json["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no access_token in {json}"))
    }
}

/// The (unverified) claims of a JWT.
fn claims_of(token: &str) -> anyhow::Result<serde_json::Value> {
    let (_, claims, _) = crate::common::jwt_parts(token)?;
    Ok(claims)
}

/// A Ferry node trusting `provider`, with tenant `demo`.
async fn ferry_for(provider: &OidcProvider) -> anyhow::Result<FerryServer> {
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .env("FERRY_OIDC_ISSUER", &provider.issuer)
            .env("FERRY_CONNECTOR_WAIT", "2s"),
    )
    .await?;
    server.create_tenant(CLIENT_ID).await?;
    Ok(server)
}

/// Send a tunnel upgrade with `token`; the status and the body of the answer.
async fn upgrade_status(addr: SocketAddr, token: &str) -> anyhow::Result<(u16, String)> {
    let mut conn = RawConn::connect(addr).await?;
    conn.send(
        tunnel_upgrade_request(
            addr,
            Some(token),
            "0d5c6f1e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
            "",
        )
        .as_bytes(),
    )
    .await?;
    let head = within(T, "tunnel upgrade answer", conn.read_head()).await??;
    if head.status == 101 {
        return Ok((101, String::new()));
    }
    let resp = within(T, "refusal body", conn.read_body(&head, false)).await??;
    Ok((
        head.status,
        String::from_utf8_lossy(&resp.body).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_with_a_provider_token_relays_and_a_wrong_audience_is_refused(
) -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(provider) = OidcProvider::start("RS256").await? else {
        return Ok(());
    };
    let server = ferry_for(&provider).await?;
    let echo = TargetServer::start(TargetKind::Echo).await?;

    // The connector gets its token from the provider (client id = tenant, secret in Basic, scope tunnel; the
    // provider's default resource makes it a JWT for audience ferry-tunnel).
    let connector = Connector::start(
        BIN,
        server.url(),
        CLIENT_ID,
        CLIENT_SECRET,
        &[("app", &echo.url())],
        ConnectorOptions::default().env("FERRY_TOKEN_URL", &provider.token_url()),
    )
    .await?;
    let resp = http_client()
        .get(format!("{}/relay/demo/app/hello?x=1", server.url()))
        .timeout(T)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let echoed: EchoReply = resp.json().await?;
    assert_eq!(echoed.uri, "/hello?x=1");
    assert!(server.stderr_contains("tunnel attached"));
    assert!(
        !connector.stderr_contains(CLIENT_SECRET),
        "the connector must not log its secret"
    );

    // A token of the same provider, valid, but for another resource: refused at the tunnel.
    let wrong = provider.token(Some(OTHER_RESOURCE)).await?;
    let claims = claims_of(&wrong)?;
    assert_eq!(claims["aud"], OTHER_RESOURCE, "{claims}");
    assert_eq!(claims["iss"], provider.issuer.as_str());
    let (status, body) = upgrade_status(server.addr(), &wrong).await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    assert!(body.contains("audience"), "{body}");

    // The right one, fetched the same way, opens a tunnel.
    let right = provider.token(None).await?;
    assert_eq!(claims_of(&right)?["aud"], "ferry-tunnel");
    let (status, body) = upgrade_status(server.addr(), &right).await?;
    assert_eq!(status, 101, "{body}");

    // A token from nowhere (signed by a key the provider never published) is refused too.
    let mut parts: Vec<String> = right.split('.').map(str::to_owned).collect();
    parts[2] = crate::common::b64url_encode(b"not the signature");
    let (status, _) = upgrade_status(server.addr(), &parts.join(".")).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_of_every_supported_algorithm_are_accepted() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    for alg in ["PS256", "ES256", "EdDSA"] {
        let Some(provider) = OidcProvider::start(alg).await? else {
            return Ok(());
        };
        let server = ferry_for(&provider).await?;
        let token = provider.token(None).await?;
        let (header, _, _) = crate::common::jwt_parts(&token)?;
        assert_eq!(header["alg"], alg, "{header}");
        let (status, body) = upgrade_status(server.addr(), &token).await?;
        assert_eq!(status, 101, "{alg}: {body}");
    }
    Ok(())
}

/// The built-in issuer through the real binary (no provider needed): its discovery document and JWKS describe
/// the keys that sign its tokens, and repeated failures at the token endpoint get 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_discovery_jwks_and_failure_limit() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let server = FerryServer::start(BIN, ServerOptions::default()).await?;
    let secret = server.create_tenant("demo").await?;
    let client = http_client();

    let discovery: serde_json::Value = client
        .get(format!("{}/.well-known/openid-configuration", server.url()))
        .timeout(T)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(discovery["issuer"], "ferry");
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/oauth/token", server.url())
    );
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no jwks_uri in {discovery}"))?;
    let jwks: serde_json::Value = client.get(jwks_uri).timeout(T).send().await?.json().await?;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["kid"].as_str()).collect())
        .unwrap_or_default();

    let token_reply = |id: &'static str, secret: String| {
        let client = client.clone();
        let url = format!("{}/oauth/token", server.url());
        async move {
            client
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .timeout(T)
                .send()
                .await
        }
    };
    let ok: serde_json::Value = token_reply("demo", secret.clone()).await?.json().await?;
    let token = ok["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no token in {ok}"))?;
    let (header, claims, _) = crate::common::jwt_parts(token)?;
    let kid = header["kid"].as_str().unwrap_or_default();
    assert!(kids.contains(&kid), "{kid} in {kids:?}");
    assert!(claims["sid"].is_string(), "{claims}");

    // Ten failures from this address are answered 401, the eleventh 429 (default: 10 per minute per IP).
    for i in 0..10 {
        let resp = token_reply("demo", format!("{secret}x")).await?;
        assert_eq!(resp.status(), 401, "failure {i}");
    }
    let resp = token_reply("demo", secret.clone()).await?;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Retry-After"))?;
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    server
        .output()
        .wait_stderr("token request rate limited after repeated failures", T)
        .await?;
    Ok(())
}

/// The management API accepts the provider's tokens that carry the admin role (a second client of the provider
/// has `roles: ["ferry-admin"]`), answers 403 to valid tokens without it and 401 to forged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_admins_reach_the_management_api() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(provider) = OidcProvider::start("RS256").await? else {
        return Ok(());
    };
    let server = FerryServer::start(
        BIN,
        ServerOptions::default()
            .env("FERRY_OIDC_ISSUER", &provider.issuer)
            .env("FERRY_OIDC_ADMIN_ROLE", "ferry-admin"),
    )
    .await?;
    let api = format!(
        "{}/api/v1/tenants",
        server
            .admin_url()
            .ok_or_else(|| anyhow::anyhow!("no admin listener"))?
    );
    let admin = provider.token_of("ops", "ops-secret", None).await?;
    assert_eq!(claims_of(&admin)?["roles"][0], "ferry-admin");
    let plain = provider.token(None).await?;

    let client = http_client();
    let status = |token: String| {
        let client = client.clone();
        let api = api.clone();
        async move {
            Ok::<_, anyhow::Error>(
                client
                    .get(api)
                    .bearer_auth(token)
                    .timeout(T)
                    .send()
                    .await?
                    .status()
                    .as_u16(),
            )
        }
    };
    assert_eq!(
        status(admin.clone()).await?,
        200,
        "a token with the admin role"
    );
    assert_eq!(status(plain).await?, 403, "a valid token without the role");
    // One character in the middle of the signature changed: still well-formed, no longer valid.
    let at = admin.rfind('.').unwrap_or(0) + 20;
    let mut forged = admin.clone().into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged)?;
    assert_eq!(status(forged).await?, 401, "a forged signature");
    Ok(())
}
