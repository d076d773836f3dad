//! Tokens of the built-in issuer: the Ed25519 signing keys kept in the store (rotation with an overlap, re-read
//! periodically and on an unknown `kid`), issuing signed JWTs, and the [`TokenVerifier`] trait with its built-in
//! implementation. What a token is and how it is checked, without the store, is `ferry-token` ([`KeySet`],
//! [`TokenRules`]); this module decides where the keys come from and when they are re-read.
//!
//! Deciding about the keys (creating the first, rotating when due, removing rotated-out keys) is
//! [`maintain_signing_keys`]: the cluster's worker runs it, or, on a node on its own, the node's maintenance task
//! ([`TokenIssuer::spawn_maintenance`]). Every decision is applied only on the view it was made on
//! ([`Store::add_signing_key_after`]), so that processes deciding at the same moment add one key, not several.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_proto::TenantName;
use ferry_store::{unix_now, SigningKey, Store};
use ferry_token::{KeyRef, KeySet, NewToken, Purpose, TokenRules, BUILTIN_ALGORITHM};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

pub use ferry_token::{
    Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, LEEWAY, NODE_SCOPE, RELAY_SCOPE, TUNNEL_SCOPE,
};

use crate::limit::{FailureLimiter, RateLimitSettings};
use crate::AuthError;

/// How long a token is valid when the configuration says nothing.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// How long a node's token for the node link is valid (nodes issue a new one at half of it).
pub const NODE_TOKEN_TTL: Duration = Duration::from_secs(300);
/// How often a node re-reads the signing keys from the store when the configuration says nothing.
pub const DEFAULT_KEY_REFRESH: Duration = Duration::from_secs(60);
/// An unknown `kid` makes the built-in verifier re-read the store at most this often, so that forged key ids
/// cannot make every tunnel attempt a database query.
const MIN_UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(2);

/// What the built-in issuer puts into its tokens, and how it keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// `iss` of issued tokens, and the only issuer the built-in verifier accepts.
    pub issuer: String,
    /// `aud` of issued tokens (`ferry-tunnel`), and the only audience the built-in verifier accepts.
    pub audience: String,
    /// Lifetime of issued tokens (whole seconds).
    pub ttl: Duration,
    /// How often the keys are re-read from the store (keys rotated by another node); also part of the overlap
    /// a rotated-out key is kept for.
    pub key_refresh: Duration,
    /// Rotate the signing key automatically when the newest is this old; `None`: only on demand
    /// ([`TokenIssuer::rotate`]).
    pub rotate_every: Option<Duration>,
    /// Limits on repeated failures at the token endpoint.
    pub rate_limit: RateLimitSettings,
    /// Whether the token endpoint issues tokens (`false` when only an external provider's tokens are
    /// accepted: the endpoint then refuses every request).
    pub endpoint_enabled: bool,
    /// The base URL clients reach this node at, for the discovery document; `None`: from the request's `Host`.
    pub public_url: Option<String>,
    /// Issuers the cluster used before (`iss` values still accepted, never issued): the old default `ferry`
    /// once the issuer follows `public_url`.
    pub accepted_issuers: Vec<String>,
}

impl Default for IssuerSettings {
    fn default() -> Self {
        IssuerSettings {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            ttl: DEFAULT_TTL,
            key_refresh: DEFAULT_KEY_REFRESH,
            rotate_every: None,
            rate_limit: RateLimitSettings::default(),
            endpoint_enabled: true,
            public_url: None,
            accepted_issuers: Vec::new(),
        }
    }
}

/// Checks a bearer token and says who it is for.
#[async_trait::async_trait]
pub trait TokenVerifier: Send + Sync {
    /// Check the token with the keys at hand (no I/O). A token naming an unknown key is refused with
    /// [`AuthError::UnknownKey`]; implementations may start fetching keys in the background.
    fn verify(&self, token: &str) -> Result<Claims, AuthError>;

    /// Check the token, first fetching keys when it names an unknown one (bounded by a minimum interval).
    /// Prefer this in async code: a key rotated a moment ago by another node or provider is then accepted on
    /// the first try.
    async fn verify_async(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token)
    }

    /// Check a token presented by a client of the relay (a tenant with "require client authentication"): like
    /// [`Self::verify_async`] (signature, issuer, audience, times, tenant) but without requiring the tunnel
    /// scope, so that tokens made for clients, which cannot open tunnels, are accepted.
    async fn verify_client(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_async(token).await
    }
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    /// Seconds from now.
    pub expires_in: u64,
}

