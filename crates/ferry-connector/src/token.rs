//! The connector's OAuth 2 client credentials (docs/protocol.md §1): POST the tenant name and secret as a form
//! to the token endpoint, keep the access token while it stays valid for at least another minute.

use bytes::Bytes;
use ferry_config::Secret;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

/// A token is reused only while it stays valid for at least this long.
const MIN_REMAINING: Duration = Duration::from_secs(60);
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
}

/// Fetches and caches the connector's bearer token.
pub(crate) struct TokenSource {
    url: String,
    tenant: String,
    secret: Secret,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    cached: Option<(String, Instant)>,
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
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            url,
            tenant,
            secret,
            timeout,
            client: Client::builder(TokioExecutor::new()).build(https),
            cached: None,
        }
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
        let (token, expires_in) = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .map_err(|_| TokenError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })??;
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
        let form = serde_urlencoded::to_string([
            ("grant_type", "client_credentials"),
            ("client_id", self.tenant.as_str()),
            ("client_secret", self.secret.expose()),
        ])
        .map_err(|e| request_error(e.to_string()))?;
        let req = Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| request_error(e.to_string()))?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| request_error(chain(&e)))?;
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
