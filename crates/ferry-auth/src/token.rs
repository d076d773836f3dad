//! Tokens of the built-in issuer: the Ed25519 signing key kept in the store, issuing signed JWTs, and the
//! [`TokenVerifier`] trait with its built-in implementation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ferry_proto::TenantName;
use ferry_store::{unix_now, SigningKey, Store};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The `iss` of tokens when the configuration names none.
pub const DEFAULT_ISSUER: &str = "ferry";
/// The `aud` of tunnel tokens.
pub const DEFAULT_AUDIENCE: &str = "ferry-tunnel";
/// How long a token is valid when the configuration says nothing.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// The scope a tunnel token must carry.
pub const TUNNEL_SCOPE: &str = "tunnel";
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The JOSE name of the only algorithm Ferry signs and accepts.
const ALGORITHM_NAME: &str = "EdDSA";

/// What the built-in issuer puts into its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// `iss` of issued tokens, and the only issuer the built-in verifier accepts.
    pub issuer: String,
    /// `aud` of issued tokens (`ferry-tunnel`), and the only audience the built-in verifier accepts.
    pub audience: String,
    /// Lifetime of issued tokens (whole seconds).
    pub ttl: Duration,
}

impl Default for IssuerSettings {
    fn default() -> Self {
        IssuerSettings {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            ttl: DEFAULT_TTL,
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub tenant: TenantName,
    /// Space-separated scopes; contains `tunnel`.
    pub scope: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    pub issuer: String,
}

/// Checks a bearer token and says who it is for.
pub trait TokenVerifier: Send + Sync {
    fn verify(&self, token: &str) -> Result<Claims, AuthError>;
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    /// Seconds from now.
    pub expires_in: u64,
}

/// The claims as written into a token.
#[derive(Debug, Serialize)]
struct OutgoingClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    tenant: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    scope: &'a str,
    jti: String,
}

/// The claims the verifier reads (`aud`, `nbf` are checked by `jsonwebtoken` from the same JSON).
#[derive(Debug, Deserialize)]
struct IncomingClaims {
    iss: String,
    exp: u64,
    tenant: String,
    #[serde(default)]
    scope: Option<String>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Generate a new Ed25519 signing key with a random kid.
fn generate_signing_key() -> Result<SigningKey, AuthError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| AuthError::Key("generating an Ed25519 key failed".to_owned()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| AuthError::Key(format!("reading the generated key failed: {e}")))?;
    Ok(SigningKey {
        kid: uuid::Uuid::new_v4().simple().to_string(),
        algorithm: ALGORITHM_NAME.to_owned(),
        private_der: pkcs8.as_ref().to_vec(),
        public_key: pair.public_key().as_ref().to_vec(),
        created_at: unix_now(),
    })
}

/// Check that a stored key is an Ed25519 key whose private and public halves belong together.
fn check_signing_key(key: &SigningKey) -> Result<(), AuthError> {
    if key.algorithm != ALGORITHM_NAME {
        return Err(AuthError::Key(format!(
            "key {} has algorithm {:?}, only {ALGORITHM_NAME} is supported",
            key.kid, key.algorithm
        )));
    }
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key.private_der).map_err(|e| {
        AuthError::Key(format!("key {} is not an Ed25519 PKCS#8 key: {e}", key.kid))
    })?;
    if pair.public_key().as_ref() != key.public_key.as_slice() {
        return Err(AuthError::Key(format!(
            "key {}: the public key does not match the private key",
            key.kid
        )));
    }
    Ok(())
}

/// The built-in verifier: EdDSA tokens signed by one of a known set of keys, for one issuer and one audience.
pub struct BuiltinVerifier {
    keys: HashMap<String, DecodingKey>,
    /// Public keys in the order given (newest first), for JWKS.
    public_keys: Vec<(String, Vec<u8>)>,
    validation: Validation,
}

impl std::fmt::Debug for BuiltinVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinVerifier")
            .field(
                "kids",
                &self.public_keys.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .finish()
    }
}

