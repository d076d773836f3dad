//! A node's authentication, built from `[server.auth]`: the built-in issuer with its key maintenance, the
//! external provider with its key refresh, the tunnel verifier that accepts what is configured, and the OIDC
//! admin check. One call for `ferry-app`.

use std::sync::Arc;

use ferry_store::Store;

use crate::{
    AdminCheck, AuthError, BackgroundTask, CombinedVerifier, IssuerSettings, OidcSettings,
    OidcVerifier, RateLimitSettings, TokenIssuer, TokenVerifier,
};

/// Everything a node needs to authenticate connectors and OIDC admins. Keep `tasks` alive as long as the node.
pub struct NodeAuth {
    /// The built-in issuer (token endpoint, JWKS, discovery). With `builtin = false` its endpoint refuses.
    pub issuer: TokenIssuer,
    /// Checks tunnel tokens: built-in, external, or both (routed by `iss`).
    pub verifier: Arc<dyn TokenVerifier>,
    /// The external provider, if configured.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// The management API's OIDC admin check, if a provider and an admin role are configured.
    pub admin_check: Option<AdminCheck>,
    /// Key maintenance and JWKS refresh; aborted when dropped.
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
    }
}

/// The provider settings of a `[server.auth.oidc]` section.
pub fn oidc_settings(oidc: &ferry_config::OidcSettings) -> OidcSettings {
    OidcSettings {
        issuer: oidc.issuer.clone(),
        audience: oidc.audience.clone(),
        tenant_claim: oidc.tenant_claim.clone(),
        scope: Some(oidc.scope.trim().to_owned()).filter(|s| !s.is_empty()),
        admin_role: oidc.admin_role.clone().filter(|r| !r.trim().is_empty()),
        roles_claim: oidc.roles_claim.clone(),
        admin_audience: oidc.admin_audience.clone(),
        jwks_refresh: oidc.jwks_refresh,
        jwks_min_refresh: oidc.jwks_min_refresh,
        http_timeout: oidc.http_timeout,
    }
}

impl NodeAuth {
    /// Load (or create) the signing keys, start their maintenance, set up the external provider (its keys are
    /// fetched in the background: a provider that is down at start does not stop the node; its tokens are
    /// refused until its keys arrive), and build the tunnel verifier. `audience` is the `aud` of built-in
    /// tunnel tokens.
    pub async fn start(
        store: Arc<dyn Store>,
        auth: &ferry_config::AuthSettings,
        audience: &str,
    ) -> Result<Self, AuthError> {
        let issuer = TokenIssuer::load_or_create(store, issuer_settings(auth, audience)).await?;
        let mut tasks = vec![issuer.spawn_maintenance()];
        let oidc = match &auth.oidc {
            Some(settings) => {
                let verifier = OidcVerifier::new(oidc_settings(settings))?;
                tasks.push(verifier.spawn_refresh());
                tracing::info!(issuer = %settings.issuer, audience = %settings.audience, "accepting tokens of an external OpenID Connect provider");
                Some(verifier)
            }
            None => None,
        };
        let verifier: Arc<dyn TokenVerifier> = match (&oidc, auth.builtin) {
            (None, _) => issuer.verifier(),
            (Some(external), false) => external.clone(),
            (Some(external), true) => Arc::new(
                CombinedVerifier::new()
                    .with(auth.issuer.clone(), issuer.verifier())
                    .with(external.settings().issuer.clone(), external.clone()),
            ),
        };
        let admin_check = oidc.as_ref().and_then(OidcVerifier::admin_check);
        Ok(NodeAuth {
            issuer,
            verifier,
            oidc,
            admin_check,
            tasks,
        })
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::TenantName;
    use ferry_store::SqliteStore;

    use super::*;

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