pub(crate) fn now_secs() -> u64 {
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
        algorithm: BUILTIN_ALGORITHM.to_owned(),
        private_der: pkcs8.as_ref().to_vec(),
        public_key: pair.public_key().as_ref().to_vec(),
        created_at: unix_now(),
    })
}

/// A stored key as `ferry-token` reads it.
fn key_ref(key: &SigningKey) -> KeyRef<'_> {
    KeyRef {
        kid: &key.kid,
        algorithm: &key.algorithm,
        private_der: &key.private_der,
        public_key: &key.public_key,
    }
}

/// One snapshot of the store's signing keys (newest first).
fn key_set(keys: &[SigningKey]) -> KeySet {
    KeySet::new(keys.iter().map(key_ref))
}

/// The built-in verifier: EdDSA tokens signed by one of the store's keys, for one issuer and one audience.
/// Built with [`BuiltinVerifier::with_store`] it re-reads the keys on [`BuiltinVerifier::refresh`] and, at
/// most every few seconds, when a token names an unknown key.
pub struct BuiltinVerifier {
    keys: RwLock<Arc<KeySet>>,
    store: Option<Arc<dyn Store>>,
    rules: TokenRules,
    /// When the keys were last re-read because of an unknown kid.
    last_kid_refresh: Mutex<Option<Instant>>,
    /// One re-read at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// This verifier, for background re-reads started by [`TokenVerifier::verify`] (empty without a store).
    me: Weak<BuiltinVerifier>,
}

impl std::fmt::Debug for BuiltinVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinVerifier")
            .field("kids", &self.kids())
            .field("rules", &self.rules)
            .finish()
    }
}

impl BuiltinVerifier {
    /// A verifier that accepts tokens signed by any of the EdDSA `keys` (others are skipped), issued by
    /// `issuer` for `audience`. It never re-reads keys.
    pub fn new(issuer: &str, audience: &str, keys: &[SigningKey]) -> Self {
        BuiltinVerifier {
            keys: RwLock::new(Arc::new(key_set(keys))),
            store: None,
            rules: TokenRules::new(issuer, audience),
            last_kid_refresh: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            me: Weak::new(),
        }
    }

    /// A verifier for every key in the store at this moment (it never re-reads them).
    pub async fn load(store: &dyn Store, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        Ok(Self::new(issuer, audience, &store.signing_keys().await?))
    }

    /// A verifier for the keys of `store` that re-reads them on [`Self::refresh`] and on an unknown kid (for
    /// nodes that check tokens but do not issue them; [`TokenIssuer`] builds one itself).
    pub async fn with_store(
        store: Arc<dyn Store>,
        issuer: &str,
        audience: &str,
    ) -> Result<Arc<Self>, AuthError> {
        let keys = store.signing_keys().await?;
        Ok(Self::shared(issuer, &[], audience, &keys, store))
    }

    fn shared(
        issuer: &str,
        earlier_issuers: &[String],
        audience: &str,
        keys: &[SigningKey],
        store: Arc<dyn Store>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| {
            let mut verifier = Self::new(issuer, audience, keys);
            verifier.rules = TokenRules::new(issuer, audience).also_accepting(earlier_issuers);
            verifier.store = Some(store);
            verifier.me = me.clone();
            verifier
        })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, set: KeySet) {
        let set = Arc::new(set);
        match self.keys.write() {
            Ok(mut keys) => *keys = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// The kids of the keys this verifier accepts, newest first.
    pub fn kids(&self) -> Vec<String> {
        self.snapshot().kids()
    }

    /// Re-read the keys from the store (no-op without one). A store holding no keys, or whose newest key cannot
    /// sign while the current one can, leaves the keys as they were.
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _one = self.refreshing.lock().await;
        let keys = store.signing_keys().await?;
        if keys.is_empty() {
            tracing::warn!("the store holds no signing keys; keeping the keys in memory");
            return Ok(());
        }
        let set = key_set(&keys);
        let before = self.snapshot();
        if set.signer_kid().is_none() && before.signer_kid().is_some() {
            tracing::error!(
                "the newest signing key in the store is unusable; keeping the keys in memory"
            );
            return Ok(());
        }
        let kids = set.kids();
        if before.kids() != kids {
            tracing::info!(?kids, "token signing keys changed");
        }
        self.replace(set);
        Ok(())
    }

    /// Whether an unknown kid may trigger a re-read now (and note that it does).
    fn may_refresh_for_unknown_kid(&self) -> bool {
        if self.store.is_none() {
            return false;
        }
        let mut last = match self.last_kid_refresh.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < MIN_UNKNOWN_KID_REFRESH) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The public keys as a JWKS document (RFC 7517, OKP keys per RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        self.snapshot().jwks()
    }

    /// The issuer this verifier accepts.
    pub fn issuer(&self) -> Option<&str> {
        self.rules.issuer()
    }
}