impl BuiltinVerifier {
    /// A verifier that accepts tokens signed by any of the EdDSA `keys` (others are skipped), issued by
    /// `issuer` for `audience`.
    pub fn new(issuer: &str, audience: &str, keys: &[SigningKey]) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let mut map = HashMap::new();
        let mut public_keys = Vec::new();
        for key in keys {
            if key.algorithm != ALGORITHM_NAME || key.public_key.len() != 32 {
                tracing::warn!(kid = %key.kid, algorithm = %key.algorithm, "skipping a signing key the verifier cannot use");
                continue;
            }
            map.insert(key.kid.clone(), DecodingKey::from_ed_der(&key.public_key));
            public_keys.push((key.kid.clone(), key.public_key.clone()));
        }
        BuiltinVerifier {
            keys: map,
            public_keys,
            validation,
        }
    }

    /// A verifier for every key in the store (for nodes that check tokens but do not issue them).
    pub async fn load(store: &dyn Store, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        Ok(Self::new(issuer, audience, &store.signing_keys().await?))
    }

    /// The public keys as a JWKS document (RFC 7517, OKP keys per RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .public_keys
            .iter()
            .map(|(kid, public)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": ALGORITHM_NAME,
                    "use": "sig",
                    "kid": kid,
                    "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

fn map_jwt_error(error: &jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::UnsupportedAlgorithm,
        ErrorKind::MissingRequiredClaim(_) => AuthError::Malformed("a required claim is missing"),
        ErrorKind::InvalidToken => AuthError::Malformed("not a JWT"),
        ErrorKind::Base64(_) => AuthError::Malformed("bad base64url encoding"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("bad JSON in header or claims")
        }
        _ => AuthError::BadSignature,
    }
}

impl TokenVerifier for BuiltinVerifier {
    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| map_jwt_error(&e))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self.keys.get(kid).ok_or(AuthError::UnknownKey)?,
            // Tokens without a kid are accepted only while there is no choice of key.
            None if self.keys.len() == 1 => {
                self.keys.values().next().ok_or(AuthError::UnknownKey)?
            }
            None => return Err(AuthError::UnknownKey),
        };
        let data = jsonwebtoken::decode::<IncomingClaims>(token, key, &self.validation)
            .map_err(|e| map_jwt_error(&e))?;
        let claims = data.claims;
        let scope = claims.scope.unwrap_or_default();
        if !scope.split(' ').any(|s| s == TUNNEL_SCOPE) {
            return Err(AuthError::MissingScope);
        }
        let tenant = TenantName::new(claims.tenant)
            .map_err(|_| AuthError::Malformed("the tenant claim is not a valid tenant name"))?;
        Ok(Claims {
            tenant,
            scope,
            exp: claims.exp,
            issuer: claims.iss,
        })
    }
}

/// The built-in token issuer: signs tunnel tokens with the newest signing key of the store and answers the
/// client-credentials token endpoint.
pub struct TokenIssuer {
    pub(crate) store: Arc<dyn Store>,
    settings: IssuerSettings,
    kid: String,
    encoding: EncodingKey,
    verifier: Arc<BuiltinVerifier>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("settings", &self.settings)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Load the newest signing key from the store, or, if it holds none, generate an Ed25519 key and store it.
    /// Processes starting at the same time on one store agree on one key: only the first insert into an empty
    /// store succeeds, and every process re-reads the keys after trying.
    pub async fn load_or_create(
        store: Arc<dyn Store>,
        settings: IssuerSettings,
    ) -> Result<Self, AuthError> {
        let mut keys = store.signing_keys().await?;
        if keys.is_empty() {
            let key = generate_signing_key()?;
            let added = store.add_first_signing_key(&key).await?;
            if added {
                tracing::info!(kid = %key.kid, "generated a token signing key");
            } else {
                tracing::debug!(kid = %key.kid, "another process stored the first signing key first");
            }
            keys = store.signing_keys().await?;
        }
        let newest = keys.first().ok_or_else(|| {
            AuthError::Key("the store holds no signing key after adding one".to_owned())
        })?;
        check_signing_key(newest)?;
        let encoding = EncodingKey::from_ed_der(&newest.private_der);
        let verifier = Arc::new(BuiltinVerifier::new(
            &settings.issuer,
            &settings.audience,
            &keys,
        ));
        Ok(TokenIssuer {
            kid: newest.kid.clone(),
            store,
            settings,
            encoding,
            verifier,
        })
    }

    /// The verifier for tokens of this issuer (every key of the store at load time).
    pub fn verifier(&self) -> Arc<dyn TokenVerifier> {
        self.verifier.clone()
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.verifier.jwks()
    }

    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// The kid of the key that signs new tokens.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Issue a tunnel token for `tenant`, valid from now for the configured ttl. Does not check the tenant.
    pub fn issue(&self, tenant: &TenantName) -> Result<IssuedToken, AuthError> {
        self.issue_at(tenant, now_secs())
    }

