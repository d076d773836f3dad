//! Ferry's management API: JSON over HTTP under `/api/v1/`, served on the node's admin listener.
//!
//! Owns: the operations on tenants, secrets, settings, connections, nodes, statistics, the request log and admin
//! keys with their validation ([`Admin`]); the node's gateway routes and upstream health (through [`GatewayView`]); their HTTP routes and the OpenAPI document generated from them
//! ([`AdminApi::router`], `/api/v1/openapi.json`); authentication of callers (admin keys hashed with SHA-256 in
//! the store, or bearer tokens judged by an [`AdminTokenCheck`]); the change hooks the node implements
//! ([`ChangeNotifier`]); and an HTTP client of the same API ([`client::Client`]), which with [`Admin`] implements
//! [`Management`] so the command line works locally or remotely alike.
//! Does not own: binding the admin listener or its configuration (`ferry-app`, `ferry-config`), verifying OIDC
//! tokens (`ferry-auth`, bridged by the node), pushing settings to connectors or closing their tunnels (the
//! relay, through [`ChangeNotifier`]), secret hashing (`ferry-auth`).
#![forbid(unsafe_code)]

mod accounts;
mod api;
pub mod auth;
pub mod client;
mod error;
pub mod model;
mod notify;
mod oidc;
mod openapi;
mod ops;
mod session;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use ferry_store::Store;

pub use accounts::generate_password;
pub use auth::{
    generate_admin_key, hash_admin_key, AdminTokenCheck, AdminTokenOutcome, Caller,
    ADMIN_KEY_PREFIX, CSRF_HEADER, SESSION_COOKIE,
};
pub use client::{Client, ManagementError};
pub use error::{ApiError, ErrorBody};
pub use notify::{ChangeNotifier, ClusterView, GatewayView, NoopNotifier, RecordingNotifier};
pub use oidc::{METHODS_PATH, OIDC_CALLBACK_PATH, OIDC_START_PATH, STATE_COOKIE};
pub use ops::{percentile, validate_settings, Admin};
pub use session::SessionSettings;

/// Default largest request body of the admin listener.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;

/// The path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The dashboard: one page, its script and its style sheet, in the binary.
pub(crate) mod dashboard {
    pub const INDEX: &str = include_str!("../dashboard/index.html");
    pub const SCRIPT: &str = include_str!("../dashboard/app.js");
    pub const STYLE: &str = include_str!("../dashboard/app.css");
    /// Everything from this origin, nothing inline, no framing.
    pub const CSP: &str =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

    pub fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        (
            [
                (http::header::CONTENT_TYPE, content_type),
                (http::header::CONTENT_SECURITY_POLICY, CSP),
                (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (http::header::CACHE_CONTROL, "no-cache"),
                (http::header::REFERRER_POLICY, "no-referrer"),
            ],
            body,
        )
            .into_response()
    }
}

/// The path of the session endpoint (sign in, who am I, sign out).
pub const SESSION_PATH: &str = "/api/v1/session";

/// Shared state of the routes.
pub(crate) struct State {
    pub admin: Admin,
    pub token_check: Option<Arc<dyn AdminTokenCheck>>,
    pub sessions: SessionSettings,
    pub limiter: session::SignInLimiter,
    pub sign_in: Option<Arc<ferry_auth::OidcSignIn>>,
}

/// Renders the node's metrics in the OpenMetrics text format, for `GET /metrics`.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The management API, ready to become a router.
pub struct AdminApi {
    admin: Admin,
    token_check: Option<Arc<dyn AdminTokenCheck>>,
    max_body_size: usize,
    metrics: Option<MetricsRenderer>,
    sessions: SessionSettings,
    sign_in: Option<Arc<ferry_auth::OidcSignIn>>,
}

