//! The route table as the edge uses it: `ferry-route`'s table (compiling `[[gateway.routes]]`, the matching rule
//! of docs/gateway.md, actions, prefix stripping) with what the edge attaches to each route: the
//! client-certificate headers it sends upstream, its rate limiter and its header control.

use crate::client_cert::CertHeaders;
use crate::headers::HeaderControl;
use crate::ratelimit::RateLimiter;
use crate::EdgeError;
use ferry_config::GatewayConfig;
use http::HeaderName;
use std::sync::Arc;

pub use ferry_route::{
    path_matches, request_host, Action, Arrival, ListenerNames, RouteInput, Routed,
};

/// What the edge attaches to a compiled route.
#[derive(Debug, Clone)]
pub struct RouteExtras {
    /// The client-certificate headers this route sends upstream.
    pub cert_headers: CertHeaders,
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Request and response header edits, the `Host` sent upstream, HSTS.
    pub(crate) headers: HeaderControl,
    /// What the route matches, as configured, for [`crate::GatewaySnapshot`].
    pub(crate) summary: MatchSummary,
    /// Compress responses for clients that accept it.
    pub(crate) compress: bool,
    /// Only these content types, when set (`compress_types`).
    pub(crate) compress_types: Option<crate::content::ContentTypes>,
    /// A `static_dir` route's file for paths that name none (`static_fallback`), as a full path.
    pub(crate) static_fallback: Option<std::path::PathBuf>,
    /// Read the whole request body before choosing a server, and send it with a length: how (in memory up to
    /// a size, beyond it in a file of a directory), for routes with `buffer_request_body`.
    pub(crate) buffer_request_body: Option<crate::buffer::BufferSettings>,
}

/// What a route matches, as configured: kept for the snapshot the management API shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct MatchSummary {
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    pub path_kind: crate::PathKind,
}

/// The compiled routes, in file order, each with its [`RouteExtras`].
pub type RouteTable = ferry_route::RouteTable<RouteExtras>;
/// One compiled route with its [`RouteExtras`].
pub type Route = ferry_route::Route<RouteExtras>;

/// Compile and check the routes of `config` (every error names its key) for a node with `listeners`.
pub fn compile(config: &GatewayConfig, listeners: &ListenerNames) -> Result<RouteTable, EdgeError> {
    let buffer = buffer_settings(config)?;
    RouteTable::compile_with(config, listeners, |key, r| {
        let cert_headers =
            CertHeaders::compile(key, r.client_cert_headers, &r.client_cert_header_names)?;
        let rate_limit = r
            .rate_limit
            .as_ref()
            .map(|c| RateLimiter::new(key, c).map(Arc::new))
            .transpose()?;
        let headers = HeaderControl::compile(key, r)?;
        let path_kind = if r.path_exact.is_some() {
            crate::PathKind::Exact
        } else if r.path_regex.is_some() {
            crate::PathKind::Regex
        } else {
            crate::PathKind::Prefix
        };
        let compress_types = crate::content::ContentTypes::compile(key, &r.compress_types)?;
        if compress_types.is_some() && !r.compress {
            return Err(EdgeError::Config {
                path: format!("{key}.compress_types"),
                message: "goes with compress = true".into(),
            });
        }
        let static_fallback = crate::content::fallback_file(
            key,
            r.static_dir.as_deref(),
            r.static_fallback.as_deref(),
        )?;
        Ok(RouteExtras {
            cert_headers,
            compress_types,
            static_fallback,
            rate_limit,
            headers,
            compress: r.compress,
            buffer_request_body: r.buffer_request_body.then(|| buffer.clone()),
            summary: MatchSummary {
                hosts: r.hosts.clone(),
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                path_kind,
            },
        })
    })
}

/// Where routes with `buffer_request_body` keep bodies (`[gateway] body_buffer_memory` and `body_buffer_dir`); the
/// directory must exist when a route buffers.
fn buffer_settings(config: &GatewayConfig) -> Result<crate::buffer::BufferSettings, EdgeError> {
    let memory = config
        .body_buffer_memory
        .unwrap_or(ferry_config::DEFAULT_BODY_BUFFER_MEMORY);
    let settings = crate::buffer::BufferSettings {
        memory: usize::try_from(memory).unwrap_or(usize::MAX),
        dir: config
            .body_buffer_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
    };
    if config.routes.iter().any(|r| r.buffer_request_body) && !settings.dir.is_dir() {
        return Err(EdgeError::Config {
            path: "gateway.body_buffer_dir".into(),
            message: format!(
                "{}: not a directory (request bodies larger than body_buffer_memory are buffered there)",
                settings.dir.display()
            ),
        });
    }
    Ok(settings)
}

/// The client-certificate header names routes send beyond the default family (configured names), removed from
/// every incoming request along with that family. Usually empty, so that checking a request's headers against it
/// costs nothing.
pub fn cert_header_family(table: &RouteTable) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = table
        .iter()
        .flat_map(|r| r.extra.cert_headers.family().cloned())
        .filter(|n| !crate::client_cert::is_default_family(n.as_str()))
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::{RateLimitConfig, RespondConfig, RouteConfig};

    #[test]
    fn edge_extras_are_compiled_with_their_key() {
        let respond = RouteConfig {
            respond: Some(RespondConfig {
                status: 200,
                body: String::new(),
                content_type: None,
            }),
            ..RouteConfig::default()
        };
        let config = GatewayConfig {
            routes: vec![
                respond.clone(),
                RouteConfig {
                    rate_limit: Some(RateLimitConfig {
                        requests: 1,
                        per: std::time::Duration::from_secs(1),
                        burst: None,
                        by: "header:bad name".into(),
                    }),
                    ..respond.clone()
                },
            ],
            ..GatewayConfig::default()
        };
        let names = ListenerNames::default();
        let err = compile(&config, &names)
            .expect_err("bad rate limit")
            .to_string();
        assert!(err.starts_with("gateway.routes[1].rate_limit"), "{err}");
        let config = GatewayConfig {
            routes: vec![respond],
            ..GatewayConfig::default()
        };
        let table = compile(&config, &names).expect("compile");
        assert!(table.get(0).is_some_and(|r| r.extra.rate_limit.is_none()));
        assert!(cert_header_family(&table).is_empty());
    }
}
