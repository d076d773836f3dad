//! The JSON shapes of the management API, shared by the server (with their OpenAPI schemas) and the client.
//! Timestamps are unix seconds (the request log's `at_ms`: unix milliseconds); durations are milliseconds.

use ferry_proto::TenantSettings;
use ferry_store::{
    AdminKey, AuditEntry, ConnectionRecord, NodeRecord, RequestLogEntry, Role, SecretRecord,
    Tenant, UserRecord, LATENCY_BUCKETS_MS,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The regular expression of tenant names (see `ferry_proto::name`).
pub const TENANT_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest admin key name, in characters.
pub const MAX_KEY_NAME: usize = 200;
/// Longest duration setting: one day, in milliseconds.
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// Largest `max_body_size` setting (2^53, what every JSON reader keeps exactly).
pub const MAX_BODY_SIZE_SETTING: u64 = 1 << 53;
/// Largest `max_concurrent_requests` setting.
pub const MAX_CONCURRENT_SETTING: u64 = 1_000_000;
/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// Latest accepted timestamp (9999-12-31T23:59:59Z), so every value fits every database and date library.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799;
/// Widest statistics window: 7 days, in seconds.
pub const MAX_STATS_WINDOW: i64 = 7 * 86_400;

/// Per-tenant settings; every field is optional and unset means "the node's configured default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Interval of keep-alive PINGs on the tenant's tunnels, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub keepalive_interval_ms: Option<u64>,
    /// The connector's first reconnect delay after a lost tunnel, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub reconnect_min_delay_ms: Option<u64>,
    /// The connector's longest reconnect delay, in milliseconds (not below `reconnect_min_delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub reconnect_max_delay_ms: Option<u64>,
    /// How long the connector waits for a target's response head, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub target_response_timeout_ms: Option<u64>,
    /// The longest a relayed request may wait for its response to start, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub request_expiration_ms: Option<u64>,
    /// Cap on the tenant's requests in flight (429 beyond it); 0: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub max_concurrent_requests: Option<u64>,
    /// Largest request body accepted for the tenant, in bytes (413 beyond it); 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_992_u64)]
    pub max_body_size: Option<u64>,
    /// Clients of the relay must present a valid bearer token from the configured issuer (else 401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_auth: Option<bool>,
}

impl From<TenantSettings> for Settings {
    fn from(s: TenantSettings) -> Self {
        let TenantSettings {
            keepalive_interval_ms,
            reconnect_min_delay_ms,
            reconnect_max_delay_ms,
            target_response_timeout_ms,
            request_expiration_ms,
            max_concurrent_requests,
            max_body_size,
            require_client_auth,
        } = s;
        Self {
            keepalive_interval_ms,
            reconnect_min_delay_ms,
            reconnect_max_delay_ms,
            target_response_timeout_ms,
            request_expiration_ms,
            max_concurrent_requests,
            max_body_size,
            require_client_auth,
        }
    }
}

impl From<Settings> for TenantSettings {
    fn from(s: Settings) -> Self {
        let Settings {
            keepalive_interval_ms,
            reconnect_min_delay_ms,
            reconnect_max_delay_ms,
            target_response_timeout_ms,
            request_expiration_ms,
            max_concurrent_requests,
            max_body_size,
            require_client_auth,
        } = s;
        Self {
            keepalive_interval_ms,
            reconnect_min_delay_ms,
            reconnect_max_delay_ms,
            target_response_timeout_ms,
            request_expiration_ms,
            max_concurrent_requests,
            max_body_size,
            require_client_auth,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub settings: Settings,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            name: t.name.to_string(),
            display_name: t.display_name,
            description: t.description,
            settings: t.settings.into(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A new tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreate {
    /// 1 to 63 of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000, pattern = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
}

/// Changes to a tenant: fields left out stay as they are; `settings` is merged field by field (replace them
/// whole with `PUT /tenants/{name}/settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2000, pattern = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
}

/// A created tenant and its first connector secret (shown only in this response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    pub tenant: TenantView,
    pub secret: SecretCreated,
}

/// One page of tenants; pass `next` as `after` for the following page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantPage {
    pub items: Vec<TenantView>,
    pub next: Option<String>,
}

/// Paging and filtering of the tenant list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[param(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Only tenants whose name or display name contains this (case-insensitive).
    #[param(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A new connector secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretCreate {
    /// Unix seconds from which the secret is refused; must be in the future. Unset: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 253_402_300_799_i64)]
    pub expires_at: Option<i64>,
}