impl AdminApi {
    /// The API on `store`: admin keys only, no change notifications, [`DEFAULT_MAX_BODY_SIZE`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            admin: Admin::new(store),
            token_check: None,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            metrics: None,
            sessions: SessionSettings::default(),
            sign_in: None,
        }
    }

    /// How long sessions last and how many sign-in attempts are taken.
    pub fn sessions(mut self, settings: SessionSettings) -> Self {
        self.sessions = settings;
        self
    }

    /// Serve the node's metrics at [`METRICS_PATH`] (without authentication, like the OpenAPI document: the
    /// admin listener is internal; Prometheus scrapes it).
    pub fn metrics(mut self, render: MetricsRenderer) -> Self {
        self.metrics = Some(render);
        self
    }

    /// Tell `notifier` after each successful change.
    pub fn notifier(mut self, notifier: Arc<dyn ChangeNotifier>) -> Self {
        self.admin = self.admin.with_notifier(notifier);
        self
    }

    /// Answer the nodes endpoint and live connections from the cluster's presence.
    pub fn cluster_view(mut self, view: Arc<dyn ClusterView>) -> Self {
        self.admin = self.admin.with_cluster_view(view);
        self
    }

    /// Answer the gateway endpoint from this node's edge gateway.
    pub fn gateway_view(mut self, view: Arc<dyn GatewayView>) -> Self {
        self.admin = self.admin.with_gateway_view(view);
        self
    }

    /// Say in request log pages whether this node records requests (`server.relay.request_log`).
    pub fn request_log(mut self, recording: bool) -> Self {
        self.admin = self.admin.with_request_log(recording);
        self
    }

    /// Accept bearer tokens that are not admin keys when `check` grants them.
    pub fn token_check(mut self, check: Arc<dyn AdminTokenCheck>) -> Self {
        self.token_check = Some(check);
        self
    }

    /// Offer signing in through the OpenID Connect provider (`/api/v1/session/oidc`).
    pub fn oidc_sign_in(mut self, sign_in: Arc<ferry_auth::OidcSignIn>) -> Self {
        self.sign_in = Some(sign_in);
        self
    }

    /// Refuse request bodies larger than `bytes` (413).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// The router: every operation under `/api/v1/` behind authentication, and the OpenAPI document at
    /// [`OPENAPI_PATH`] without it.
    pub fn router(self) -> axum::Router {
        use axum::response::IntoResponse as _;
        let state = Arc::new(State {
            admin: self.admin,
            token_check: self.token_check,
            limiter: session::SignInLimiter::new(&self.sessions),
            sessions: self.sessions,
            sign_in: self.sign_in,
        });
        let (routes, _) = api::routes().split_for_parts();
        let mut routes = routes.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
        if let Some(render) = self.metrics {
            routes = routes.route(
                METRICS_PATH,
                axum::routing::get(move || {
                    let render = render.clone();
                    async move {
                        (
                            [(
                                http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            render(),
                        )
                    }
                }),
            );
        }
        routes
            .route(
                "/",
                axum::routing::get(|| async {
                    dashboard::asset("text/html; charset=utf-8", dashboard::INDEX)
                }),
            )
            .route(
                "/dashboard/app.js",
                axum::routing::get(|| async {
                    dashboard::asset("text/javascript; charset=utf-8", dashboard::SCRIPT)
                }),
            )
            .route(
                "/dashboard/app.css",
                axum::routing::get(|| async {
                    dashboard::asset("text/css; charset=utf-8", dashboard::STYLE)
                }),
            )
            .route(
                OPENAPI_PATH,
                axum::routing::get(|| async {
                    match openapi_document() {
                        Ok(document) => {
                            ([(http::header::CONTENT_TYPE, "application/json")], document)
                                .into_response()
                        }
                        Err(e) => e.into_response(),
                    }
                }),
            )
            .fallback(|| async { ApiError::not_found("no such path in the management API") })
            .layer(DefaultBodyLimit::max(self.max_body_size))
            .with_state(state)
    }
}

/// The OpenAPI 3 document of the management API, as served at [`OPENAPI_PATH`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = openapi::base();
    doc.merge(api::routes().into_openapi());
    openapi::finish(doc)
}

/// The document served at [`OPENAPI_PATH`], rendered on the first request for it and kept from then on: a node
/// that is never asked for it does not hold its 170 KB (docs/performance.md, "Idle memory"), and the path, which
/// needs no authentication, costs a copy of a reference per request, not a rendering (about 2 ms).
fn openapi_document() -> Result<axum::body::Bytes, ApiError> {
    static DOCUMENT: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    if let Some(document) = DOCUMENT.get() {
        return Ok(document.clone());
    }
    let rendered = openapi()
        .to_pretty_json()
        .map_err(|e| ApiError::internal("rendering the OpenAPI document", &e))?;
    Ok(DOCUMENT
        .get_or_init(|| axum::body::Bytes::from(rendered))
        .clone())
}

/// Why serving the admin listener failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("admin listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Serve `router` on `listener` until `shutdown` resolves, then finish the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // The client's address keys the sign-in limits.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

