//! The compiled table and the matching rule (also in docs/gateway.md): among the routes whose every constraint
//! matches, the winner is the one with, compared in this order,
//! 1. the best host match: an exact host beats a `*.` wildcard, which beats a route without hosts; between two
//!    wildcards the longer suffix wins (`*.api.example.com` beats `*.example.com`);
//! 2. the longest path prefix (`/api/v1` beats `/api` beats `/`);
//! 3. the most constraints besides host and path: a method list counts one, each header one;
//! 4. the earliest in the file.
//!
//! Before any of that, a route limited to some listeners (`listeners`) does not exist for a request that came in
//! on another one ([`Arrival`]): it is not a candidate, so the best of the others wins, as nginx picks among the
//! `server` blocks of the socket a connection came in on only.

use std::borrow::Cow;

use bytes::Bytes;
use ferry_proto::normalize::{normalize_path, PathProblem};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};

use crate::host::request_host;
use crate::listeners::Arrival;

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
    /// Serve the files under this directory.
    Static(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

/// How a route matches the normalised path.
#[derive(Debug, Clone)]
pub(crate) enum PathMatch {
    /// On segment boundaries ([`path_matches`]); `/` matches everything.
    Prefix,
    /// This path and no other.
    Exact,
    /// The expression matches somewhere in the path (anchor it with `^…$` to match the whole path).
    Regex(regex::Regex),
}

/// A piece of a `rewrite` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    /// A capture group of the route's `path_regex`, by index.
    Group(usize),
}

/// What the path sent upstream becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathRewrite {
    /// As it is, or without the prefix when `strip_prefix` is set.
    Keep,
    /// The matched prefix replaced by this (`replace_prefix`).
    ReplacePrefix(String),
    /// The `rewrite` template of a regex route.
    Template(Vec<Piece>),
}

/// One compiled route; `extra` is what the caller attached to it ([`RouteTable::compile_with`]).
#[derive(Debug, Clone)]
pub struct Route<X = ()> {
    pub name: String,
    pub(crate) hosts: Vec<HostPattern>,
    /// The path as configured: a prefix (starts with `/`; `/` matches everything), an exact path, or the source
    /// of a regular expression, as [`Self::path_match`] says.
    pub(crate) path: String,
    pub(crate) path_match: PathMatch,
    pub(crate) rewrite: PathRewrite,
    pub(crate) methods: Vec<Method>,
    pub(crate) headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// The bound addresses of the listeners the route is limited to (`listeners`); `None`: every listener.
    pub(crate) listeners: Option<Box<[std::net::SocketAddr]>>,
    /// The names in `listeners`, as configured (empty: every listener).
    pub(crate) listener_names: Vec<String>,
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
    /// 3 exact path, 2 regular expression, 1 prefix (nginx: `=`, then `~`, then the longest prefix).
    path_rank: u8,
    /// Length of the prefix (0 for `/`, an exact path and a regular expression: regexes go by file order).
    path_len: usize,
    constraints: usize,
}

/// The compiled routes, in file order.
#[derive(Debug, Clone)]
pub struct RouteTable<X = ()> {
    pub(crate) routes: Vec<Route<X>>,
    /// Whether any route matches on host: if none does, a request's host is not worked out (two allocations).
    pub(crate) by_host: bool,
    /// Whether any route is limited to some listeners: if none is, a request's listener is not looked at.
    pub(crate) by_listener: bool,
    /// `allow_encoded_slashes` of the config: how request paths are normalised.
    pub(crate) allow_encoded_slashes: bool,
}

