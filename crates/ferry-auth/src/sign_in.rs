//! Signing in to the dashboard through the external OpenID Connect provider: the authorization code flow with
//! PKCE (S256, RFC 7636) of a confidential client (`client_secret_basic`).
//!
//! [`OidcSignIn::start`] makes the provider's authorization URL with a fresh `state`, `nonce` and PKCE verifier,
//! and the value of a short-lived cookie that carries them back: JSON, base64url, with an HMAC-SHA256 keyed by
//! the client secret, so that the callback may land on any management node with the same configuration and
//! nothing is stored. [`OidcSignIn::finish`] checks that cookie (signature, expiry, `state`), exchanges the code
//! at the token endpoint, checks the ID token (signature through the provider's cached JWKS, `iss`, `aud` =
//! client id, `exp`, `nonce`) and maps its claims to a role with the provider's [`RoleRules`].
//! Discovery and keys are [`OidcVerifier`]'s; serving the endpoints and making the session are `ferry-admin`'s.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::roles::{MappedRole, RoleRules};
use crate::{AuthError, OidcVerifier};

/// How long a started sign-in may take before its state cookie is refused.
pub const STATE_TTL: Duration = Duration::from_secs(600);
/// Largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

/// What signing in through the provider needs besides the provider (`[server.auth.oidc.sign_in]`).
#[derive(Clone)]
pub struct SignInSettings {
    pub client_id: String,
    pub client_secret: String,
    /// The callback URL registered at the provider; `None`: made from each request's address.
    pub redirect_url: Option<String>,
    /// Scopes asked for; `openid` is added when missing.
    pub scopes: Vec<String>,
    /// The provider's name on the sign-in page.
    pub provider_name: String,
    /// Dotted path of the ID token claim naming the account (`sub` when absent).
    pub username_claim: String,
}

impl std::fmt::Debug for SignInSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("provider_name", &self.provider_name)
            .field("username_claim", &self.username_claim)
            .finish()
    }
}

/// The sign-in settings of a `[server.auth.oidc.sign_in]` section.
pub fn sign_in_settings(config: &ferry_config::OidcSignInSettings) -> SignInSettings {
    SignInSettings {
        client_id: config.client_id.clone(),
        client_secret: config.client_secret.expose().to_owned(),
        redirect_url: config.redirect_url.clone(),
        scopes: config.scopes.clone(),
        provider_name: config.provider_name.clone(),
        username_claim: config.username_claim.clone(),
    }
}

