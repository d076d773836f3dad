//! The HTTP face of the management API: request extractors that answer with Ferry's JSON errors, one thin
//! handler per operation (each documented for OpenAPI with `#[utoipa::path]`), and the router they form.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::model::*;
use crate::{Admin, State};

type ApiResult<T> = Result<T, ApiError>;

/// The operations acting for the authenticated caller (see `auth.rs`): what its role and tenant scope allow.
pub(crate) struct Acting(pub Admin);

impl FromRequestParts<Arc<State>> for Acting {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<State>,
    ) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(Self(state.admin.acting_as(caller.clone()))),
            None => Err(ApiError::unauthorized("not signed in")),
        }
    }
}

/// A JSON body whose rejections are Ferry errors: 400 unreadable, 422 wrong shape, 413 too large, 415 not JSON.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let text = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => ApiError::invalid(text),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a body with Content-Type: application/json",
        ),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::from_code(
            ferry_proto::ErrorCode::PayloadTooLarge,
            "the request body is larger than the admin listener accepts",
        ),
        _ => ApiError::bad_request(text),
    }
}

/// A query string whose rejections are 400 with Ferry's JSON error.
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Path parameters whose rejections are 400 with Ferry's JSON error.
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", operation_id = "listTenants",
    params(TenantListQuery),
    responses((status = 200, description = "One page of tenants, by name", body = TenantPage)))]
async fn list_tenants(
    Acting(admin): Acting,
    ApiQuery(q): ApiQuery<TenantListQuery>,
) -> ApiResult<Json<TenantPage>> {
    admin.list_tenants(&q).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", operation_id = "createTenant",
    request_body = TenantCreate,
    responses(
        (status = 201, description = "Created, with its first connector secret (shown only now)", body = TenantCreated),
        (status = 409, description = "The tenant exists", body = ErrorBody)))]
async fn create_tenant(
    Acting(admin): Acting,
    ApiJson(body): ApiJson<TenantCreate>,
) -> ApiResult<Response> {
    admin.create_tenant(&body).await.map(created)
}

#[utoipa::path(get, path = "/api/v1/tenants/{name}", tag = "tenants", operation_id = "getTenant",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn get_tenant(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    admin.get_tenant(&name).await.map(Json)
}