#[async_trait::async_trait]
impl TokenVerifier for BuiltinVerifier {
    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let result = self.check(token, Purpose::Tunnel);
        if matches!(result, Err(AuthError::UnknownKey)) && self.may_refresh_for_unknown_kid() {
            // The key may have been rotated in by another node: re-read in the background; the caller's retry
            // (a connector reconnects with backoff) then finds it.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let me = self.me.clone();
                handle.spawn(async move {
                    if let Some(verifier) = me.upgrade() {
                        tracing::debug!(
                            "unknown kid: re-reading the signing keys in the background"
                        );
                        if let Err(error) = verifier.refresh().await {
                            tracing::warn!(%error, "re-reading the signing keys failed");
                        }
                    }
                });
            }
        }
        result
    }

    async fn verify_async(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_refreshing(token, Purpose::Tunnel).await
    }

    async fn verify_client(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_refreshing(token, Purpose::Client).await
    }
}

impl BuiltinVerifier {
    /// Check a token another node of the cluster presents on the node link (scope `node`), re-reading the keys
    /// once when it names an unknown one. Returns the calling node's id and the token's expiry (unix seconds).
    pub async fn verify_node(&self, token: &str) -> Result<(String, u64), AuthError> {
        let claims = self.verify_refreshing(token, Purpose::Node).await?;
        Ok((claims.tenant.to_string(), claims.exp))
    }

    /// Check `token` for `purpose` with the keys at hand.
    fn check(&self, token: &str, purpose: Purpose) -> Result<Claims, AuthError> {
        Ok(self.rules.check(&self.snapshot(), token, purpose)?)
    }

    /// Verify, re-reading the keys once when the token names an unknown one.
    async fn verify_refreshing(&self, token: &str, purpose: Purpose) -> Result<Claims, AuthError> {
        match self.check(token, purpose) {
            Err(AuthError::UnknownKey) if self.may_refresh_for_unknown_kid() => {
                tracing::debug!("unknown kid: re-reading the signing keys");
                if let Err(error) = self.refresh().await {
                    tracing::warn!(%error, "re-reading the signing keys failed");
                }
                self.check(token, purpose)
            }
            result => result,
        }
    }
}

/// The built-in token issuer: signs tunnel tokens with the newest signing key of the store, rotates keys, and
/// answers the client-credentials token endpoint.
pub struct TokenIssuer {
    pub(crate) store: Arc<dyn Store>,
    settings: IssuerSettings,
    verifier: Arc<BuiltinVerifier>,
    pub(crate) limiter: FailureLimiter,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("settings", &self.settings)
            .field("kids", &self.verifier.kids())
            .finish_non_exhaustive()
    }
}

/// A background task owned by whoever keeps this guard (key maintenance, JWKS refresh): aborted when dropped.
/// The tasks also end by themselves once the verifier they serve is gone.
#[derive(Debug)]
pub struct BackgroundTask(tokio::task::JoinHandle<()>);

impl BackgroundTask {
    pub(crate) fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        BackgroundTask(tokio::spawn(task))
    }

    /// Whether the task has ended (it never should while its owner lives).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one round of [`maintain_signing_keys`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMaintenance {
    /// The kid of the key it added (the first key of an empty store, or a rotation that was due); `None` when no
    /// key was due, or another process added one first.
    pub added: Option<String>,
    /// Kids of rotated-out keys removed because their overlap had passed.
    pub removed: Vec<String>,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The kid of the new signing key.
    pub added: String,
    /// Kids of old keys removed because their overlap had passed.
    pub removed: Vec<String>,
}

