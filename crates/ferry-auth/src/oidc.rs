//! External OpenID Connect providers: the configured issuer → discovery (`/.well-known/openid-configuration`) →
//! `jwks_uri` → keys, cached and re-fetched periodically and on an unknown `kid` (never more often than a minimum
//! interval, so forged key ids cannot make Ferry hammer the provider). Tokens are checked for signature
//! (RS256, PS256, ES256, EdDSA), `iss`, `aud`, `exp`, `nbf` and scope; the tenant comes from a configurable claim.
//!
//! Also the check of the management API's bearer tokens ([`AdminCheck`]): a valid token whose roles claim maps
//! to a role ([`RoleRules`]), and what signing in needs of the provider: its authorization and token endpoints
//! from discovery ([`ProviderEndpoints`]) and ID token checks (`sign_in.rs`).
//!
//! What the provider's tokens must be, and reading its JWKS, is `ferry-token` ([`ProviderRules`],
//! [`ProviderKeys`]); this module fetches the documents and decides when.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use ferry_token::{ProviderKeys, ProviderRules, Purpose};
use serde_json::Value;

use crate::roles::{MappedRole, RoleRules};
use crate::token::BackgroundTask;
use crate::{AuthError, Claims, TokenVerifier};

pub use ferry_token::{claim_at, ACCEPTED_ALGORITHMS};

/// Path of the discovery document under an issuer URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Largest discovery or JWKS document read.
const MAX_DOCUMENT: usize = 1024 * 1024;

/// How Ferry trusts an external OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer URL, exactly as the provider writes it into `iss` (`https://sso.example.com/realms/ferry`).
    pub issuer: String,
    /// The `aud` tunnel tokens must carry.
    pub audience: String,
    /// Dotted path of the claim naming the tenant (`client_id`, `azp`, `ferry.tenant`).
    pub tenant_claim: String,
    /// The scope tunnel tokens must carry (in `scope` or `scp`); `None`: no scope check.
    pub scope: Option<String>,
    /// How a token's claims map to a management API role (`admin_role`, `role_mapping`, `tenants_claim`, on
    /// the roles claim); empty: no OIDC callers of the management API.
    pub roles: RoleRules,
    /// The `aud` admin tokens must carry; `None`: the same as `audience`.
    pub admin_audience: Option<String>,
    /// How often keys are re-fetched even when no unknown kid asks for it.
    pub jwks_refresh: Duration,
    /// The least time between two fetches caused by unknown kids.
    pub jwks_min_refresh: Duration,
    /// Timeout of each request to the provider.
    pub http_timeout: Duration,
}

