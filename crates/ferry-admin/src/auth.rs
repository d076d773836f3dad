//! Who may call the management API: admin API keys (`fadm_…`, kept in the store as SHA-256 hex) in
//! `Authorization: Bearer` or `X-Api-Key`, or a bearer token (OIDC) judged by an [`AdminTokenCheck`] the node
//! plugs in. No credential or a bad one: 401 with `WWW-Authenticate: Bearer`; a valid token without the admin
//! role: 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferry_store::Store;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::State as AdminState;

/// Every admin key starts with this.
pub const ADMIN_KEY_PREFIX: &str = "fadm_";

/// The header that may carry an admin key instead of `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// What an [`AdminTokenCheck`] decided about a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenOutcome {
    /// A valid token carrying the admin role; `subject` names the caller in logs.
    Granted { subject: String },
    /// A valid token without the admin role (403).
    NoRole,
    /// Not a token this node accepts (401).
    Invalid,
}

/// Judges bearer tokens that are not admin keys (e.g. OIDC access tokens). The node bridges it to its token
/// verifiers.
#[async_trait::async_trait]
pub trait AdminTokenCheck: Send + Sync + 'static {
    async fn check(&self, token: &str) -> AdminTokenOutcome;
}

/// Who made an authenticated request; put in the request's extensions by the middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `admin-key:ID` or the token's subject.
    pub subject: String,
}

/// A new admin key: [`ADMIN_KEY_PREFIX`] then 32 random bytes, base64url without padding.
pub fn generate_admin_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut key = String::with_capacity(ADMIN_KEY_PREFIX.len() + 43);
    key.push_str(ADMIN_KEY_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut key);
    key
}

/// Lowercase hex SHA-256 of the whole key, as the store keeps it.
pub fn hash_admin_key(key: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The credential of a request: the bearer token, else `X-Api-Key`.
fn credential(request: &Request) -> Option<&str> {
    let headers = request.headers();
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        return ferry_auth::bearer_token(value.to_str().ok()?);
    }
    let key = headers.get(API_KEY_HEADER)?.to_str().ok()?.trim();
    (!key.is_empty()).then_some(key)
}

/// Decide who is calling: an admin key from the store, else the token check.
pub async fn authenticate(
    store: &dyn Store,
    token_check: Option<&dyn AdminTokenCheck>,
    credential: Option<&str>,
) -> Result<Caller, ApiError> {
    let Some(credential) = credential else {
        return Err(ApiError::unauthorized(
            "an admin key or token is required (Authorization: Bearer …)",
        ));
    };
    if credential.starts_with(ADMIN_KEY_PREFIX) {
        return match store.admin_key_by_hash(&hash_admin_key(credential)).await? {
            Some(key) => Ok(Caller {
                subject: format!("admin-key:{}", key.id),
            }),
            None => Err(ApiError::unauthorized("unknown or revoked admin key")),
        };
    }
    match token_check {
        Some(check) => match check.check(credential).await {
            AdminTokenOutcome::Granted { subject } => Ok(Caller { subject }),
            AdminTokenOutcome::NoRole => Err(ApiError::forbidden(
                "the token does not carry the admin role",
            )),
            AdminTokenOutcome::Invalid => Err(ApiError::unauthorized("the token is not accepted")),
        },
        None => Err(ApiError::unauthorized("not an admin key")),
    }
}

/// The middleware in front of every `/api/v1/` route but the OpenAPI document.
pub(crate) async fn require_admin(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = authenticate(
        state.admin.store().as_ref(),
        state.token_check.as_deref(),
        credential(&request),
    )
    .await;
    match caller {
        Ok(caller) => {
            if request.method() != http::Method::GET {
                tracing::info!(
                    subject = %caller.subject,
                    method = %request.method(),
                    path = request.uri().path(),
                    "management api change"
                );
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let a = generate_admin_key();
        assert!(a.starts_with(ADMIN_KEY_PREFIX));
        assert_eq!(a.len(), ADMIN_KEY_PREFIX.len() + 43);
        assert_ne!(a, generate_admin_key());
        let h = hash_admin_key(&a);
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        // SHA-256 of "abc"
        assert_eq!(
            hash_admin_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