    /// Issue a token as if the clock said `now` (unix seconds).
    pub(crate) fn issue_at(&self, tenant: &TenantName, now: u64) -> Result<IssuedToken, AuthError> {
        let ttl = self.settings.ttl.as_secs();
        let claims = OutgoingClaims {
            iss: &self.settings.issuer,
            sub: tenant.as_str(),
            tenant: tenant.as_str(),
            aud: &self.settings.audience,
            iat: now,
            exp: now.saturating_add(ttl),
            scope: TUNNEL_SCOPE,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let access_token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(AuthError::Sign)?;
        Ok(IssuedToken {
            access_token,
            expires_in: ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use ferry_store::SqliteStore;

    use super::*;

    async fn issuer_on(store: Arc<dyn Store>) -> TokenIssuer {
        TokenIssuer::load_or_create(store, IssuerSettings::default())
            .await
            .expect("issuer")
    }

    async fn memory_store() -> Arc<dyn Store> {
        Arc::new(SqliteStore::open_in_memory().await.expect("store"))
    }

    fn demo() -> TenantName {
        TenantName::new("demo").expect("name")
    }

    /// Sign arbitrary claims with the issuer's key.
    fn sign(issuer: &TokenIssuer, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(issuer.kid.clone());
        jsonwebtoken::encode(&header, claims, &issuer.encoding).expect("sign")
    }

    fn claims_json(now: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": DEFAULT_ISSUER, "sub": "demo", "tenant": "demo", "aud": DEFAULT_AUDIENCE,
            "iat": now, "exp": now + 60, "scope": "tunnel", "jti": "x",
        })
    }

    #[tokio::test]
    async fn round_trip() {
        let issuer = issuer_on(memory_store().await).await;
        let token = issuer.issue(&demo()).expect("issue");
        assert_eq!(token.expires_in, 600);
        let claims = issuer
            .verifier()
            .verify(&token.access_token)
            .expect("verify");
        assert_eq!(claims.tenant, demo());
        assert_eq!(claims.scope, "tunnel");
        assert_eq!(claims.issuer, "ferry");
        let now = now_secs();
        assert!(claims.exp >= now + 590 && claims.exp <= now + 610);

        let header = jsonwebtoken::decode_header(&token.access_token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let issuer = issuer_on(memory_store().await).await;
        let verifier = issuer.verifier();
        // Issued 10 minutes ago with a 10 minute ttl: expired right now, but within the leeway.
        let now = now_secs();
        let edge = issuer.issue_at(&demo(), now - 600).expect("issue");
        assert!(verifier.verify(&edge.access_token).is_ok());
        let old = issuer.issue_at(&demo(), now - 600 - 31).expect("issue");
        let err = verifier.verify(&old.access_token).expect_err("expired");
        assert!(matches!(err, AuthError::Expired), "{err:?}");
        assert_eq!(err.to_string(), "token has expired");
        assert!(err.is_token_rejection());
    }

    #[tokio::test]
    async fn forged_tokens_are_refused() {
        let issuer = issuer_on(memory_store().await).await;
        let forger = issuer_on(memory_store().await).await;
        let forged = forger.issue(&demo()).expect("issue");
        // Another key under an unknown kid.
        let err = issuer
            .verifier()
            .verify(&forged.access_token)
            .expect_err("forged");
        assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
        // Another key under the right kid.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(issuer.kid.clone());
        let forged = jsonwebtoken::encode(&header, &claims_json(now_secs()), &forger.encoding)
            .expect("sign");
        let err = issuer.verifier().verify(&forged).expect_err("forged");
        assert!(matches!(err, AuthError::BadSignature), "{err:?}");
        // An altered payload.
        let good = issuer.issue(&demo()).expect("issue").access_token;
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({
                "iss": "ferry", "sub": "evil", "tenant": "evil", "aud": "ferry-tunnel",
                "iat": now_secs(), "exp": now_secs() + 600, "scope": "tunnel",
            }))
            .expect("json"),
        );
        parts[1] = &evil_payload;
        let err = issuer
            .verifier()
            .verify(&parts.join("."))
            .expect_err("altered");
        assert!(matches!(err, AuthError::BadSignature), "{err:?}");
        // HMAC with the public key as secret (the classic algorithm confusion) and alg none.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims_json(now_secs()),
            &EncodingKey::from_secret(&issuer.verifier.public_keys[0].1),
        )
        .expect("sign hs");
        let err = issuer.verifier().verify(&hs).expect_err("hs256");
        assert!(matches!(err, AuthError::UnsupportedAlgorithm), "{err:?}");
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(issuer.verifier().verify(&none).is_err());
    }

