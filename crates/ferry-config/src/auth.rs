//! The `[server.auth]` section: the built-in token issuer (token lifetime, signing key rotation, limits on
//! failed token requests) and an optional external OpenID Connect provider (`[server.auth.oidc]`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::Secret;

/// The issuer of built-in tokens when neither `issuer` nor `public_url` is set.
pub const DEFAULT_ISSUER: &str = "ferry";

/// How nodes authenticate connectors (and, with OIDC, admins).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Lifetime of issued connector tokens.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// The `iss` of issued tokens. Default: `public_url` when that is set (what OpenID Connect libraries
    /// expect of a discovery document), else `ferry`. One value for the whole cluster.
    pub issuer: String,
    /// Further `iss` values still accepted on tokens of the built-in issuer (never issued): issuers the cluster
    /// used before a change. When `issuer` follows `public_url`, the old default `ferry` is added, so tokens
    /// issued before the upgrade stay good until they expire.
    pub accepted_issuers: Vec<String>,
    /// Whether tokens of the built-in issuer are accepted on the tunnel. Set `false` to accept only tokens of
    /// the external provider (`[server.auth.oidc]`, then required). Default `true`.
    pub builtin: bool,
    /// The base URL clients use to reach this node (`https://ferry.example.com`), for the discovery document's
    /// `token_endpoint` and `jwks_uri`. Default: taken from each request's `Host`.
    pub public_url: Option<String>,
    /// Signing key rotation of the built-in issuer.
    pub rotation: RotationSettings,
    /// Limits on repeated failures at the token endpoint.
    pub rate_limit: RateLimitSettings,
    /// An external OpenID Connect provider whose tokens open tunnels too (or instead, with `builtin = false`).
    pub oidc: Option<OidcSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(600),
            issuer: DEFAULT_ISSUER.to_owned(),
            accepted_issuers: Vec::new(),
            builtin: true,
            public_url: None,
            rotation: RotationSettings::default(),
            rate_limit: RateLimitSettings::default(),
            oidc: None,
        }
    }
}

/// `[server.auth.rotation]`: how the built-in issuer's signing keys are kept. Tokens are signed by the newest
/// key; a rotated-out key stays (in the JWKS and accepted) for token_ttl + 30 s leeway + `key_refresh`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSettings {
    /// Rotate automatically when the newest key is this old (`30d`). Default: never (rotate on demand).
    #[serde(with = "humantime_serde")]
    pub every: Option<Duration>,
    /// How often a node re-reads the keys from the store (to honour keys rotated by another node; an unknown
    /// `kid` also triggers a re-read). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub key_refresh: Duration,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            every: None,
            key_refresh: Duration::from_secs(60),
        }
    }
}

/// `[server.auth.rate_limit]`: failed token requests tolerated before 429 with `Retry-After`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Failures allowed per client IP per `window`; 0 turns this limit off. Default 10.
    pub failures_per_ip: u32,
    /// Failures allowed per client id (tenant) per `window`, from any address; 0 turns this limit off.
    /// Default 20.
    pub failures_per_client: u32,
    /// The window the failures are counted over (the allowance refills evenly across it). Default `1m`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            failures_per_ip: 10,
            failures_per_client: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// `[server.auth.oidc]`: an external OpenID Connect provider (Keycloak, Auth0, Okta, Entra ID, …).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer URL exactly as the provider writes it into `iss` (`https://sso.example.com/realms/ferry`);
    /// required. Its `/.well-known/openid-configuration` names the JWKS.
    pub issuer: String,
    /// The `aud` tunnel tokens must carry. Default `ferry-tunnel`.
    pub audience: String,
    /// Dotted path of the claim naming the tenant. Default `client_id` (`azp` for Keycloak).
    pub tenant_claim: String,
    /// The scope tunnel tokens must carry (`scope` or `scp` claim); empty: no scope check. Default `tunnel`.
    pub scope: String,
    /// The role that makes a token an admin token for the management API. Default: none (no OIDC admins).
    pub admin_role: Option<String>,
    /// Dotted path of the claim holding the roles. Default `roles` (`realm_access.roles` for Keycloak).
    pub roles_claim: String,
    /// The `aud` admin tokens must carry. Default: the same as `audience`.
    pub admin_audience: Option<String>,
    /// How often the provider's keys are re-fetched. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// The least time between two key fetches caused by an unknown `kid`. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
    /// Timeout of each request to the provider. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
    /// Values of `roles_claim` and the management API role each gives (`[[server.auth.oidc.role_mapping]]`),
    /// for bearer tokens and for dashboard sign-in alike. `admin_role` is a shorthand for one `admin` entry.
    pub role_mapping: Vec<RoleMapping>,
    /// Dotted path of a claim listing an operator's tenants (array of strings or space-separated), added to the
    /// tenants of the matching `role_mapping` entries. Default: none.
    pub tenants_claim: Option<String>,
    /// Signing in to the dashboard through this provider (authorization code flow with PKCE). Default: off.
    pub sign_in: Option<OidcSignInSettings>,
}

