//! The stable set of error codes Ferry answers with, their HTTP status, and the short body every error carries.
//!
//! Every error response Ferry (or a connector on its behalf) generates has the status below, a `ferry-error`
//! header with the code, an `x-request-id` header, and a one-line `text/plain` body:
//! `{code}: {message} (request id {id})`. The whole mapping (code → status → headers such as `Retry-After`,
//! `WWW-Authenticate` and `Allow`) is here; `ferry-http::error_response` is its only renderer, and
//! docs/operations.md lists every code (checked by a test below).

use http::StatusCode;

/// One cause of an error response. The code string is part of Ferry's public interface: never rename one.
/// Serializes as its code string (`"tenant_busy"`), in every serde format, so that it can cross the bus.
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
    /// The endpoint does not take this method (405, with `Allow`).
    MethodNotAllowed,
    /// The client sent nothing of its request body for the idle timeout (408).
    RequestTimeout,
    /// A gateway route's rate limit is reached for this client (429, with `Retry-After`).
    RouteRateLimited,
    /// The token endpoint has its cap of token checks running and the request waited too long for one (503).
    TokenEndpointBusy,
    /// Every server of a gateway upstream has its `max_conns` requests in flight (503, with `Retry-After`).
    UpstreamBusy,
    /// Too many sign-in attempts to the management API for one account or from one address (429, with
    /// `Retry-After`).
    SignInRateLimited,
    /// A TLS request whose host is served with other client-certificate settings than the name the client
    /// sent in its handshake (SNI): it must open a connection for that host (421).
    MisdirectedRequest,
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
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::RouteRateLimited,
        Self::TokenEndpointBusy,
        Self::UpstreamBusy,
        Self::SignInRateLimited,
        Self::MisdirectedRequest,
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
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::RouteRateLimited => "route_rate_limited",
            Self::TokenEndpointBusy => "token_endpoint_busy",
            Self::UpstreamBusy => "upstream_busy",
            Self::SignInRateLimited => "sign_in_rate_limited",
            Self::MisdirectedRequest => "misdirected_request",
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
            | Self::ClusterUnavailable
            | Self::TokenEndpointBusy
            | Self::UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::TargetUnreachable | Self::ConnectorLost => StatusCode::BAD_GATEWAY,
            Self::TargetConnectTimeout | Self::TargetTimeout | Self::RequestExpired => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::TenantBusy | Self::RouteRateLimited | Self::SignInRateLimited => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ClientCertificateRequired => StatusCode::FORBIDDEN,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// Whether the client caused it (4xx), as opposed to a target, a connector or Ferry (5xx).
    pub fn is_client_error(self) -> bool {
        self.status().is_client_error()
    }

    /// The `Retry-After` seconds this code carries unless a reply sets its own ([`ErrorReply::retry_after`]).
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Self::TenantBusy
            | Self::Draining
            | Self::TooManyConnections
            | Self::RouteRateLimited
            | Self::TokenEndpointBusy
            | Self::UpstreamBusy
            | Self::SignInRateLimited => Some(1),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge this code carries.
    pub fn www_authenticate(self) -> Option<&'static str> {
        match self {
            Self::Unauthorized => Some("Bearer"),
            _ => None,
        }
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Code;
        impl serde::de::Visitor<'_> for Code {
            type Value = ErrorCode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Ferry error code")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ErrorCode, E> {
                ErrorCode::parse(v).ok_or_else(|| E::unknown_variant(v, &[]))
            }
        }
        deserializer.deserialize_str(Code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error response, ready to be rendered by whichever side generates it (`ferry-http::error_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    /// For people: never an internal or upstream address (those go to the log line only).
    pub message: String,
    /// `Retry-After` seconds instead of the code's own ([`ErrorCode::retry_after`]).
    pub retry_after: Option<u64>,
    /// The `Allow` header of a `method_not_allowed`.
    pub allow: Option<&'static str>,
    /// For the log line only, never rendered: the cause a client must not see (addresses, a bus's or store's error).
    pub detail: Option<String>,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
            detail: None,
        }
    }

    /// This reply with a cause for the log line only.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// What a log line says of this reply: the message, and the detail the client did not get.
    pub fn log_text(&self) -> std::borrow::Cow<'_, str> {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.message).into(),
            None => self.message.as_str().into(),
        }
    }

    /// A `method_not_allowed` reply naming the methods the endpoint takes.
    pub fn method_not_allowed(allow: &'static str, message: impl Into<String>) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(ErrorCode::MethodNotAllowed, message)
        }
    }

    /// This reply with its own `Retry-After` (whole seconds, at least 1).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The `Retry-After` seconds this reply carries, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.or(self.code.retry_after())
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
    fn codes_serialize_as_their_strings() {
        for c in ErrorCode::ALL {
            let json = serde_json::to_string(c).expect("json");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("back"), *c);
            let bytes = postcard::to_allocvec(c).expect("postcard");
            assert_eq!(postcard::from_bytes::<ErrorCode>(&bytes).expect("back"), *c);
        }
        assert!(serde_json::from_str::<ErrorCode>("\"no_such_code\"").is_err());
    }

    #[test]
    fn statuses_that_used_to_be_overrides_have_codes() {
        assert_eq!(ErrorCode::MethodNotAllowed.status(), 405);
        assert_eq!(ErrorCode::RequestTimeout.status(), 408);
        assert_eq!(ErrorCode::RouteRateLimited.status(), 429);
        assert_eq!(ErrorCode::TokenEndpointBusy.status(), 503);
        assert_eq!(ErrorCode::Unauthorized.www_authenticate(), Some("Bearer"));
        let r = ErrorReply::new(ErrorCode::RouteRateLimited, "x").with_retry_after(7);
        assert_eq!(r.retry_after_secs(), Some(7));
        assert_eq!(ErrorCode::Draining.retry_after(), Some(1));
        assert_eq!(ErrorCode::NotFound.retry_after(), None);
    }

    /// docs/operations.md has one row per code, with its status, and no row for a code that does not exist.
    #[test]
    fn every_code_is_documented_with_its_status() {
        let doc = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/operations.md"
        ));
        let start = doc.find("## Errors").expect("an Errors section");
        let section = &doc[start..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
        let mut rows = std::collections::HashMap::new();
        for line in section.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 || !cells[1].starts_with('`') {
                continue;
            }
            let code = cells[1].trim_matches('`');
            assert!(
                rows.insert(code.to_owned(), cells[2].to_owned()).is_none(),
                "{code} has two rows"
            );
        }
        for c in ErrorCode::ALL {
            let status = rows
                .remove(c.as_str())
                .unwrap_or_else(|| panic!("docs/operations.md lists no row for `{c}`"));
            assert_eq!(
                status,
                c.status().as_str(),
                "the documented status of `{c}`"
            );
        }
        assert!(
            rows.is_empty(),
            "rows for codes that do not exist: {rows:?}"
        );
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
