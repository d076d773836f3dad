//! The connector's OAuth 2 client credentials (docs/protocol.md §1, RFC 6749 §4.4): POST a form to the token
//! endpoint of Ferry or of any OAuth 2 / OpenID Connect provider, the client id and secret in HTTP Basic
//! (§2.3.1), with optional `scope`, `audience` and `resource` (RFC 8707); keep the access token while it stays
//! valid for at least another minute.

use bytes::Bytes;
use ferry_config::{ConnectorConfig, Secret};
use ferry_tunnel::proxy::{ConnectError, Proxy, ProxyConnector, ProxyError};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, PROXY_AUTHORIZATION};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

/// A token is reused only while it stays valid for at least this long.
const MIN_REMAINING: Duration = Duration::from_secs(60);
/// The scope asked for unless configured otherwise.
const TUNNEL_SCOPE: &str = "tunnel";
/// Largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// Why no token was obtained.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token request to {url} failed: {message}")]
    Request { url: String, message: String },
    #[error("token request to {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("token endpoint {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("token endpoint {url} answered an invalid token response: {message}")]
    Invalid { url: String, message: String },
    /// The proxy refused the way to the token endpoint or failed.
    #[error("token request to {url}: {message}")]
    Proxy {
        url: String,
        /// The proxy's status, when it answered (407, 403, 502, …).
        status: Option<StatusCode>,
        /// What happened, for the log line (`proxy requires authentication`, …).
        what: &'static str,
        message: String,
    },
}

/// The token endpoint's refusal of the client itself (RFC 6749 §5.2): its `error` code and `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsRefused {
    /// `invalid_client` (unknown client, wrong, revoked or expired secret) or `unauthorized_client`.
    pub error: String,
    /// The node's reason, when it gave one.
    pub description: Option<String>,
}

impl TokenError {
    /// Whether the token endpoint refused the credentials themselves (`invalid_client`, `unauthorized_client`),
    /// which asking again with the same secret will not change; `None` for any other failure.
    pub fn credentials_refused(&self) -> Option<CredentialsRefused> {
        let TokenError::Refused { status, body, .. } = self else {
            return None;
        };
        if !matches!(status.as_u16(), 400 | 401) {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        let error = json.get("error")?.as_str()?;
        if !matches!(error, "invalid_client" | "unauthorized_client") {
            return None;
        }
        Some(CredentialsRefused {
            error: error.to_owned(),
            description: json
                .get("error_description")
                .and_then(|d| d.as_str())
                .map(str::to_owned),
        })
    }
}

/// What a token request asks for, beside the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenRequest {
    /// The OAuth 2 client id (the tenant name unless configured).
    pub(crate) client_id: String,
    /// `scope`; not sent when empty.
    pub(crate) scope: String,
    /// `audience`, if set.
    pub(crate) audience: Option<String>,
    /// `resource` (RFC 8707), if set.
    pub(crate) resource: Option<String>,
}

impl TokenRequest {
    /// The defaults for a tenant: client id = tenant name, scope `tunnel`, no audience or resource.
    pub(crate) fn for_tenant(tenant: &str) -> Self {
        TokenRequest {
            client_id: tenant.to_owned(),
            scope: TUNNEL_SCOPE.to_owned(),
            audience: None,
            resource: None,
        }
    }

    /// The request described by the connector configuration (`client_id`, `scope`, `audience`, `resource`);
    /// an invalid value is named by its setting.
    pub(crate) fn from_config(
        config: &ConnectorConfig,
        tenant: &str,
    ) -> Result<Self, (&'static str, String)> {
        let trimmed = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let client_id = trimmed(&config.client_id).unwrap_or_else(|| tenant.to_owned());
        if client_id.chars().any(char::is_control) {
            return Err((
                "connector.client_id",
                "must not contain control characters".to_owned(),
            ));
        }
        let resource = trimmed(&config.resource);
        if let Some(r) = &resource {
            if !is_absolute_uri(r) {
                return Err((
                    "connector.resource",
                    format!("{r:?} must be an absolute URI without a fragment"),
                ));
            }
        }
        Ok(TokenRequest {
            client_id,
            scope: config.scope.trim().to_owned(),
            audience: trimmed(&config.audience),
            resource,
        })
    }
}