/// One `[[server.auth.oidc.role_mapping]]` entry: a token (or ID token) whose `roles_claim` holds `value` gets
/// `role`; an operator gets `tenants` (and those of `tenants_claim`). Of several matching entries the strongest
/// role wins (admin, then operator, then viewer); an operator's tenants are those of every matching entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// A value of the roles claim (`ferry-operators`, a group name, …).
    pub value: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// The tenants an operator may see (only with `role = "operator"`).
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// `[server.auth.oidc.sign_in]`: the dashboard's "Sign in with …" through the provider, as a confidential client
/// (`client_secret_basic`) of the authorization code flow with PKCE (S256).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSignInSettings {
    /// The client registered at the provider for Ferry's dashboard; required.
    pub client_id: String,
    /// Its secret; required. Also signs the short-lived sign-in state cookie, so every management node needs the
    /// same value.
    pub client_secret: Secret,
    /// Where the provider sends the browser back: `…/api/v1/session/oidc/callback` on the admin listener, as
    /// registered at the provider. Default: `server.auth.public_url` + that path when set, else the admin
    /// listener's address as the browser reached it (`Host`).
    pub redirect_url: Option<String>,
    /// Scopes asked for; `openid` is always added. Default `openid profile email`.
    pub scopes: Vec<String>,
    /// The provider's name on the sign-in page ("Sign in with …"). Default `single sign-on`.
    pub provider_name: String,
    /// Dotted path of the ID token claim naming the account. Default `preferred_username` (`sub` when absent).
    pub username_claim: String,
}

impl Default for OidcSignInSettings {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: Secret::new(""),
            redirect_url: None,
            scopes: vec![
                "openid".to_owned(),
                "profile".to_owned(),
                "email".to_owned(),
            ],
            provider_name: "single sign-on".to_owned(),
            username_claim: "preferred_username".to_owned(),
        }
    }
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: "ferry-tunnel".to_owned(),
            tenant_claim: "client_id".to_owned(),
            scope: "tunnel".to_owned(),
            admin_role: None,
            roles_claim: "roles".to_owned(),
            admin_audience: None,
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refresh: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
            role_mapping: Vec::new(),
            tenants_claim: None,
            sign_in: None,
        }
    }
}

impl AuthSettings {
    /// Without an `issuer` of its own (`issuer_given` false), the issuer follows `public_url` (without a trailing
    /// slash), and the old default stays accepted.
    pub(crate) fn default_issuer_to_public_url(&mut self, issuer_given: bool) {
        if issuer_given {
            return;
        }
        if let Some(url) = &self.public_url {
            self.issuer = url.trim_end_matches('/').to_owned();
            if !self.accepted_issuers.iter().any(|i| i == DEFAULT_ISSUER) {
                self.accepted_issuers.push(DEFAULT_ISSUER.to_owned());
            }
        }
    }
}

