//! The documents that describe the built-in issuer to others: `/.well-known/openid-configuration` (OpenID
//! Connect Discovery 1.0 / RFC 8414 fields that apply to a client-credentials-only issuer) and the JWKS.

use crate::{TokenIssuer, TUNNEL_SCOPE};

/// Where the discovery document is served.
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
/// Where the JWKS document is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

impl TokenIssuer {
    /// The discovery document. `base_url` is how clients reach this node (`https://ferry.example.com`, no
    /// trailing slash): the token endpoint and the JWKS are named under it. `issuer` is the configured one
    /// (relying parties compare it with the tokens' `iss`).
    pub fn openid_configuration(&self, base_url: &str) -> serde_json::Value {
        let base = base_url.trim_end_matches('/');
        let mut doc = serde_json::json!({
            "issuer": self.settings().issuer,
            "token_endpoint": format!("{base}{}", ferry_proto::tunnel::TOKEN_PATH),
            "jwks_uri": format!("{base}{JWKS_PATH}"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": [TUNNEL_SCOPE, crate::RELAY_SCOPE],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "jti", "scope", "tenant", "sid"],
        });
        if !self.settings().endpoint_enabled {
            // The token endpoint is off: advertising it would send clients to a 400.
            if let Some(fields) = doc.as_object_mut() {
                for key in [
                    "token_endpoint",
                    "grant_types_supported",
                    "token_endpoint_auth_methods_supported",
                    "token_endpoint_auth_signing_alg_values_supported",
                ] {
                    fields.remove(key);
                }
            }
        }
        doc
    }
}

/// A document of the built-in issuer, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WellKnown {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl TokenIssuer {
    /// How clients reach this node, from configuration only: the configured public URL, else `listener_url` (the
    /// public listener's own `http(s)://address`, when it names a specific address). Never the request's `Host`:
    /// a document built from it could be cached by a shared cache and point connectors elsewhere.
    pub fn base_url(&self, listener_url: Option<&str>) -> Option<String> {
        if let Some(url) = &self.settings().public_url {
            return Some(url.trim_end_matches('/').to_owned());
        }
        listener_url.map(|u| u.trim_end_matches('/').to_owned())
    }

    /// Answer `GET` of [`OPENID_CONFIGURATION_PATH`] or [`JWKS_PATH`]; `None` for other paths. `listener_url`: see
    /// [`Self::base_url`]; without it and without `public_url` the discovery document is `404`.
    pub fn well_known(&self, path: &str, listener_url: Option<&str>) -> Option<WellKnown> {
        let json = |value: serde_json::Value| WellKnown {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec(&value).unwrap_or_default(),
        };
        match path {
            JWKS_PATH => Some(json(self.jwks())),
            OPENID_CONFIGURATION_PATH => Some(match self.base_url(listener_url) {
                Some(base) => json(self.openid_configuration(&base)),
                None => WellKnown {
                    status: 404,
                    content_type: "application/json",
                    body: br#"{"error":"not_found","error_description":"set server.auth.public_url (FERRY_PUBLIC_URL) to serve the discovery document"}"#.to_vec(),
                },
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_store::{SqliteStore, Store};

    use super::{JWKS_PATH, OPENID_CONFIGURATION_PATH};
    use crate::{IssuerSettings, TokenIssuer};

    #[tokio::test]
    async fn documents_name_the_endpoints_and_keys() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let issuer = TokenIssuer::load_or_create(store, IssuerSettings::default())
            .await
            .expect("issuer");
        let doc = issuer.openid_configuration("https://ferry.example.com/");
        assert_eq!(doc["issuer"], "ferry");
        assert_eq!(
            doc["token_endpoint"],
            "https://ferry.example.com/oauth/token"
        );
        assert_eq!(
            doc["jwks_uri"],
            "https://ferry.example.com/.well-known/jwks.json"
        );
        assert_eq!(doc["grant_types_supported"][0], "client_credentials");
        let doc = issuer.well_known(JWKS_PATH, None).expect("jwks");
        assert_eq!((doc.status, doc.content_type), (200, "application/json"));
        let jwks: serde_json::Value = serde_json::from_slice(&doc.body).expect("json");
        assert_eq!(jwks["keys"][0]["kid"], issuer.kid());
        // Every JWK is usable by a standard library.
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwks["keys"][0].clone()).expect("jwk");
        assert!(jsonwebtoken::DecodingKey::from_jwk(&jwk).is_ok());

        let doc = issuer
            .well_known(OPENID_CONFIGURATION_PATH, Some("http://127.0.0.1:8080/"))
            .expect("discovery");
        let body: serde_json::Value = serde_json::from_slice(&doc.body).expect("json");
        assert_eq!(
            body["jwks_uri"],
            "http://127.0.0.1:8080/.well-known/jwks.json"
        );
        // without a configured URL there is no document (never one built from the request)
        let doc = issuer
            .well_known(OPENID_CONFIGURATION_PATH, None)
            .expect("discovery");
        assert_eq!(doc.status, 404);
        assert!(issuer.well_known("/other", None).is_none());
    }

    #[tokio::test]
    async fn with_the_token_endpoint_off_discovery_does_not_advertise_it() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let settings = IssuerSettings {
            endpoint_enabled: false,
            ..IssuerSettings::default()
        };
        let issuer = TokenIssuer::load_or_create(store, settings)
            .await
            .expect("issuer");
        let doc = issuer.openid_configuration("https://ferry.example.com");
        assert!(doc.get("token_endpoint").is_none(), "{doc}");
        assert!(doc.get("grant_types_supported").is_none(), "{doc}");
        assert_eq!(
            doc["jwks_uri"],
            "https://ferry.example.com/.well-known/jwks.json"
        );
    }
}
