//! A node's authentication, built from `[server.auth]`: the built-in issuer with its key maintenance, the
//! external provider with its key refresh, the tunnel verifier that accepts what is configured, and the OIDC
//! management API's check of its bearer tokens, and dashboard sign-in through it. One call for `ferry-app`.

use std::sync::Arc;

use ferry_store::Store;

use crate::roles::RoleRules;
use crate::sign_in::{sign_in_settings, OidcSignIn};
use crate::{
    AdminCheck, AuthError, BackgroundTask, CombinedVerifier, IssuerSettings, OidcSettings,
    OidcVerifier, RateLimitSettings, TokenIssuer, TokenVerifier,
};

/// Who decides about the built-in issuer's signing keys (the first key, rotation, removing rotated-out keys).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyDuty {
    /// This node decides, besides re-reading the keys: a node on its own (what [`NodeAuth::start`] does).
    #[default]
    Maintain,
    /// This node only loads and re-reads the keys; the cluster's worker decides
    /// ([`maintain_signing_keys`](crate::maintain_signing_keys)). The node still creates the first key of an
    /// empty store at start (atomically: nodes starting together agree on one key).
    LoadOnly,
}

/// Everything a node needs to authenticate connectors and OIDC admins. Keep `tasks` alive as long as the node.
pub struct NodeAuth {
    /// The built-in issuer (token endpoint, JWKS, discovery). With `builtin = false` its endpoint refuses.
    pub issuer: TokenIssuer,
    /// Checks tunnel tokens: built-in, external, or both (routed by `iss`).
    pub verifier: Arc<dyn TokenVerifier>,
    /// The external provider, if configured.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// The management API's check of the provider's bearer tokens, if a provider and a role mapping are
    /// configured.
    pub admin_check: Option<AdminCheck>,
    /// Signing in to the dashboard through the provider, if `[server.auth.oidc.sign_in]` is configured.
    pub sign_in: Option<Arc<OidcSignIn>>,
    /// Key maintenance (or only re-reading, with [`KeyDuty::LoadOnly`]) and JWKS refresh; aborted when dropped.
    pub tasks: Vec<BackgroundTask>,
}

impl std::fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuth")
            .field("issuer", &self.issuer)
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

/// The issuer settings of a `[server.auth]` section, for tokens of `audience`.
pub fn issuer_settings(auth: &ferry_config::AuthSettings, audience: &str) -> IssuerSettings {
    IssuerSettings {
        issuer: auth.issuer.clone(),
        audience: audience.to_owned(),
        ttl: auth.token_ttl,
        key_refresh: auth.rotation.key_refresh,
        rotate_every: auth.rotation.every,
        rate_limit: RateLimitSettings {
            failures_per_ip: auth.rate_limit.failures_per_ip,
            failures_per_client: auth.rate_limit.failures_per_client,
            window: auth.rate_limit.window,
        },
        endpoint_enabled: auth.builtin,
        public_url: auth.public_url.clone(),
        accepted_issuers: auth.accepted_issuers.clone(),
    }
}

/// The provider settings of a `[server.auth.oidc]` section; an error names a role mapping key that is not valid.
pub fn oidc_settings(oidc: &ferry_config::OidcSettings) -> Result<OidcSettings, AuthError> {
    Ok(OidcSettings {
        issuer: oidc.issuer.clone(),
        audience: oidc.audience.clone(),
        tenant_claim: oidc.tenant_claim.clone(),
        scope: Some(oidc.scope.trim().to_owned()).filter(|s| !s.is_empty()),
        roles: RoleRules::from_config(oidc)?,
        admin_audience: oidc.admin_audience.clone(),
        jwks_refresh: oidc.jwks_refresh,
        jwks_min_refresh: oidc.jwks_min_refresh,
        http_timeout: oidc.http_timeout,
    })
}

impl NodeAuth {
    /// Load (or create) the signing keys, start their maintenance, set up the external provider (its keys are
    /// fetched in the background: a provider that is down at start does not stop the node; its tokens are
    /// refused until its keys arrive), and build the tunnel verifier. `audience` is the `aud` of built-in
    /// tunnel tokens. This node decides about the signing keys ([`KeyDuty::Maintain`]).
    pub async fn start(
        store: Arc<dyn Store>,
        auth: &ferry_config::AuthSettings,
        audience: &str,
    ) -> Result<Self, AuthError> {
        Self::start_with(store, auth, audience, KeyDuty::Maintain).await
    }