/// Checks that need more than one field; errors name the key.
pub(crate) fn validate(auth: &AuthSettings) -> Result<(), (String, String)> {
    let bad = |path: &str, message: &str| Err((format!("server.auth.{path}"), message.to_owned()));
    if auth.token_ttl < Duration::from_secs(1) {
        return bad("token_ttl", "must be at least 1s");
    }
    if auth.issuer.trim().is_empty() {
        return bad("issuer", "must not be empty");
    }
    if auth.accepted_issuers.iter().any(|i| i.trim().is_empty()) {
        return bad("accepted_issuers", "must not hold an empty issuer");
    }
    if let Some(url) = &auth.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad("public_url", "must start with http:// or https://");
        }
    }
    if auth.rotation.key_refresh < Duration::from_secs(1) {
        return bad("rotation.key_refresh", "must be at least 1s");
    }
    if let Some(every) = auth.rotation.every {
        if every < auth.token_ttl {
            return bad("rotation.every", "must not be shorter than token_ttl");
        }
    }
    if auth.rate_limit.window.is_zero() {
        return bad("rate_limit.window", "must be above zero");
    }
    match &auth.oidc {
        None if !auth.builtin => bad(
            "builtin",
            "with the built-in issuer off, [server.auth.oidc] is required",
        ),
        None => Ok(()),
        Some(oidc) => {
            if !(oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://")) {
                return bad("oidc.issuer", "is required and must be an http(s) URL");
            }
            if std::iter::once(&auth.issuer)
                .chain(&auth.accepted_issuers)
                .any(|i| oidc.issuer.trim_end_matches('/') == i.trim_end_matches('/'))
            {
                return bad(
                    "oidc.issuer",
                    "must differ from server.auth.issuer and accepted_issuers (tokens are told apart by iss)",
                );
            }
            if oidc.audience.trim().is_empty() {
                return bad("oidc.audience", "must not be empty");
            }
            if oidc.tenant_claim.trim().is_empty() {
                return bad("oidc.tenant_claim", "must not be empty");
            }
            if oidc.roles_claim.trim().is_empty() {
                return bad("oidc.roles_claim", "must not be empty");
            }
            if oidc.http_timeout.is_zero() {
                return bad("oidc.http_timeout", "must be above zero");
            }
            for (i, entry) in oidc.role_mapping.iter().enumerate() {
                let at = |key: &str| format!("oidc.role_mapping[{i}].{key}");
                if entry.value.trim().is_empty() {
                    return bad(&at("value"), "must not be empty");
                }
                if !matches!(entry.role.as_str(), "admin" | "operator" | "viewer") {
                    return bad(&at("role"), "must be admin, operator or viewer");
                }
                if entry.role != "operator" && !entry.tenants.is_empty() {
                    return bad(&at("tenants"), "only an operator has tenants");
                }
            }
            if oidc
                .tenants_claim
                .as_ref()
                .is_some_and(|c| c.trim().is_empty())
            {
                return bad("oidc.tenants_claim", "must not be empty when set");
            }
            if let Some(sign_in) = &oidc.sign_in {
                if sign_in.client_id.trim().is_empty() {
                    return bad("oidc.sign_in.client_id", "is required");
                }
                if sign_in.client_secret.is_empty() {
                    return bad("oidc.sign_in.client_secret", "is required");
                }
                if let Some(url) = &sign_in.redirect_url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return bad(
                            "oidc.sign_in.redirect_url",
                            "must start with http:// or https://",
                        );
                    }
                }
                if sign_in.username_claim.trim().is_empty() {
                    return bad("oidc.sign_in.username_claim", "must not be empty");
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(validate(&AuthSettings::default()).is_ok());
    }

    #[test]
    fn oidc_needs_an_issuer_url() {
        let mut auth = AuthSettings {
            oidc: Some(OidcSettings::default()),
            ..AuthSettings::default()
        };
        let (path, _) = validate(&auth).expect_err("no issuer");
        assert_eq!(path, "server.auth.oidc.issuer");
        if let Some(oidc) = auth.oidc.as_mut() {
            oidc.issuer = "https://sso.example.com/realms/ferry".to_owned();
        }
        assert!(validate(&auth).is_ok());
        auth.builtin = false;
        assert!(validate(&auth).is_ok());
        auth.oidc = None;
        let (path, _) = validate(&auth).expect_err("nothing accepted");
        assert_eq!(path, "server.auth.builtin");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_issuer_follows_the_public_url_unless_set() {
        let load = |pairs: &[(&str, &str)]| crate::load(None, env(pairs), vec![]).expect("loads");
        let plain = load(&[]).server.auth;
        assert_eq!(plain.issuer, DEFAULT_ISSUER);
        assert!(plain.accepted_issuers.is_empty());
        let public = load(&[("FERRY_PUBLIC_URL", "https://ferry.example.com/")])
            .server
            .auth;
        assert_eq!(public.issuer, "https://ferry.example.com");
        assert_eq!(public.accepted_issuers, vec![DEFAULT_ISSUER.to_owned()]);
        let pinned = load(&[
            ("FERRY_PUBLIC_URL", "https://ferry.example.com"),
            ("FERRY_TOKEN_ISSUER", "ferry"),
        ])
        .server
        .auth;
        assert_eq!(pinned.issuer, "ferry");
        assert!(pinned.accepted_issuers.is_empty());
        let listed = load(&[("FERRY_ACCEPTED_ISSUERS", "old-a, old-b")])
            .server
            .auth;
        assert_eq!(listed.accepted_issuers, vec!["old-a", "old-b"]);
    }

    #[test]
    fn oidc_and_connector_options_from_env() {
        let c = crate::load(
            None,
            env(&[
                ("FERRY_OIDC_ISSUER", "https://sso.example.com/realms/ferry"),
                ("FERRY_OIDC_TENANT_CLAIM", "azp"),
                ("FERRY_OIDC_ROLES_CLAIM", "realm_access.roles"),
                ("FERRY_OIDC_ADMIN_ROLE", "ferry-admin"),
                ("FERRY_KEY_ROTATION", "30d"),
                ("FERRY_AUTH_BUILTIN", "false"),
                ("FERRY_CLIENT_ID", "connector-1"),
                ("FERRY_TOKEN_SCOPE", ""),
                ("FERRY_TOKEN_RESOURCE", "urn:ferry:tunnel"),
            ]),
            vec![],
        )
        .expect("loads");
        let auth = &c.server.auth;
        let oidc = auth.oidc.as_ref().expect("oidc section");
        assert_eq!(oidc.issuer, "https://sso.example.com/realms/ferry");
        assert_eq!(oidc.tenant_claim, "azp");
        assert_eq!(oidc.roles_claim, "realm_access.roles");
        assert_eq!(oidc.admin_role.as_deref(), Some("ferry-admin"));
        assert_eq!(oidc.audience, "ferry-tunnel");
        assert_eq!(oidc.jwks_min_refresh, Duration::from_secs(30));
        assert_eq!(auth.rotation.every, Some(Duration::from_secs(30 * 86400)));
        assert!(!auth.builtin);
        assert_eq!(c.connector.client_id.as_deref(), Some("connector-1"));
        assert_eq!(c.connector.scope, "");
        assert_eq!(c.connector.resource.as_deref(), Some("urn:ferry:tunnel"));

        // An OIDC option without the issuer is refused with the key's path.
        let e =
            crate::load(None, env(&[("FERRY_OIDC_AUDIENCE", "x")]), vec![]).expect_err("no issuer");
        assert!(e.to_string().starts_with("server.auth.oidc.issuer"), "{e}");
    }

    #[test]
    fn sections_from_a_file() {
        let text = "[server.auth]\ntoken_ttl = \"5m\"\n[server.auth.rotation]\nevery = \"7d\"\nkey_refresh = \"30s\"\n[server.auth.rate_limit]\nfailures_per_ip = 3\n[server.auth.oidc]\nissuer = \"https://sso.example.com\"\nscope = \"\"\njwks_refresh = \"1h\"\n";
        let root: toml::Value = text
            .parse::<toml::Table>()
            .map(toml::Value::Table)
            .expect("toml");
        let c: crate::Config = serde_path_to_error::deserialize(root).expect("config");
        let auth = &c.server.auth;
        assert_eq!(auth.token_ttl, Duration::from_secs(300));
        assert_eq!(auth.rotation.every, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(auth.rotation.key_refresh, Duration::from_secs(30));
        assert_eq!(auth.rate_limit.failures_per_ip, 3);
        assert_eq!(auth.rate_limit.failures_per_client, 20);
        let oidc = auth.oidc.as_ref().expect("oidc");
        assert_eq!(oidc.scope, "");
        assert_eq!(oidc.jwks_refresh, Duration::from_secs(3600));
        assert!(validate(auth).is_ok());
    }

    #[test]
    fn sign_in_and_role_mapping_from_a_file_and_env() {
        let text = "[server.auth.oidc]\nissuer = \"https://sso.example.com\"\ntenants_claim = \"ferry_tenants\"\n[[server.auth.oidc.role_mapping]]\nvalue = \"ops\"\nrole = \"operator\"\ntenants = [\"alpha\"]\n[server.auth.oidc.sign_in]\nclient_id = \"dash\"\n";
        let dir = std::env::temp_dir().join(format!("ferry-config-oidc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("ferry.toml");
        std::fs::write(&file, text).expect("write");
        // The secret is missing: refused with its key.
        let e = crate::load(Some(&file), vec![], vec![]).expect_err("no secret");
        assert!(
            e.to_string()
                .starts_with("server.auth.oidc.sign_in.client_secret"),
            "{e}"
        );
        let c = crate::load(
            Some(&file),
            env(&[
                ("FERRY_OIDC_CLIENT_SECRET", "s3cret"),
                ("FERRY_OIDC_PROVIDER_NAME", "Keycloak"),
            ]),
            vec![],
        )
        .expect("loads");
        let oidc = c.server.auth.oidc.as_ref().expect("oidc");
        assert_eq!(oidc.tenants_claim.as_deref(), Some("ferry_tenants"));
        assert_eq!(oidc.role_mapping[0].tenants, vec!["alpha".to_owned()]);
        let sign_in = oidc.sign_in.as_ref().expect("sign_in");
        assert_eq!(sign_in.client_id, "dash");
        assert_eq!(sign_in.client_secret.expose(), "s3cret");
        assert_eq!(sign_in.provider_name, "Keycloak");
        assert_eq!(sign_in.scopes, vec!["openid", "profile", "email"]);
        // Shown masked.
        let shown = toml::to_string(&c.server.auth).expect("toml");
        assert!(
            !shown.contains("s3cret") && shown.contains("***"),
            "{shown}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn role_mapping_entries_are_checked() {
        let mut oidc = OidcSettings {
            issuer: "https://sso.example.com".to_owned(),
            ..OidcSettings::default()
        };
        oidc.role_mapping.push(RoleMapping {
            value: "x".to_owned(),
            role: "root".to_owned(),
            tenants: vec![],
        });
        let auth = AuthSettings {
            oidc: Some(oidc.clone()),
            ..AuthSettings::default()
        };
        let (path, _) = validate(&auth).expect_err("bad role");
        assert_eq!(path, "server.auth.oidc.role_mapping[0].role");
        oidc.role_mapping[0].role = "viewer".to_owned();
        oidc.role_mapping[0].tenants = vec!["a".to_owned()];
        let auth = AuthSettings {
            oidc: Some(oidc),
            ..AuthSettings::default()
        };
        let (path, _) = validate(&auth).expect_err("tenants of a viewer");
        assert_eq!(path, "server.auth.oidc.role_mapping[0].tenants");
    }

    #[test]
    fn rotation_must_outlast_tokens() {
        let auth = AuthSettings {
            rotation: RotationSettings {
                every: Some(Duration::from_secs(60)),
                ..RotationSettings::default()
            },
            ..AuthSettings::default()
        };
        let (path, _) = validate(&auth).expect_err("too often");
        assert_eq!(path, "server.auth.rotation.every");
    }
}