impl TokenIssuer {
    /// Load the signing keys from the store, or, if it holds none, generate an Ed25519 key and store it.
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
        ferry_token::check_key_pair(key_ref(newest))?;
        let verifier = BuiltinVerifier::shared(
            &settings.issuer,
            &settings.accepted_issuers,
            &settings.audience,
            &keys,
            store.clone(),
        );
        Ok(TokenIssuer {
            store,
            limiter: FailureLimiter::new(settings.rate_limit.clone()),
            settings,
            verifier,
        })
    }

    /// The verifier for tokens of this issuer: every key of the store, re-read periodically (see
    /// [`Self::spawn_maintenance`]) and on an unknown kid.
    pub fn verifier(&self) -> Arc<dyn TokenVerifier> {
        self.verifier.clone()
    }

    /// The same verifier with its concrete type.
    pub fn builtin_verifier(&self) -> Arc<BuiltinVerifier> {
        self.verifier.clone()
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.verifier.jwks()
    }

    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// The kid of the key that signs new tokens (empty if none can sign, which `load_or_create` prevents).
    pub fn kid(&self) -> String {
        self.verifier
            .snapshot()
            .signer_kid()
            .map(str::to_owned)
            .unwrap_or_default()
    }

    /// How long a rotated-out key stays in the store once a newer key exists: the token ttl (tokens it signed
    /// are still valid), the clock leeway, and one key refresh interval (nodes still signing with it until
    /// they re-read the keys).
    pub fn overlap(&self) -> Duration {
        overlap(&self.settings)
    }

    /// Re-read the signing keys from the store now.
    pub async fn refresh(&self) -> Result<(), AuthError> {
        self.verifier.refresh().await
    }

    /// Add a new signing key (which signs every token from now on), remove keys whose overlap has passed, and
    /// re-read the keys.
    pub async fn rotate(&self) -> Result<Rotation, AuthError> {
        rotate(&*self.store, &self.verifier, &self.settings).await
    }

    /// Remove the keys whose overlap has passed at `now` (unix seconds): every key older than a newer key that
    /// has existed for [`Self::overlap`]. The newest key is never removed. Returns the removed kids.
    pub async fn prune_at(&self, now: i64) -> Result<Vec<String>, AuthError> {
        prune(&*self.store, &self.settings, now).await
    }

    /// Start the background task that re-reads the keys every `key_refresh` and decides about them on this node
    /// ([`maintain_signing_keys`]: removes keys past their overlap and, with `rotate_every`, rotates when the
    /// newest key is that old). For a node on its own; in a cluster the worker decides and nodes use
    /// [`Self::spawn_refresh`]. Keep the guard as long as the issuer.
    pub fn spawn_maintenance(&self) -> BackgroundTask {
        self.spawn_key_task(true)
    }

    /// Start the background task that only re-reads the keys every `key_refresh` (rotating and removing them is
    /// left to the cluster's worker, which runs [`maintain_signing_keys`]). Keep the guard as long as the issuer.
    pub fn spawn_refresh(&self) -> BackgroundTask {
        self.spawn_key_task(false)
    }

    fn spawn_key_task(&self, decide: bool) -> BackgroundTask {
        let verifier = Arc::downgrade(&self.verifier);
        let store = self.store.clone();
        let settings = self.settings.clone();
        BackgroundTask::spawn(async move {
            let period = settings.key_refresh.max(Duration::from_secs(1));
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(verifier) = verifier.upgrade() else {
                    break;
                };
                let result = if decide {
                    maintain(&*store, &verifier, &settings).await
                } else {
                    verifier.refresh().await
                };
                if let Err(error) = result {
                    tracing::warn!(%error, "signing key maintenance failed; retrying next interval");
                }
            }
        })
    }

    /// Issue a tunnel token for `tenant`, valid from now for the configured ttl. Does not check the tenant.
    pub fn issue(&self, tenant: &TenantName) -> Result<IssuedToken, AuthError> {
        self.issue_at(tenant, None, TUNNEL_SCOPE, now_secs())
    }

    /// Issue a tunnel token for `tenant` obtained with the connector secret `secret_id` (its `sid` claim).
    pub fn issue_for_secret(
        &self,
        tenant: &TenantName,
        secret_id: &str,
    ) -> Result<IssuedToken, AuthError> {
        self.issue_at(tenant, Some(secret_id), TUNNEL_SCOPE, now_secs())
    }

    /// Issue a token with `scope` (`tunnel`, `relay` or both, space-separated) for `tenant` obtained with the
    /// connector secret `secret_id`.
    pub fn issue_scoped(
        &self,
        tenant: &TenantName,
        secret_id: &str,
        scope: &str,
    ) -> Result<IssuedToken, AuthError> {
        self.issue_at(tenant, Some(secret_id), scope, now_secs())
    }

    /// Issue the token node `node_id` presents to the other nodes of its cluster on the node link: scope `node`,
    /// valid for [`NODE_TOKEN_TTL`], good for nothing else (no tunnel, no client of a tenant).
    pub fn issue_node(&self, node_id: &str) -> Result<IssuedToken, AuthError> {
        let subject = TenantName::new(node_id).map_err(|_| {
            AuthError::Key(format!("node id {node_id:?} cannot name a token's subject"))
        })?;
        self.issue_for(&subject, None, NODE_SCOPE, now_secs(), NODE_TOKEN_TTL)
    }

    /// Issue a token as if the clock said `now` (unix seconds).
    pub(crate) fn issue_at(
        &self,
        tenant: &TenantName,
        secret_id: Option<&str>,
        scope: &str,
        now: u64,
    ) -> Result<IssuedToken, AuthError> {
        self.issue_for(tenant, secret_id, scope, now, self.settings.ttl)
    }

    /// Sign a token for `subject` valid from `now` (unix seconds) for `ttl`.
    fn issue_for(
        &self,
        subject: &TenantName,
        secret_id: Option<&str>,
        scope: &str,
        now: u64,
        ttl: Duration,
    ) -> Result<IssuedToken, AuthError> {
        let ttl = ttl.as_secs();
        let id = uuid::Uuid::new_v4().to_string();
        let access_token = self.verifier.snapshot().issue(&NewToken {
            issuer: &self.settings.issuer,
            audience: &self.settings.audience,
            tenant: subject,
            scope,
            secret_id,
            issued_at: now,
            expires_at: now.saturating_add(ttl),
            id: &id,
        })?;
        Ok(IssuedToken {
            access_token,
            expires_in: ttl,
        })
    }
}

