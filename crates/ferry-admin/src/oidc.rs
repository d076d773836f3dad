//! Signing in to the dashboard through the external OpenID Connect provider (`[server.auth.oidc.sign_in]`):
//! `GET /api/v1/session/oidc` sends the browser to the provider (authorization code flow with PKCE; the state,
//! nonce and verifier ride in a signed, short-lived, `HttpOnly` cookie scoped to these paths, so the callback may
//! land on any management node), and `GET /api/v1/session/oidc/callback` checks what comes back
//! (`ferry-auth`'s [`OidcSignIn`]), maps the ID token's claims to a role, keeps the account in the store (an
//! account without a password, its role and tenants set from the claims at each sign-in) and starts the same
//! kind of session as a password sign-in. `GET /api/v1/session/methods` tells the sign-in page what it offers.
//!
//! Refusals are small HTML pages (the browser is on these URLs), each with a log line; a valid sign-in whose
//! claims map to no role is also written to the audit log.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_auth::{OidcSignIn, SignInError};
use ferry_store::{unix_now, Role, StoreError, UserRecord};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::auth::Caller;
use crate::model::{OidcMethod, SignInMethods};
use crate::State;

/// Where the sign-in through the provider starts.
pub const OIDC_START_PATH: &str = "/api/v1/session/oidc";
/// Where the provider sends the browser back (the redirect URL to register at the provider).
pub const OIDC_CALLBACK_PATH: &str = "/api/v1/session/oidc/callback";
/// What the sign-in page offers.
pub const METHODS_PATH: &str = "/api/v1/session/methods";
/// The cookie carrying a started sign-in's state, nonce and PKCE verifier.
pub const STATE_COOKIE: &str = "ferry_oidc_state";

/// Whether a request to `path` is part of signing in (served without a credential).
pub(crate) fn is_public(method: &http::Method, path: &str) -> bool {
    method == http::Method::GET
        && matches!(path, OIDC_START_PATH | OIDC_CALLBACK_PATH | METHODS_PATH)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page saying why signing in did not happen, with a way back.
fn refusal(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ferry: not signed in</title>\
         <link rel=\"stylesheet\" href=\"/dashboard/app.css\"></head>\n<body><main><section class=\"card narrow\">\
         <h1>Not signed in</h1>\n<p id=\"refusal\" class=\"error\">{}</p>\n<p><a href=\"/\">Back to the sign-in page</a></p>\
         </section></main></body></html>\n",
        escape(message)
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::dashboard::CSP),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

fn not_configured() -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        "Signing in through an OpenID Connect provider is not configured on this node.",
    )
}

fn state_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    // Lax: the provider's redirect back is a cross-site navigation, which must carry it.
    let text = format!(
        "{STATE_COOKIE}={value}; Path={OIDC_START_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The callback URL: configured, else this admin listener as the browser reached it.
fn redirect_uri(sign_in: &OidcSignIn, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &sign_in.settings().redirect_url {
        return Some(url.clone());
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })?;
    let scheme = if crate::session::over_tls(headers) {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{host}{OIDC_CALLBACK_PATH}"))
}

#[utoipa::path(get, path = "/api/v1/session/methods", tag = "session", operation_id = "signInMethods",
    responses((status = 200, description = "How one may sign in here: with a password, and through an OpenID Connect provider when configured", body = SignInMethods)),
    security(()))]
pub(crate) async fn methods(AxumState(s): AxumState<Arc<State>>) -> Json<SignInMethods> {
    Json(SignInMethods {
        password: true,
        oidc: s.sign_in.as_ref().map(|sign_in| OidcMethod {
            provider_name: sign_in.settings().provider_name.clone(),
            url: OIDC_START_PATH.to_owned(),
        }),
    })
}

#[utoipa::path(get, path = "/api/v1/session/oidc", tag = "session", operation_id = "signInOidc",
    responses(
        (status = 303, description = "To the provider's authorization endpoint (code flow, PKCE S256, state and nonce); the state cookie `ferry_oidc_state` is set"),
        (status = 404, description = "Sign-in through a provider is not configured (HTML page)"),
        (status = 502, description = "The provider's discovery document cannot be fetched (HTML page)")),
    security(()))]
