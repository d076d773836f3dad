//! The OAuth 2 token endpoint, client-credentials grant only (RFC 6749 §4.4, answers per §5.1 and §5.2), as
//! `docs/protocol.md` §1 describes it. Transport-free: the caller passes the `Authorization` and `Content-Type`
//! header values and the body, and writes the [`TokenReply`] back.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use base64::Engine as _;
use ferry_proto::TenantName;
use serde::Serialize;

use crate::limit::Limited;
use crate::secret::{burn_one_verify_async, matching_secret};
use crate::TokenIssuer;

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
const GRANT_TYPE: &str = "client_credentials";
const BASIC_CHALLENGE: &str = "Basic realm=\"ferry\", charset=\"UTF-8\"";

/// The answer of the token endpoint: status, headers and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReply {
    pub status: u16,
    /// JSON.
    pub body: Vec<u8>,
    /// Headers to send with it: `content-type`, `cache-control: no-store`, `pragma: no-cache` (RFC 6749 §5.1),
    /// and `www-authenticate` on a 401.
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct SuccessBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    error_description: &'static str,
}

impl TokenReply {
    fn new(status: u16, body: Vec<u8>) -> Self {
        TokenReply {
            status,
            body,
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("cache-control", "no-store".to_owned()),
                ("pragma", "no-cache".to_owned()),
            ],
        }
    }

    fn error(status: u16, error: &'static str, error_description: &'static str) -> Self {
        let body = serde_json::to_vec(&ErrorBody {
            error,
            error_description,
        })
        .unwrap_or_else(|_| format!("{{\"error\":\"{error}\"}}").into_bytes());
        let mut reply = TokenReply::new(status, body);
        if status == 401 {
            reply
                .headers
                .push(("www-authenticate", BASIC_CHALLENGE.to_owned()));
        }
        reply
    }

    fn invalid_request(description: &'static str) -> Self {
        TokenReply::error(400, "invalid_request", description)
    }

    fn invalid_client(description: &'static str) -> Self {
        TokenReply::error(401, "invalid_client", description)
    }
}

/// The client's claimed identity, from whichever place it came.
struct Credentials {
    client_id: String,
    client_secret: String,
    /// The scope to grant: what was asked for (`tunnel`, `relay` or both), `tunnel` when nothing was.
    scope: String,
}

/// Whether the `Content-Type` value names the form media type (parameters such as `charset` are ignored).
fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(FORM_CONTENT_TYPE))
}

/// Undo the form encoding RFC 6749 §2.3.1 applies to the id and secret before they go into Basic.
fn form_decode(value: &str) -> Option<String> {
    let plus_decoded: Cow<'_, str> = if value.contains('+') {
        Cow::Owned(value.replace('+', " "))
    } else {
        Cow::Borrowed(value)
    };
    percent_encoding::percent_decode_str(&plus_decoded)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

enum Basic {
    /// No `Authorization` header.
    Absent,
    Credentials(Credentials),
}

fn parse_authorization(authorization: Option<&str>) -> Result<Basic, TokenReply> {
    let Some(value) = authorization else {
        return Ok(Basic::Absent);
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(TokenReply::invalid_client(
            "only HTTP Basic client authentication is supported",
        ));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let malformed = || TokenReply::invalid_request("malformed HTTP Basic credentials");
    let decoded = engine.decode(rest.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Basic::Credentials(Credentials {
        client_id: form_decode(id).ok_or_else(malformed)?,
        client_secret: form_decode(secret).ok_or_else(malformed)?,
        scope: String::new(),
    }))
}

/// The parameters of a token request, each at most once; empty values count as absent (RFC 6749 §3.1).
#[derive(Default)]
struct Form {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

fn parse_form(body: &[u8]) -> Result<Form, TokenReply> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| TokenReply::invalid_request("the body is not a valid form"))?;
    let mut form = Form::default();
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        let slot = match name.as_str() {
            "grant_type" => &mut form.grant_type,
            "client_id" => &mut form.client_id,
            "client_secret" => &mut form.client_secret,
            "scope" => &mut form.scope,
            // Unknown parameters are ignored (RFC 6749 §3.2).
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(TokenReply::invalid_request(
                "a request parameter is repeated",
            ));
        }
    }
    Ok(form)
}