    /// [`Self::start`], saying who decides about the signing keys: in a cluster, nodes start with
    /// [`KeyDuty::LoadOnly`] and the worker rotates.
    pub async fn start_with(
        store: Arc<dyn Store>,
        auth: &ferry_config::AuthSettings,
        audience: &str,
        keys: KeyDuty,
    ) -> Result<Self, AuthError> {
        let issuer = TokenIssuer::load_or_create(store, issuer_settings(auth, audience)).await?;
        let mut tasks = vec![match keys {
            KeyDuty::Maintain => issuer.spawn_maintenance(),
            KeyDuty::LoadOnly => issuer.spawn_refresh(),
        }];
        let mut sign_in = None;
        let oidc = match &auth.oidc {
            Some(settings) => {
                let verifier = OidcVerifier::new(oidc_settings(settings)?)?;
                if let Some(config) = &settings.sign_in {
                    tracing::info!(issuer = %settings.issuer, client_id = %config.client_id, "dashboard sign-in through the OpenID Connect provider");
                    sign_in = Some(Arc::new(OidcSignIn::new(
                        verifier.clone(),
                        sign_in_settings(config),
                    )));
                }
                tasks.push(verifier.spawn_refresh());
                tracing::info!(issuer = %settings.issuer, audience = %settings.audience, "accepting tokens of an external OpenID Connect provider");
                Some(verifier)
            }
            None => None,
        };
        let verifier: Arc<dyn TokenVerifier> = match (&oidc, auth.builtin) {
            (None, _) => issuer.verifier(),
            (Some(external), false) => external.clone(),
            (Some(external), true) => {
                let builtin = issuer.verifier();
                let mut combined =
                    CombinedVerifier::new().with(auth.issuer.clone(), builtin.clone());
                for earlier in &auth.accepted_issuers {
                    combined = combined.with(earlier.clone(), builtin.clone());
                }
                Arc::new(combined.with(external.settings().issuer.clone(), external.clone()))
            }
        };
        let admin_check = oidc.as_ref().and_then(OidcVerifier::admin_check);
        Ok(NodeAuth {
            issuer,
            verifier,
            oidc,
            admin_check,
            sign_in,
            tasks,
        })
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::TenantName;
    use ferry_store::SqliteStore;

    use super::*;
    use crate::IssuerSettings;

    /// A node that only loads the keys adopts what the worker decided and decides nothing itself: with the
    /// newest key long past `rotate_every`, a deciding node would rotate at its first tick.
    #[tokio::test]
    async fn load_only_nodes_adopt_keys_and_never_rotate() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let old = ferry_store::unix_now() - 10 * 86_400;
        let settings = IssuerSettings {
            rotate_every: Some(std::time::Duration::from_secs(86_400)),
            ..IssuerSettings::default()
        };
        let k0 = crate::maintain_signing_keys(&*store, &settings, old)
            .await
            .expect("k0")
            .added
            .expect("added");
        let config = ferry_config::AuthSettings {
            rotation: ferry_config::RotationSettings {
                every: Some(std::time::Duration::from_secs(86_400)),
                key_refresh: std::time::Duration::from_secs(1),
            },
            ..ferry_config::AuthSettings::default()
        };
        let node = NodeAuth::start_with(store.clone(), &config, "ferry-tunnel", KeyDuty::LoadOnly)
            .await
            .expect("start");
        assert_eq!(node.issuer.kid(), k0);
        // The worker rotates, as of nine days ago (the new key is old too: a deciding node would rotate again at
        // its first tick).
        let k1 = crate::maintain_signing_keys(&*store, &settings, old + 86_400)
            .await
            .expect("k1")
            .added
            .expect("rotated");
        let start = std::time::Instant::now();
        while node.issuer.kid() != k1 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the node re-reads the keys within its key_refresh"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let kids: Vec<String> = store
            .signing_keys()
            .await
            .expect("keys")
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(kids, [k1, k0], "the node added no key of its own");
        let token = node
            .issuer
            .issue(&TenantName::new("demo").expect("name"))
            .expect("issue")
            .access_token;
        assert!(node.verifier.verify(&token).is_ok());
    }

