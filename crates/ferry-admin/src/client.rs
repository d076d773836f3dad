//! An HTTP client of the management API (reqwest), for the command line's remote mode: the same operations and
//! shapes as [`crate::Admin`], errors of the API turned back into [`ApiError`].

use http::StatusCode;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiError, ErrorBody};
use crate::model::*;
use crate::Management;

/// Why a management operation failed, locally or remotely.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// The operation was refused (locally, or by the remote API with its `{"code","message"}`).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The API could not be reached or the exchange broke off.
    #[error("cannot reach the management API at {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API answered something this client does not understand.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// The base URL is not usable.
    #[error("management API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
}

/// A client of one node's management API.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    key: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the API at `base` (the admin listener's URL, e.g. `http://127.0.0.1:8081`), authenticating
    /// with `key` (an admin key or a token) as a bearer credential.
    pub fn new(base: &str, key: &str) -> Result<Self, ManagementError> {
        let bad = |reason: &str| ManagementError::BadUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let mut url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must start with http:// or https://"));
        }
        if url.cannot_be_a_base() {
            return Err(bad("cannot be a base URL"));
        }
        url.set_query(None);
        url.set_fragment(None);
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| ManagementError::Transport {
                url: base.to_owned(),
                source: e,
            })?;
        Ok(Self {
            base: url,
            key: key.to_owned(),
            http,
        })
    }

    /// `base` + `/api/v1/` + the segments, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&(dyn ErasedQuery + Sync)>,
        body: Option<&(dyn erased_body::Body + Sync)>,
    ) -> Result<Option<T>, ManagementError> {
        let mut url = self.url(segments);
        if let Some(q) = query {
            let encoded = q.encode().map_err(|reason| ManagementError::Protocol {
                url: url.to_string(),
                reason,
            })?;
            if !encoded.is_empty() {
                url.set_query(Some(&encoded));
            }
        }
        let shown = url.to_string();
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.key)
            .header(http::header::ACCEPT, "application/json");
        if let Some(body) = body {
            let bytes = body.to_json().map_err(|reason| ManagementError::Protocol {
                url: shown.clone(),
                reason,
            })?;
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ManagementError::Transport {
                url: shown.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ManagementError::Transport {
                url: shown.clone(),
                source,
            })?;
        if !status.is_success() {
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => ApiError {
                    status,
                    code: body.code,
                    message: body.message,
                }
                .into(),
                Err(_) => ManagementError::Protocol {
                    url: shown,
                    reason: format!(
                        "HTTP {status} without an error body: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ),
                },
            });
        }
        if status == reqwest::StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ManagementError::Protocol {
                url: shown,
                reason: e.to_string(),
            })
    }

    async fn expect<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&(dyn ErasedQuery + Sync)>,
        body: Option<&(dyn erased_body::Body + Sync)>,
    ) -> Result<T, ManagementError> {
        let url = self.url(segments).to_string();
        self.call(method, segments, query, body)
            .await?
            .ok_or(ManagementError::Protocol {
                url,
                reason: "empty body".into(),
            })
    }

    async fn no_content(&self, method: Method, segments: &[&str]) -> Result<(), ManagementError> {
        self.call::<serde_json::Value>(method, segments, None, None)
            .await
            .map(|_| ())
    }
}

/// A query struct, serialised to `a=1&b=2`.
trait ErasedQuery {
    fn encode(&self) -> Result<String, String>;
}

impl<T: Serialize> ErasedQuery for T {
    fn encode(&self) -> Result<String, String> {
        serde_urlencoded::to_string(self).map_err(|e| e.to_string())
    }
}

mod erased_body {
    /// A body serialised to JSON.
    pub trait Body {
        fn to_json(&self) -> Result<Vec<u8>, String>;
    }

    impl<T: serde::Serialize> Body for T {
        fn to_json(&self) -> Result<Vec<u8>, String> {
            serde_json::to_vec(self).map_err(|e| e.to_string())
        }
    }
}

#[async_trait::async_trait]
impl Management for Client {
    async fn list_tenants(&self, query: &TenantListQuery) -> Result<TenantPage, ManagementError> {
        self.expect(Method::GET, &["tenants"], Some(query), None)
            .await
    }

    async fn get_tenant(&self, name: &str) -> Result<TenantView, ManagementError> {
        self.expect(Method::GET, &["tenants", name], None, None)
            .await
    }

