//! Tokens of an external OpenID Connect provider: its keys as read from a JWKS document ([`ProviderKeys`]), and
//! what its tokens must be ([`ProviderRules`]): signed (RS256, PS256, ES256 or EdDSA) by a key of the JWKS, `iss`
//! the provider, `aud` the expected audience, `exp` and `nbf` within [`LEEWAY`], the tenant at a configurable
//! claim, the configured scope in `scope` or `scp`; and the admin role at a configurable claim.

use std::collections::HashMap;

use ferry_proto::TenantName;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::dates::{check_not_before, numeric_date};
use crate::error::from_jwt;
use crate::{Claims, Purpose, TokenError, LEEWAY};

/// The algorithms accepted from external providers.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// One key of the provider's JWKS.
struct ProviderKey {
    key: DecodingKey,
    /// The `alg` the JWK pins, if any.
    alg: Option<Algorithm>,
}

/// The provider's signing keys, as read from its JWKS.
#[derive(Default)]
pub struct ProviderKeys {
    by_kid: HashMap<String, ProviderKey>,
    /// Keys without a kid (used only for tokens without one, when there is exactly one).
    anonymous: Vec<ProviderKey>,
}

impl std::fmt::Debug for ProviderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKeys")
            .field("kids", &self.kids())
            .field("anonymous", &self.anonymous.len())
            .finish()
    }
}

impl ProviderKeys {
    /// The signing keys of a JWKS document (RFC 7517). Keys that cannot verify a token of an accepted algorithm
    /// (encryption keys, symmetric keys, unknown key types or algorithms, unreadable keys) are skipped, one at a
    /// time: a key this library does not know must not hide the others.
    pub fn from_jwks(jwks: &Value) -> Self {
        let mut keys = ProviderKeys::default();
        let Some(list) = jwks.get("keys").and_then(Value::as_array) else {
            return keys;
        };
        for raw in list {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                tracing::debug!("skipping a JWK that cannot be read");
                continue;
            };
            if matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            ) {
                continue;
            }
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                // Symmetric keys are never accepted.
                continue;
            }
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(a) => match a.to_string().parse::<Algorithm>() {
                    Ok(alg) if ACCEPTED_ALGORITHMS.contains(&alg) => Some(alg),
                    _ => continue,
                },
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                tracing::debug!(kid = ?jwk.common.key_id, "skipping a JWK that cannot be used");
                continue;
            };
            let key = ProviderKey { key, alg };
            match jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid, key);
                }
                None => keys.anonymous.push(key),
            }
        }
        keys
    }

    /// Whether no key can verify anything.
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.anonymous.is_empty()
    }

    /// The kids of the keys, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.by_kid.keys().cloned().collect();
        kids.sort();
        kids
    }
}

/// What a token of one provider must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRules {
    /// The issuer URL, exactly as the provider writes it into `iss`.
    issuer: String,
    /// Dotted path of the claim naming the tenant (`client_id`, `azp`, `ferry.tenant`).
    tenant_claim: String,
    /// The scope tunnel tokens must carry (in `scope` or `scp`); `None`: no scope check.
    scope: Option<String>,
}

impl ProviderRules {
    /// Rules for tokens of `issuer`, naming their tenant at `tenant_claim`, opening tunnels with `scope`.
    pub fn new(
        issuer: impl Into<String>,
        tenant_claim: impl Into<String>,
        scope: Option<String>,
    ) -> Self {
        ProviderRules {
            issuer: issuer.into(),
            tenant_claim: tenant_claim.into(),
            scope,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Check signature, algorithm, `iss`, `aud` (against `audience`), `exp` and `nbf` with `keys`; the claims.
    pub fn decode(
        &self,
        keys: &ProviderKeys,
        token: &str,
        audience: &str,
    ) -> Result<Value, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| from_jwt(&e))?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let key = match header.kid.as_deref() {
            Some(kid) => keys.by_kid.get(kid).ok_or(TokenError::UnknownKey)?,
            None => match keys.anonymous.as_slice() {
                [only] => only,
                _ if keys.by_kid.len() == 1 => {
                    keys.by_kid.values().next().ok_or(TokenError::UnknownKey)?
                }
                _ => return Err(TokenError::UnknownKey),
            },
        };
        if key.alg.is_some_and(|alg| alg != header.alg) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| from_jwt(&e))?;
        // `jsonwebtoken` also takes an array of issuers holding ours, and skips a `sub` it cannot read; `iss` is
        // one string, `sub` a string when present (RFC 7519 §4.1.1, §4.1.2)
        if !data.claims.get("iss").is_some_and(Value::is_string) {
            return Err(TokenError::Malformed("the iss claim is not a string"));
        }
        if data
            .claims
            .get("sub")
            .is_some_and(|sub| !sub.is_string() && !sub.is_null())
        {
            return Err(TokenError::Malformed("the sub claim is not a string"));
        }
        check_not_before(&data.claims)?;
        Ok(data.claims)
    }

    /// What decoded, valid claims say: the tenant, and for [`Purpose::Tunnel`] the required scope.
    pub fn claims(&self, claims: &Value, purpose: Purpose) -> Result<Claims, TokenError> {
        if purpose == Purpose::Node {
            // only the cluster's own signing keys speak for a node
            return Err(TokenError::MissingScope);
        }
        let scope = scopes(claims);
        if let Some(required) = self
            .scope
            .as_deref()
            .filter(|s| purpose == Purpose::Tunnel && !s.is_empty())
        {
            if !scope.split(' ').any(|s| s == required) {
                return Err(TokenError::MissingScope);
            }
        }
        let tenant = claim_at(claims, &self.tenant_claim)
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed("the tenant claim is missing"))?;
        let tenant = TenantName::new(tenant)
            .map_err(|_| TokenError::Malformed("the tenant claim is not a valid tenant name"))?;
        Ok(Claims {
            tenant,
            scope,
            exp: claims.get("exp").and_then(numeric_date).unwrap_or(0),
            issuer: self.issuer.clone(),
            secret_id: None,
        })
    }
}