/// Why a sign-in through the provider failed. Messages never hold a code, token, secret or claim value.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The state cookie is missing, forged or expired, or the `state` parameter does not match it.
    #[error("the sign-in state is {0}; start signing in again")]
    State(&'static str),
    /// The provider could not be reached or answered something unusable (including a refused code).
    #[error("identity provider: {0}")]
    Provider(String),
    /// The ID token is not valid.
    #[error("the provider's ID token is not accepted: {0}")]
    IdToken(#[source] AuthError),
    /// The ID token's `nonce` is not this sign-in's.
    #[error("the provider's ID token is not accepted: its nonce is not this sign-in's")]
    Nonce,
}

/// A started sign-in: where to send the browser, and the state cookie's value.
#[derive(Debug)]
pub struct SignInStart {
    pub authorization_url: String,
    pub state_cookie: String,
}

/// A finished sign-in: the checked ID token's claims and what they mean.
#[derive(Debug)]
pub struct SignedIn {
    /// The ID token's `sub`.
    pub subject: String,
    /// The `username_claim`'s value, else `sub`.
    pub username: String,
    /// The role the claims map to; `None`: none (refuse).
    pub role: Option<MappedRole>,
}

/// What the state cookie carries.
#[derive(Serialize, Deserialize)]
struct State {
    /// `state`
    s: String,
    /// `nonce`
    n: String,
    /// PKCE code verifier
    v: String,
    /// redirect_uri used
    r: String,
    /// expires at, Unix seconds
    e: i64,
}

fn random_value() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 code challenge of a PKCE verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Form-encoding of a client id or secret in Basic credentials (RFC 6749 §2.3.1), escaping only what must be.
const CREDENTIAL: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The sign-in client of one provider.
pub struct OidcSignIn {
    verifier: Arc<OidcVerifier>,
    settings: SignInSettings,
    state_key: ring::hmac::Key,
}

impl std::fmt::Debug for OidcSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSignIn")
            .field("issuer", &self.verifier.settings().issuer)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OidcSignIn {
    /// The sign-in client for `verifier`'s provider.
    pub fn new(verifier: Arc<OidcVerifier>, settings: SignInSettings) -> Self {
        // A key of its own, derived from the client secret (shared by every node of the cluster).
        let mut material = b"ferry oidc sign-in state\0".to_vec();
        material.extend_from_slice(settings.client_secret.as_bytes());
        let derived = ring::digest::digest(&ring::digest::SHA256, &material);
        let state_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref());
        Self {
            verifier,
            settings,
            state_key,
        }
    }

    pub fn settings(&self) -> &SignInSettings {
        &self.settings
    }

    /// The rules the ID token's claims are mapped by.
    pub fn roles(&self) -> &RoleRules {
        &self.verifier.settings().roles
    }

    fn seal(&self, state: &State) -> Result<String, SignInError> {
        let json = serde_json::to_vec(state).map_err(|_| SignInError::State("not writable"))?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = b64.encode(json);
        let tag = ring::hmac::sign(&self.state_key, body.as_bytes());
        Ok(format!("{body}.{}", b64.encode(tag.as_ref())))
    }

    fn open(&self, cookie: &str, now: i64) -> Result<State, SignInError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (body, tag) = cookie
            .split_once('.')
            .ok_or(SignInError::State("malformed"))?;
        let tag = b64
            .decode(tag)
            .map_err(|_| SignInError::State("malformed"))?;
        ring::hmac::verify(&self.state_key, body.as_bytes(), &tag)
            .map_err(|_| SignInError::State("not one this service made"))?;
        let json = b64
            .decode(body)
            .map_err(|_| SignInError::State("malformed"))?;
        let state: State =
            serde_json::from_slice(&json).map_err(|_| SignInError::State("malformed"))?;
        if state.e <= now {
            return Err(SignInError::State("expired"));
        }
        Ok(state)
    }

    /// Start signing in: the provider's authorization URL for the browser (code flow, S256 challenge, `state`
    /// and `nonce`) and the value of the state cookie, which expires at `now` + [`STATE_TTL`].
    pub async fn start(&self, redirect_uri: &str, now: i64) -> Result<SignInStart, SignInError> {
        let endpoints = self
            .verifier
            .endpoints()
            .await
            .map_err(|e| SignInError::Provider(e.to_string()))?;
        let state = State {
            s: random_value(),
            n: random_value(),
            v: random_value(),
            r: redirect_uri.to_owned(),
            e: now.saturating_add(STATE_TTL.as_secs() as i64),
        };
        let mut scopes: Vec<&str> = vec!["openid"];
        scopes.extend(
            self.settings
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty() && *s != "openid"),
        );
        let scope = scopes.join(" ");
        let challenge = pkce_challenge(&state.v);
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.settings.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", scope.as_str()),
            ("state", state.s.as_str()),
            ("nonce", state.n.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .map_err(|_| SignInError::State("not writable"))?;
        let base = endpoints.authorization_endpoint;
        let joiner = if base.contains('?') { '&' } else { '?' };
        Ok(SignInStart {
            authorization_url: format!("{base}{joiner}{query}"),
            state_cookie: self.seal(&state)?,
        })
    }

    /// Finish signing in: check the state cookie and the returned `state`, exchange `code` (with the PKCE
    /// verifier, `client_secret_basic`), check the ID token and its nonce, and map its claims to a role.
    pub async fn finish(
        &self,
        cookie: Option<&str>,
        returned_state: Option<&str>,
        code: &str,
        now: i64,
    ) -> Result<SignedIn, SignInError> {
        let cookie = cookie.ok_or(SignInError::State("missing (no sign-in cookie)"))?;
        let state = self.open(cookie, now)?;
        let returned = returned_state.ok_or(SignInError::State("missing from the callback"))?;
        if !same(returned, &state.s) {
            return Err(SignInError::State("not this browser's"));
        }
        let id_token = self.exchange(code, &state).await?;
        let claims = self
            .verifier
            .decode_id_token(&id_token, &self.settings.client_id)
            .await
            .map_err(SignInError::IdToken)?;
        let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !same(nonce, &state.n) {
            return Err(SignInError::Nonce);
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(SignInError::IdToken(AuthError::Malformed(
                "the ID token has no sub",
            )))?
            .to_owned();
        let username = ferry_token::claim_at(&claims, &self.settings.username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&subject)
            .to_owned();
        Ok(SignedIn {
            role: self.roles().map(&claims),
            subject,
            username,
        })
    }

    /// The authorization code for an ID token at the token endpoint.
    async fn exchange(&self, code: &str, state: &State) -> Result<String, SignInError> {
        let provider = |m: String| SignInError::Provider(m);
        let endpoints = self
            .verifier
            .endpoints()
            .await
            .map_err(|e| provider(e.to_string()))?;
        let url = endpoints.token_endpoint;
        let user = percent_encoding::utf8_percent_encode(&self.settings.client_id, CREDENTIAL);
        let pass = percent_encoding::utf8_percent_encode(&self.settings.client_secret, CREDENTIAL);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let body = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", state.r.as_str()),
            ("code_verifier", state.v.as_str()),
        ])
        .map_err(|_| provider("the token request cannot be written".to_owned()))?;
        let mut response = self
            .verifier
            .http()
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| provider(format!("POST {url}: {}", e.without_url())))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| provider(format!("POST {url}: {}", e.without_url())))?
        {
            if bytes.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                return Err(provider(format!("POST {url}: answer too large")));
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|_| provider(format!("POST {url}: answered {status}, not JSON")))?;
        if !status.is_success() {
            // The error code only: descriptions may echo what was sent.
            let error = json.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(provider(format!(
                "the token endpoint refused the code ({status}, {error})"
            )));
        }
        json.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| provider("the token endpoint's answer has no id_token".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OidcSettings;

    fn client(secret: &str) -> OidcSignIn {
        let verifier =
            OidcVerifier::new(OidcSettings::new("http://127.0.0.1:1")).expect("verifier");
        OidcSignIn::new(
            verifier,
            SignInSettings {
                client_id: "dash".to_owned(),
                client_secret: secret.to_owned(),
                redirect_url: None,
                scopes: vec![],
                provider_name: "Test".to_owned(),
                username_claim: "preferred_username".to_owned(),
            },
        )
    }

    fn state(expires: i64) -> State {
        State {
            s: "st".to_owned(),
            n: "no".to_owned(),
            v: "ve".to_owned(),
            r: "http://x/cb".to_owned(),
            e: expires,
        }
    }

    #[test]
    fn pkce_s256_is_base64url_of_sha256_without_padding() {
        // SHA-256("abc") = ba7816bf…15ad (FIPS 180-2), in base64url without '='.
        assert_eq!(
            pkce_challenge("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        // Verifiers are 43 characters of base64url (RFC 7636 §4.1: 43 to 128).
        let v = random_value();
        assert_eq!(v.len(), 43);
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn the_state_cookie_round_trips_and_refuses_tampering_expiry_and_other_keys() {
        let a = client("secret-a");
        let sealed = a.seal(&state(1_000)).expect("seal");
        let opened = a.open(&sealed, 999).expect("open");
        assert_eq!((opened.s.as_str(), opened.n.as_str()), ("st", "no"));
        assert!(!sealed.contains("ve\""), "base64, not plain");
        assert!(matches!(
            a.open(&sealed, 1_000),
            Err(SignInError::State("expired"))
        ));
        // Another secret (another cluster) cannot read or forge it.
        assert!(matches!(
            client("secret-b").open(&sealed, 999),
            Err(SignInError::State("not one this service made"))
        ));
        // A payload changed under the same tag.
        let forged = a.seal(&state(5_000)).expect("seal");
        let (body, _) = forged.split_once('.').expect("dot");
        let (_, tag) = sealed.split_once('.').expect("dot");
        assert!(a.open(&format!("{body}.{tag}"), 999).is_err());
        assert!(a.open("garbage", 0).is_err());
        assert!(a.open("a.b", 0).is_err());
    }

    #[tokio::test]
    async fn finish_refuses_a_missing_or_foreign_state_before_calling_the_provider() {
        let a = client("secret-a");
        let sealed = a.seal(&state(i64::MAX)).expect("seal");
        let err = a
            .finish(None, Some("st"), "code", 0)
            .await
            .expect_err("no cookie");
        assert!(matches!(err, SignInError::State(_)), "{err}");
        let err = a
            .finish(Some(&sealed), None, "code", 0)
            .await
            .expect_err("no state");
        assert!(matches!(err, SignInError::State(_)), "{err}");
        let err = a
            .finish(Some(&sealed), Some("other"), "code", 0)
            .await
            .expect_err("other state");
        assert!(
            matches!(err, SignInError::State("not this browser's")),
            "{err}"
        );
        // The right state goes on to the provider (unreachable here).
        let err = a
            .finish(Some(&sealed), Some("st"), "code", 0)
            .await
            .expect_err("provider down");
        assert!(matches!(err, SignInError::Provider(_)), "{err}");
    }
}