pub(crate) async fn start(AxumState(s): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    let Some(sign_in) = &s.sign_in else {
        return not_configured();
    };
    let Some(redirect) = redirect_uri(sign_in, &headers) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "The request names no usable Host; set server.auth.oidc.sign_in.redirect_url.",
        );
    };
    match sign_in.start(&redirect, unix_now()).await {
        Ok(started) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            let h = response.headers_mut();
            match HeaderValue::from_str(&started.authorization_url) {
                Ok(location) => h.insert(http::header::LOCATION, location),
                Err(_) => {
                    return refusal(
                        StatusCode::BAD_GATEWAY,
                        "The provider's authorization endpoint is not a usable URL.",
                    )
                }
            };
            h.insert(
                http::header::SET_COOKIE,
                state_cookie(
                    &started.state_cookie,
                    ferry_auth::STATE_TTL.as_secs() as i64,
                    crate::session::over_tls(&headers),
                ),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(error) => {
            tracing::warn!(%error, "management api: oidc sign-in cannot start");
            refusal(
                StatusCode::BAD_GATEWAY,
                "The identity provider cannot be reached; try again later.",
            )
        }
    }
}

/// What the provider sends back.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackQuery {
    /// The authorization code.
    code: Option<String>,
    /// The state sent with the authorization request.
    state: Option<String>,
    /// The provider's error code when it did not sign the user in (`access_denied`, …).
    error: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/session/oidc/callback", tag = "session", operation_id = "signInOidcCallback",
    params(CallbackQuery),
    responses(
        (status = 303, description = "Signed in: the session cookie is set (and the state cookie cleared); to the dashboard"),
        (status = 400, description = "The state is missing, forged or expired, or no code came back (HTML page)"),
        (status = 401, description = "The provider refused, or its ID token is not valid (signature, issuer, audience, expiry, nonce) (HTML page)"),
        (status = 403, description = "The account's claims map to no role, it is disabled, or its name is taken by a password account (HTML page)"),
        (status = 404, description = "Sign-in through a provider is not configured (HTML page)"),
        (status = 502, description = "The provider's token endpoint failed or refused the code (HTML page)")),
    security(()))]
pub(crate) async fn callback(
    AxumState(s): AxumState<Arc<State>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(sign_in) = s.sign_in.clone() else {
        return not_configured();
    };
    let address = connect.map_or_else(|| "unknown".to_owned(), |c| c.0 .0.ip().to_string());
    let secure = crate::session::over_tls(&headers);
    let mut response = finish(&s, &sign_in, &address, &headers, query).await;
    // The state is used once, whatever came of it.
    response
        .headers_mut()
        .append(http::header::SET_COOKIE, state_cookie("", 0, secure));
    response
}

