//! Signing in to the dashboard through a real OpenID Connect provider (panva's `oidc-provider`, run by
//! `scripts/oidc-provider/server.js`, as in `auth_oidc.rs`): the authorization code flow with PKCE driven with
//! plain HTTP and a small cookie jar, as a browser would: Ferry's start URL → the provider's login form → its
//! consent form → Ferry's callback → a session cookie that works on `/api/v1/…` with the role the ID token's
//! claims map to. Also what must be refused: a forged or missing state, an ID token with another nonce, an
//! account whose claims map to no role (403, a log line, an audit entry); and the provider's bearer tokens
//! mapped to roles by the same rules; a callback finished by another node; an account losing its role.
//!
//! Needs `node` and `npm` like `auth_oidc.rs`: without them the tests print `skipped: …`; with `CI` set they fail.

use std::collections::HashMap;
use std::time::Duration;

use ferry_testkit::client::client_builder;
use ferry_testkit::{light_slot, FerryServer, ServerOptions};
use reqwest::Url;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::auth_oidc::OidcProvider;
use crate::common::BIN;

const T: Duration = Duration::from_secs(20);
const SIGN_IN_SECRET: &str = "dashboard-secret";

/// What came back from one request.
struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

/// A client that keeps cookies per origin (host and port; paths are not told apart) and follows nothing by
/// itself.
struct Browser {
    client: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
}

