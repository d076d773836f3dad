//! Tokens of Ferry's built-in issuer: EdDSA JWTs signed by one of a set of Ed25519 keys, for one issuer and one
//! audience. [`KeySet`] holds the keys of one moment (the caller decides where they come from and when they are
//! re-read), [`TokenRules`] checks a token against them, [`KeySet::issue`] signs a new one with the newest key.

use std::collections::HashMap;

use base64::Engine as _;
use ferry_proto::TenantName;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

use crate::dates::check_not_before;
use crate::error::from_jwt;
use crate::{Claims, Purpose, TokenError, BUILTIN_ALGORITHM, LEEWAY, NODE_SCOPE, TUNNEL_SCOPE};

/// One signing key as the store keeps it.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    /// The key id, the `kid` of the tokens it signs.
    pub kid: &'a str,
    /// The JOSE algorithm name; only [`BUILTIN_ALGORITHM`] is used.
    pub algorithm: &'a str,
    /// The PKCS#8 document of the private key (empty when only verifying).
    pub private_der: &'a [u8],
    /// The raw 32-byte Ed25519 public key.
    pub public_key: &'a [u8],
}

/// Check that a key is an Ed25519 key whose private and public halves belong together.
pub fn check_key_pair(key: KeyRef<'_>) -> Result<(), TokenError> {
    if key.algorithm != BUILTIN_ALGORITHM {
        return Err(TokenError::Key(format!(
            "key {} has algorithm {:?}, only {BUILTIN_ALGORITHM} is supported",
            key.kid, key.algorithm
        )));
    }
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.private_der).map_err(|e| {
        TokenError::Key(format!("key {} is not an Ed25519 PKCS#8 key: {e}", key.kid))
    })?;
    if pair.public_key().as_ref() != key.public_key {
        return Err(TokenError::Key(format!(
            "key {}: the public key does not match the private key",
            key.kid
        )));
    }
    Ok(())
}

/// The key that signs new tokens: the newest key of the set.
struct Signer {
    kid: String,
    encoding: EncodingKey,
}

/// The signing keys of one moment: every usable key verifies, the newest (the first given) also signs when its
/// halves belong together.
pub struct KeySet {
    decoding: HashMap<String, DecodingKey>,
    /// Public keys, newest first, for JWKS.
    public_keys: Vec<(String, Vec<u8>)>,
    /// The newest key with its private half, when it is usable.
    signer: Option<Signer>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .field("signer", &self.signer_kid())
            .finish()
    }
}

impl KeySet {
    /// The set of `keys`, newest first. Keys of another algorithm, or whose public key is not 32 bytes, are
    /// skipped (with a warning); the newest key signs only if [`check_key_pair`] accepts it.
    pub fn new<'a>(keys: impl IntoIterator<Item = KeyRef<'a>>) -> Self {
        let mut decoding = HashMap::new();
        let mut public_keys = Vec::new();
        let mut signer = None;
        for (i, key) in keys.into_iter().enumerate() {
            if i == 0 {
                signer = match check_key_pair(key) {
                    Ok(()) => Some(Signer {
                        kid: key.kid.to_owned(),
                        encoding: EncodingKey::from_ed_der(key.private_der),
                    }),
                    Err(error) => {
                        tracing::warn!(%error, "the newest signing key cannot sign");
                        None
                    }
                };
            }
            if key.algorithm != BUILTIN_ALGORITHM || key.public_key.len() != 32 {
                tracing::warn!(kid = %key.kid, algorithm = %key.algorithm, "skipping a signing key the verifier cannot use");
                continue;
            }
            decoding.insert(key.kid.to_owned(), DecodingKey::from_ed_der(key.public_key));
            public_keys.push((key.kid.to_owned(), key.public_key.to_vec()));
        }
        KeySet {
            decoding,
            public_keys,
            signer,
        }
    }

    /// The kids of the keys that verify, newest first.
    pub fn kids(&self) -> Vec<String> {
        self.public_keys
            .iter()
            .map(|(kid, _)| kid.clone())
            .collect()
    }

    /// The (kid, raw public key) pairs that verify, newest first.
    pub fn public_keys(&self) -> &[(String, Vec<u8>)] {
        &self.public_keys
    }

    /// The kid of the key that signs, if one can.
    pub fn signer_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.kid.as_str())
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
                    "alg": BUILTIN_ALGORITHM,
                    "use": "sig",
                    "kid": kid,
                    "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Sign `claims` as they are with the newest key (EdDSA, its `kid` in the header).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| TokenError::Key("no usable signing key".to_owned()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.encoding).map_err(TokenError::Sign)
    }

    /// Sign a token of the built-in issuer.
    pub fn issue(&self, token: &NewToken<'_>) -> Result<String, TokenError> {
        self.sign(&OutgoingClaims {
            iss: token.issuer,
            sub: token.tenant.as_str(),
            tenant: token.tenant.as_str(),
            aud: token.audience,
            iat: token.issued_at,
            exp: token.expires_at,
            scope: token.scope,
            jti: token.id,
            sid: token.secret_id,
        })
    }
}