/// Whether `value` looks like an absolute URI without a fragment (RFC 3986 §4.3: `scheme ":" rest`), as RFC 8707
/// requires of a resource indicator. `http::Uri` does not parse URNs, hence this small check.
fn is_absolute_uri(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !value.contains('#')
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Standard base64 with padding (RFC 4648 §4), for the HTTP Basic header. Twenty lines rather than a new
/// dependency of this crate for one header.
fn base64_standard(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 §2.3.1 applies it to the client id and
/// secret before they go into Basic).
fn form_encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s.trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}

/// The `Authorization` value for client id and secret.
fn basic_authorization(client_id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form_encode(client_id), form_encode(secret));
    format!("Basic {}", base64_standard(pair.as_bytes()))
}

/// Fetches and caches the connector's bearer token.
pub(crate) struct TokenSource {
    url: String,
    request: TokenRequest,
    secret: Secret,
    timeout: Duration,
    tls: rustls::ClientConfig,
    client: Client<HttpsConnector<ProxyConnector>, Full<Bytes>>,
    /// The proxy the token request goes through, if any, and whether it is sent to it in absolute form (after
    /// the proxy refused `CONNECT`).
    proxy: Option<Proxy>,
    forward: bool,
    cached: Option<(String, Instant)>,
}

/// The pooled client of the token request: directly or through `proxy` (`CONNECT`).
fn token_client(
    tls: &rustls::ClientConfig,
    proxy: Option<Proxy>,
    forward: bool,
) -> Client<HttpsConnector<ProxyConnector>, Full<Bytes>> {
    let mut connector = ProxyConnector::new(proxy, std::sync::Arc::new(tls.clone()));
    if forward {
        connector = connector.forward();
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new()).build(https)
}

/// The proxy's error somewhere in the chain of a client error.
fn proxy_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ProxyError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(p) = e.downcast_ref::<ProxyError>() {
            return Some(p);
        }
        // `ConnectError::Proxy` is transparent: its source is the proxy error's source, not the proxy error.
        if let Some(ConnectError::Proxy(p)) = e.downcast_ref::<ConnectError>() {
            return Some(p);
        }
        current = e.source();
    }
    None
}