/// The management API serving on its listener, owned by the node: it stops when [`AdminServer::shutdown`] is
/// called or when it is dropped.
pub struct AdminServer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl AdminServer {
    /// Serve `api` on `listener` in a task of its own.
    pub fn spawn(listener: tokio::net::TcpListener, api: AdminApi) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        match listener.local_addr() {
            Ok(addr) => tracing::info!(%addr, "management api started"),
            Err(_) => tracing::info!("management api started"),
        }
        let task = tokio::spawn(serve(listener, api.router(), async move {
            // Resolves on `true`, or with an error when the sender (the owner) is gone.
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        Self { stop, task }
    }

    /// Stop taking requests and wait, at most `deadline`, for those in flight.
    pub async fn shutdown(self, deadline: std::time::Duration) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(deadline, self.task).await {
            Ok(Ok(Ok(()))) => tracing::info!("management api stopped"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "management api failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "management api task failed"),
            Err(_) => tracing::warn!("management api did not stop within the deadline"),
        }
    }
}

/// The management operations, local ([`Admin`] on a store) or remote ([`Client`]): what the command line uses.
#[async_trait::async_trait]
pub trait Management: Send + Sync {
    async fn list_tenants(
        &self,
        query: &model::TenantListQuery,
    ) -> Result<model::TenantPage, ManagementError>;
    async fn get_tenant(&self, name: &str) -> Result<model::TenantView, ManagementError>;
    async fn create_tenant(
        &self,
        request: &model::TenantCreate,
    ) -> Result<model::TenantCreated, ManagementError>;
    async fn update_tenant(
        &self,
        name: &str,
        request: &model::TenantUpdate,
    ) -> Result<model::TenantView, ManagementError>;
    async fn delete_tenant(&self, name: &str) -> Result<(), ManagementError>;
    async fn get_settings(&self, name: &str) -> Result<model::Settings, ManagementError>;
    async fn put_settings(
        &self,
        name: &str,
        settings: &model::Settings,
    ) -> Result<model::Settings, ManagementError>;
    async fn patch_settings(
        &self,
        name: &str,
        settings: &model::Settings,
    ) -> Result<model::Settings, ManagementError>;
    async fn create_secret(
        &self,
        tenant: &str,
        request: &model::SecretCreate,
    ) -> Result<model::SecretCreated, ManagementError>;
    async fn list_secrets(&self, tenant: &str) -> Result<model::SecretList, ManagementError>;
    async fn revoke_secret(&self, tenant: &str, id: &str) -> Result<(), ManagementError>;
    async fn list_connections(
        &self,
        query: &model::ConnectionQuery,
    ) -> Result<model::ConnectionPage, ManagementError>;
    async fn list_nodes(&self) -> Result<model::NodeList, ManagementError>;
    async fn stats(&self, query: &model::StatsQuery)
        -> Result<model::StatsReport, ManagementError>;
    async fn request_log(
        &self,
        query: &model::RequestLogQuery,
    ) -> Result<model::RequestLogPage, ManagementError>;
    async fn create_admin_key(
        &self,
        request: &model::AdminKeyCreate,
    ) -> Result<model::AdminKeyCreated, ManagementError>;
    async fn list_admin_keys(&self) -> Result<model::AdminKeyList, ManagementError>;
    async fn revoke_admin_key(&self, id: &str) -> Result<(), ManagementError>;
    async fn create_user(
        &self,
        request: &model::UserCreate,
    ) -> Result<model::UserCreated, ManagementError>;
    async fn list_users(&self) -> Result<model::UserList, ManagementError>;
    async fn set_user_disabled(
        &self,
        name: &str,
        disabled: bool,
    ) -> Result<model::UserView, ManagementError>;
    async fn delete_user(&self, name: &str) -> Result<(), ManagementError>;
    async fn set_password(
        &self,
        name: &str,
        request: &model::PasswordChange,
    ) -> Result<model::PasswordChanged, ManagementError>;
    async fn audit_log(
        &self,
        query: &model::AuditLogQuery,
    ) -> Result<model::AuditPage, ManagementError>;
}

macro_rules! delegate {
    ($( $name:ident ( $( $arg:ident : $ty:ty ),* ) -> $ret:ty; )*) => {
        #[async_trait::async_trait]
        impl Management for Admin {
            $(
                async fn $name(&self, $( $arg: $ty ),*) -> Result<$ret, ManagementError> {
                    Ok(Admin::$name(self, $( $arg ),*).await?)
                }
            )*
        }
    };
}

delegate! {
    list_tenants(query: &model::TenantListQuery) -> model::TenantPage;
    get_tenant(name: &str) -> model::TenantView;
    create_tenant(request: &model::TenantCreate) -> model::TenantCreated;
    update_tenant(name: &str, request: &model::TenantUpdate) -> model::TenantView;
    delete_tenant(name: &str) -> ();
    get_settings(name: &str) -> model::Settings;
    put_settings(name: &str, settings: &model::Settings) -> model::Settings;
    patch_settings(name: &str, settings: &model::Settings) -> model::Settings;
    create_secret(tenant: &str, request: &model::SecretCreate) -> model::SecretCreated;
    list_secrets(tenant: &str) -> model::SecretList;
    revoke_secret(tenant: &str, id: &str) -> ();
    list_connections(query: &model::ConnectionQuery) -> model::ConnectionPage;
    list_nodes() -> model::NodeList;
    stats(query: &model::StatsQuery) -> model::StatsReport;
    request_log(query: &model::RequestLogQuery) -> model::RequestLogPage;
    create_admin_key(request: &model::AdminKeyCreate) -> model::AdminKeyCreated;
    list_admin_keys() -> model::AdminKeyList;
    revoke_admin_key(id: &str) -> ();
    create_user(request: &model::UserCreate) -> model::UserCreated;
    list_users() -> model::UserList;
    set_user_disabled(name: &str, disabled: bool) -> model::UserView;
    delete_user(name: &str) -> ();
    set_password(name: &str, request: &model::PasswordChange) -> model::PasswordChanged;
    audit_log(query: &model::AuditLogQuery) -> model::AuditPage;
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_accounts;
