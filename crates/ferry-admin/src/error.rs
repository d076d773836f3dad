//! The management API's error: a status, a stable machine-readable `code` and a message for people, rendered as
//! the JSON body `{"code","message"}`; and the mapping of store and auth errors onto it (classified once, here).
//! A code the relay also has (`bad_request`, `unauthorized`, `not_found`, `payload_too_large`, `internal`) takes
//! its status and headers from `ferry_proto::ErrorCode`, the one mapping; the API's own codes (`invalid`,
//! `forbidden`, `conflict`, `unsupported_media_type`, `store_unavailable`) describe resources, not relayed requests,
//! so they stay here (docs/operations.md, "Errors of the management API").

use axum::response::{IntoResponse, Response};
use ferry_proto::ErrorCode;
use ferry_store::StoreError;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response of the management API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `bad_request`, `invalid`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `store_unavailable`, `internal`.
    pub code: String,
    /// For people; never contains a secret.
    pub message: String,
}

/// A failed management operation, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// An error whose code the relay shares: status and code string from `ErrorCode`.
    pub fn from_code(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code.status(), code.as_str(), message)
    }

    /// 400: the request cannot be read (syntax, types of query parameters, path segments).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::BadRequest, message)
    }

    /// 422: the request is well-formed but a value is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500, logged here; the client sees no detail.
    pub fn internal(context: &str, error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %DisplayChain(error), "management api: {context}");
        Self::from_code(ErrorCode::Internal, "internal error; see the node's log")
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.clone(),
            message: self.message.clone(),
        }
    }
}

/// An error and its sources on one line.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound { kind, name } => {
                Self::not_found(format!("{kind} {name} not found"))
            }
            StoreError::AlreadyExists { kind, name } => {
                Self::conflict(format!("{kind} {name} already exists"))
            }
            StoreError::InvalidCursor { .. } => {
                Self::bad_request("the paging cursor is not one this API returned")
            }
            _ if error.is_transient() => {
                tracing::warn!(error = %DisplayChain(&error), "management api: store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store is unavailable; retry later",
                )
            }
            _ => Self::internal("store failed", &error),
        }
    }
}

impl From<ferry_auth::AuthError> for ApiError {
    fn from(error: ferry_auth::AuthError) -> Self {
        match error {
            ferry_auth::AuthError::Store(e) => e.into(),
            other => Self::internal("creating a secret failed", &other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let shared = ErrorCode::parse(&self.code).filter(|c| c.status() == self.status);
        if let Some(challenge) = shared.and_then(ErrorCode::www_authenticate) {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(challenge),
            );
        }
        if let Some(secs) = shared.and_then(ErrorCode::retry_after) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let e: ApiError = StoreError::NotFound {
            kind: "tenant",
            name: "x".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: ApiError = StoreError::AlreadyExists {
            kind: "tenant",
            name: "x".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.code, "conflict");
        let e: ApiError = StoreError::Corrupt {
            table: "t",
            reason: "secret detail".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("secret detail"), "{}", e.message);
    }

    #[test]
    fn unauthorized_carries_the_challenge() {
        let r = ApiError::unauthorized("no").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(http::header::WWW_AUTHENTICATE)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
    }
}