/// A created connector secret: `secret` is shown only in this response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretCreated {
    pub id: String,
    pub tenant: String,
    pub secret: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A connector secret's metadata (never the secret or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    pub id: String,
    pub tenant: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Neither revoked nor expired now.
    pub active: bool,
}

impl SecretView {
    pub fn new(record: SecretRecord, now: i64) -> Self {
        let active = record.revoked_at.is_none() && record.expires_at.is_none_or(|at| at > now);
        Self {
            id: record.id,
            tenant: record.tenant.to_string(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            active,
        }
    }
}

/// A tenant's secrets, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretView>,
}

/// A new admin key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminKeyCreate {
    /// Who holds the key or what it is for.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// What the key may do. Default `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleName>,
    /// The tenants an `operator` key may see (only for that role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 1000)]
    pub tenants: Option<Vec<String>>,
}

/// A created admin key: `key` (`fadm_…`) is shown only in this response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminKeyCreated {
    pub id: String,
    pub name: String,
    pub key: String,
    pub created_at: i64,
    pub role: RoleName,
    pub tenants: Vec<String>,
}

/// An admin key's metadata (never the key or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminKeyView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub role: RoleName,
    pub tenants: Vec<String>,
}

impl From<AdminKey> for AdminKeyView {
    fn from(k: AdminKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            role: k.role.into(),
            tenants: k.tenants.iter().map(ToString::to_string).collect(),
        }
    }
}

/// What a caller may do: `admin` everything (users and admin keys too); `operator` read and change only the
/// tenants of its scope (others answer 404); `viewer` read everything but secrets, change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Admin,
    Operator,
    Viewer,
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => RoleName::Admin,
            Role::Operator => RoleName::Operator,
            Role::Viewer => RoleName::Viewer,
        }
    }
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Admin => Role::Admin,
            RoleName::Operator => Role::Operator,
            RoleName::Viewer => Role::Viewer,
        }
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Role::from(*self).as_str())
    }
}

/// The pattern of user names: 1 to 64 of letters, digits and `.`, `_`, `@`, `-`, starting with a letter or digit.
pub const USER_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$";
/// Shortest and longest password, in characters.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

/// A new operator account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    pub name: String,
    pub role: RoleName,
    /// The tenants an `operator` may see (only for that role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 1000)]
    pub tenants: Option<Vec<String>>,
    /// 8 to 1024 characters. Unset: a password is generated and shown once in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
}

impl std::fmt::Debug for UserCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreate")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tenants", &self.tenants)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// An operator account (never its password or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: RoleName,
    pub tenants: Vec<String>,
    pub disabled: bool,
    /// Whether the account can sign in with a password (else only through OpenID Connect).
    pub has_password: bool,
    pub created_at: i64,
    pub last_sign_in_at: Option<i64>,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            name: u.name,
            role: u.role.into(),
            tenants: u.tenants.iter().map(ToString::to_string).collect(),
            disabled: u.disabled,
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
            last_sign_in_at: u.last_sign_in_at,
        }
    }
}

/// A created account; `password` is set only when it was generated, and shown only now.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserCreated {
    pub user: UserView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for UserCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreated")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Every account, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserView>,
}

/// A new password for an account (its sessions end). Unset: one is generated and shown once.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { *** }")
    }
}

/// The answer to a password change: the generated password, shown only now (unset when one was given).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PasswordChanged {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for PasswordChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChanged { *** }")
    }
}

/// Signing in with a name and password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    #[schema(max_length = 64)]
    pub name: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("name", &self.name)
            .field("password", &"***")
            .finish()
    }
}

/// How one may sign in: the answer to `GET /api/v1/session/methods`, for the sign-in page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignInMethods {
    /// With a name and password (`POST /api/v1/session`): always.
    pub password: bool,
    /// Through an OpenID Connect provider, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcMethod>,
}

