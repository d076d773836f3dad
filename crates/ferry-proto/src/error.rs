//! The stable set of error codes Ferry answers with, their HTTP status, and the short body every error carries.
//!
//! Every error response Ferry (or a connector on its behalf) generates has the status below, a `ferry-error`
//! header with the code, an `x-request-id` header, and a one-line `text/plain` body:
//! `{code}: {message} (request id {id})`.

use http::StatusCode;

/// One cause of an error response. The code string is part of Ferry's public interface: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The path is not of the relay's shape, or a name is invalid.
    BadRequest,
    /// `Content-Length` and `Transfer-Encoding` both present, or otherwise ambiguous framing.
    AmbiguousFraming,
    /// A path segment would leave the target's base path.
    PathEscape,
    /// The tenant does not exist.
    UnknownTenant,
    /// The tenant exists but none of its online connectors serves that target.
    UnknownTarget,
    /// No connector of the tenant came online within the wait.
    NoConnector,
    /// The connector could not reach the target (connection refused, DNS, TLS).
    TargetUnreachable,
    /// The connector's connection attempt to the target timed out.
    TargetConnectTimeout,
    /// The target accepted the request but did not answer within the response timeout.
    TargetTimeout,
    /// The connector carrying the request went away before the response was complete.
    ConnectorLost,
    /// The request did not get a response within the overall request expiration.
    RequestExpired,
    /// The tenant's cap on concurrent requests is reached.
    TenantBusy,
    /// The request body is larger than allowed.
    PayloadTooLarge,
    /// The request headers are larger than allowed.
    HeadersTooLarge,
    /// Missing or invalid credentials.
    Unauthorized,
    /// The route requires a verified client certificate and the connection presented none (403).
    ClientCertificateRequired,
    /// The node is shutting down and takes nothing new.
    Draining,
    /// The listener holds its cap of connections (all together, or from the client's address); the newest
    /// connection is refused (503).
    TooManyConnections,
    /// No route for this path.
    NotFound,
    /// The tenant's connectors are on other nodes and the bus between nodes is unavailable (503).
    ClusterUnavailable,
    /// A bug or an unexpected local failure in Ferry.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::BadRequest,
        Self::AmbiguousFraming,
        Self::PathEscape,
        Self::UnknownTenant,
        Self::UnknownTarget,
        Self::NoConnector,
        Self::TargetUnreachable,
        Self::TargetConnectTimeout,
        Self::TargetTimeout,
        Self::ConnectorLost,
        Self::RequestExpired,
        Self::TenantBusy,
        Self::PayloadTooLarge,
        Self::HeadersTooLarge,
        Self::Unauthorized,
        Self::ClientCertificateRequired,
        Self::Draining,
        Self::TooManyConnections,
        Self::NotFound,
        Self::ClusterUnavailable,
        Self::Internal,
    ];

    /// The stable code string, sent in the `ferry-error` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::AmbiguousFraming => "ambiguous_framing",
            Self::PathEscape => "path_escape",
            Self::UnknownTenant => "unknown_tenant",
            Self::UnknownTarget => "unknown_target",
            Self::NoConnector => "no_connector",
            Self::TargetUnreachable => "target_unreachable",
            Self::TargetConnectTimeout => "target_connect_timeout",
            Self::TargetTimeout => "target_timeout",
            Self::ConnectorLost => "connector_lost",
            Self::RequestExpired => "request_expired",
            Self::TenantBusy => "tenant_busy",
            Self::PayloadTooLarge => "payload_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::Unauthorized => "unauthorized",
            Self::ClientCertificateRequired => "client_certificate_required",
            Self::Draining => "draining",
            Self::TooManyConnections => "too_many_connections",
            Self::NotFound => "not_found",
            Self::ClusterUnavailable => "cluster_unavailable",
            Self::Internal => "internal",
        }
    }

    /// Parse a code string (as found in a connector's `ferry-error` header).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::AmbiguousFraming | Self::PathEscape => StatusCode::BAD_REQUEST,
            Self::UnknownTenant | Self::UnknownTarget | Self::NotFound => StatusCode::NOT_FOUND,
            Self::NoConnector
            | Self::Draining
            | Self::TooManyConnections
            | Self::ClusterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TargetUnreachable | Self::ConnectorLost => StatusCode::BAD_GATEWAY,
            Self::TargetConnectTimeout | Self::TargetTimeout | Self::RequestExpired => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::TenantBusy => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ClientCertificateRequired => StatusCode::FORBIDDEN,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the client caused it (4xx), as opposed to a target, a connector or Ferry (5xx).
    pub fn is_client_error(self) -> bool {
        self.status().is_client_error()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error response, ready to be rendered by whichever side generates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The one-line body: `{code}: {message} (request id {id})\n`.
    pub fn body(&self, request_id: &str) -> String {
        format!(
            "{}: {} (request id {})\n",
            self.code, self.message, request_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
        }
        assert_eq!(ErrorCode::NoConnector.status(), 503);
        assert_eq!(ErrorCode::TargetTimeout.status(), 504);
        assert!(ErrorCode::UnknownTenant.is_client_error());
        assert!(!ErrorCode::ConnectorLost.is_client_error());
    }

    #[test]
    fn body_names_code_and_request_id() {
        let r = ErrorReply::new(
            ErrorCode::NoConnector,
            "no connector of tenant \"demo\" is online",
        );
        assert_eq!(
            r.body("abc"),
            "no_connector: no connector of tenant \"demo\" is online (request id abc)\n"
        );
    }
}