fn overlap(settings: &IssuerSettings) -> Duration {
    settings.ttl + LEEWAY + settings.key_refresh
}

async fn rotate(
    store: &dyn Store,
    verifier: &BuiltinVerifier,
    settings: &IssuerSettings,
) -> Result<Rotation, AuthError> {
    let mut key = generate_signing_key()?;
    // Keys are ordered by creation second: the new key must be strictly the newest, even when rotating twice
    // within one second.
    if let Some(newest) = store.signing_keys().await?.first() {
        key.created_at = key.created_at.max(newest.created_at.saturating_add(1));
    }
    store.add_signing_key(&key).await?;
    tracing::info!(kid = %key.kid, "rotated the token signing key");
    let removed = prune(store, settings, unix_now()).await?;
    verifier.refresh().await?;
    Ok(Rotation {
        added: key.kid,
        removed,
    })
}

async fn prune(
    store: &dyn Store,
    settings: &IssuerSettings,
    now: i64,
) -> Result<Vec<String>, AuthError> {
    let overlap = i64::try_from(overlap(settings).as_secs()).unwrap_or(i64::MAX);
    let keys = store.signing_keys().await?;
    let mut removed = Vec::new();
    // Newest first: once some key has existed for the overlap, every older key is past its use.
    let mut settled = false;
    for key in &keys {
        if settled {
            if store.remove_signing_key(&key.kid).await? {
                tracing::info!(kid = %key.kid, "removed a rotated-out signing key");
            }
            removed.push(key.kid.clone());
        } else if now.saturating_sub(key.created_at) >= overlap {
            settled = true;
        }
    }
    Ok(removed)
}

