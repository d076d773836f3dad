//! Signing in to the management API with a name and password: the session cookie, its expiry, the limits on
//! sign-in attempts, and `/api/v1/session` (sign in, who am I, sign out). Sessions of a sign-in through the
//! OpenID Connect provider (`oidc.rs`) are started here too ([`open_session`]).
//!
//! A session is a random value in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the request came over
//! TLS, as a TLS-terminating proxy says with `X-Forwarded-Proto: https`); the store keeps only its SHA-256, so
//! every node with the management role serves it and signing out ends it everywhere. Changes made with it carry
//! its CSRF token in `X-CSRF-Token` (checked in `auth.rs`). Sign-in attempts are limited per account and per
//! client address with `governor` (every attempt counts, successful or not); beyond the limit: 429
//! `sign_in_rate_limited` with `Retry-After`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use ferry_store::{unix_now, SessionRecord};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderValue, StatusCode};
use rand::RngCore as _;

use crate::api::ApiJson;
use crate::auth::{hash_admin_key, Caller, SESSION_COOKIE};
use crate::error::{ApiError, ErrorBody};
use crate::model::{RoleName, SessionView, SignIn};
use crate::State;

/// How long sessions last and how many sign-in attempts are taken (`[server.admin]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however much it is used.
    pub max_age: Duration,
    /// Sign-in attempts per account per minute.
    pub attempts_per_account: u32,
    /// Sign-in attempts per client address per minute.
    pub attempts_per_address: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            max_age: Duration::from_secs(12 * 3600),
            attempts_per_account: 5,
            attempts_per_address: 20,
        }
    }
}

impl SessionSettings {
    pub(crate) fn idle_timeout_secs(&self) -> i64 {
        i64::try_from(self.idle_timeout.as_secs())
            .unwrap_or(i64::MAX / 4)
            .max(1)
    }

    fn max_age_secs(&self) -> i64 {
        i64::try_from(self.max_age.as_secs())
            .unwrap_or(i64::MAX / 4)
            .max(1)
    }
}

type Keyed = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// Keys tracked per limiter before the ones that have refilled are dropped.
const MAX_TRACKED: usize = 10_000;

/// The limits on sign-in attempts, per account and per client address.
pub(crate) struct SignInLimiter {
    per_account: Keyed,
    per_address: Keyed,
    clock: DefaultClock,
}

impl SignInLimiter {
    pub(crate) fn new(settings: &SessionSettings) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            per_account: RateLimiter::hashmap(quota(settings.attempts_per_account)),
            per_address: RateLimiter::hashmap(quota(settings.attempts_per_address)),
            clock: DefaultClock::default(),
        }
    }

    /// Take one attempt for `account` from `address`; the error says how many seconds until one is taken.
    fn attempt(&self, account: &str, address: &str) -> Result<(), u64> {
        for (limiter, key) in [(&self.per_address, address), (&self.per_account, account)] {
            if limiter.len() > MAX_TRACKED {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&key.to_owned()) {
                let wait = not_until.wait_time_from(self.clock.now());
                return Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
            }
        }
        Ok(())
    }
}

/// A random value of 32 bytes, base64url: session ids and CSRF tokens.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether the request reached Ferry over TLS (said by the proxy that terminated it).
pub(crate) fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What the caller is, as the session endpoint tells it.
pub(crate) fn view(caller: &Caller) -> SessionView {
    SessionView {
        subject: caller.subject.clone(),
        user: caller.session.as_ref().map(|s| s.user.clone()),
        role: RoleName::from(caller.role),
        tenants: caller.tenants.iter().map(ToString::to_string).collect(),
        csrf_token: caller.session.as_ref().map(|s| s.csrf_token.clone()),
        expires_at: caller.session.as_ref().map(|s| s.expires_at),
        idle_expires_at: caller.session.as_ref().map(|s| s.idle_expires_at),
    }
}

/// A hash to check passwords against when the account does not exist or has no password, so that the answer
/// takes as long as for a real account.
fn dummy_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| ferry_auth::hash_secret(&random_token()).unwrap_or_default())
        .clone()
}

#[utoipa::path(post, path = "/api/v1/session", tag = "session", operation_id = "signIn",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in: the session cookie is set; the body says who and the CSRF token", body = SessionView),
        (status = 401, description = "Unknown account, wrong password, disabled account", body = ErrorBody),
        (status = 429, description = "Too many attempts for the account or from the address; see Retry-After", body = ErrorBody)),
    security(()))]