/// Signing in through the OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OidcMethod {
    /// The provider's name, for "Sign in with …".
    pub provider_name: String,
    /// Where the browser goes to start (`/api/v1/session/oidc`).
    pub url: String,
}

/// Who is calling: the answer to `GET /api/v1/session` and to a sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `user:NAME`, `admin-key:ID` or a token's subject.
    pub subject: String,
    /// The account's name when signed in with a session.
    pub user: Option<String>,
    pub role: RoleName,
    /// The tenants an operator may see (empty for the other roles: they see every tenant).
    pub tenants: Vec<String>,
    /// With a session: what every change must carry in `X-CSRF-Token`.
    pub csrf_token: Option<String>,
    /// With a session: unix seconds when it ends however much it is used.
    pub expires_at: Option<i64>,
    /// With a session: unix seconds when it ends unless used before.
    pub idle_expires_at: Option<i64>,
}

/// Filtering and paging of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditLogQuery {
    /// Entries at or after this time (unix seconds).
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// Entries before this time (unix seconds).
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Only this actor's (`user:alice`, `admin-key:ID`, …).
    #[param(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Only this action (`tenant.create`, …).
    #[param(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The `next` cursor of the previous page: entries with a smaller id.
    #[param(minimum = 0)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object: String,
    /// Further detail; never a secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            object: e.object,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A page of the audit log, newest first; `next` goes into `before`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    pub next: Option<i64>,
}

/// Every admin key, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminKeyList {
    pub items: Vec<AdminKeyView>,
}

/// One tunnel of a connector, live or past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub tenant: String,
    pub connector_id: String,
    pub node: String,
    pub remote_addr: String,
    pub connected_at: i64,
    pub disconnected_at: Option<i64>,
    /// Not disconnected yet.
    pub live: bool,
}

impl From<ConnectionRecord> for ConnectionView {
    fn from(c: ConnectionRecord) -> Self {
        Self {
            live: c.disconnected_at.is_none(),
            id: c.id,
            tenant: c.tenant.to_string(),
            connector_id: c.connector_id,
            node: c.node,
            remote_addr: c.remote_addr,
            connected_at: c.connected_at,
            disconnected_at: c.disconnected_at,
        }
    }
}

/// One page of connections, newest first; pass `next` as `before` for the following page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionPage {
    pub items: Vec<ConnectionView>,
    pub next: Option<String>,
}

/// Which connections to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectionQuery {
    /// Only this tenant's.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only connections that are up now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page (`CONNECTED_AT:ID`).
    #[param(
        max_length = 256,
        pattern = "^-?[0-9]{1,18}:[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// A Ferry node as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_at: i64,
    /// Unix seconds of the last heartbeat heard.
    pub heartbeat_at: i64,
    /// The roles the node runs (`gateway`, `relay`, `management`, `worker`); empty when only the store knows it.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Whether the node is the cluster's active worker (it holds the worker lease).
    #[serde(default)]
    pub worker_active: bool,
    /// Connector tunnels open on the node.
    #[serde(default)]
    pub connectors: u64,
}

impl From<NodeRecord> for NodeView {
    fn from(n: NodeRecord) -> Self {
        Self {
            id: n.id,
            address: n.address,
            version: n.version,
            started_at: n.started_at,
            heartbeat_at: n.heartbeat_at,
            roles: Vec::new(),
            worker_active: false,
            connectors: 0,
        }
    }
}

/// Every known node, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    pub items: Vec<NodeView>,
}

/// The statistics window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Only this tenant's requests (default: every tenant's, summed).
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Start, unix seconds, inclusive (default: one hour before `to`).
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// End, unix seconds, exclusive (default: now). At most 7 days after `from`.
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

/// Responses by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusClasses {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl StatusClasses {
    pub fn from_array(a: [u64; 5]) -> Self {
        Self {
            informational: a[0],
            success: a[1],
            redirection: a[2],
            client_error: a[3],
            server_error: a[4],
        }
    }
}