/// What goes into a new token of the built-in issuer.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Also the `sub`.
    pub tenant: &'a TenantName,
    /// Space-separated scopes.
    pub scope: &'a str,
    /// The connector secret that obtained the token (`sid`).
    pub secret_id: Option<&'a str>,
    /// `iat`, unix seconds.
    pub issued_at: u64,
    /// `exp`, unix seconds.
    pub expires_at: u64,
    /// `jti`: unique per token.
    pub id: &'a str,
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
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
}

/// The claims the rules read (`aud`, `sub` and `nbf` are checked by `jsonwebtoken` from the same JSON).
#[derive(Debug, Deserialize)]
struct IncomingClaims {
    iss: String,
    exp: u64,
    tenant: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    sid: Option<String>,
}

/// What a token of the built-in issuer must be: EdDSA, signed by a key of the set (the one its `kid` names, or
/// the only one when it names none), `iss` the issuer, `aud` the audience (or a list holding it), `exp` not past
/// and `nbf` not ahead (both with [`LEEWAY`]), a `sub`, a valid `tenant`, and the scope its [`Purpose`] needs.
pub struct TokenRules {
    /// The issuer of new tokens (the first of the accepted ones).
    issuer: String,
    validation: Validation,
}

impl std::fmt::Debug for TokenRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRules")
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .finish()
    }
}