async fn finish(
    s: &State,
    sign_in: &OidcSignIn,
    address: &str,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Response {
    if let Some(error) = &query.error {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        tracing::info!(%address, provider_error = %error, "management api: oidc sign-in refused by the provider");
        return refusal(
            StatusCode::UNAUTHORIZED,
            &format!("The identity provider did not sign you in ({error})."),
        );
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        tracing::info!(%address, "management api: oidc callback without a code");
        return refusal(
            StatusCode::BAD_REQUEST,
            "The identity provider sent no authorization code; start signing in again.",
        );
    };
    let signed_in = match sign_in
        .finish(
            cookie_value(headers, STATE_COOKIE),
            query.state.as_deref(),
            code,
            unix_now(),
        )
        .await
    {
        Ok(signed_in) => signed_in,
        Err(error) => {
            let status = match &error {
                SignInError::State(_) => StatusCode::BAD_REQUEST,
                SignInError::Provider(_) => StatusCode::BAD_GATEWAY,
                SignInError::IdToken(_) | SignInError::Nonce => StatusCode::UNAUTHORIZED,
            };
            tracing::warn!(%address, %error, "management api: oidc sign-in refused");
            return refusal(status, &format!("Signing in failed: {error}."));
        }
    };
    let provider = &sign_in.settings().provider_name;
    let name = signed_in.username.clone();
    let Some(mapped) = signed_in.role else {
        tracing::warn!(user = %name, subject = %signed_in.subject, %address, "management api: oidc sign-in refused: no role maps to the account's claims");
        s.admin
            .acting_as(Caller {
                subject: format!("oidc:{name}"),
                role: Role::Viewer,
                tenants: Vec::new(),
                session: None,
            })
            .audit(
                "session.refuse",
                &name,
                serde_json::json!({ "address": address, "via": "oidc", "reason": "no role" }),
            )
            .await;
        // An account kept from earlier sign-ins no longer has what its claims gave: deleted, with its sessions.
        // A disabled one stays (so that it stays locked out), and a password account is not the provider's.
        let store = s.admin.store();
        if let Ok(Some(user)) = store.get_user(&name).await {
            if user.password_hash.is_none() && !user.disabled {
                match store.delete_user(&name).await {
                    Ok(true) => {
                        tracing::info!(user = %name, "management api: the account of the provider lost its role; deleted with its sessions");
                        s.admin
                            .acting_as(Caller::admin(format!("oidc:{name}")))
                            .audit(
                                "user.delete",
                                &name,
                                serde_json::json!({ "via": "oidc", "reason": "no role" }),
                            )
                            .await;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, user = %name, "management api: deleting the account that lost its role failed");
                    }
                }
            }
        }
        return refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "Your account {name} at {provider} has no role in Ferry. Ask an admin to map one of its roles \
                 (server.auth.oidc.role_mapping)."
            ),
        );
    };
    if crate::accounts::user_name(&name).is_err() {
        tracing::warn!(user = %name, %address, "management api: oidc sign-in refused: the account name is not a valid Ferry user name");
        return refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "The account name {name} cannot be a Ferry user name (1 to 64 of letters, digits, '.', '_', '@', '-'); \
                 set server.auth.oidc.sign_in.username_claim to another claim."
            ),
        );
    }
    let store = s.admin.store().clone();
    let existing = match store.get_user(&name).await {
        Ok(user) => user,
        Err(error) => return store_failed(&error),
    };
    let system = Caller::admin(format!("oidc:{name}"));
    let user = match existing {
        Some(user) if user.password_hash.is_some() => {
            tracing::warn!(user = %name, %address, "management api: oidc sign-in refused: a password account has this name");
            return refusal(
                StatusCode::FORBIDDEN,
                &format!(
                    "A Ferry account with a password is called {name}; sign in with its password."
                ),
            );
        }
        Some(user) if user.disabled => {
            tracing::info!(user = %name, %address, "management api: oidc sign-in refused: the account is disabled");
            return refusal(StatusCode::FORBIDDEN, "This account is disabled.");
        }
        Some(mut user) => {
            if user.role != mapped.role || user.tenants != mapped.tenants {
                match store
                    .set_user_role(&name, mapped.role, &mapped.tenants)
                    .await
                {
                    Ok(true) => {}
                    // Deleted meanwhile: starting its session fails below, as for any vanished account.
                    Ok(false) => {}
                    Err(error) => return store_failed(&error),
                }
                s.admin
                    .acting_as(system.clone())
                    .audit(
                        "user.role",
                        &name,
                        serde_json::json!({ "role": mapped.role.as_str(), "tenants": mapped.tenants, "via": "oidc" }),
                    )
                    .await;
                user.role = mapped.role;
                user.tenants = mapped.tenants.clone();
            }
            user
        }
        None => {
            let record = UserRecord {
                name: name.clone(),
                password_hash: None,
                role: mapped.role,
                tenants: mapped.tenants.clone(),
                disabled: false,
                created_at: unix_now(),
                last_sign_in_at: None,
            };
            match store.create_user(&record).await {
                Ok(()) => {
                    s.admin
                        .acting_as(system.clone())
                        .audit(
                            "user.create",
                            &name,
                            serde_json::json!({ "role": mapped.role.as_str(), "tenants": mapped.tenants, "via": "oidc" }),
                        )
                        .await;
                }
                // Signed in on another node at the same moment: its record is the same.
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(error) => return store_failed(&error),
            }
            record
        }
    };
    match crate::session::open_session(s, &user, address, headers, "oidc").await {
        Ok(opened) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            let h = response.headers_mut();
            h.insert(http::header::LOCATION, HeaderValue::from_static("/"));
            h.insert(http::header::SET_COOKIE, opened.cookie);
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(error) => error.into_response(),
    }
}

fn store_failed(error: &StoreError) -> Response {
    tracing::error!(%error, "management api: oidc sign-in: the store failed");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "The store is unavailable for now; try again later.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sign_in_paths_are_public() {
        assert!(is_public(&http::Method::GET, OIDC_START_PATH));
        assert!(is_public(&http::Method::GET, OIDC_CALLBACK_PATH));
        assert!(is_public(&http::Method::GET, METHODS_PATH));
        assert!(!is_public(&http::Method::POST, OIDC_CALLBACK_PATH));
        assert!(!is_public(&http::Method::GET, "/api/v1/session"));
        assert!(!is_public(&http::Method::GET, "/api/v1/session/oidc/x"));
    }

    #[test]
    fn the_state_cookie_is_lax_http_only_and_scoped() {
        let c = state_cookie("v", 600, true);
        let c = c.to_str().expect("ascii");
        assert!(
            c.starts_with("ferry_oidc_state=v; Path=/api/v1/session/oidc; Max-Age=600"),
            "{c}"
        );
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("Secure"),
            "{c}"
        );
    }

    #[test]
    fn refusal_pages_escape_what_they_show() {
        let page = refusal(StatusCode::FORBIDDEN, "<script>x</script> & 'y'");
        assert_eq!(page.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