impl OidcSettings {
    /// Settings for `issuer` with every other value at its default.
    pub fn new(issuer: impl Into<String>) -> Self {
        OidcSettings {
            issuer: issuer.into(),
            audience: crate::DEFAULT_AUDIENCE.to_owned(),
            tenant_claim: "client_id".to_owned(),
            scope: Some(crate::TUNNEL_SCOPE.to_owned()),
            roles: RoleRules::default(),
            admin_audience: None,
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refresh: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// Verifies tokens of one external OpenID Connect provider.
pub struct OidcVerifier {
    settings: OidcSettings,
    rules: ProviderRules,
    http: reqwest::Client,
    keys: RwLock<Arc<ProviderKeys>>,
    /// When keys were last fetched (or tried) because of an unknown kid.
    last_kid_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// The authorization and token endpoints of the last discovery document, for sign-in.
    endpoints: RwLock<Option<ProviderEndpoints>>,
    me: Weak<OidcVerifier>,
}

/// The endpoints of the provider's discovery document that signing in uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("settings", &self.settings)
            .field("kids", &self.kids())
            .finish_non_exhaustive()
    }
}

fn provider_error(message: impl Into<String>) -> AuthError {
    AuthError::Provider(message.into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl OidcVerifier {
    /// A verifier for the provider; fetches nothing yet (call [`Self::refresh`], or let the first token do it).
    pub fn new(settings: OidcSettings) -> Result<Arc<Self>, AuthError> {
        if !(settings.issuer.starts_with("https://") || settings.issuer.starts_with("http://")) {
            return Err(provider_error(format!(
                "issuer {:?} must be an http(s) URL",
                settings.issuer
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(settings.http_timeout)
            .connect_timeout(settings.http_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| provider_error(format!("building the HTTP client failed: {e}")))?;
        let rules = ProviderRules::new(
            settings.issuer.clone(),
            settings.tenant_claim.clone(),
            settings.scope.clone(),
        );
        Ok(Arc::new_cyclic(|me| OidcVerifier {
            settings,
            rules,
            http,
            keys: RwLock::new(Arc::new(ProviderKeys::default())),
            last_kid_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            endpoints: RwLock::new(None),
            me: me.clone(),
        }))
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The kids currently known.
    pub fn kids(&self) -> Vec<String> {
        self.snapshot().kids()
    }

    fn snapshot(&self) -> Arc<ProviderKeys> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, AuthError> {
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| provider_error(format!("GET {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(provider_error(format!(
                "GET {url}: answered {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| provider_error(format!("GET {url}: {e}")))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(provider_error(format!(
                    "GET {url}: larger than {MAX_DOCUMENT} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| provider_error(format!("GET {url}: not JSON: {e}")))
    }

    /// Discovery, then the JWKS: replaces the cached keys. Keys the verifier cannot use (encryption keys, other
    /// key types) are skipped.
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let _one = self.fetching.lock().await;
        let issuer = self.settings.issuer.trim_end_matches('/');
        let discovery_url = format!("{issuer}{DISCOVERY_PATH}");
        let discovery = self.get_json(&discovery_url).await?;
        let announced = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if announced.trim_end_matches('/') != issuer {
            return Err(provider_error(format!(
                "{discovery_url} names issuer {announced:?}, expected {:?}",
                self.settings.issuer
            )));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| provider_error(format!("{discovery_url} has no http(s) jwks_uri")))?
            .to_owned();
        let endpoint = |name: &str| {
            discovery
                .get(name)
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .map(str::to_owned)
        };
        if let (Some(authorization_endpoint), Some(token_endpoint)) = (
            endpoint("authorization_endpoint"),
            endpoint("token_endpoint"),
        ) {
            let found = Some(ProviderEndpoints {
                authorization_endpoint,
                token_endpoint,
            });
            match self.endpoints.write() {
                Ok(mut current) => *current = found,
                Err(poisoned) => *poisoned.into_inner() = found,
            }
        }
        let jwks = self.get_json(&jwks_uri).await?;
        let keys = ProviderKeys::from_jwks(&jwks);
        if keys.is_empty() {
            return Err(provider_error(format!(
                "{jwks_uri} holds no usable signing key"
            )));
        }
        tracing::debug!(
            issuer,
            kids = keys.kids().len(),
            "fetched the provider's signing keys"
        );
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        Ok(())
    }

    /// The provider's authorization and token endpoints, from discovery (fetched now if not known yet).
    pub async fn endpoints(&self) -> Result<ProviderEndpoints, AuthError> {
        let known = || match self.endpoints.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(endpoints) = known() {
            return Ok(endpoints);
        }
        self.refresh().await?;
        known().ok_or_else(|| {
            provider_error(
                "the discovery document names no http(s) authorization_endpoint and token_endpoint",
            )
        })
    }

    /// The HTTP client used for the provider (its timeouts).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Check an ID token of the sign-in client `client_id`: signature (fetching the keys on an unknown kid),
    /// `iss`, `aud` containing `client_id`, `exp`, `nbf`; with several audiences, `azp` must be `client_id`.
    pub(crate) async fn decode_id_token(
        &self,
        token: &str,
        client_id: &str,
    ) -> Result<Value, AuthError> {
        let claims = self.decode_async(token, client_id).await?;
        if claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1)
            && claims.get("azp").and_then(Value::as_str) != Some(client_id)
        {
            return Err(AuthError::WrongAudience);
        }
        Ok(claims)
    }

    /// Whether an unknown kid may trigger a fetch now (and note that it does).
    fn may_fetch_for_unknown_kid(&self) -> bool {
        let mut last = lock(&self.last_kid_fetch);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.settings.jwks_min_refresh) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Start the task that re-fetches the keys every `jwks_refresh` (the first time at once). Keep the guard as
    /// long as the verifier.
    pub fn spawn_refresh(&self) -> BackgroundTask {
        let me = self.me.clone();
        let period = self.settings.jwks_refresh.max(Duration::from_secs(1));
        BackgroundTask::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(verifier) = me.upgrade() else {
                    break;
                };
                if let Err(error) = verifier.refresh().await {
                    tracing::warn!(%error, "fetching the provider's signing keys failed; retrying next interval");
                }
            }
        })
    }

    /// Check signature, `iss`, `aud` (against `audience`), `exp` and `nbf` with the keys at hand; the claims.
    fn decode(&self, token: &str, audience: &str) -> Result<Value, AuthError> {
        Ok(self.rules.decode(&self.snapshot(), token, audience)?)
    }

    /// [`Self::decode`], fetching the keys first when the token names an unknown one (at most every
    /// `jwks_min_refresh`).
    async fn decode_async(&self, token: &str, audience: &str) -> Result<Value, AuthError> {
        match self.decode(token, audience) {
            Err(AuthError::UnknownKey) if self.may_fetch_for_unknown_kid() => {
                if let Err(error) = self.refresh().await {
                    tracing::warn!(%error, "fetching the provider's signing keys failed");
                }
                self.decode(token, audience)
            }
            other => other,
        }
    }

    /// Start a background fetch after an unknown kid, if the minimum interval allows.
    fn fetch_in_background(&self) {
        if !self.may_fetch_for_unknown_kid() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let me = self.me.clone();
            handle.spawn(async move {
                if let Some(verifier) = me.upgrade() {
                    if let Err(error) = verifier.refresh().await {
                        tracing::warn!(%error, "fetching the provider's signing keys failed");
                    }
                }
            });
        }
    }

    /// The tunnel claims of decoded, valid claims: scope and tenant.
    fn tunnel_claims(&self, claims: &Value) -> Result<Claims, AuthError> {
        self.claims_of(claims, Purpose::Tunnel)
    }

    /// The claims of decoded, valid claims: the tenant, and for a tunnel the required scope.
    fn claims_of(&self, claims: &Value, purpose: Purpose) -> Result<Claims, AuthError> {
        Ok(self.rules.claims(claims, purpose)?)
    }

    /// The management API's check of bearer tokens, if any role is mapped (`admin_role`, `role_mapping`).
    pub fn admin_check(self: &Arc<Self>) -> Option<AdminCheck> {
        if self.settings.roles.is_empty() {
            return None;
        }
        Some(AdminCheck {
            verifier: self.clone(),
            audience: self
                .settings
                .admin_audience
                .clone()
                .unwrap_or_else(|| self.settings.audience.clone()),
        })
    }
}

#[async_trait::async_trait]
impl TokenVerifier for OidcVerifier {
    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        match self.decode(token, &self.settings.audience) {
            Ok(claims) => self.tunnel_claims(&claims),
            Err(AuthError::UnknownKey) => {
                self.fetch_in_background();
                Err(AuthError::UnknownKey)
            }
            Err(e) => Err(e),
        }
    }

    async fn verify_async(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.decode_async(token, &self.settings.audience).await?;
        self.tunnel_claims(&claims)
    }

    async fn verify_client(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.decode_async(token, &self.settings.audience).await?;
        self.claims_of(&claims, Purpose::Client)
    }
}

/// What the admin check decided about a bearer token.
#[derive(Debug)]
pub enum AdminDecision {
    /// A valid token whose roles claim maps to a management API role: allow, as that role.
    Granted {
        /// The token's `sub`, for the audit log.
        subject: Option<String>,
        /// The role (and an operator's tenants) the claims map to.
        role: MappedRole,
    },
    /// A valid token whose roles map to no role: 403.
    MissingRole { subject: Option<String> },
    /// Not a valid token (bad signature, expired, wrong issuer or audience…): 401.
    Invalid(AuthError),
}

/// Decides what a bearer token of the configured provider may do on the management API: valid (signature,
/// `iss`, `exp`, `nbf`, `aud` = the admin audience), then its roles claim mapped to a role by the provider's
/// [`RoleRules`] (`admin_role`, `role_mapping`, `tenants_claim`): the same rules as signing in.
#[derive(Debug, Clone)]
pub struct AdminCheck {
    verifier: Arc<OidcVerifier>,
    audience: String,
}

impl AdminCheck {
    /// Check `token` (without the `Bearer ` prefix). May fetch keys on an unknown kid.
    pub async fn check(&self, token: &str) -> AdminDecision {
        let claims = match self.verifier.decode_async(token, &self.audience).await {
            Ok(claims) => claims,
            Err(error) => return AdminDecision::Invalid(error),
        };
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        match self.verifier.settings.roles.map(&claims) {
            Some(role) => AdminDecision::Granted { subject, role },
            None => AdminDecision::MissingRole { subject },
        }
    }

    /// The rules tokens are mapped by.
    pub fn roles(&self) -> &RoleRules {
        &self.verifier.settings.roles
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine as _;
    use ferry_proto::TenantName;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use ring::signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
    };
    use serde_json::json;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::token::now_secs;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signing key of the fake provider with its JWK.
    struct TestKey {
        kid: String,
        alg: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
    }

    fn es256_key(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("ec key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("read ec key");
        let point = pair.public_key().as_ref();
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
        }
    }

    fn eddsa_key(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("read ed key");
        TestKey {
            kid: kid.to_owned(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key().as_ref())}),
        }
    }

    /// A minimal provider on loopback: the discovery document and a JWKS that tests can change.
    struct Provider {
        issuer: String,
        jwks: Arc<Mutex<Value>>,
        jwks_fetches: Arc<AtomicUsize>,
        _task: tokio::task::JoinHandle<()>,
    }

    impl Provider {
        async fn start(keys: &[&TestKey]) -> Self {
            Self::start_announcing(keys, None).await
        }

        async fn start_announcing(keys: &[&TestKey], issuer_override: Option<&str>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let issuer = format!("http://{}", listener.local_addr().expect("addr"));
            let announced = issuer_override.unwrap_or(&issuer).to_owned();
            let jwks = Arc::new(Mutex::new(
                json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
            ));
            let jwks_fetches = Arc::new(AtomicUsize::new(0));
            let (jwks2, fetches2, base) = (jwks.clone(), jwks_fetches.clone(), issuer.clone());
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else {
                        break;
                    };
                    let mut buf = vec![0u8; 8192];
                    let mut len = 0;
                    while len < buf.len() {
                        match socket.read(&mut buf[len..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => len += n,
                        }
                        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..len]).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let body = match path.as_str() {
                        DISCOVERY_PATH => {
                            json!({"issuer": announced, "jwks_uri": format!("{base}/jwks")})
                        }
                        "/jwks" => {
                            fetches2.fetch_add(1, Ordering::SeqCst);
                            lock(&jwks2).clone()
                        }
                        _ => json!({}),
                    }
                    .to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                }
            });
            Provider {
                issuer,
                jwks,
                jwks_fetches,
                _task: task,
            }
        }

        fn set_keys(&self, keys: &[&TestKey]) {
            *lock(&self.jwks) =
                json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        }

        fn fetches(&self) -> usize {
            self.jwks_fetches.load(Ordering::SeqCst)
        }

        fn claims(&self) -> Value {
            let now = now_secs();
            json!({"iss": self.issuer, "aud": "ferry-tunnel", "exp": now + 300, "iat": now,
                "sub": "demo", "client_id": "demo", "scope": "openid tunnel"})
        }
    }

    fn sign(key: &TestKey, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    fn settings(provider: &Provider) -> OidcSettings {
        OidcSettings::new(provider.issuer.clone())
    }

    #[tokio::test]
    async fn id_tokens_must_be_for_the_sign_in_client() {
        let (es, other) = (es256_key("es"), es256_key("es"));
        let provider = Provider::start(&[&es]).await;
        let verifier = OidcVerifier::new(settings(&provider)).expect("verifier");
        let id_token = |aud: Value, azp: Option<&str>| {
            let mut claims = provider.claims();
            claims["aud"] = aud;
            claims["nonce"] = json!("n");
            if let Some(azp) = azp {
                claims["azp"] = json!(azp);
            }
            claims
        };
        let ok = sign(&es, &id_token(json!("dash"), None));
        let claims = verifier.decode_id_token(&ok, "dash").await.expect("valid");
        assert_eq!(claims["nonce"], "n");
        // Another client's ID token, or a tunnel token.
        let err = verifier
            .decode_id_token(&sign(&es, &id_token(json!("other"), None)), "dash")
            .await
            .expect_err("other audience");
        assert!(matches!(err, AuthError::WrongAudience), "{err:?}");
        let tunnel = sign(&es, &provider.claims());
        assert!(verifier.decode_id_token(&tunnel, "dash").await.is_err());
        // Several audiences: azp must name the client.
        let several = id_token(json!(["dash", "api"]), None);
        assert!(verifier
            .decode_id_token(&sign(&es, &several), "dash")
            .await
            .is_err());
        let several = id_token(json!(["dash", "api"]), Some("dash"));
        assert!(verifier
            .decode_id_token(&sign(&es, &several), "dash")
            .await
            .is_ok());
        // Signed by a key the provider never published (same kid).
        let forged = sign(&other, &id_token(json!("dash"), None));
        let err = verifier
            .decode_id_token(&forged, "dash")
            .await
            .expect_err("forged");
        assert!(err.is_token_rejection(), "{err:?}");
    }

    #[tokio::test]
    async fn tokens_signed_with_provider_keys_are_accepted() {
        let (es, ed) = (es256_key("es"), eddsa_key("ed"));
        let provider = Provider::start(&[&es, &ed]).await;
        let verifier = OidcVerifier::new(settings(&provider)).expect("verifier");
        verifier.refresh().await.expect("discovery");
        assert_eq!(verifier.kids(), ["ed", "es"]);
        for key in [&es, &ed] {
            let claims = verifier
                .verify(&sign(key, &provider.claims()))
                .expect("valid");
            assert_eq!(claims.tenant.as_str(), "demo");
            assert_eq!(claims.scope, "openid tunnel");
            assert_eq!(claims.issuer, provider.issuer);
            assert_eq!(claims.secret_id, None);
        }
        // The `scp` array form (Azure AD) counts too.
        let mut claims = provider.claims();
        claims.as_object_mut().expect("object").remove("scope");
        claims["scp"] = json!(["tunnel"]);
        assert!(verifier.verify(&sign(&es, &claims)).is_ok());
    }

    #[tokio::test]
    async fn claims_are_checked() {
        let es = es256_key("es");
        let provider = Provider::start(&[&es]).await;
        let verifier = OidcVerifier::new(settings(&provider)).expect("verifier");
        verifier.refresh().await.expect("discovery");
        let now = now_secs();
        let with = |key: &str, value: Value| {
            let mut claims = provider.claims();
            claims[key] = value;
            sign(&es, &claims)
        };
        let err = verifier
            .verify(&with("aud", json!("other-api")))
            .expect_err("aud");
        assert!(matches!(err, AuthError::WrongAudience), "{err:?}");
        let err = verifier
            .verify(&with("iss", json!("https://evil.example")))
            .expect_err("iss");
        assert!(matches!(err, AuthError::WrongIssuer), "{err:?}");
        let err = verifier
            .verify(&with("exp", json!(now - 120)))
            .expect_err("exp");
        assert!(matches!(err, AuthError::Expired), "{err:?}");
        let err = verifier
            .verify(&with("nbf", json!(now + 120)))
            .expect_err("nbf");
        assert!(matches!(err, AuthError::NotYetValid), "{err:?}");
        let err = verifier
            .verify(&with("scope", json!("openid")))
            .expect_err("scope");
        assert!(matches!(err, AuthError::MissingScope), "{err:?}");
        let err = verifier
            .verify(&with("client_id", json!("Not/A/Tenant")))
            .expect_err("tenant");
        assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
        let err = verifier
            .verify(&with("client_id", json!(7)))
            .expect_err("tenant type");
        assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
        // An audience array containing ours is fine.
        assert!(verifier
            .verify(&with("aud", json!(["x", "ferry-tunnel"])))
            .is_ok());
        // A key of the right kid but another secret, and an HMAC token, are refused.
        let forger = es256_key("es");
        let err = verifier
            .verify(&sign(&forger, &provider.claims()))
            .expect_err("forged");
        assert!(matches!(err, AuthError::BadSignature), "{err:?}");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("es".to_owned());
        let hs = jsonwebtoken::encode(&header, &provider.claims(), &EncodingKey::from_secret(b"k"))
            .expect("sign");
        let err = verifier.verify(&hs).expect_err("hs256");
        assert!(matches!(err, AuthError::UnsupportedAlgorithm), "{err:?}");
        // An EdDSA header on an EC key (the JWK pins ES256).
        let ed = eddsa_key("es");
        let err = verifier
            .verify(&sign(&ed, &provider.claims()))
            .expect_err("alg mismatch");
        assert!(matches!(err, AuthError::UnsupportedAlgorithm), "{err:?}");
    }

    #[tokio::test]
    async fn the_tenant_claim_and_scope_are_configurable() {
        let es = es256_key("es");
        let provider = Provider::start(&[&es]).await;
        let verifier = OidcVerifier::new(OidcSettings {
            tenant_claim: "ferry.tenant".to_owned(),
            scope: None,
            ..settings(&provider)
        })
        .expect("verifier");
        let mut claims = provider.claims();
        claims["ferry"] = json!({"tenant": "acme"});
        claims["scope"] = json!("openid");
        let claims = verifier
            .verify_async(&sign(&es, &claims))
            .await
            .expect("valid");
        assert_eq!(claims.tenant.as_str(), "acme");
    }

    #[tokio::test]
    async fn unknown_kids_fetch_keys_but_not_more_often_than_the_minimum_interval() {
        let old = es256_key("old");
        let provider = Provider::start(&[&old]).await;
        let verifier = OidcVerifier::new(OidcSettings {
            jwks_min_refresh: Duration::from_secs(3600),
            ..settings(&provider)
        })
        .expect("verifier");
        // Nothing fetched yet: the first token fetches (an unknown kid with no keys at all).
        assert!(verifier
            .verify_async(&sign(&old, &provider.claims()))
            .await
            .is_ok());
        assert_eq!(provider.fetches(), 1);
        // The provider rotates; within the minimum interval the new kid is not fetched.
        let new = es256_key("new");
        provider.set_keys(&[&new, &old]);
        for _ in 0..10 {
            let err = verifier
                .verify_async(&sign(&new, &provider.claims()))
                .await
                .expect_err("not fetched yet");
            assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
            let forged = es256_key(&uuid::Uuid::new_v4().to_string());
            assert!(verifier.verify(&sign(&forged, &provider.claims())).is_err());
        }
        tokio::task::yield_now().await;
        assert_eq!(
            provider.fetches(),
            1,
            "forged kids did not make Ferry fetch"
        );
        // The periodic refresh (or an explicit one) picks the new key up.
        verifier.refresh().await.expect("refresh");
        assert!(verifier.verify(&sign(&new, &provider.claims())).is_ok());
    }

    #[tokio::test]
    async fn a_rotated_provider_key_is_fetched_on_its_first_token() {
        let old = es256_key("old");
        let provider = Provider::start(&[&old]).await;
        let verifier = OidcVerifier::new(OidcSettings {
            jwks_min_refresh: Duration::ZERO,
            ..settings(&provider)
        })
        .expect("verifier");
        verifier.refresh().await.expect("discovery");
        let new = eddsa_key("new");
        provider.set_keys(&[&new]);
        let claims = verifier
            .verify_async(&sign(&new, &provider.claims()))
            .await
            .expect("fetched on the unknown kid");
        assert_eq!(claims.tenant.as_str(), "demo");
        // The old key left the JWKS, so its tokens no longer pass.
        assert!(verifier.verify(&sign(&old, &provider.claims())).is_err());
    }

    #[tokio::test]
    async fn the_periodic_refresh_runs_and_stops_with_its_guard() {
        let es = es256_key("es");
        let provider = Provider::start(&[&es]).await;
        let verifier = OidcVerifier::new(OidcSettings {
            jwks_refresh: Duration::from_secs(1),
            ..settings(&provider)
        })
        .expect("verifier");
        let task = verifier.spawn_refresh();
        for _ in 0..100 {
            if provider.fetches() >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(verifier.verify(&sign(&es, &provider.claims())).is_ok());
        assert!(!task.is_finished());
        drop(task);
    }

    #[tokio::test]
    async fn discovery_must_name_the_configured_issuer() {
        let es = es256_key("es");
        let provider = Provider::start_announcing(&[&es], Some("https://elsewhere.example")).await;
        let verifier = OidcVerifier::new(settings(&provider)).expect("verifier");
        let err = verifier.refresh().await.expect_err("issuer mismatch");
        assert!(matches!(err, AuthError::Provider(_)), "{err:?}");
        assert!(!err.is_token_rejection());
        assert!(OidcVerifier::new(OidcSettings::new("ftp://x")).is_err());
        // An unreachable provider is an error, not a panic.
        let verifier = OidcVerifier::new(OidcSettings {
            http_timeout: Duration::from_secs(2),
            ..OidcSettings::new("http://127.0.0.1:1")
        })
        .expect("verifier");
        assert!(matches!(
            verifier.refresh().await,
            Err(AuthError::Provider(_))
        ));
    }

    #[tokio::test]
    async fn admin_check_distinguishes_invalid_from_missing_role() {
        let es = es256_key("es");
        let provider = Provider::start(&[&es]).await;
        let verifier = OidcVerifier::new(OidcSettings {
            roles: RoleRules {
                roles_claim: "realm_access.roles".to_owned(),
                entries: vec![
                    crate::RoleEntry {
                        value: "ferry-admin".to_owned(),
                        role: ferry_store::Role::Admin,
                        tenants: vec![],
                    },
                    crate::RoleEntry {
                        value: "team-a".to_owned(),
                        role: ferry_store::Role::Operator,
                        tenants: vec![TenantName::new("alpha").expect("name")],
                    },
                ],
                tenants_claim: None,
            },
            admin_audience: Some("ferry-admin-api".to_owned()),
            ..settings(&provider)
        })
        .expect("verifier");
        assert!(OidcVerifier::new(settings(&provider))
            .expect("verifier")
            .admin_check()
            .is_none());
        let check = verifier.admin_check().expect("roles mapped");
        assert_eq!(check.roles().entries.len(), 2);
        let token = |roles: Value, aud: &str| {
            let mut claims = provider.claims();
            claims["aud"] = json!(aud);
            claims["sub"] = json!("alice");
            claims["realm_access"] = json!({"roles": roles});
            sign(&es, &claims)
        };
        match check
            .check(&token(json!(["user", "ferry-admin"]), "ferry-admin-api"))
            .await
        {
            AdminDecision::Granted { subject, role } => {
                assert_eq!(subject.as_deref(), Some("alice"));
                assert_eq!(role.role, ferry_store::Role::Admin);
            }
            other => panic!("expected admin, got {other:?}"),
        }
        match check
            .check(&token(json!(["team-a"]), "ferry-admin-api"))
            .await
        {
            AdminDecision::Granted { role, .. } => {
                assert_eq!(role.role, ferry_store::Role::Operator);
                assert_eq!(role.tenants, [TenantName::new("alpha").expect("name")]);
            }
            other => panic!("expected operator, got {other:?}"),
        }
        assert!(matches!(
            check
                .check(&token(json!(["user"]), "ferry-admin-api"))
                .await,
            AdminDecision::MissingRole { .. }
        ));
        assert!(matches!(
            check
                .check(&token(json!("user ferry-admin"), "ferry-admin-api"))
                .await,
            AdminDecision::Granted { .. }
        ));
        // A tunnel token (other audience) is not an admin token, whatever its roles.
        assert!(matches!(
            check
                .check(&token(json!(["ferry-admin"]), "ferry-tunnel"))
                .await,
            AdminDecision::Invalid(AuthError::WrongAudience)
        ));
        assert!(matches!(
            check.check("garbage").await,
            AdminDecision::Invalid(_)
        ));
        // Without an admin role configured there is no admin check.
        let plain = OidcVerifier::new(settings(&provider)).expect("verifier");
        assert!(plain.admin_check().is_none());
    }

    #[tokio::test]
    async fn the_combined_verifier_routes_by_issuer() {
        use ferry_store::{SqliteStore, Store};
        let es = es256_key("es");
        let provider = Provider::start(&[&es]).await;
        let external = OidcVerifier::new(settings(&provider)).expect("verifier");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let issuer = crate::TokenIssuer::load_or_create(store, crate::IssuerSettings::default())
            .await
            .expect("issuer");
        let combined = crate::CombinedVerifier::new()
            .with(crate::DEFAULT_ISSUER, issuer.verifier())
            .with(provider.issuer.clone(), external);
        let demo = TenantName::new("demo").expect("name");
        let builtin = issuer.issue(&demo).expect("issue").access_token;
        assert_eq!(
            combined
                .verify_async(&builtin)
                .await
                .expect("builtin")
                .issuer,
            "ferry"
        );
        let oidc = sign(&es, &provider.claims());
        assert_eq!(
            combined.verify_async(&oidc).await.expect("oidc").issuer,
            provider.issuer
        );
        let mut claims = provider.claims();
        claims["iss"] = json!("https://nobody.example");
        let err = combined
            .verify(&sign(&es, &claims))
            .expect_err("unknown issuer");
        assert!(matches!(err, AuthError::WrongIssuer), "{err:?}");
        assert!(combined.verify("a.b").is_err());
    }
}
