//! Who may call the management API: admin API keys (`fadm_…`, kept in the store as SHA-256 hex) in
//! `Authorization: Bearer` or `X-Api-Key`, a bearer token (OIDC) judged by an [`AdminTokenCheck`] the node
//! plugs in (which maps the token's claims to a role), or a session cookie ([`SESSION_COOKIE`], kept in the store as SHA-256 hex) whose changes carry the
//! session's CSRF token in [`CSRF_HEADER`]. No credential or a bad one: 401 with `WWW-Authenticate: Bearer`; a
//! valid token whose claims map to no role, or a change without the CSRF token: 403. Each [`Caller`] has a role and,
//! for operators, a tenant scope; the operations enforce them (`access.rs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferry_proto::TenantName;
use ferry_store::{unix_now, Role, Store};
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
    /// A valid token whose claims map to `role` (an operator: of `tenants`); `subject` names the caller in logs
    /// and the audit log.
    Granted {
        subject: String,
        role: Role,
        tenants: Vec<TenantName>,
    },
    /// A valid token whose claims map to no role (403).
    NoRole,
    /// Not a token this node accepts (401).
    Invalid,
}

/// Judges bearer tokens that are not admin keys (e.g. OIDC access tokens) and says their role. The node bridges
/// it to its token verifiers.
#[async_trait::async_trait]
pub trait AdminTokenCheck: Send + Sync + 'static {
    async fn check(&self, token: &str) -> AdminTokenOutcome;
}

/// Who made an authenticated request, and what it may do; put in the request's extensions by the middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `admin-key:ID`, `user:NAME`, the token's subject, or `local` (the command line on the store).
    pub subject: String,
    pub role: Role,
    /// An operator's tenants (empty for the other roles, which see every tenant).
    pub tenants: Vec<TenantName>,
    /// Set when the caller signed in with a session cookie.
    pub session: Option<SessionAuth>,
}

/// The session a caller used.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionAuth {
    pub user: String,
    pub id_sha256: String,
    pub csrf_token: String,
    pub expires_at: i64,
    pub idle_expires_at: i64,
}

impl std::fmt::Debug for SessionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The command line working on the store itself: an admin.
    pub fn local() -> Self {
        Self::admin("local")
    }

    /// An admin called `subject`.
    pub fn admin(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            role: Role::Admin,
            tenants: Vec::new(),
            session: None,
        }
    }

    /// Whether the caller may see the tenant at all.
    pub fn sees_tenant(&self, tenant: &TenantName) -> bool {
        self.role != Role::Operator || self.tenants.contains(tenant)
    }
}

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "ferry_session";
/// The header a change made with a session cookie must carry the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
fn credential(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        return ferry_auth::bearer_token(value.to_str().ok()?);
    }
    let key = headers.get(API_KEY_HEADER)?.to_str().ok()?.trim();
    (!key.is_empty()).then_some(key)
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Decide who is calling with a bearer token or an admin key: an admin key from the store, else the token check.
pub async fn authenticate(
    store: &dyn Store,
    token_check: Option<&dyn AdminTokenCheck>,
    credential: Option<&str>,
) -> Result<Caller, ApiError> {
    let Some(credential) = credential else {
        return Err(ApiError::unauthorized(
            "an admin key, token or session is required (Authorization: Bearer …, or sign in)",
        ));
    };
    if credential.starts_with(ADMIN_KEY_PREFIX) {
        return match store.admin_key_by_hash(&hash_admin_key(credential)).await? {
            Some(key) => Ok(Caller {
                subject: format!("admin-key:{}", key.id),
                role: key.role,
                tenants: key.tenants,
                session: None,
            }),
            None => Err(ApiError::unauthorized("unknown or revoked admin key")),
        };
    }
    match token_check {
        Some(check) => match check.check(credential).await {
            AdminTokenOutcome::Granted {
                subject,
                role,
                tenants,
            } => Ok(Caller {
                subject,
                tenants: if role == Role::Operator {
                    tenants
                } else {
                    Vec::new()
                },
                role,
                session: None,
            }),
            AdminTokenOutcome::NoRole => Err(ApiError::forbidden(
                "the token carries no role that maps to a management API role",
            )),
            AdminTokenOutcome::Invalid => Err(ApiError::unauthorized("the token is not accepted")),
        },
        None => Err(ApiError::unauthorized("not an admin key")),
    }
}

/// Decide who is calling with a session cookie: a session valid now, of an enabled user. Each use moves the
/// session's idle expiry on (written at most every [`TOUCH_EVERY`] seconds).
pub async fn authenticate_session(
    store: &dyn Store,
    cookie: &str,
    idle_timeout: i64,
) -> Result<Caller, ApiError> {
    let now = unix_now();
    let id_sha256 = hash_admin_key(cookie);
    let expired = || ApiError::unauthorized("the session has ended; sign in again");
    let Some(session) = store.session(&id_sha256, now).await? else {
        return Err(expired());
    };
    let user = match store.get_user(&session.user).await? {
        Some(user) if !user.disabled => user,
        _ => return Err(expired()),
    };
    let mut idle_expires_at = session.idle_expires_at;
    if now - session.last_seen_at >= TOUCH_EVERY {
        idle_expires_at = (now + idle_timeout).min(session.expires_at);
        if !store
            .touch_session(&id_sha256, now, idle_expires_at)
            .await?
        {
            return Err(expired());
        }
    }
    Ok(Caller {
        subject: format!("user:{}", user.name),
        role: user.role,
        tenants: user.tenants,
        session: Some(SessionAuth {
            user: user.name,
            id_sha256,
            csrf_token: session.csrf_token,
            expires_at: session.expires_at,
            idle_expires_at,
        }),
    })
}

/// A session's last use is written at most this often (seconds), so that reading pages is not a write each.
pub const TOUCH_EVERY: i64 = 10;

/// Compare without stopping at the first difference.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether the method changes something (and so needs the CSRF token when made with a session).
fn is_change(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// The middleware in front of every `/api/v1/` route but the OpenAPI document and the sign-in.
pub(crate) async fn require_admin(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Signing in is how a caller without a credential gets one.
    if (request.method() == http::Method::POST && request.uri().path() == crate::SESSION_PATH)
        || crate::oidc::is_public(request.method(), request.uri().path())
    {
        return next.run(request).await;
    }
    let caller = match (
        credential(request.headers()),
        session_cookie(request.headers()),
    ) {
        (None, Some(cookie)) => {
            let idle = state.sessions.idle_timeout_secs();
            match authenticate_session(state.admin.store().as_ref(), cookie, idle).await {
                Ok(caller) => {
                    if is_change(request.method()) {
                        let sent = request
                            .headers()
                            .get(CSRF_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let expected = caller
                            .session
                            .as_ref()
                            .map_or("", |s| s.csrf_token.as_str());
                        if !same_secret(sent, expected) {
                            return ApiError::forbidden(
                                "a change made with a session needs its CSRF token in X-CSRF-Token \
                                 (GET /api/v1/session tells it)",
                            )
                            .into_response();
                        }
                    }
                    Ok(caller)
                }
                Err(e) => Err(e),
            }
        }
        (credential, _) => {
            authenticate(
                state.admin.store().as_ref(),
                state.token_check.as_deref(),
                credential,
            )
            .await
        }
    };
    match caller {
        Ok(caller) => {
            if is_change(request.method()) {
                tracing::info!(
                    subject = %caller.subject,
                    role = %caller.role,
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