impl TokenRules {
    /// The rules for tokens of `issuer` meant for `audience`.
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        TokenRules {
            issuer: issuer.to_owned(),
            validation,
        }
    }

    /// These rules, accepting tokens whose `iss` is one of `earlier` too (an issuer the cluster used before,
    /// e.g. the old default `ferry` once the issuer follows the public URL).
    pub fn also_accepting(mut self, earlier: &[String]) -> Self {
        let mut all: Vec<&str> = vec![self.issuer.as_str()];
        all.extend(earlier.iter().map(String::as_str));
        self.validation.set_issuer(&all);
        self
    }

    /// The issuer of new tokens these rules were made for.
    pub fn issuer(&self) -> Option<&str> {
        Some(self.issuer.as_str())
    }

    /// Check `token` with `keys` for `purpose`; what it says when it passes.
    pub fn check(
        &self,
        keys: &KeySet,
        token: &str,
        purpose: Purpose,
    ) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| from_jwt(&e))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let key = match header.kid.as_deref() {
            Some(kid) => keys.decoding.get(kid).ok_or(TokenError::UnknownKey)?,
            // Tokens without a kid are accepted only while there is no choice of key.
            None if keys.decoding.len() == 1 => keys
                .decoding
                .values()
                .next()
                .ok_or(TokenError::UnknownKey)?,
            None => return Err(TokenError::UnknownKey),
        };
        // Read as a JSON value first: the claims set must be valid JSON in UTF-8 throughout (RFC 7519 §7.2),
        // also in claims that are not read (serde skips those unchecked when reading a struct directly).
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation)
            .map_err(|e| from_jwt(&e))?;
        check_not_before(&data.claims)?;
        let claims = IncomingClaims::deserialize(&data.claims)
            .map_err(|_| TokenError::Malformed("bad JSON in header or claims"))?;
        let scope = claims.scope.unwrap_or_default();
        let has = |wanted: &str| scope.split(' ').any(|s| s == wanted);
        let scope_fits = match purpose {
            Purpose::Tunnel => has(TUNNEL_SCOPE) && !has(NODE_SCOPE),
            Purpose::Client => !has(NODE_SCOPE),
            Purpose::Node => has(NODE_SCOPE),
        };
        if !scope_fits {
            return Err(TokenError::MissingScope);
        }
        let tenant = TenantName::new(claims.tenant)
            .map_err(|_| TokenError::Malformed("the tenant claim is not a valid tenant name"))?;
        Ok(Claims {
            tenant,
            scope,
            exp: claims.exp,
            issuer: claims.iss,
            secret_id: claims.sid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, RELAY_SCOPE};

    /// An Ed25519 PKCS#8 (v1, RFC 8410) document from a seed, and the public key.
    fn key(seed: u8) -> (Vec<u8>, Vec<u8>) {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend([seed; 32]);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("key");
        let public = pair.public_key().as_ref().to_vec();
        (der, public)
    }

    fn set(kid: &str, seed: u8) -> KeySet {
        let (der, public) = key(seed);
        KeySet::new([KeyRef {
            kid,
            algorithm: BUILTIN_ALGORITHM,
            private_der: &der,
            public_key: &public,
        }])
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn issued_tokens_pass_for_their_purpose() {
        let keys = set("k1", 1);
        let rules = TokenRules::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE);
        let tenant = TenantName::new("demo").expect("name");
        let issue = |scope| {
            keys.issue(&NewToken {
                issuer: DEFAULT_ISSUER,
                audience: DEFAULT_AUDIENCE,
                tenant: &tenant,
                scope,
                secret_id: Some("s1"),
                issued_at: now(),
                expires_at: now() + 60,
                id: "j",
            })
            .expect("issue")
        };
        let tunnel = issue(TUNNEL_SCOPE);
        let claims = rules.check(&keys, &tunnel, Purpose::Tunnel).expect("valid");
        assert_eq!(claims.tenant, tenant);
        assert_eq!(claims.secret_id.as_deref(), Some("s1"));
        assert_eq!(rules.issuer(), Some(DEFAULT_ISSUER));
        let relay = issue(RELAY_SCOPE);
        assert!(matches!(
            rules.check(&keys, &relay, Purpose::Tunnel),
            Err(TokenError::MissingScope)
        ));
        assert!(rules.check(&keys, &relay, Purpose::Client).is_ok());
        assert!(matches!(
            rules.check(&keys, &relay, Purpose::Node),
            Err(TokenError::MissingScope)
        ));
        // a node's token is good on the node link and nowhere else
        let node = issue(NODE_SCOPE);
        assert!(rules.check(&keys, &node, Purpose::Node).is_ok());
        for purpose in [Purpose::Tunnel, Purpose::Client] {
            assert!(matches!(
                rules.check(&keys, &node, purpose),
                Err(TokenError::MissingScope)
            ));
        }
        let both = issue("tunnel node");
        assert!(matches!(
            rules.check(&keys, &both, Purpose::Tunnel),
            Err(TokenError::MissingScope)
        ));
        // Another key under the same kid.
        let forged = set("k1", 2).issue(&NewToken {
            issuer: DEFAULT_ISSUER,
            audience: DEFAULT_AUDIENCE,
            tenant: &tenant,
            scope: TUNNEL_SCOPE,
            secret_id: None,
            issued_at: now(),
            expires_at: now() + 60,
            id: "j",
        });
        assert!(matches!(
            rules.check(&keys, &forged.expect("sign"), Purpose::Tunnel),
            Err(TokenError::BadSignature)
        ));
        assert_eq!(keys.jwks()["keys"][0]["kid"], "k1");
        assert_eq!(keys.signer_kid(), Some("k1"));
    }

    #[test]
    fn earlier_issuers_are_accepted_only_when_named() {
        let keys = set("k1", 1);
        let tenant = TenantName::new("demo").expect("name");
        let issue = |issuer| {
            keys.issue(&NewToken {
                issuer,
                audience: DEFAULT_AUDIENCE,
                tenant: &tenant,
                scope: TUNNEL_SCOPE,
                secret_id: None,
                issued_at: now(),
                expires_at: now() + 60,
                id: "j",
            })
            .expect("issue")
        };
        let url = "https://ferry.example.com";
        let strict = TokenRules::new(url, DEFAULT_AUDIENCE);
        let moving = TokenRules::new(url, DEFAULT_AUDIENCE).also_accepting(&["ferry".to_owned()]);
        let (new, old, other) = (issue(url), issue("ferry"), issue("someone-else"));
        assert!(strict.check(&keys, &new, Purpose::Tunnel).is_ok());
        assert!(matches!(
            strict.check(&keys, &old, Purpose::Tunnel),
            Err(TokenError::WrongIssuer)
        ));
        assert!(moving.check(&keys, &new, Purpose::Tunnel).is_ok());
        assert!(moving.check(&keys, &old, Purpose::Tunnel).is_ok());
        assert!(moving.check(&keys, &other, Purpose::Tunnel).is_err());
        assert_eq!(moving.issuer(), Some(url));
    }

    /// A token of raw `payload` bytes signed with the key of `seed` under `kid`.
    fn sign_raw(seed: u8, kid: &str, payload: &[u8]) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#);
        let message = format!("{}.{}", b64(header.as_bytes()), b64(payload));
        let (der, _) = key(seed);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("key");
        format!("{message}.{}", b64(pair.sign(message.as_bytes()).as_ref()))
    }

    /// Found by the `tokens` fuzz target: a claims set that is not UTF-8 in a claim Ferry does not read passed.
    #[test]
    fn claims_must_be_utf8_json_throughout() {
        let keys = set("k1", 1);
        let rules = TokenRules::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE);
        let claims = format!(
            r#"{{"iss":"ferry","aud":"ferry-tunnel","sub":"demo","tenant":"demo","scope":"tunnel","exp":{},"x":"#,
            now() + 60
        );
        let good = sign_raw(1, "k1", format!("{claims}\"ok\"}}").as_bytes());
        assert!(rules.check(&keys, &good, Purpose::Tunnel).is_ok());
        let mut bad = claims.into_bytes();
        bad.extend_from_slice(b"\"t\xfbx\"}");
        let bad = sign_raw(1, "k1", &bad);
        assert!(matches!(
            rules.check(&keys, &bad, Purpose::Tunnel),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let (der, public) = key(3);
        let keys = KeySet::new([
            KeyRef {
                kid: "rsa",
                algorithm: "RS256",
                private_der: &der,
                public_key: &public,
            },
            KeyRef {
                kid: "short",
                algorithm: BUILTIN_ALGORITHM,
                private_der: &[],
                public_key: &public[..16],
            },
        ]);
        assert!(keys.kids().is_empty());
        assert_eq!(keys.signer_kid(), None);
        assert!(matches!(keys.sign(&"x"), Err(TokenError::Key(_))));
    }
}