impl TokenSource {
    /// `tls` must have no ALPN protocols set.
    pub(crate) fn new(
        url: String,
        tenant: String,
        secret: Secret,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Self {
        Self {
            url,
            request: TokenRequest::for_tenant(&tenant),
            secret,
            timeout,
            client: token_client(&tls, None, false),
            tls,
            proxy: None,
            forward: false,
            cached: None,
        }
    }

    /// Send the token request through `proxy` (`CONNECT`), when set.
    pub(crate) fn via_proxy(mut self, proxy: Option<Proxy>) -> Self {
        if proxy.is_some() {
            self.client = token_client(&self.tls, proxy.clone(), false);
        }
        self.proxy = proxy;
        self
    }

    /// Ask for `request` (client id, scope, audience, resource from the configuration) instead of the tenant's
    /// defaults. `run` calls `TokenSource::new(…).with_request(TokenRequest::from_config(&config, tenant)?)`.
    /// The OAuth 2 client id this source authenticates as.
    pub(crate) fn client_id(&self) -> &str {
        &self.request.client_id
    }

    pub(crate) fn with_request(mut self, request: TokenRequest) -> Self {
        self.request = request;
        self
    }

    /// The cached token if it stays valid for at least another minute, else a new one.
    pub(crate) async fn token(&mut self) -> Result<String, TokenError> {
        if let Some((token, expires)) = &self.cached {
            if *expires > Instant::now() + MIN_REMAINING {
                return Ok(token.clone());
            }
        }
        self.cached = None;
        let url = self.url.clone();
        let mut fetched = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .map_err(|_| TokenError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?;
        if let Err(TokenError::Proxy {
            status: Some(StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED),
            message,
            ..
        }) = &fetched
        {
            if !self.forward && self.url.starts_with("http://") {
                tracing::warn!(
                    token_url = %self.url, error = %message,
                    "the proxy refused CONNECT; sending the token request through it as plain http"
                );
                self.forward = true;
                self.client = token_client(&self.tls, self.proxy.clone(), true);
                fetched = tokio::time::timeout(self.timeout, self.fetch())
                    .await
                    .map_err(|_| TokenError::Timeout {
                        url: url.clone(),
                        timeout: self.timeout,
                    })?;
            }
        }
        let (token, expires_in) = fetched?;
        if let Some(secs) = expires_in {
            self.cached = Some((token.clone(), Instant::now() + Duration::from_secs(secs)));
        }
        Ok(token)
    }

    /// Forget the cached token (after the node refused it).
    pub(crate) fn invalidate(&mut self) {
        self.cached = None;
    }

    async fn fetch(&self) -> Result<(String, Option<u64>), TokenError> {
        let url = &self.url;
        let request_error = |message: String| TokenError::Request {
            url: url.clone(),
            message,
        };
        let mut params: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if !self.request.scope.is_empty() {
            params.push(("scope", &self.request.scope));
        }
        if let Some(audience) = &self.request.audience {
            params.push(("audience", audience));
        }
        if let Some(resource) = &self.request.resource {
            params.push(("resource", resource));
        }
        let form =
            serde_urlencoded::to_string(&params).map_err(|e| request_error(e.to_string()))?;
        let mut req = Request::post(url.as_str());
        if self.forward {
            if let Some(auth) = self.proxy.as_ref().and_then(Proxy::authorization) {
                req = req.header(PROXY_AUTHORIZATION, auth.clone());
            }
        }
        let req = req
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(
                AUTHORIZATION,
                basic_authorization(&self.request.client_id, self.secret.expose()),
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| request_error(e.to_string()))?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| match proxy_error(&e) {
                Some(p) => TokenError::Proxy {
                    url: url.clone(),
                    status: p.status(),
                    what: crate::proxy_failure(p),
                    message: p.to_string(),
                },
                None => request_error(chain(&e)),
            })?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| request_error(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(TokenError::Refused {
                url: url.clone(),
                status,
                body: text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .chars()
                    .take(512)
                    .collect(),
            });
        }
        let invalid = |message: &str| TokenError::Invalid {
            url: url.clone(),
            message: message.to_owned(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| invalid("not JSON"))?;
        let token = json
            .get("access_token")
            .and_then(|v| v.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no access_token"))?
            .to_owned();
        let expires_in = json.get("expires_in").and_then(serde_json::Value::as_u64);
        Ok((token, expires_in))
    }
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_standard(plain.as_bytes()), encoded);
        }
        assert_eq!(base64_standard(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        // "a b:c" form-encoded is "a+b%3Ac".
        assert_eq!(
            basic_authorization("a b:c", "s&t"),
            format!("Basic {}", base64_standard(b"a+b%3Ac:s%26t"))
        );
        assert_eq!(
            basic_authorization("demo", "fsec_abc-_1"),
            format!("Basic {}", base64_standard(b"demo:fsec_abc-_1"))
        );
    }

    #[test]
    fn request_options_from_config() {
        let mut config = ConnectorConfig::default();
        let r = TokenRequest::from_config(&config, "demo").expect("defaults");
        assert_eq!(r, TokenRequest::for_tenant("demo"));
        assert_eq!(r.scope, "tunnel");
        config.client_id = Some("ferry-connector-demo".to_owned());
        config.audience = Some("https://ferry.example.com".to_owned());
        config.resource = Some("urn:ferry:tunnel".to_owned());
        config.scope = " ".to_owned();
        let r = TokenRequest::from_config(&config, "demo").expect("set");
        assert_eq!(r.client_id, "ferry-connector-demo");
        assert_eq!(r.scope, "");
        assert_eq!(r.audience.as_deref(), Some("https://ferry.example.com"));
        assert_eq!(r.resource.as_deref(), Some("urn:ferry:tunnel"));
        for ok in ["https://ferry.example.com/tunnel", "urn:ferry:tunnel"] {
            assert!(is_absolute_uri(ok), "{ok}");
        }
        for bad in [
            "not a uri",
            "/relative",
            "https://x/#frag",
            "1http://x",
            "urn:",
        ] {
            assert!(!is_absolute_uri(bad), "{bad}");
        }
        config.resource = Some("not a uri".to_owned());
        let (setting, _) = TokenRequest::from_config(&config, "demo").expect_err("bad resource");
        assert_eq!(setting, "connector.resource");
    }

    /// Serve one token request on loopback; returns the URL and a receiver of the raw request.
    async fn one_shot(reply: &'static str) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/token", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and the body (its length from content-length), bounded.
            for _ in 0..100 {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&buf).to_string());
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
        (url, rx)
    }

    fn plain_tls() -> rustls::ClientConfig {
        let roots = ferry_tunnel::client::root_store(None).expect("roots");
        ferry_tunnel::client::client_config(roots).expect("tls")
    }

    #[tokio::test]
    async fn the_request_carries_basic_auth_and_the_options() {
        let (url, seen) =
            one_shot(r#"{"access_token":"tok","token_type":"Bearer","expires_in":300}"#).await;
        let mut source = TokenSource::new(
            url,
            "demo".to_owned(),
            Secret::new("fsec_s3cret"),
            plain_tls(),
            Duration::from_secs(5),
        )
        .with_request(TokenRequest {
            client_id: "ferry-demo".to_owned(),
            scope: "tunnel".to_owned(),
            audience: Some("ferry-tunnel".to_owned()),
            resource: Some("urn:ferry:tunnel".to_owned()),
        });
        assert_eq!(source.token().await.expect("token"), "tok");
        // Cached: no second request needed.
        assert_eq!(source.token().await.expect("cached"), "tok");
        let request = seen.await.expect("request");
        let lower = request.to_ascii_lowercase();
        assert!(
            lower.contains(
                &format!(
                    "authorization: {}",
                    basic_authorization("ferry-demo", "fsec_s3cret")
                )
                .to_ascii_lowercase()
            ),
            "{request}"
        );
        let body = request.split("\r\n\r\n").nth(1).expect("body");
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=tunnel&audience=ferry-tunnel&resource=urn%3Aferry%3Atunnel"
        );
        assert!(!body.contains("s3cret"), "the secret is not in the body");
    }

    #[test]
    fn refused_credentials_are_told_from_other_failures() {
        let refused = |status: u16, body: &str| TokenError::Refused {
            url: "http://n/oauth/token".to_owned(),
            status: StatusCode::from_u16(status).expect("status"),
            body: body.to_owned(),
        };
        let r = refused(
            401,
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
        )
        .credentials_refused()
        .expect("invalid_client");
        assert_eq!(r.error, "invalid_client");
        assert_eq!(
            r.description.as_deref(),
            Some("client authentication failed")
        );
        assert!(refused(400, r#"{"error":"unauthorized_client"}"#)
            .credentials_refused()
            .is_some());
        assert!(refused(429, r#"{"error":"invalid_client"}"#)
            .credentials_refused()
            .is_none());
        assert!(refused(400, r#"{"error":"invalid_request"}"#)
            .credentials_refused()
            .is_none());
        assert!(refused(401, "not json").credentials_refused().is_none());
    }
}