fn origin(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl Browser {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            client: client_builder().timeout(T).build()?,
            jar: HashMap::new(),
        })
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = Url::parse(url).ok()?;
        self.jar.get(&origin(&url))?.get(name).cloned()
    }

    fn cookie_header(&self, url: &Url) -> Option<String> {
        let cookies = self.jar.get(&origin(url))?;
        (!cookies.is_empty()).then(|| {
            cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    async fn send(&mut self, request: reqwest::RequestBuilder, url: &Url) -> anyhow::Result<Reply> {
        let request = match self.cookie_header(url) {
            Some(c) => request.header("cookie", c),
            None => request,
        };
        let response = request.send().await?;
        let jar = self.jar.entry(origin(url)).or_default();
        for set in response.headers().get_all("set-cookie") {
            let text = set.to_str()?;
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let gone = value.is_empty()
                || parts.any(|p| {
                    let p = p.trim().to_ascii_lowercase();
                    p == "max-age=0" || p.starts_with("expires=thu, 01 jan 1970")
                });
            if gone {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .map(String::from);
        let body = response.text().await?;
        Ok(Reply {
            status,
            location,
            body,
        })
    }

    async fn get(&mut self, url: &str) -> anyhow::Result<Reply> {
        let parsed = Url::parse(url)?;
        let request = self.client.get(parsed.clone());
        self.send(request, &parsed).await
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> anyhow::Result<Reply> {
        let parsed = Url::parse(url)?;
        let request = self.client.post(parsed.clone()).form(form);
        self.send(request, &parsed).await
    }

    /// `/api/v1/…` with this browser's cookies (and the CSRF token for a change).
    async fn api(
        &mut self,
        admin: &str,
        method: &str,
        path: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = Url::parse(&format!("{admin}/api/v1{path}"))?;
        let mut request = self
            .client
            .request(method.parse()?, url.clone())
            .header("accept", "application/json");
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = self.send(request, &url).await?;
        let json = serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body));
        Ok((reply.status, json))
    }

    /// From `url`, follow redirects and fill the provider's login (as `login`) and consent forms until the
    /// provider sends the browser to Ferry's callback: that URL, not yet visited.
    async fn through_provider(&mut self, url: &str, login: &str) -> anyhow::Result<String> {
        let mut next = url.to_owned();
        for _ in 0..12 {
            if next.contains(ferry_admin::OIDC_CALLBACK_PATH) {
                return Ok(next);
            }
            let reply = self.get(&next).await?;
            if let Some(location) = reply.location {
                next = location;
                continue;
            }
            anyhow::ensure!(
                reply.status == 200,
                "{next}: {} {}",
                reply.status,
                reply.body
            );
            let form = if reply.body.contains(r#"name="prompt" value="login""#) {
                vec![("prompt", "login"), ("login", login), ("password", "any")]
            } else if reply.body.contains(r#"name="prompt" value="consent""#) {
                vec![("prompt", "consent")]
            } else {
                anyhow::bail!("{next}: neither a login nor a consent form: {}", reply.body)
            };
            let posted = self.post_form(&next, &form).await?;
            next = posted.location.ok_or_else(|| {
                anyhow::anyhow!(
                    "{next}: the form did not redirect: {} {}",
                    posted.status,
                    posted.body
                )
            })?;
        }
        anyhow::bail!("too many steps before the callback")
    }

    /// Start at Ferry, go through the provider as `login`, and visit the callback.
    async fn sign_in(&mut self, admin: &str, login: &str) -> anyhow::Result<Reply> {
        let started = self
            .get(&format!("{admin}{}", ferry_admin::OIDC_START_PATH))
            .await?;
        anyhow::ensure!(
            started.status == 303,
            "start: {} {}",
            started.status,
            started.body
        );
        let to_provider = started
            .location
            .ok_or_else(|| anyhow::anyhow!("start: no Location"))?;
        let callback = self.through_provider(&to_provider, login).await?;
        self.get(&callback).await
    }
}

/// A node trusting `provider` for tokens and sign-in: `ferry-admin` → admin, `ferry-operator` → operator with
/// the tenants of `ferry_tenants`, `ferry-viewer` → viewer. Tenants `acme` and `other`.
async fn ferry_for(provider: &OidcProvider, dir: &std::path::Path) -> anyhow::Result<FerryServer> {
    let server = node_for(provider, dir, true, None).await?;
    server.create_tenant("acme").await?;
    server.create_tenant("other").await?;
    Ok(server)
}

/// A node trusting `provider`; `viewers`: whether `ferry-viewer` maps to viewer; `database_url`: a PostgreSQL
/// store to share with other nodes (else its own SQLite store).
async fn node_for(
    provider: &OidcProvider,
    dir: &std::path::Path,
    viewers: bool,
    database_url: Option<&str>,
) -> anyhow::Result<FerryServer> {
    let viewer_mapping = if viewers {
        "[[server.auth.oidc.role_mapping]]\nvalue = \"ferry-viewer\"\nrole = \"viewer\"\n"
    } else {
        ""
    };
    let config = format!(
        r#"
[server.auth.oidc]
issuer = "{issuer}"
admin_role = "ferry-admin"
tenants_claim = "ferry_tenants"

[[server.auth.oidc.role_mapping]]
value = "ferry-operator"
role = "operator"

{viewer_mapping}
[server.auth.oidc.sign_in]
client_id = "ferry-dashboard"
provider_name = "Test SSO"
"#,
        issuer = provider.issuer
    );
    let name = if viewers {
        "ferry.toml"
    } else {
        "ferry-b.toml"
    };
    let path = crate::common::write_file(dir, name, &config)?;
    let mut options = ServerOptions::default()
        .config(&path)
        .env("FERRY_OIDC_CLIENT_SECRET", SIGN_IN_SECRET);
    if let Some(url) = database_url {
        options = options.env("FERRY_DATABASE_URL", url);
    }
    FerryServer::start(BIN, options).await
}

fn admin_url(server: &FerryServer) -> anyhow::Result<String> {
    server
        .admin_url()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no admin listener"))
}

/// Sign in as `login` in a fresh browser; the browser and the session (`GET /api/v1/session`).
async fn signed_in(admin: &str, login: &str) -> anyhow::Result<(Browser, Value)> {
    let mut browser = Browser::new()?;
    let reply = browser.sign_in(admin, login).await?;
    anyhow::ensure!(
        reply.status == 303 && reply.location.as_deref() == Some(&format!("{admin}/")),
        "{login}: callback answered {} {:?} {}",
        reply.status,
        reply.location,
        reply.body
    );
    anyhow::ensure!(
        browser.cookie(admin, ferry_admin::SESSION_COOKIE).is_some(),
        "{login}: no session cookie"
    );
    anyhow::ensure!(
        browser.cookie(admin, ferry_admin::STATE_COOKIE).is_none(),
        "{login}: the state cookie is cleared"
    );
    let (status, session) = browser.api(admin, "GET", "/session", None, None).await?;
    anyhow::ensure!(status == 200, "{login}: session {status} {session}");
    Ok((browser, session))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_through_the_provider_maps_claims_to_roles() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(provider) = OidcProvider::start("RS256").await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = ferry_for(&provider, dir.path()).await?;
    let admin = admin_url(&server)?;

    // The sign-in page learns what to offer.
    let (status, methods) = Browser::new()?
        .api(&admin, "GET", "/session/methods", None, None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        methods,
        json!({"password": true, "oidc": {"provider_name": "Test SSO", "url": "/api/v1/session/oidc"}})
    );

    // The start sends the browser to the provider with PKCE (S256), state and nonce.
    let mut browser = Browser::new()?;
    let started = browser.get(&format!("{admin}/api/v1/session/oidc")).await?;
    assert_eq!(started.status, 303, "{}", started.body);
    let to = Url::parse(started.location.as_deref().unwrap_or(""))?;
    let query: HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert!(to.as_str().starts_with(&provider.issuer), "{to}");
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["client_id"], "ferry-dashboard");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(
        query["redirect_uri"],
        format!("{admin}/api/v1/session/oidc/callback")
    );
    assert!(
        query["scope"].split(' ').any(|s| s == "openid"),
        "{query:?}"
    );
    assert!(query["state"].len() >= 43 && query["nonce"].len() >= 43);

    // An admin: everything.
    let (mut ada, session) = signed_in(&admin, "ada").await?;
    assert_eq!(session["user"], "ada");
    assert_eq!(session["role"], "admin");
    let csrf = session["csrf_token"].as_str().unwrap_or("").to_owned();
    let (status, body) = ada
        .api(
            &admin,
            "POST",
            "/tenants",
            Some(&csrf),
            Some(json!({"name": "by-ada"})),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    // The account is kept, without a password, with the role of its claims.
    let (_, users) = ada.api(&admin, "GET", "/users", None, None).await?;
    let ada_user = users["items"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "ada"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ada_user["role"], "admin", "{users}");

    // A viewer reads, and changes nothing.
    let (mut vera, session) = signed_in(&admin, "vera").await?;
    assert_eq!(session["role"], "viewer");
    let csrf = session["csrf_token"].as_str().unwrap_or("").to_owned();
    let (status, tenants) = vera.api(&admin, "GET", "/tenants", None, None).await?;
    assert_eq!(status, 200);
    assert_eq!(
        tenants["items"].as_array().map(Vec::len),
        Some(3),
        "{tenants}"
    );
    let (status, body) = vera
        .api(
            &admin,
            "POST",
            "/tenants",
            Some(&csrf),
            Some(json!({"name": "by-vera"})),
        )
        .await?;
    assert_eq!(status, 403, "{body}");

    // An operator sees the tenants of its claim only: another one is as if it did not exist.
    let (mut otto, session) = signed_in(&admin, "otto").await?;
    assert_eq!(session["role"], "operator");
    assert_eq!(session["tenants"], json!(["acme"]));
    let (_, tenants) = otto.api(&admin, "GET", "/tenants", None, None).await?;
    assert_eq!(
        tenants["items"].as_array().map(Vec::len),
        Some(1),
        "{tenants}"
    );
    assert_eq!(
        otto.api(&admin, "GET", "/tenants/acme", None, None)
            .await?
            .0,
        200
    );
    assert_eq!(
        otto.api(&admin, "GET", "/tenants/other", None, None)
            .await?
            .0,
        404
    );

    // Claims that map to no role: refused, logged and audited.
    let mut nemo = Browser::new()?;
    let refused = nemo.sign_in(&admin, "nemo").await?;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("has no role in Ferry"),
        "{}",
        refused.body
    );
    assert!(nemo.cookie(&admin, ferry_admin::SESSION_COOKIE).is_none());
    server
        .output()
        .wait_stderr(
            "oidc sign-in refused: no role maps to the account's claims",
            T,
        )
        .await?;
    let (_, audit) = ada
        .api(&admin, "GET", "/audit?action=session.refuse", None, None)
        .await?;
    assert_eq!(audit["items"][0]["object"], "nemo", "{audit}");
    assert_eq!(audit["items"][0]["actor"], "oidc:nemo", "{audit}");

    // Signing out ends the session as for a password sign-in.
    let csrf = otto.api(&admin, "GET", "/session", None, None).await?.1["csrf_token"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        otto.api(&admin, "DELETE", "/session", Some(&csrf), None)
            .await?
            .0,
        204
    );
    assert_eq!(
        otto.api(&admin, "GET", "/session", None, None).await?.0,
        401
    );

    // Nothing secret in the log: the client secret, codes or tokens.
    assert!(!server.stderr_contains(SIGN_IN_SECRET));
    assert!(!server.stderr_contains("code="));
    assert!(!server.stderr_contains("eyJ"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_state_and_a_foreign_nonce_are_refused() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(provider) = OidcProvider::start("RS256").await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = ferry_for(&provider, dir.path()).await?;
    let admin = admin_url(&server)?;

    // A callback whose state is not the one this browser started with.
    let mut browser = Browser::new()?;
    let started = browser.get(&format!("{admin}/api/v1/session/oidc")).await?;
    let callback = browser
        .through_provider(started.location.as_deref().unwrap_or(""), "ada")
        .await?;
    let mut url = Url::parse(&callback)?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, "forged".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let forged = browser.get(url.as_str()).await?;
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(
        forged.body.contains("start signing in again"),
        "{}",
        forged.body
    );
    assert!(browser
        .cookie(&admin, ferry_admin::SESSION_COOKIE)
        .is_none());

    // The right callback in another browser, without the state cookie.
    let mut elsewhere = Browser::new()?;
    let missing = elsewhere.get(&callback).await?;
    assert_eq!(missing.status, 400, "{}", missing.body);

    // A forged state cookie (its signature does not match).
    let mut forger = Browser::new()?;
    forger
        .jar
        .entry(origin(&Url::parse(&admin)?))
        .or_default()
        .insert(
            ferry_admin::STATE_COOKIE.to_owned(),
            "eyJzIjoieCJ9.AAAA".to_owned(),
        );
    assert_eq!(forger.get(&callback).await?.status, 400);

    // An ID token for another sign-in: the code is asked for with this browser's state and PKCE verifier (read
    // from its state cookie, which is signed, not encrypted) but another nonce, as an attacker injecting a code
    // of its own would. The ID token's nonce gives it away.
    let mut browser = Browser::new()?;
    let started = browser.get(&format!("{admin}/api/v1/session/oidc")).await?;
    assert_eq!(started.status, 303);
    let cookie = browser
        .cookie(&admin, ferry_admin::STATE_COOKIE)
        .ok_or_else(|| anyhow::anyhow!("no state cookie"))?;
    let (body, _) = cookie.split_once('.').unwrap_or(("", ""));
    let state: Value = serde_json::from_slice(&crate::common::b64url_decode(body)?)?;
    let verifier = state["v"].as_str().unwrap_or("");
    let challenge = crate::common::b64url_encode(&sha2::Sha256::digest(verifier.as_bytes()));
    let mut authorize = Url::parse(started.location.as_deref().unwrap_or(""))?;
    let pairs: Vec<(String, String)> = authorize
        .query_pairs()
        .into_owned()
        .map(|(k, v)| match k.as_str() {
            "nonce" => (k, "another-sign-in".to_owned()),
            "code_challenge" => (k, challenge.clone()),
            _ => (k, v),
        })
        .collect();
    authorize.query_pairs_mut().clear().extend_pairs(pairs);
    let callback = browser.through_provider(authorize.as_str(), "ada").await?;
    let refused = browser.get(&callback).await?;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("nonce"), "{}", refused.body);
    assert!(browser
        .cookie(&admin, ferry_admin::SESSION_COOKIE)
        .is_none());
    server
        .output()
        .wait_stderr("management api: oidc sign-in refused", T)
        .await?;
    Ok(())
}

/// The provider's bearer tokens get the same mapping: a viewer reads and changes nothing, an operator sees its
/// tenants only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_get_the_mapped_role() -> anyhow::Result<()> {
    let _slot = light_slot().await;
    let Some(provider) = OidcProvider::start("RS256").await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = ferry_for(&provider, dir.path()).await?;
    let admin = admin_url(&server)?;
    let client = client_builder().timeout(T).build()?;
    let call = |token: String, method: &'static str, path: &'static str| {
        let client = client.clone();
        let url = format!("{admin}/api/v1{path}");
        async move {
            let mut request = client.request(method.parse()?, url).bearer_auth(token);
            if method == "POST" {
                request = request.json(&json!({"name": "by-token"}));
            }
            Ok::<_, anyhow::Error>(request.send().await?.status().as_u16())
        }
    };
    let viewer = provider.token_of("watch", "watch-secret", None).await?;
    assert_eq!(call(viewer.clone(), "GET", "/tenants/other").await?, 200);
    assert_eq!(call(viewer, "POST", "/tenants").await?, 403);
    let operator = provider.token_of("team", "team-secret", None).await?;
    assert_eq!(call(operator.clone(), "GET", "/tenants/acme").await?, 200);
    assert_eq!(call(operator.clone(), "GET", "/tenants/other").await?, 404);
    assert_eq!(call(operator, "GET", "/users").await?, 403);
    let admin_token = provider.token_of("ops", "ops-secret", None).await?;
    assert_eq!(call(admin_token, "POST", "/tenants").await?, 201);
    // A token of the provider with no mapped role.
    assert_eq!(
        call(provider.token(None).await?, "GET", "/tenants").await?,
        403
    );
    Ok(())
}

/// The callback may land on another node (the state rides in the signed cookie, the session is in the store), and
/// an account whose claims no longer map to a role loses it: a later sign-in deletes it with its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_finishes_the_sign_in_and_a_lost_role_ends_the_account() -> anyhow::Result<()>
{
    let _slot = light_slot().await;
    let Some(provider) = OidcProvider::start("RS256").await? else {
        return Ok(());
    };
    let Some(db) = crate::common::PgDatabase::create().await? else {
        return Ok(());
    };
    let result = across_nodes(&provider, &db.url).await;
    db.drop_now().await?;
    result
}

async fn across_nodes(provider: &OidcProvider, database_url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = node_for(provider, dir.path(), true, Some(database_url)).await?;
    // Node B shares A's store (PostgreSQL) but maps no role to ferry-viewer.
    let b = node_for(provider, dir.path(), false, Some(database_url)).await?;
    let (admin_a, admin_b) = (admin_url(&a)?, admin_url(&b)?);

    // Started on A, finished on B: browsers send a host's cookies whatever the port, so B gets the state cookie.
    let mut browser = Browser::new()?;
    let started = browser
        .get(&format!("{admin_a}/api/v1/session/oidc"))
        .await?;
    let state = browser
        .cookie(&admin_a, ferry_admin::STATE_COOKIE)
        .ok_or_else(|| anyhow::anyhow!("no state cookie"))?;
    let callback = browser
        .through_provider(started.location.as_deref().unwrap_or(""), "ada")
        .await?;
    let mut on_b = Url::parse(&callback)?;
    let b_port = Url::parse(&admin_b)?.port();
    on_b.set_port(b_port)
        .map_err(|()| anyhow::anyhow!("port"))?;
    browser
        .jar
        .entry(origin(&Url::parse(&admin_b)?))
        .or_default()
        .insert(ferry_admin::STATE_COOKIE.to_owned(), state);
    let finished = browser.get(on_b.as_str()).await?;
    assert_eq!(finished.status, 303, "{}", finished.body);
    let session = browser
        .cookie(&admin_b, ferry_admin::SESSION_COOKIE)
        .ok_or_else(|| anyhow::anyhow!("no session cookie from B"))?;
    // The session B started serves on A too.
    browser
        .jar
        .entry(origin(&Url::parse(&admin_a)?))
        .or_default()
        .insert(ferry_admin::SESSION_COOKIE.to_owned(), session);
    let (status, me) = browser.api(&admin_a, "GET", "/session", None, None).await?;
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")), "{me}");

    // vera is a viewer on A; signing in on B, where her claims map to nothing, ends her account and sessions.
    let (mut vera, session) = signed_in(&admin_a, "vera").await?;
    assert_eq!(session["role"], "viewer");
    let mut again = Browser::new()?;
    let refused = again.sign_in(&admin_b, "vera").await?;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        vera.api(&admin_a, "GET", "/session", None, None).await?.0,
        401
    );
    let (_, users) = browser.api(&admin_a, "GET", "/users", None, None).await?;
    let names: Vec<&str> = users["items"]
        .as_array()
        .map(|u| u.iter().filter_map(|u| u["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"ada") && !names.contains(&"vera"),
        "{names:?}"
    );
    Ok(())
}