    #[tokio::test]
    async fn claims_are_checked() {
        let issuer = issuer_on(memory_store().await).await;
        let verifier = issuer.verifier();
        let now = now_secs();
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = claims_json(now);
            claims[key] = value;
            sign(&issuer, &claims)
        };
        assert!(verifier.verify(&sign(&issuer, &claims_json(now))).is_ok());

        let err = verifier
            .verify(&with("aud", "someone-else".into()))
            .expect_err("aud");
        assert!(matches!(err, AuthError::WrongAudience), "{err:?}");
        let err = verifier
            .verify(&with("iss", "mallory".into()))
            .expect_err("iss");
        assert!(matches!(err, AuthError::WrongIssuer), "{err:?}");
        let err = verifier
            .verify(&with("scope", "admin".into()))
            .expect_err("scope");
        assert!(matches!(err, AuthError::MissingScope), "{err:?}");
        assert!(verifier
            .verify(&with("scope", "read tunnel".into()))
            .is_ok());
        let err = verifier
            .verify(&with("tenant", "Not/Valid".into()))
            .expect_err("tenant");
        assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");
        let err = verifier
            .verify(&with("nbf", (now + 120).into()))
            .expect_err("nbf");
        assert!(matches!(err, AuthError::NotYetValid), "{err:?}");
        assert!(verifier.verify(&with("nbf", (now - 5).into())).is_ok());

        let mut no_exp = claims_json(now);
        no_exp.as_object_mut().expect("object").remove("exp");
        let err = verifier.verify(&sign(&issuer, &no_exp)).expect_err("exp");
        assert!(matches!(err, AuthError::Malformed(_)), "{err:?}");

        for junk in ["", "abc", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30"] {
            let err = verifier.verify(junk).expect_err("junk");
            assert!(err.is_token_rejection(), "{junk}: {err:?}");
        }
    }

    #[tokio::test]
    async fn wrong_audience_setting_refuses_tokens() {
        let store = memory_store().await;
        let issuer = issuer_on(store.clone()).await;
        let other = TokenIssuer::load_or_create(
            store,
            IssuerSettings {
                audience: "ferry-admin".into(),
                ..IssuerSettings::default()
            },
        )
        .await
        .expect("issuer");
        let token = issuer.issue(&demo()).expect("issue").access_token;
        let err = other.verifier().verify(&token).expect_err("aud");
        assert!(matches!(err, AuthError::WrongAudience), "{err:?}");
    }

    #[tokio::test]
    async fn key_persists_across_loads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(dir.path()).await.expect("open"));
        let first = issuer_on(store.clone()).await;
        let token = first.issue(&demo()).expect("issue").access_token;
        drop(first);
        let reopened: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(dir.path()).await.expect("reopen"));
        let second = issuer_on(reopened.clone()).await;
        assert_eq!(
            second.verifier().verify(&token).expect("verify").tenant,
            demo()
        );
        assert_eq!(reopened.signing_keys().await.expect("keys").len(), 1);
        // The verifier alone, loaded from the store, accepts it too.
        let verifier = BuiltinVerifier::load(&*reopened, DEFAULT_ISSUER, DEFAULT_AUDIENCE)
            .await
            .expect("load");
        assert!(verifier.verify(&token).is_ok());
        let jwks = verifier.jwks();
        assert_eq!(jwks["keys"][0]["kid"], second.kid());
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_first_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = Arc::new(dir.path().join("ferry.db"));
        SqliteStore::open(&path).await.expect("create");
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let path = Arc::clone(&path);
            tasks.push(tokio::spawn(async move {
                let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("open"));
                let issuer = issuer_on(store).await;
                (
                    issuer.kid().to_owned(),
                    issuer.issue(&demo()).expect("issue").access_token,
                    issuer.verifier(),
                )
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task"));
        }
        let kid = &results[0].0;
        assert!(results.iter().all(|(k, _, _)| k == kid));
        for (_, token, _) in &results {
            for (_, _, verifier) in &results {
                assert!(verifier.verify(token).is_ok());
            }
        }
    }
}