/// The scope a token gets: the requested scopes among `tunnel` (open a tunnel) and `relay` (call the relay as a
/// client), in that order; `tunnel` when none was requested.
fn granted_scope(requested: Option<&str>) -> Result<String, TokenReply> {
    let Some(requested) = requested else {
        return Ok(crate::TUNNEL_SCOPE.to_owned());
    };
    let mut granted = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if scope != crate::TUNNEL_SCOPE && scope != crate::RELAY_SCOPE {
            return Err(TokenReply::error(
                400,
                "invalid_scope",
                "the scopes are tunnel and relay",
            ));
        }
    }
    for known in [crate::TUNNEL_SCOPE, crate::RELAY_SCOPE] {
        if requested.split(' ').any(|s| s == known) {
            granted.push(known);
        }
    }
    if granted.is_empty() {
        granted.push(crate::TUNNEL_SCOPE);
    }
    Ok(granted.join(" "))
}

/// Check everything that does not need the store; the client's claimed credentials if the request is well
/// formed.
fn parse_request(
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Credentials, TokenReply> {
    if !is_form(content_type) {
        return Err(TokenReply::invalid_request(
            "the content type must be application/x-www-form-urlencoded",
        ));
    }
    let form = parse_form(body)?;
    match form.grant_type.as_deref() {
        None => return Err(TokenReply::invalid_request("grant_type is required")),
        Some(GRANT_TYPE) => {}
        Some(_) => {
            return Err(TokenReply::error(
                400,
                "unsupported_grant_type",
                "only the client_credentials grant is supported",
            ))
        }
    }
    let scope = granted_scope(form.scope.as_deref())?;
    match parse_authorization(authorization)? {
        Basic::Credentials(credentials) => {
            if form.client_id.is_some() || form.client_secret.is_some() {
                return Err(TokenReply::invalid_request(
                    "client credentials must be sent either with HTTP Basic or in the body, not both",
                ));
            }
            Ok(Credentials {
                scope,
                ..credentials
            })
        }
        Basic::Absent => match (form.client_id, form.client_secret) {
            (Some(client_id), Some(client_secret)) => Ok(Credentials {
                client_id,
                client_secret,
                scope,
            }),
            _ => Err(TokenReply::invalid_client(
                "client authentication is required (client_id and client_secret)",
            )),
        },
    }
}

impl TokenReply {
    fn rate_limited(limited: Limited) -> Self {
        let mut reply = TokenReply::error(
            429,
            "too_many_requests",
            "too many failed token requests, retry later",
        );
        reply
            .headers
            .push(("retry-after", limited.retry_after_secs().to_string()));
        reply
    }
}

impl TokenIssuer {
    /// Answer a token request (`POST /oauth/token`): the client-credentials grant with the tenant name as client
    /// id. `client_ip` is the caller's address (for the failure limits), `authorization` and `content_type` are
    /// the raw header values, `body` the whole request body.
    ///
    /// Repeated failures are limited per client IP and per client id ([`crate::RateLimitSettings`]): beyond the
    /// limit the answer is 429 with `Retry-After`, without checking the credentials.
    pub async fn client_credentials(
        &self,
        client_ip: Option<IpAddr>,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> TokenReply {
        if !self.settings().endpoint_enabled {
            return TokenReply::error(
                400,
                "unauthorized_client",
                "the built-in token endpoint is turned off: get a token from the identity provider",
            );
        }
        let parsed = parse_request(authorization, content_type, body);
        if let Err(limited) = self.limiter.check_ip(client_ip, Instant::now()) {
            let client_id = parsed.as_ref().ok().map(|c| c.client_id.as_str());
            return self.refuse_limited(client_ip, client_id, limited);
        }
        let credentials = match parsed {
            Ok(credentials) => credentials,
            Err(reply) => {
                // Failed client authentication counts; malformed requests (400) cost nothing to answer and
                // guess nothing, so they do not.
                if reply.status == 401 {
                    self.limiter.record_failure(client_ip, None, Instant::now());
                }
                return reply;
            }
        };
        if let Err(limited) = self
            .limiter
            .check_client(&credentials.client_id, Instant::now())
        {
            return self.refuse_limited(client_ip, Some(&credentials.client_id), limited);
        }
        let checked = match TenantName::new(credentials.client_id.as_str()) {
            Ok(tenant) => matching_secret(&*self.store, &tenant, &credentials.client_secret)
                .await
                .map(|found| found.map(|secret_id| (tenant, secret_id))),
            // Not even a possible tenant: spend the same time as for a wrong secret.
            Err(_) => burn_one_verify_async(&credentials.client_secret)
                .await
                .map(|()| None),
        };
        let (tenant, secret_id) = match checked {
            Ok(Some(found)) => found,
            Ok(None) => {
                self.limiter.record_failure(
                    client_ip,
                    Some(&credentials.client_id),
                    Instant::now(),
                );
                tracing::info!(
                    client_ip = %client_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into()),
                    client_id = %credentials.client_id.chars().take(64).collect::<String>(),
                    "token request refused: invalid client credentials (unknown tenant, or a wrong, revoked or expired secret)"
                );
                return TokenReply::invalid_client("client authentication failed");
            }
            Err(error) => {
                tracing::error!(%error, "token request failed");
                let transient = matches!(&error, crate::AuthError::Store(e) if e.is_transient());
                return if transient {
                    TokenReply::error(
                        503,
                        "temporarily_unavailable",
                        "the server is busy, try again later",
                    )
                } else {
                    TokenReply::error(
                        500,
                        "server_error",
                        "the server failed to check the credentials",
                    )
                };
            }
        };
        match self.issue_scoped(&tenant, &secret_id, &credentials.scope) {
            Ok(token) => {
                tracing::info!(tenant = %tenant, secret_id, "token issued");
                let body = serde_json::to_vec(&SuccessBody {
                    access_token: &token.access_token,
                    token_type: "Bearer",
                    expires_in: token.expires_in,
                });
                match body {
                    Ok(body) => TokenReply::new(200, body),
                    Err(error) => {
                        tracing::error!(%error, "encoding the token reply failed");
                        TokenReply::error(500, "server_error", "the server failed to issue a token")
                    }
                }
            }
            Err(error) => {
                tracing::error!(tenant = %tenant, %error, "issuing a token failed");
                TokenReply::error(500, "server_error", "the server failed to issue a token")
            }
        }
    }

    fn refuse_limited(
        &self,
        client_ip: Option<IpAddr>,
        client_id: Option<&str>,
        limited: Limited,
    ) -> TokenReply {
        tracing::warn!(
            client_ip = %client_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into()),
            client_id = %client_id
                .map(|c| c.chars().take(64).collect::<String>())
                .unwrap_or_else(|| "none given".into()),
            limit = limited.by,
            retry_after = limited.retry_after_secs(),
            "token request rate limited after repeated failures"
        );
        TokenReply::rate_limited(limited)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_store::{SqliteStore, Store};

    use super::*;
    use crate::{create_tenant, IssuerSettings};

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    struct Setup {
        issuer: TokenIssuer,
        secret: String,
    }

    async fn setup() -> Setup {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let name = TenantName::new("demo").expect("name");
        let (_, secret) = create_tenant(&*store, &name).await.expect("tenant");
        let issuer = TokenIssuer::load_or_create(store, IssuerSettings::default())
            .await
            .expect("issuer");
        Setup { issuer, secret }
    }

    fn json(reply: &TokenReply) -> serde_json::Value {
        serde_json::from_slice(&reply.body).expect("json body")
    }

    fn assert_error(reply: &TokenReply, status: u16, error: &str) {
        assert_eq!(
            reply.status,
            status,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = json(reply);
        assert_eq!(body["error"], error);
        assert!(body["error_description"].is_string());
        assert!(body.get("access_token").is_none());
    }

    fn basic(id: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    }

    fn assert_success(s: &Setup, reply: &TokenReply) {
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = json(reply);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 600);
        let token = body["access_token"].as_str().expect("token");
        let claims = s.issuer.verifier().verify(token).expect("verify");
        assert_eq!(claims.tenant.as_str(), "demo");
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| *k == "cache-control" && v == "no-store"));
        assert!(!reply
            .body
            .windows(s.secret.len())
            .any(|w| w == s.secret.as_bytes()));
    }

    #[tokio::test]
    async fn success_with_body_credentials() {
        let s = setup().await;
        let body = format!(
            "grant_type=client_credentials&client_id=demo&client_secret={}",
            s.secret
        );
        let reply = s
            .issuer
            .client_credentials(None, None, FORM, body.as_bytes())
            .await;
        assert_success(&s, &reply);
        // Media type parameters and case do not matter.
        let reply = s
            .issuer
            .client_credentials(
                None,
                None,
                Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
                format!("{body}&scope=tunnel").as_bytes(),
            )
            .await;
        assert_success(&s, &reply);
    }

    #[tokio::test]
    async fn success_with_basic() {
        let s = setup().await;
        let auth = basic("demo", &s.secret);
        let reply = s
            .issuer
            .client_credentials(None, Some(&auth), FORM, b"grant_type=client_credentials")
            .await;
        assert_success(&s, &reply);
        // Percent-encoded values (RFC 6749 §2.3.1) are decoded.
        let encoded = s.secret.replace('_', "%5F").replace('-', "%2D");
        let auth = basic("%64emo", &encoded);
        let reply = s
            .issuer
            .client_credentials(None, Some(&auth), FORM, b"grant_type=client_credentials")
            .await;
        assert_success(&s, &reply);
    }

    #[tokio::test]
    async fn wrong_secret_unknown_tenant_and_bad_name_look_the_same() {
        let s = setup().await;
        let cases = [
            format!(
                "grant_type=client_credentials&client_id=demo&client_secret={}x",
                s.secret
            ),
            format!(
                "grant_type=client_credentials&client_id=nobody&client_secret={}",
                s.secret
            ),
            format!(
                "grant_type=client_credentials&client_id=Not%2FValid&client_secret={}",
                s.secret
            ),
        ];
        let mut bodies = Vec::new();
        for body in &cases {
            let reply = s
                .issuer
                .client_credentials(None, None, FORM, body.as_bytes())
                .await;
            assert_error(&reply, 401, "invalid_client");
            assert!(reply.headers.iter().any(|(k, _)| *k == "www-authenticate"));
            bodies.push(reply.body);
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "indistinguishable");
        let auth = basic("demo", "fsec_wrong");
        let reply = s
            .issuer
            .client_credentials(None, Some(&auth), FORM, b"grant_type=client_credentials")
            .await;
        assert_error(&reply, 401, "invalid_client");
    }

    #[tokio::test]
    async fn grant_type_is_required_and_must_be_client_credentials() {
        let s = setup().await;
        let creds = format!("client_id=demo&client_secret={}", s.secret);
        let reply = s
            .issuer
            .client_credentials(None, None, FORM, creds.as_bytes())
            .await;
        assert_error(&reply, 400, "invalid_request");
        let reply = s
            .issuer
            .client_credentials(None, None, FORM, format!("grant_type=&{creds}").as_bytes())
            .await;
        assert_error(&reply, 400, "invalid_request");
        let reply = s
            .issuer
            .client_credentials(
                None,
                None,
                FORM,
                format!("grant_type=password&{creds}").as_bytes(),
            )
            .await;
        assert_error(&reply, 400, "unsupported_grant_type");
        let reply = s
            .issuer
            .client_credentials(
                None,
                None,
                FORM,
                format!("grant_type=client_credentials&grant_type=client_credentials&{creds}")
                    .as_bytes(),
            )
            .await;
        assert_error(&reply, 400, "invalid_request");
        let reply = s
            .issuer
            .client_credentials(
                None,
                None,
                FORM,
                format!("grant_type=client_credentials&scope=admin&{creds}").as_bytes(),
            )
            .await;
        assert_error(&reply, 400, "invalid_scope");
    }

    #[test]
    fn scopes_granted() {
        let granted = |r: Option<&str>| granted_scope(r).map_err(|e| e.status);
        assert_eq!(granted(None), Ok("tunnel".to_owned()));
        assert_eq!(granted(Some("")), Ok("tunnel".to_owned()));
        assert_eq!(granted(Some("relay")), Ok("relay".to_owned()));
        assert_eq!(granted(Some("relay tunnel")), Ok("tunnel relay".to_owned()));
        assert_eq!(granted(Some("relay relay")), Ok("relay".to_owned()));
        assert_eq!(granted(Some("relay admin")), Err(400));
    }

    #[tokio::test]
    async fn a_relay_token_is_a_client_token_not_a_tunnel_token() {
        let s = setup().await;
        let creds = format!("client_id=demo&client_secret={}", s.secret);
        let reply = s
            .issuer
            .client_credentials(
                None,
                None,
                FORM,
                format!("grant_type=client_credentials&scope=relay&{creds}").as_bytes(),
            )
            .await;
        assert_eq!(reply.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        let token = body["access_token"].as_str().expect("token");
        let verifier = s.issuer.verifier();
        assert!(matches!(
            verifier.verify_async(token).await,
            Err(crate::AuthError::MissingScope)
        ));
        let claims = verifier.verify_client(token).await.expect("client token");
        assert_eq!(claims.scope, "relay");
    }

    #[tokio::test]
    async fn content_type_must_be_a_form() {
        let s = setup().await;
        let body = format!(
            "grant_type=client_credentials&client_id=demo&client_secret={}",
            s.secret
        );
        for content_type in [None, Some("application/json"), Some("text/plain"), Some("")] {
            let reply = s
                .issuer
                .client_credentials(None, None, content_type, body.as_bytes())
                .await;
            assert_error(&reply, 400, "invalid_request");
        }
    }

    #[tokio::test]
    async fn credentials_in_both_places_are_refused() {
        let s = setup().await;
        let auth = basic("demo", &s.secret);
        let body = format!(
            "grant_type=client_credentials&client_id=demo&client_secret={}",
            s.secret
        );
        let reply = s
            .issuer
            .client_credentials(None, Some(&auth), FORM, body.as_bytes())
            .await;
        assert_error(&reply, 400, "invalid_request");
        let reply = s
            .issuer
            .client_credentials(
                None,
                Some(&auth),
                FORM,
                b"grant_type=client_credentials&client_id=demo",
            )
            .await;
        assert_error(&reply, 400, "invalid_request");
    }

    #[tokio::test]
    async fn missing_or_malformed_client_authentication() {
        let s = setup().await;
        let reply = s
            .issuer
            .client_credentials(
                None,
                None,
                FORM,
                b"grant_type=client_credentials&client_id=demo",
            )
            .await;
        assert_error(&reply, 401, "invalid_client");
        let reply = s
            .issuer
            .client_credentials(
                None,
                Some("Bearer abc"),
                FORM,
                b"grant_type=client_credentials",
            )
            .await;
        assert_error(&reply, 401, "invalid_client");
        for auth in ["Basic !!!", "Basic ZGVtbw==" /* "demo", no colon */] {
            let reply = s
                .issuer
                .client_credentials(None, Some(auth), FORM, b"grant_type=client_credentials")
                .await;
            assert_error(&reply, 400, "invalid_request");
        }
    }

    #[tokio::test]
    async fn issued_tokens_name_the_secret() {
        let s = setup().await;
        let auth = basic("demo", &s.secret);
        let reply = s
            .issuer
            .client_credentials(None, Some(&auth), FORM, b"grant_type=client_credentials")
            .await;
        assert_success(&s, &reply);
        let token = json(&reply)["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let claims = s.issuer.verifier().verify(&token).expect("verify");
        let ids: Vec<String> = s
            .issuer
            .store
            .active_secrets(&claims.tenant, ferry_store::unix_now())
            .await
            .expect("secrets")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(claims.secret_id.as_ref(), ids.first());
    }

    async fn limited_setup(per_ip: u32, per_client: u32) -> Setup {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let name = TenantName::new("demo").expect("name");
        let (_, secret) = create_tenant(&*store, &name).await.expect("tenant");
        let issuer = TokenIssuer::load_or_create(
            store,
            IssuerSettings {
                rate_limit: crate::RateLimitSettings {
                    failures_per_ip: per_ip,
                    failures_per_client: per_client,
                    window: std::time::Duration::from_secs(60),
                },
                ..IssuerSettings::default()
            },
        )
        .await
        .expect("issuer");
        Setup { issuer, secret }
    }

    fn retry_after(reply: &TokenReply) -> Option<u64> {
        reply
            .headers
            .iter()
            .find(|(k, _)| *k == "retry-after")
            .and_then(|(_, v)| v.parse().ok())
    }

    #[tokio::test]
    async fn repeated_failures_from_one_address_get_429() {
        let s = limited_setup(3, 100).await;
        let attacker: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let wrong = basic("demo", "fsec_wrong");
        for _ in 0..3 {
            let reply = s
                .issuer
                .client_credentials(
                    Some(attacker),
                    Some(&wrong),
                    FORM,
                    b"grant_type=client_credentials",
                )
                .await;
            assert_error(&reply, 401, "invalid_client");
        }
        // Now even the right secret from that address waits.
        let right = basic("demo", &s.secret);
        let reply = s
            .issuer
            .client_credentials(
                Some(attacker),
                Some(&right),
                FORM,
                b"grant_type=client_credentials",
            )
            .await;
        assert_error(&reply, 429, "too_many_requests");
        assert_eq!(retry_after(&reply), Some(20));
        // Other addresses are not affected; requests without client authentication count, malformed ones not.
        let reply = s
            .issuer
            .client_credentials(
                Some(other),
                Some(&right),
                FORM,
                b"grant_type=client_credentials",
            )
            .await;
        assert_success(&s, &reply);
        for _ in 0..5 {
            let reply = s
                .issuer
                .client_credentials(Some(other), None, FORM, b"grant_type=password")
                .await;
            assert_eq!(reply.status, 400);
        }
        for _ in 0..3 {
            let reply = s
                .issuer
                .client_credentials(Some(other), None, FORM, b"grant_type=client_credentials")
                .await;
            assert_eq!(reply.status, 401);
        }
        let reply = s
            .issuer
            .client_credentials(
                Some(other),
                Some(&right),
                FORM,
                b"grant_type=client_credentials",
            )
            .await;
        assert_error(&reply, 429, "too_many_requests");
    }

    #[tokio::test]
    async fn repeated_failures_for_one_client_id_get_429_from_any_address() {
        let s = limited_setup(100, 2).await;
        let wrong = basic("demo", "fsec_wrong");
        for last in 1..=2u8 {
            let ip = IpAddr::from([192, 0, 2, last]);
            let reply = s
                .issuer
                .client_credentials(
                    Some(ip),
                    Some(&wrong),
                    FORM,
                    b"grant_type=client_credentials",
                )
                .await;
            assert_error(&reply, 401, "invalid_client");
        }
        let right = basic("demo", &s.secret);
        let reply = s
            .issuer
            .client_credentials(
                Some(IpAddr::from([192, 0, 2, 3])),
                Some(&right),
                FORM,
                b"grant_type=client_credentials",
            )
            .await;
        assert_error(&reply, 429, "too_many_requests");
        assert_eq!(retry_after(&reply), Some(30));
        // Successes cost nothing: another client id is still served.
        let other = TenantName::new("other").expect("name");
        let (_, other_secret) = create_tenant(&*s.issuer.store, &other)
            .await
            .expect("tenant");
        for _ in 0..5 {
            let reply = s
                .issuer
                .client_credentials(
                    Some(IpAddr::from([192, 0, 2, 3])),
                    Some(&basic("other", &other_secret)),
                    FORM,
                    b"grant_type=client_credentials",
                )
                .await;
            assert_eq!(reply.status, 200);
        }
    }
}