pub(crate) async fn sign_in(
    AxumState(s): AxumState<Arc<State>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let address = connect.map_or_else(|| "unknown".to_owned(), |c| c.0 .0.ip().to_string());
    let account = body.name.to_ascii_lowercase();
    if body.name.len() > 64 || body.password.len() > 1024 {
        return Err(ApiError::unauthorized("wrong name or password"));
    }
    if let Err(seconds) = s.limiter.attempt(&account, &address) {
        tracing::warn!(user = %body.name, %address, "management api: sign-in attempts limited");
        let mut response = ApiError::from_code(
            ferry_proto::ErrorCode::SignInRateLimited,
            format!(
                "too many sign-in attempts for this account or from this address; try again in {seconds} s"
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    }
    let store = s.admin.store().clone();
    // a name no account can have (control characters, a NUL that PostgreSQL refuses in text) is an unknown
    // account, not a store error: the same answer, after the same password check
    let user = match crate::accounts::user_name(&body.name) {
        Ok(name) => store.get_user(name).await?,
        Err(_) => None,
    };
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(dummy_hash);
    let password = body.password.clone();
    let matches = tokio::task::spawn_blocking(move || ferry_auth::verify_secret(&password, &hash))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(user) if matches && !user.disabled && user.password_hash.is_some() => user,
        _ => {
            tracing::info!(user = %body.name, %address, "management api: sign-in refused");
            return Err(ApiError::unauthorized("wrong name or password"));
        }
    };
    let opened = open_session(&s, &user, &address, &headers, "password").await?;
    let mut response = Json(view(&opened.caller)).into_response();
    response
        .headers_mut()
        .insert(http::header::SET_COOKIE, opened.cookie);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// A session just started: who it is for, and its cookie.
pub(crate) struct Opened {
    pub caller: Caller,
    pub cookie: HeaderValue,
}

/// Start a session for `user` (signed in `via` a password or the OpenID Connect provider): stored, the sign-in
/// noted, logged and audited.
pub(crate) async fn open_session(
    s: &State,
    user: &ferry_store::UserRecord,
    address: &str,
    headers: &HeaderMap,
    via: &str,
) -> Result<Opened, ApiError> {
    let store = s.admin.store();
    let now = unix_now();
    let value = random_token();
    let settings = &s.sessions;
    let expires_at = now.saturating_add(settings.max_age_secs());
    let session = SessionRecord {
        id_sha256: hash_admin_key(&value),
        user: user.name.clone(),
        csrf_token: random_token(),
        created_at: now,
        last_seen_at: now,
        idle_expires_at: now
            .saturating_add(settings.idle_timeout_secs())
            .min(expires_at),
        expires_at,
    };
    store.create_session(&session).await?;
    store.record_sign_in(&user.name, now).await?;
    tracing::info!(user = %user.name, role = %user.role, %address, via, "management api: signed in");
    let caller = Caller {
        subject: format!("user:{}", user.name),
        role: user.role,
        tenants: user.tenants.clone(),
        session: Some(crate::auth::SessionAuth {
            user: user.name.clone(),
            id_sha256: session.id_sha256.clone(),
            csrf_token: session.csrf_token.clone(),
            expires_at: session.expires_at,
            idle_expires_at: session.idle_expires_at,
        }),
    };
    s.admin
        .acting_as(caller.clone())
        .audit(
            "session.create",
            &user.name,
            serde_json::json!({ "address": address, "via": via }),
        )
        .await;
    Ok(Opened {
        caller,
        cookie: cookie(&value, settings.max_age_secs(), over_tls(headers)),
    })
}

#[utoipa::path(get, path = "/api/v1/session", tag = "session", operation_id = "whoAmI",
    responses((status = 200, description = "Who is calling: subject, role, tenants; with a session its CSRF token", body = SessionView)))]
pub(crate) async fn who_am_i(Extension(caller): Extension<Caller>) -> Response {
    let mut response = Json(view(&caller)).into_response();
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "session", operation_id = "signOut",
    responses(
        (status = 204, description = "Signed out: the session has ended on every node and the cookie is cleared"),
        (status = 400, description = "The caller did not use a session", body = ErrorBody)))]
pub(crate) async fn sign_out(
    AxumState(s): AxumState<Arc<State>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(session) = &caller.session else {
        return Err(ApiError::bad_request(
            "signing out ends a session; this request did not use one",
        ));
    };
    s.admin.store().delete_session(&session.id_sha256).await?;
    s.admin
        .acting_as(caller.clone())
        .audit("session.delete", &session.user, serde_json::json!({}))
        .await;
    tracing::info!(user = %session.user, "management api: signed out");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(http::header::SET_COOKIE, cookie("", 0, over_tls(&headers)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_takes_the_configured_attempts_then_says_when() {
        let limiter = SignInLimiter::new(&SessionSettings {
            attempts_per_account: 2,
            attempts_per_address: 3,
            ..SessionSettings::default()
        });
        assert!(limiter.attempt("alice", "10.0.0.1").is_ok());
        assert!(limiter.attempt("alice", "10.0.0.2").is_ok());
        let wait = limiter
            .attempt("alice", "10.0.0.3")
            .expect_err("per account");
        assert!((1..=60).contains(&wait), "{wait}");
        // Another account from a fresh address is not held up by alice's.
        assert!(limiter.attempt("bob", "10.0.0.4").is_ok());
        // One address: three attempts, whatever the accounts.
        assert!(limiter.attempt("c1", "10.0.0.9").is_ok());
        assert!(limiter.attempt("c2", "10.0.0.9").is_ok());
        assert!(limiter.attempt("c3", "10.0.0.9").is_ok());
        assert!(limiter.attempt("c4", "10.0.0.9").is_err());
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = cookie("abc", 60, false);
        let c = c.to_str().expect("ascii");
        assert!(
            c.starts_with("ferry_session=abc; Path=/; Max-Age=60"),
            "{c}"
        );
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert!(!c.contains("Secure"), "{c}");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(cookie("abc", 60, over_tls(&h))
            .to_str()
            .expect("ascii")
            .ends_with("; Secure"));
    }
}