impl<X> Default for RouteTable<X> {
    fn default() -> Self {
        RouteTable {
            routes: Vec::new(),
            by_host: false,
            by_listener: false,
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
    /// The listener it came in on (routes limited to other listeners do not exist for it).
    pub arrival: Arrival,
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

    /// Whether any route is limited to some listeners (`listeners`): only then does the request's listener
    /// ([`Arrival`]) matter.
    pub fn by_listener(&self) -> bool {
        self.by_listener
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
        self.find_request_on(req, Arrival::Unknown)
    }

    /// [`Self::find_request`] for a request that came in as `arrival` says.
    pub fn find_request_on<B>(&self, req: &Request<B>, arrival: Arrival) -> Option<usize> {
        // runs on every request, also on a node without gateway routes
        if self.routes.is_empty() {
            return None;
        }
        self.find_with_path(req, req.uri().path(), arrival)
    }

    /// Routing for a request by its normalised path ([`ferry_proto::normalize`]); an error when the path cannot
    /// be normalised (the gateway answers 400). Without routes nothing is looked at. The request's listener is not
    /// known: routes limited to listeners do not take it ([`Self::find_normalized_on`]).
    pub fn find_normalized<B>(&self, req: &Request<B>) -> Result<Option<Routed>, PathProblem> {
        self.find_normalized_on(req, Arrival::Unknown)
    }

    /// [`Self::find_normalized`] for a request that came in as `arrival` says.
    pub fn find_normalized_on<B>(
        &self,
        req: &Request<B>,
        arrival: Arrival,
    ) -> Result<Option<Routed>, PathProblem> {
        if self.routes.is_empty() {
            return Ok(None);
        }
        let path = normalize_path(req.uri().path(), self.allow_encoded_slashes)?;
        let Some(index) = self.find_with_path(req, &path, arrival) else {
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

    fn find_with_path<B>(&self, req: &Request<B>, path: &str, arrival: Arrival) -> Option<usize> {
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
            arrival,
        })
    }
}

impl<X> Route<X> {
    /// The path the route matches, as configured: its prefix, its exact path, or its regular expression.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The listeners the route is limited to, by name as configured; empty: every listener.
    pub fn listeners(&self) -> &[String] {
        &self.listener_names
    }

    /// Whether the route matches by prefix (`path`), rather than an exact path or a regular expression.
    pub fn matches_by_prefix(&self) -> bool {
        matches!(self.path_match, PathMatch::Prefix)
    }

    /// The path to send on for the normalised request `path`: [`Self::forward_path`], or a regex route's
    /// `rewrite` filled in with the captures and normalised again (`allow_encoded_slashes` as the table's), so
    /// that captures put together cannot climb out of the root.
    pub fn upstream_path<'a>(
        &self,
        path: &'a str,
        allow_encoded_slashes: bool,
    ) -> Result<Cow<'a, str>, PathProblem> {
        let (PathRewrite::Template(pieces), PathMatch::Regex(re)) =
            (&self.rewrite, &self.path_match)
        else {
            return Ok(self.forward_path(path));
        };
        let Some(captures) = re.captures(path) else {
            // not this route's path (the caller routed it elsewhere): unchanged
            return Ok(path.into());
        };
        let mut out = String::with_capacity(path.len() + 16);
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Group(g) => out.push_str(captures.get(*g).map_or("", |m| m.as_str())),
            }
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        Ok(match normalize_path(&out, allow_encoded_slashes)? {
            Cow::Borrowed(_) => out.into(),
            Cow::Owned(normalised) => normalised.into(),
        })
    }

    /// Whether the route matches `input`, and how specifically.
    fn matches(&self, input: &RouteInput<'_>) -> Option<Specificity> {
        // a route of other listeners does not exist for this request (not a worse match: none)
        if !input.arrival.admits(self.listeners.as_deref()) {
            return None;
        }
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
        let (path_rank, path_len) = match &self.path_match {
            PathMatch::Prefix if path_matches(&self.path, input.path) => {
                (1, if self.path == "/" { 0 } else { self.path.len() })
            }
            PathMatch::Exact if self.path == input.path => (3, 0),
            PathMatch::Regex(re) if re.is_match(input.path) => (2, 0),
            _ => return None,
        };
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
            path_rank,
            path_len,
            constraints: usize::from(!self.methods.is_empty()) + self.headers.len(),
        })
    }

    /// The path to forward for a prefix route: the request path, without the matched prefix when
    /// `strip_prefix` is set, or with it replaced by `replace_prefix`. Other routes' paths go on unchanged here
    /// ([`Self::upstream_path`] rewrites them).
    pub fn forward_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let replacement = match &self.rewrite {
            PathRewrite::ReplacePrefix(r) => r.as_str(),
            PathRewrite::Keep if self.strip_prefix => "",
            _ => return path.into(),
        };
        if !matches!(self.path_match, PathMatch::Prefix) || !path_matches(&self.path, path) {
            return path.into();
        }
        // `/api` and `/api/` both leave `/x` of `/api/x`
        let prefix = self.path.trim_end_matches('/');
        let rest = path.get(prefix.len()..).unwrap_or("");
        if rest.is_empty() {
            return if replacement.is_empty() {
                "/".into()
            } else {
                replacement.to_owned().into()
            };
        }
        let mut out = String::with_capacity(replacement.len() + rest.len());
        out.push_str(replacement.trim_end_matches('/'));
        out.push_str(rest);
        out.into()
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