/// One round of a node's own maintenance task: decide about the keys, then re-read them.
async fn maintain(
    store: &dyn Store,
    verifier: &BuiltinVerifier,
    settings: &IssuerSettings,
) -> Result<(), AuthError> {
    maintain_signing_keys(store, settings, unix_now()).await?;
    verifier.refresh().await
}

/// Decide about the signing keys as of `now` (unix seconds), for the cluster's worker (or a node on its own):
/// add the first key to a store without keys; with `rotate_every`, add a new key when the newest is that old;
/// then remove every key whose overlap has passed (see [`TokenIssuer::overlap`]). A key is added only if the
/// newest key is still the one this round saw ([`Store::add_signing_key_after`]): of several processes running
/// this at the same moment, one adds a key and the others add none. Nodes pick the changes up when they re-read
/// the keys (every `key_refresh`, and on an unknown `kid`).
pub async fn maintain_signing_keys(
    store: &dyn Store,
    settings: &IssuerSettings,
    now: i64,
) -> Result<KeyMaintenance, AuthError> {
    let keys = store.signing_keys().await?;
    let mut added = None;
    match keys.first() {
        None => {
            let mut key = generate_signing_key()?;
            key.created_at = now;
            if store.add_signing_key_after(None, &key).await? {
                tracing::info!(kid = %key.kid, "generated a token signing key");
                added = Some(key.kid);
            }
        }
        Some(newest) => {
            let every = settings
                .rotate_every
                .map(|every| i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
            if every.is_some_and(|every| now.saturating_sub(newest.created_at) >= every) {
                let mut key = generate_signing_key()?;
                // Keys are ordered by creation second: the new key must be strictly the newest.
                key.created_at = now.max(newest.created_at.saturating_add(1));
                if store.add_signing_key_after(Some(&newest.kid), &key).await? {
                    tracing::info!(kid = %key.kid, previous = %newest.kid, "rotated the token signing key");
                    added = Some(key.kid);
                } else {
                    tracing::debug!("another process changed the signing keys first; not rotating");
                }
            }
        }
    }
    let removed = prune(store, settings, now).await?;
    Ok(KeyMaintenance { added, removed })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use ferry_store::SqliteStore;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

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
        issuer.verifier.snapshot().sign(claims).expect("sign")
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
        assert_eq!(header.kid.as_deref(), Some(issuer.kid().as_str()));
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let issuer = issuer_on(memory_store().await).await;
        let verifier = issuer.verifier();
        // Issued 10 minutes ago with a 10 minute ttl: expired right now, but within the leeway.
        let now = now_secs();
        let edge = issuer
            .issue_at(&demo(), None, TUNNEL_SCOPE, now - 600)
            .expect("issue");
        assert!(verifier.verify(&edge.access_token).is_ok());
        let old = issuer
            .issue_at(&demo(), None, TUNNEL_SCOPE, now - 600 - 31)
            .expect("issue");
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
        let mut key = forger.store.signing_keys().await.expect("keys").remove(0);
        key.kid = issuer.kid();
        let forged = key_set(&[key])
            .sign(&claims_json(now_secs()))
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
            &EncodingKey::from_secret(&issuer.verifier.snapshot().public_keys()[0].1),
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

    #[tokio::test]
    async fn sid_claim_names_the_secret() {
        let issuer = issuer_on(memory_store().await).await;
        let token = issuer
            .issue_for_secret(&demo(), "secret-1")
            .expect("issue")
            .access_token;
        let claims = issuer.verifier().verify(&token).expect("verify");
        assert_eq!(claims.secret_id.as_deref(), Some("secret-1"));
        let plain = issuer.issue(&demo()).expect("issue").access_token;
        assert_eq!(
            issuer.verifier().verify(&plain).expect("verify").secret_id,
            None
        );
    }

    #[tokio::test]
    async fn rotation_signs_with_the_new_key_and_still_accepts_the_old() {
        let store = memory_store().await;
        let issuer = issuer_on(store.clone()).await;
        let old_kid = issuer.kid();
        let old = issuer.issue(&demo()).expect("issue").access_token;
        let rotation = issuer.rotate().await.expect("rotate");
        assert_ne!(rotation.added, old_kid);
        assert!(rotation.removed.is_empty(), "{rotation:?}");
        assert_eq!(issuer.kid(), rotation.added);
        let new = issuer.issue(&demo()).expect("issue").access_token;
        let header = jsonwebtoken::decode_header(&new).expect("header");
        assert_eq!(header.kid.as_deref(), Some(rotation.added.as_str()));
        let verifier = issuer.verifier();
        assert!(verifier.verify(&old).is_ok());
        assert!(verifier.verify(&new).is_ok());
        let jwks = issuer.jwks();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, [rotation.added.as_str(), old_kid.as_str()]);
        assert_eq!(store.signing_keys().await.expect("keys").len(), 2);
    }

    #[tokio::test]
    async fn old_keys_are_removed_once_a_newer_key_is_older_than_the_overlap() {
        let store = memory_store().await;
        let now = unix_now();
        let mut oldest = generate_signing_key().expect("key");
        oldest.created_at = now - 100_000;
        let mut older = generate_signing_key().expect("key");
        older.created_at = now - 50_000;
        let mut newest = generate_signing_key().expect("key");
        newest.created_at = now - 100;
        for key in [&oldest, &older, &newest] {
            store.add_signing_key(key).await.expect("add");
        }
        let issuer = issuer_on(store.clone()).await;
        assert_eq!(issuer.kid(), newest.kid);
        let overlap = i64::try_from(issuer.overlap().as_secs()).expect("secs");
        assert_eq!(overlap, 600 + 30 + 60);
        // `older` has existed for longer than the overlap: `oldest` goes; `older` stays while `newest` is young.
        let removed = issuer.prune_at(now).await.expect("prune");
        assert_eq!(removed, [oldest.kid.clone()]);
        // Once `newest` has existed for the overlap, `older` goes too; the newest key never does.
        let removed = issuer
            .prune_at(now - 100 + overlap - 1)
            .await
            .expect("prune");
        assert!(removed.is_empty(), "{removed:?}");
        let removed = issuer.prune_at(now - 100 + overlap).await.expect("prune");
        assert_eq!(removed, [older.kid.clone()]);
        let removed = issuer.prune_at(now + 1_000_000).await.expect("prune");
        assert!(removed.is_empty(), "{removed:?}");
        let left: Vec<String> = store
            .signing_keys()
            .await
            .expect("keys")
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(left, [newest.kid.clone()]);
        // A verifier re-reading the store stops accepting the removed keys.
        issuer.refresh().await.expect("refresh");
        assert_eq!(issuer.builtin_verifier().kids(), [newest.kid]);
    }

    #[tokio::test]
    async fn a_key_rotated_by_another_node_is_honoured() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferry.db");
        let store_a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("open"));
        let store_b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("open"));
        let node_a = issuer_on(store_a).await;
        let node_b = issuer_on(store_b).await;
        assert_eq!(node_a.kid(), node_b.kid());
        node_a.rotate().await.expect("rotate");
        let token = node_a.issue(&demo()).expect("issue").access_token;
        // The async check re-reads the store on the unknown kid and accepts at once.
        let claims = node_b
            .verifier()
            .verify_async(&token)
            .await
            .expect("verify after re-read");
        assert_eq!(claims.tenant, demo());
        assert_eq!(
            node_b.kid(),
            node_a.kid(),
            "node b signs with the new key too"
        );

        // The sync check refuses the unknown kid once and re-reads in the background.
        node_b.rotate().await.expect("rotate on b");
        let token = node_b.issue(&demo()).expect("issue").access_token;
        let verifier = node_a.verifier();
        let err = verifier.verify(&token).expect_err("unknown kid at first");
        assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
        let mut accepted = false;
        for _ in 0..100 {
            if verifier.verify(&token).is_ok() {
                accepted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(accepted, "the background re-read found the new key");
    }

    #[tokio::test]
    async fn forged_kids_do_not_hammer_the_store() {
        let issuer = issuer_on(memory_store().await).await;
        let forger = issuer_on(memory_store().await).await;
        let forged = forger.issue(&demo()).expect("issue").access_token;
        let verifier = issuer.builtin_verifier();
        assert!(verifier.may_refresh_for_unknown_kid());
        for _ in 0..5 {
            let err = verifier.verify_async(&forged).await.expect_err("forged");
            assert!(matches!(err, AuthError::UnknownKey), "{err:?}");
        }
        assert!(
            !verifier.may_refresh_for_unknown_kid(),
            "re-reads are spaced by the minimum interval"
        );
    }

    fn stored_key(created_at: i64) -> SigningKey {
        SigningKey {
            created_at,
            ..generate_signing_key().expect("key")
        }
    }

    async fn kids(store: &dyn Store) -> Vec<String> {
        store
            .signing_keys()
            .await
            .expect("keys")
            .into_iter()
            .map(|k| k.kid)
            .collect()
    }

    /// The worker's decisions, at chosen times: the first key, a rotation when due and not before, the old key
    /// kept for the overlap and removed after it.
    #[tokio::test]
    async fn maintain_signing_keys_decides_by_the_clock() {
        let store = memory_store().await;
        let settings = IssuerSettings {
            rotate_every: Some(Duration::from_secs(86_400)),
            ..IssuerSettings::default()
        };
        let t0 = 1_000_000;
        let first = maintain_signing_keys(&*store, &settings, t0)
            .await
            .expect("first");
        let k0 = first.added.clone().expect("a first key");
        assert!(first.removed.is_empty());
        assert_eq!(kids(&*store).await, std::slice::from_ref(&k0));

        let quiet = maintain_signing_keys(&*store, &settings, t0 + 86_399)
            .await
            .expect("not due");
        assert_eq!(quiet, KeyMaintenance::default());

        let rotated = maintain_signing_keys(&*store, &settings, t0 + 86_400)
            .await
            .expect("due");
        let k1 = rotated.added.clone().expect("rotated");
        assert!(
            rotated.removed.is_empty(),
            "the old key stays for the overlap"
        );
        assert_eq!(kids(&*store).await, [k1.clone(), k0.clone()]);

        let overlap = i64::try_from(overlap(&settings).as_secs()).expect("secs");
        let kept = maintain_signing_keys(&*store, &settings, t0 + 86_400 + overlap - 1)
            .await
            .expect("within the overlap");
        assert_eq!(kept, KeyMaintenance::default());
        let retired = maintain_signing_keys(&*store, &settings, t0 + 86_400 + overlap)
            .await
            .expect("after the overlap");
        assert_eq!(retired.removed, [k0]);
        assert_eq!(retired.added, None);
        assert_eq!(kids(&*store).await, [k1]);

        // Without `rotate_every` nothing is ever rotated.
        let never = IssuerSettings::default();
        let result = maintain_signing_keys(&*store, &never, t0 + 10 * 86_400)
            .await
            .expect("no rotation");
        assert_eq!(result, KeyMaintenance::default());
    }

    /// Processes deciding on the same view add one key: the second finds the newest key changed.
    #[tokio::test]
    async fn a_rotation_decided_on_a_stale_view_is_dropped() {
        let store = memory_store().await;
        let now = unix_now();
        let old = stored_key(now - 10 * 86_400);
        store.add_signing_key(&old).await.expect("add");
        let settings = IssuerSettings {
            rotate_every: Some(Duration::from_secs(86_400)),
            ..IssuerSettings::default()
        };
        let (a, b) = tokio::join!(
            maintain_signing_keys(&*store, &settings, now),
            maintain_signing_keys(&*store, &settings, now)
        );
        let added: Vec<String> = [a.expect("a"), b.expect("b")]
            .into_iter()
            .filter_map(|m| m.added)
            .collect();
        assert_eq!(added.len(), 1, "{added:?}");
        assert_eq!(kids(&*store).await, [added[0].clone(), old.kid]);
    }

    #[tokio::test]
    async fn maintenance_rotates_when_due() {
        let store = memory_store().await;
        let issuer = TokenIssuer::load_or_create(
            store.clone(),
            IssuerSettings {
                key_refresh: Duration::from_secs(1),
                rotate_every: Some(Duration::from_secs(1)),
                ..IssuerSettings::default()
            },
        )
        .await
        .expect("issuer");
        let first = issuer.kid();
        let task = issuer.spawn_maintenance();
        let mut rotated = false;
        for _ in 0..100 {
            if issuer.kid() != first {
                rotated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(task);
        assert!(rotated, "the key was rotated within 5 s");
        assert!(store.signing_keys().await.expect("keys").len() >= 2);
    }
}