/// Counts of one minute (or of the whole window, in `totals`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatsBucket {
    /// Unix seconds of the minute's start; the window's start in `totals`.
    pub minute: i64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub status_classes: StatusClasses,
    /// Requests per latency bucket: one count per bound of `latency_bounds_ms`, then the slower ones.
    pub latency_buckets: Vec<u64>,
    /// Median latency: the upper bound (ms) of its bucket; null without requests or beyond the last bound.
    pub p50_ms: Option<u64>,
    /// 99th percentile latency, the same way.
    pub p99_ms: Option<u64>,
}

/// Request statistics, summed over nodes (and over tenants unless one is chosen) per minute. Minutes without
/// requests are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatsReport {
    pub tenant: Option<String>,
    pub from: i64,
    pub to: i64,
    /// Upper bounds (ms, inclusive) of the latency buckets.
    pub latency_bounds_ms: Vec<u64>,
    pub minutes: Vec<StatsBucket>,
    pub totals: StatsBucket,
}

/// The latency bucket bounds, as the API reports them.
pub fn latency_bounds() -> Vec<u64> {
    LATENCY_BUCKETS_MS.to_vec()
}

/// One relayed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestLogView {
    pub id: i64,
    pub tenant: String,
    /// Unix milliseconds of the request's arrival.
    pub at_ms: i64,
    pub request_id: String,
    pub method: String,
    pub target: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub client_addr: String,
}

impl From<RequestLogEntry> for RequestLogView {
    fn from(e: RequestLogEntry) -> Self {
        Self {
            id: e.id,
            tenant: e.tenant.to_string(),
            at_ms: e.at_ms,
            request_id: e.request_id,
            method: e.method,
            target: e.target,
            path: e.path,
            status: e.status,
            duration_ms: e.duration_ms,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            client_addr: e.client_addr,
        }
    }
}

/// One page of the request log, newest first; pass `next` as `before` for the following page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestLogPage {
    pub items: Vec<RequestLogView>,
    pub next: Option<i64>,
    /// Whether the node that answered records requests (`server.relay.request_log`, off by default): `false`
    /// says why the list stays empty. Absent when not known (the CLI on a local store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<bool>,
}

/// Which request log entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestLogQuery {
    /// Only this tenant's.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only entries with an id below this (the `next` of the previous page).
    #[param(minimum = 0)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The edge gateway of the node that answered: its routes in file order and its upstream pools with each
/// server's health. It holds no secrets: every role may read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayReport {
    /// The node that answered; the gateway shown is its own (every gateway node loads the same config).
    pub node: String,
    /// Whether this node runs the edge gateway (the `gateway` role); its routes may still be none.
    pub enabled: bool,
    pub routes: Vec<GatewayRouteView>,
    pub upstreams: Vec<UpstreamView>,
}

/// One route: what it matches and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayRouteView {
    pub name: String,
    /// Hosts it matches (`*.example.com` for subdomains); empty: any host.
    pub hosts: Vec<String>,
    /// `prefix` (`path`), `exact` (`path_exact`) or `regex` (`path_regex`).
    pub path_kind: String,
    /// The prefix, exact path or regular expression.
    pub path: String,
    /// Methods it matches; empty: any.
    pub methods: Vec<String>,
    /// `upstream`, `relay`, `redirect` or `respond`.
    pub action: String,
    /// The upstream pool's name, `tenant/target`, the redirect's status and location, or the fixed response's
    /// status.
    pub target: String,
}

/// One upstream pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamView {
    pub name: String,
    /// `http`, `https` or `h2c`.
    pub protocol: String,
    /// Whether active health checks run; otherwise only transport failures eject a server.
    pub health_checks: bool,
    pub servers: Vec<UpstreamServerView>,
}

/// One server of a pool, with its health and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamServerView {
    /// `scheme://host:port`.
    pub url: String,
    pub weight: u32,
    /// Takes requests only while no other server of the pool is live.
    pub backup: bool,
    /// The most requests in flight at once; absent: no limit.
    pub max_conns: Option<u64>,
    /// `live` (takes requests), `ejected` (after transport failures, for `fail_timeout`) or `unhealthy`
    /// (failing its active health checks).
    pub health: String,
    pub in_flight: u64,
    /// Requests sent (each try counts) since the pool was loaded.
    pub requests: u64,
    /// Transport failures (connect, broken connection, head timeout) since the pool was loaded.
    pub failures: u64,
}