/// The value at a dotted path (`realm_access.roles`) of a JSON object.
pub fn claim_at<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(claims, |node, part| node.as_object()?.get(part))
}

/// The granted scopes as one space-separated string: `scope` (a string) or `scp` (a string or an array).
pub fn scopes(claims: &Value) -> String {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Whether the claims hold `role` at the dotted path `roles_claim` (an array of strings, or a space-separated
/// string).
pub fn has_role(claims: &Value, roles_claim: &str, role: &str) -> bool {
    match claim_at(claims, roles_claim) {
        Some(Value::Array(roles)) => roles.iter().any(|r| r.as_str() == Some(role)),
        Some(Value::String(roles)) => roles.split(' ').any(|r| r == role),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unusable_jwks_entries_are_skipped() {
        let keys = ProviderKeys::from_jwks(&json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "rs", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ok", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "what"},
            7
        ]}));
        assert_eq!(keys.kids(), ["ok", "rs"]);
        assert!(ProviderKeys::from_jwks(&json!({"keys": 1})).is_empty());
        assert!(ProviderKeys::from_jwks(&json!([])).is_empty());
    }

    /// Found by the `tokens` fuzz target: a provider's token with `iss` as an array holding the issuer, a `sub`
    /// that is a number, or an `nbf` of 1e300 passed (`jsonwebtoken` takes the first, skips the others).
    #[test]
    fn provider_claims_are_read_strictly() {
        use base64::Engine as _;
        use ring::signature::{Ed25519KeyPair, KeyPair as _};
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend([7; 32]);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("key");
        let keys = ProviderKeys::from_jwks(&json!({"keys": [{"kty": "OKP", "crv": "Ed25519",
            "kid": "p", "x": b64(pair.public_key().as_ref())}]}));
        let rules = ProviderRules::new("https://idp", "client_id", Some("tunnel".into()));
        let sign = |claims: Value| {
            let message = format!(
                "{}.{}",
                b64(br#"{"alg":"EdDSA","kid":"p"}"#),
                b64(claims.to_string().as_bytes())
            );
            format!("{message}.{}", b64(pair.sign(message.as_bytes()).as_ref()))
        };
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 600)
            .unwrap_or(u64::MAX);
        let claims = |key: &str, value: Value| {
            let mut claims = json!({"iss": "https://idp", "aud": "ferry-tunnel", "exp": exp,
                "client_id": "demo", "scope": "tunnel"});
            claims[key] = value;
            claims
        };
        let decode = |claims: Value| rules.decode(&keys, &sign(claims), "ferry-tunnel");
        assert!(decode(claims("sub", json!("svc"))).is_ok());
        for (key, value) in [
            ("iss", json!(["https://idp"])),
            ("sub", json!(7)),
            ("nbf", json!("0")),
        ] {
            let err = decode(claims(key, value.clone())).expect_err("malformed");
            assert!(
                matches!(err, TokenError::Malformed(_)),
                "{key} {value}: {err:?}"
            );
        }
        let err = decode(claims("nbf", json!(1e300))).expect_err("ahead");
        assert!(matches!(err, TokenError::NotYetValid), "{err:?}");
    }

    #[test]
    fn tenant_scope_and_roles_from_claims() {
        let rules = ProviderRules::new("https://idp", "ferry.tenant", Some("tunnel".into()));
        let claims = json!({"ferry": {"tenant": "acme"}, "scp": ["openid", "tunnel"], "exp": 5,
            "realm_access": {"roles": ["a", "admin"]}, "roles": "x admin"});
        let got = rules.claims(&claims, Purpose::Tunnel).expect("claims");
        assert_eq!(got.tenant.as_str(), "acme");
        assert_eq!(got.scope, "openid tunnel");
        assert_eq!(got.exp, 5);
        // A provider may write a NumericDate with a fraction.
        let fraction =
            json!({"ferry": {"tenant": "acme"}, "scope": "tunnel", "exp": 1_700_000_000.6});
        let got = rules.claims(&fraction, Purpose::Tunnel).expect("claims");
        assert_eq!(got.exp, 1_700_000_001);
        assert!(has_role(&claims, "realm_access.roles", "admin"));
        assert!(has_role(&claims, "roles", "admin"));
        assert!(!has_role(&claims, "realm_access", "admin"));
        let no_scope = json!({"ferry": {"tenant": "acme"}});
        assert!(matches!(
            rules.claims(&no_scope, Purpose::Tunnel),
            Err(TokenError::MissingScope)
        ));
        assert!(rules.claims(&no_scope, Purpose::Client).is_ok());
        assert!(matches!(
            rules.claims(&json!({"ferry": 1, "scope": "tunnel"}), Purpose::Tunnel),
            Err(TokenError::Malformed(_))
        ));
    }
}