    async fn create_tenant(
        &self,
        request: &TenantCreate,
    ) -> Result<TenantCreated, ManagementError> {
        self.expect(Method::POST, &["tenants"], None, Some(request))
            .await
    }

    async fn update_tenant(
        &self,
        name: &str,
        request: &TenantUpdate,
    ) -> Result<TenantView, ManagementError> {
        self.expect(Method::PATCH, &["tenants", name], None, Some(request))
            .await
    }

    async fn delete_tenant(&self, name: &str) -> Result<(), ManagementError> {
        self.no_content(Method::DELETE, &["tenants", name]).await
    }

    async fn get_settings(&self, name: &str) -> Result<Settings, ManagementError> {
        self.expect(Method::GET, &["tenants", name, "settings"], None, None)
            .await
    }

    async fn put_settings(
        &self,
        name: &str,
        settings: &Settings,
    ) -> Result<Settings, ManagementError> {
        self.expect(
            Method::PUT,
            &["tenants", name, "settings"],
            None,
            Some(settings),
        )
        .await
    }

    async fn patch_settings(
        &self,
        name: &str,
        settings: &Settings,
    ) -> Result<Settings, ManagementError> {
        self.expect(
            Method::PATCH,
            &["tenants", name, "settings"],
            None,
            Some(settings),
        )
        .await
    }

    async fn create_secret(
        &self,
        tenant: &str,
        request: &SecretCreate,
    ) -> Result<SecretCreated, ManagementError> {
        self.expect(
            Method::POST,
            &["tenants", tenant, "secrets"],
            None,
            Some(request),
        )
        .await
    }

    async fn list_secrets(&self, tenant: &str) -> Result<SecretList, ManagementError> {
        self.expect(Method::GET, &["tenants", tenant, "secrets"], None, None)
            .await
    }

    async fn revoke_secret(&self, tenant: &str, id: &str) -> Result<(), ManagementError> {
        self.no_content(Method::DELETE, &["tenants", tenant, "secrets", id])
            .await
    }

    async fn list_connections(
        &self,
        query: &ConnectionQuery,
    ) -> Result<ConnectionPage, ManagementError> {
        self.expect(Method::GET, &["connections"], Some(query), None)
            .await
    }

    async fn list_nodes(&self) -> Result<NodeList, ManagementError> {
        self.expect(Method::GET, &["nodes"], None, None).await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<StatsReport, ManagementError> {
        self.expect(Method::GET, &["stats"], Some(query), None)
            .await
    }

    async fn request_log(
        &self,
        query: &RequestLogQuery,
    ) -> Result<RequestLogPage, ManagementError> {
        self.expect(Method::GET, &["request-log"], Some(query), None)
            .await
    }

    async fn create_admin_key(
        &self,
        request: &AdminKeyCreate,
    ) -> Result<AdminKeyCreated, ManagementError> {
        self.expect(Method::POST, &["admin-keys"], None, Some(request))
            .await
    }

    async fn list_admin_keys(&self) -> Result<AdminKeyList, ManagementError> {
        self.expect(Method::GET, &["admin-keys"], None, None).await
    }

    async fn revoke_admin_key(&self, id: &str) -> Result<(), ManagementError> {
        self.no_content(Method::DELETE, &["admin-keys", id]).await
    }

    async fn create_user(&self, request: &UserCreate) -> Result<UserCreated, ManagementError> {
        self.expect(Method::POST, &["users"], None, Some(request))
            .await
    }

    async fn list_users(&self) -> Result<UserList, ManagementError> {
        self.expect(Method::GET, &["users"], None, None).await
    }

    async fn set_user_disabled(
        &self,
        name: &str,
        disabled: bool,
    ) -> Result<UserView, ManagementError> {
        let verb = if disabled { "disable" } else { "enable" };
        self.expect(Method::POST, &["users", name, verb], None, None)
            .await
    }

    async fn delete_user(&self, name: &str) -> Result<(), ManagementError> {
        self.no_content(Method::DELETE, &["users", name]).await
    }

    async fn set_password(
        &self,
        name: &str,
        request: &PasswordChange,
    ) -> Result<PasswordChanged, ManagementError> {
        self.expect(
            Method::PUT,
            &["users", name, "password"],
            None,
            Some(request),
        )
        .await
    }

    async fn audit_log(&self, query: &AuditLogQuery) -> Result<AuditPage, ManagementError> {
        self.expect(Method::GET, &["audit"], Some(query), None)
            .await
    }
}