    /// Nodes starting at once on an empty PostgreSQL database agree on one first key: every node signs with it
    /// and accepts every other node's tokens.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_starting_together_on_postgres_agree_on_one_key() {
        ferry_store::testdb::with_database(|options| async move {
            // Migrate once, so that the race is the first key's, not the schema's.
            ferry_store::PostgresStore::connect_with(options.clone())
                .await
                .expect("migrate")
                .close()
                .await;
            let nodes = 8;
            let start = Arc::new(tokio::sync::Barrier::new(nodes));
            let tasks: Vec<_> = (0..nodes)
                .map(|_| {
                    let options = options.clone();
                    let start = Arc::clone(&start);
                    tokio::spawn(async move {
                        let store: Arc<dyn Store> = Arc::new(
                            ferry_store::PostgresStore::connect_with(options)
                                .await
                                .expect("open"),
                        );
                        start.wait().await;
                        let auth = NodeAuth::start_with(
                            store,
                            &ferry_config::AuthSettings::default(),
                            "ferry-tunnel",
                            KeyDuty::LoadOnly,
                        )
                        .await
                        .expect("start");
                        let token = auth
                            .issuer
                            .issue(&TenantName::new("demo").expect("name"))
                            .expect("issue")
                            .access_token;
                        (auth, token)
                    })
                })
                .collect();
            let mut started = Vec::new();
            for task in tasks {
                started.push(task.await.expect("node"));
            }
            let kid = started[0].0.issuer.kid();
            assert!(started.iter().all(|(auth, _)| auth.issuer.kid() == kid));
            for (_, token) in &started {
                for (auth, _) in &started {
                    assert!(auth.verifier.verify(token).is_ok());
                }
            }
            let store = ferry_store::PostgresStore::connect_with(options)
                .await
                .expect("open");
            assert_eq!(store.signing_keys().await.expect("keys").len(), 1);
            store.close().await;
        })
        .await;
    }

    /// Workers (or nodes on their own) deciding together on PostgreSQL rotate once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rotations_racing_on_postgres_add_one_key() {
        ferry_store::testdb::with_database(|options| async move {
            let store = ferry_store::PostgresStore::connect_with(options.clone())
                .await
                .expect("open");
            let settings = IssuerSettings {
                rotate_every: Some(std::time::Duration::from_secs(86_400)),
                ..IssuerSettings::default()
            };
            let now = ferry_store::unix_now();
            crate::maintain_signing_keys(&store, &settings, now - 10 * 86_400)
                .await
                .expect("first key");
            let racers = 8;
            let start = Arc::new(tokio::sync::Barrier::new(racers));
            let tasks: Vec<_> = (0..racers)
                .map(|_| {
                    let options = options.clone();
                    let start = Arc::clone(&start);
                    let settings = settings.clone();
                    tokio::spawn(async move {
                        let store = ferry_store::PostgresStore::connect_with(options)
                            .await
                            .expect("open");
                        start.wait().await;
                        let done = crate::maintain_signing_keys(&store, &settings, now)
                            .await
                            .expect("maintain");
                        store.close().await;
                        done.added
                    })
                })
                .collect();
            let mut added = Vec::new();
            for task in tasks {
                added.extend(task.await.expect("racer"));
            }
            assert_eq!(added.len(), 1, "{added:?}");
            assert_eq!(store.signing_keys().await.expect("keys").len(), 2);
            store.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn builtin_only_and_external_only() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let config = ferry_config::AuthSettings::default();
        let auth = NodeAuth::start(store.clone(), &config, "ferry-tunnel")
            .await
            .expect("start");
        assert!(auth.oidc.is_none() && auth.admin_check.is_none());
        let demo = TenantName::new("demo").expect("name");
        let token = auth.issuer.issue(&demo).expect("issue").access_token;
        assert!(auth.verifier.verify(&token).is_ok());

        let config = ferry_config::AuthSettings {
            builtin: false,
            oidc: Some(ferry_config::OidcSettings {
                issuer: "http://127.0.0.1:1".to_owned(),
                admin_role: Some("ferry-admin".to_owned()),
                ..ferry_config::OidcSettings::default()
            }),
            ..ferry_config::AuthSettings::default()
        };
        let auth = NodeAuth::start(store, &config, "ferry-tunnel")
            .await
            .expect("start with the provider down");
        assert!(auth.admin_check.is_some());
        let token = auth.issuer.issue(&demo).expect("issue").access_token;
        let err = auth.verifier.verify(&token).expect_err("built-in refused");
        assert!(err.is_token_rejection(), "{err:?}");
        let reply = auth
            .issuer
            .client_credentials(None, None, Some("application/x-www-form-urlencoded"), b"")
            .await;
        assert_eq!(reply.status, 400);
    }
}