#[utoipa::path(patch, path = "/api/v1/tenants/{name}", tag = "tenants", operation_id = "updateTenant",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body = TenantUpdate,
    responses(
        (status = 200, description = "The updated tenant", body = TenantView),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn update_tenant(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<TenantUpdate>,
) -> ApiResult<Json<TenantView>> {
    admin.update_tenant(&name, &body).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/tenants/{name}", tag = "tenants", operation_id = "deleteTenant",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses(
        (status = 204, description = "Deleted with all its secrets; its connectors are disconnected"),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn delete_tenant(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    admin
        .delete_tenant(&name)
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/tenants/{name}/settings", tag = "settings", operation_id = "getSettings",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses(
        (status = 200, description = "The tenant's settings (unset: the node's default)", body = Settings),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn get_settings(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Settings>> {
    admin.get_settings(&name).await.map(Json)
}

#[utoipa::path(put, path = "/api/v1/tenants/{name}/settings", tag = "settings", operation_id = "replaceSettings",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body = Settings,
    responses(
        (status = 200, description = "The settings now in force", body = Settings),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn put_settings(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Settings>,
) -> ApiResult<Json<Settings>> {
    admin.put_settings(&name, &body).await.map(Json)
}

#[utoipa::path(patch, path = "/api/v1/tenants/{name}/settings", tag = "settings", operation_id = "mergeSettings",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body = Settings,
    responses(
        (status = 200, description = "The settings now in force", body = Settings),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn patch_settings(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Settings>,
) -> ApiResult<Json<Settings>> {
    admin.patch_settings(&name, &body).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/tenants/{name}/secrets", tag = "secrets", operation_id = "createSecret",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body = SecretCreate,
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = SecretCreated),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn create_secret(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SecretCreate>,
) -> ApiResult<Response> {
    admin.create_secret(&name, &body).await.map(created)
}

#[utoipa::path(get, path = "/api/v1/tenants/{name}/secrets", tag = "secrets", operation_id = "listSecrets",
    params(("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses(
        (status = 200, description = "Every secret's metadata, newest first", body = SecretList),
        (status = 404, description = "No such tenant", body = ErrorBody)))]
async fn list_secrets(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<SecretList>> {
    admin.list_secrets(&name).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/tenants/{name}/secrets/{id}", tag = "secrets", operation_id = "revokeSecret",
    params(
        ("name" = String, Path, description = "Tenant name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"),
        ("id" = String, Path, description = "Secret id", pattern = "^[\\x21-\\x7e]{1,128}$")),
    responses(
        (status = 204, description = "Revoked; connectors that used it are disconnected"),
        (status = 404, description = "No such tenant or unrevoked secret", body = ErrorBody)))]
async fn revoke_secret(
    Acting(admin): Acting,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    admin
        .revoke_secret(&name, &id)
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/connections", tag = "observe", operation_id = "listConnections",
    params(ConnectionQuery),
    responses((status = 200, description = "Connections, newest first", body = ConnectionPage)))]
async fn list_connections(
    Acting(admin): Acting,
    ApiQuery(q): ApiQuery<ConnectionQuery>,
) -> ApiResult<Json<ConnectionPage>> {
    admin.list_connections(&q).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "observe", operation_id = "listNodes",
    responses((status = 200, description = "Known nodes", body = NodeList)))]
async fn list_nodes(Acting(admin): Acting) -> ApiResult<Json<NodeList>> {
    admin.list_nodes().await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/gateway", tag = "observe", operation_id = "getGateway",
    responses((status = 200, description = "This node's gateway routes and upstream servers with their health", body = GatewayReport)))]
async fn get_gateway(Acting(admin): Acting) -> ApiResult<Json<GatewayReport>> {
    Ok(Json(admin.gateway()))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "observe", operation_id = "getStats",
    params(StatsQuery),
    responses((status = 200, description = "Request statistics per minute", body = StatsReport)))]
async fn stats(
    Acting(admin): Acting,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<StatsReport>> {
    admin.stats(&q).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/request-log", tag = "observe", operation_id = "getRequestLog",
    params(RequestLogQuery),
    responses((status = 200, description = "Request log entries, newest first", body = RequestLogPage)))]
async fn request_log(
    Acting(admin): Acting,
    ApiQuery(q): ApiQuery<RequestLogQuery>,
) -> ApiResult<Json<RequestLogPage>> {
    admin.request_log(&q).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/admin-keys", tag = "admin-keys", operation_id = "createAdminKey",
    request_body = AdminKeyCreate,
    responses((status = 201, description = "Created; the key is shown only now", body = AdminKeyCreated)))]
async fn create_admin_key(
    Acting(admin): Acting,
    ApiJson(body): ApiJson<AdminKeyCreate>,
) -> ApiResult<Response> {
    admin.create_admin_key(&body).await.map(created)
}

#[utoipa::path(get, path = "/api/v1/admin-keys", tag = "admin-keys", operation_id = "listAdminKeys",
    responses((status = 200, description = "Every admin key's metadata, newest first", body = AdminKeyList)))]
