//! The compiled table and the matching rule (also in docs/gateway.md): among the routes whose every constraint
//! matches, the winner is the one with, compared in this order,
//! 1. the best host match: an exact host beats a `*.` wildcard, which beats a route without hosts; between two
//!    wildcards the longer suffix wins (`*.api.example.com` beats `*.example.com`);
//! 2. the longest path prefix (`/api/v1` beats `/api` beats `/`);
//! 3. the most constraints besides host and path: a method list counts one, each header one;
//! 4. the earliest in the file.

use std::borrow::Cow;

use bytes::Bytes;
use ferry_proto::normalize::{normalize_path, PathProblem};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};

use crate::host::request_host;

/// What a route does with the requests it wins.
#[derive(Debug, Clone)]
pub enum Action {
    /// Proxy to the named upstream pool.
    Upstream(String),
    /// Send through the relay to a tenant's target.
    Relay { tenant: String, target: String },
    /// Answer with a redirect to `to` (plus the request's path and query when `keep_path`).
    Redirect {
        to: String,
        status: StatusCode,
        keep_path: bool,
    },
    /// Answer with a fixed response.
    Respond {
        status: StatusCode,
        body: Bytes,
        content_type: HeaderValue,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

/// One compiled route; `extra` is what the caller attached to it ([`RouteTable::compile_with`]).
#[derive(Debug, Clone)]
pub struct Route<X = ()> {
    pub name: String,
    pub(crate) hosts: Vec<HostPattern>,
    /// Normalised prefix: starts with `/`; `/` matches everything.
    pub(crate) path: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub action: Action,
    pub strip_prefix: bool,
    pub max_body_size: Option<u64>,
    /// Refuse requests whose connection presented no verified client certificate.
    pub require_client_cert: bool,
    /// The `Upgrade` protocols passed on (lowercase).
    pub upgrades: Vec<String>,
    pub extra: X,
}

/// How well a route matched; larger is more specific. Compared field by field, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    /// 2 exact host, 1 wildcard, 0 any host.
    host_rank: u8,
    /// Length of the wildcard suffix (0 otherwise).
    host_len: usize,
    path_len: usize,
    constraints: usize,
}

/// The compiled routes, in file order.
#[derive(Debug, Clone)]
pub struct RouteTable<X = ()> {
    pub(crate) routes: Vec<Route<X>>,
    /// Whether any route matches on host: if none does, a request's host is not worked out (two allocations).
    pub(crate) by_host: bool,
    /// `allow_encoded_slashes` of the config: how request paths are normalised.
    pub(crate) allow_encoded_slashes: bool,
}

impl<X> Default for RouteTable<X> {
    fn default() -> Self {
        RouteTable {
            routes: Vec::new(),
            by_host: false,
            allow_encoded_slashes: false,
        }
    }
}

/// The request facts routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// Lowercased, without port or trailing dot ([`request_host`]); `None` when the request names no host.
    pub host: Option<&'a str>,
    /// The normalised path.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a http::HeaderMap,
}

/// The route a request was given by its normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The route's index in the table.
    pub index: usize,
    /// The normalised path, when it differs from the request's (the request should carry it from now on).
    pub path: Option<String>,
}

impl<X> RouteTable<X> {
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Route<X>> {
        self.routes.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route<X>> {
        self.routes.iter()
    }

    /// Whether request paths are normalised with encoded slashes allowed.
    pub fn allow_encoded_slashes(&self) -> bool {
        self.allow_encoded_slashes
    }

    /// The index of the most specific route matching `input`, if any.
    pub fn find(&self, input: &RouteInput<'_>) -> Option<usize> {
        let mut best: Option<(Specificity, usize)> = None;
        for (i, route) in self.routes.iter().enumerate() {
            let Some(spec) = route.matches(input) else {
                continue;
            };
            // strictly greater: on a tie the earlier route stays
            if best.is_none_or(|(b, _)| spec > b) {
                best = Some((spec, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Routing for a request as it is: its host (`:authority` or `Host`), path (not normalised here), method
    /// and headers.
    pub fn find_request<B>(&self, req: &Request<B>) -> Option<usize> {
        // runs on every request, also on a node without gateway routes
        if self.routes.is_empty() {
            return None;
        }
        self.find_with_path(req, req.uri().path())
    }

    /// Routing for a request by its normalised path ([`ferry_proto::normalize`]); an error when the path cannot
    /// be normalised (the gateway answers 400). Without routes nothing is looked at.
    pub fn find_normalized<B>(&self, req: &Request<B>) -> Result<Option<Routed>, PathProblem> {
        if self.routes.is_empty() {
            return Ok(None);
        }
        let path = normalize_path(req.uri().path(), self.allow_encoded_slashes)?;
        let Some(index) = self.find_with_path(req, &path) else {
            return Ok(None);
        };
        Ok(Some(Routed {
            index,
            path: match path {
                Cow::Borrowed(_) => None,
                Cow::Owned(p) => Some(p),
            },
        }))
    }

    fn find_with_path<B>(&self, req: &Request<B>, path: &str) -> Option<usize> {
        let host = if self.by_host {
            request_host(req)
        } else {
            None
        };
        self.find(&RouteInput {
            host: host.as_deref(),
            path,
            method: req.method(),
            headers: req.headers(),
        })
    }
}

impl<X> Route<X> {
    /// The path prefix the route matches.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the route matches `input`, and how specifically.
    fn matches(&self, input: &RouteInput<'_>) -> Option<Specificity> {
        let (host_rank, host_len) = if self.hosts.is_empty() {
            (0, 0)
        } else {
            let host = input.host?;
            self.hosts
                .iter()
                .filter_map(|p| match p {
                    HostPattern::Exact(h) => (h == host).then_some((2u8, h.len())),
                    HostPattern::Wildcard(suffix) => (host.len() > suffix.len()
                        && host.ends_with(suffix.as_str()))
                    .then_some((1u8, suffix.len())),
                })
                .max()?
        };
        // exact hosts compare by rank only: two exact matches of the same host tie
        let host_len = if host_rank == 2 { 0 } else { host_len };
        if !path_matches(&self.path, input.path) {
            return None;
        }
        if !self.methods.is_empty() && !self.methods.contains(input.method) {
            return None;
        }
        for (name, want) in &self.headers {
            let mut values = input.headers.get_all(name).iter();
            let ok = match want {
                None => values.next().is_some(),
                Some(v) => values.any(|got| got == v),
            };
            if !ok {
                return None;
            }
        }
        Some(Specificity {
            host_rank,
            host_len,
            path_len: if self.path == "/" { 0 } else { self.path.len() },
            constraints: usize::from(!self.methods.is_empty()) + self.headers.len(),
        })
    }

    /// The path to forward: the request path, without the matched prefix when `strip_prefix` is set.
    pub fn forward_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        if !self.strip_prefix || self.path == "/" {
            return path.into();
        }
        let prefix = self.path.trim_end_matches('/');
        let rest = path.get(prefix.len()..).unwrap_or("");
        if rest.is_empty() {
            "/".into()
        } else {
            rest.into()
        }
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`; a prefix ending in `/` matches what starts with it.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}