async fn list_admin_keys(Acting(admin): Acting) -> ApiResult<Json<AdminKeyList>> {
    admin.list_admin_keys().await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/admin-keys/{id}", tag = "admin-keys", operation_id = "revokeAdminKey",
    params(("id" = String, Path, description = "Admin key id", pattern = "^[\\x21-\\x7e]{1,128}$")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such unrevoked key", body = ErrorBody)))]
async fn revoke_admin_key(
    Acting(admin): Acting,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    admin
        .revoke_admin_key(&id)
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", operation_id = "createUser",
    request_body = UserCreate,
    responses(
        (status = 201, description = "Created; a generated password is shown only now", body = UserCreated),
        (status = 403, description = "Only an admin manages users", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
async fn create_user(
    Acting(admin): Acting,
    ApiJson(body): ApiJson<UserCreate>,
) -> ApiResult<Response> {
    admin.create_user(&body).await.map(created)
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", operation_id = "listUsers",
    responses(
        (status = 200, description = "Every account, by name", body = UserList),
        (status = 403, description = "Only an admin sees users", body = ErrorBody)))]
async fn list_users(Acting(admin): Acting) -> ApiResult<Json<UserList>> {
    admin.list_users().await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", operation_id = "getUser",
    params(("name" = String, Path, description = "User name", pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")),
    responses(
        (status = 200, description = "The account", body = UserView),
        (status = 404, description = "No such account", body = ErrorBody)))]
async fn get_user(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    admin.get_user(&name).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", operation_id = "deleteUser",
    params(("name" = String, Path, description = "User name", pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")),
    responses(
        (status = 204, description = "Deleted; its sessions have ended"),
        (status = 404, description = "No such account", body = ErrorBody)))]
async fn delete_user(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    admin
        .delete_user(&name)
        .await
        .map(|()| StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users/{name}/disable", tag = "users", operation_id = "disableUser",
    params(("name" = String, Path, description = "User name", pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")),
    responses(
        (status = 200, description = "Disabled; its sessions have ended", body = UserView),
        (status = 404, description = "No such account", body = ErrorBody)))]
async fn disable_user(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    admin.set_user_disabled(&name, true).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/users/{name}/enable", tag = "users", operation_id = "enableUser",
    params(("name" = String, Path, description = "User name", pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")),
    responses(
        (status = 200, description = "Enabled", body = UserView),
        (status = 404, description = "No such account", body = ErrorBody)))]
async fn enable_user(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    admin.set_user_disabled(&name, false).await.map(Json)
}

#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users", operation_id = "setPassword",
    params(("name" = String, Path, description = "User name", pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed; its sessions have ended; a generated password is shown only now", body = PasswordChanged),
        (status = 404, description = "No such account", body = ErrorBody)))]
async fn set_password(
    Acting(admin): Acting,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<Json<PasswordChanged>> {
    admin.set_password(&name, &body).await.map(Json)
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", operation_id = "getAuditLog",
    params(AuditLogQuery),
    responses(
        (status = 200, description = "Audit entries, newest first", body = AuditPage),
        (status = 403, description = "Only an admin reads the audit log", body = ErrorBody)))]
async fn audit_log(
    Acting(admin): Acting,
    ApiQuery(q): ApiQuery<AuditLogQuery>,
) -> ApiResult<Json<AuditPage>> {
    admin.audit_log(&q).await.map(Json)
}

/// Every documented route, with its part of the OpenAPI document.
pub(crate) fn routes() -> OpenApiRouter<Arc<State>> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
        .routes(routes!(get_settings, put_settings, patch_settings))
        .routes(routes!(create_secret, list_secrets))
        .routes(routes!(revoke_secret))
        .routes(routes!(list_connections))
        .routes(routes!(list_nodes))
        .routes(routes!(get_gateway))
        .routes(routes!(stats))
        .routes(routes!(request_log))
        .routes(routes!(create_admin_key, list_admin_keys))
        .routes(routes!(revoke_admin_key))
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, delete_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(set_password))
        .routes(routes!(audit_log))
        .routes(routes!(
            crate::session::sign_in,
            crate::session::who_am_i,
            crate::session::sign_out
        ))
        .routes(routes!(crate::oidc::methods))
        .routes(routes!(crate::oidc::start))
        .routes(routes!(crate::oidc::callback))
}
