//! The gateway as the app sees it: the current table (routes, pools, trusted proxies) behind one pointer that a
//! reload swaps atomically, matching a request, and answering it by its route's action.

use crate::forwarded::TrustedProxies;
use crate::pool::Pool;
use crate::route::{Action, Arrival, ListenerNames, RouteTable};
use crate::{proxy, EdgeError};
use ferry_config::{AccessLog, GatewayConfig, UpstreamConfig};
use ferry_http::RequestBody;
use ferry_http::{full, Body};
use ferry_metrics::prometheus_client::metrics::counter::Counter;
use ferry_metrics::prometheus_client::metrics::family::Family;
use ferry_metrics::prometheus_client::registry::Registry;
use ferry_metrics::{ByClass, Histogram, Kind, Labels, Snapshot};
use http::{header, HeaderValue, Request, Response};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use tracing::Instrument;

/// The future a [`RelayBackend`] answers with.
pub type RelayFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// The relay, as a route action reaches it. The app implements this with `ferry-relay`, so that this crate does
/// not depend on it.
pub trait RelayBackend: Send + Sync + 'static {
    /// Relay `req` to `target` of `tenant`. The request's path and query are what the target should see.
    fn relay(&self, tenant: &str, target: &str, req: Request<RequestBody>) -> RelayFuture;
}

/// One compiled config: everything a request needs, replaced as a whole on reload.
pub(crate) struct Table {
    pub routes: RouteTable,
    pub pools: HashMap<String, (UpstreamConfig, Arc<Pool>)>,
    pub trusted: TrustedProxies,
    /// Client-certificate header names routes send beyond the default family, stripped from every incoming
    /// request along with it.
    pub cert_family: Vec<http::HeaderName>,
    /// Each route's response counters (by index), shared with [`Gateway::route_stats`] so that they outlive
    /// reloads; set by [`attach_stats`].
    stats: Vec<RouteStats>,
}

/// One route's metric handles: responses per status class (1xx…5xx) and the time to the response head. Made
/// once per route name (a reload keeps them), so a request only bumps atomics.
#[derive(Debug)]
struct RouteMetrics {
    classes: ByClass,
    duration: Histogram,
}

type RouteStats = Arc<RouteMetrics>;

/// The gateway's per-route families, kept across reloads.
#[derive(Default)]
struct RouteFamilies {
    responses: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
}

impl Table {
    /// Compile `config`; pools whose config did not change are taken over from `previous` with their
    /// connections, counters and health state. Also returns the pools that are new (whose health checks must
    /// start once the table is in use).
    fn compile(
        config: &GatewayConfig,
        previous: Option<&Table>,
        listeners: &ListenerNames,
    ) -> Result<(Self, Vec<Arc<Pool>>), EdgeError> {
        let trusted = TrustedProxies::parse(&config.trusted_proxies)?;
        let mut pools = HashMap::new();
        let mut fresh = Vec::new();
        for (name, c) in &config.upstreams {
            let reused = previous
                .and_then(|p| p.pools.get(name))
                .filter(|(old, _)| old == c)
                .map(|(_, pool)| pool.clone());
            let pool = match reused {
                Some(p) => p,
                None => {
                    let p = Arc::new(Pool::new(name, c)?);
                    fresh.push(p.clone());
                    p
                }
            };
            pools.insert(name.clone(), (c.clone(), pool));
        }
        let routes = crate::route::compile(config, listeners)?;
        let cert_family = crate::route::cert_header_family(&routes);
        let table = Self {
            routes,
            pools,
            trusted,
            cert_family,
            stats: Vec::new(),
        };
        Ok((table, fresh))
    }
}

/// A route chosen for a request, holding the table it was chosen from (a reload in between does not matter).
pub struct Matched {
    table: Arc<Table>,
    index: usize,
}

impl Matched {
    /// The name of the route.
    pub fn route_name(&self) -> &str {
        self.table
            .routes
            .get(self.index)
            .map(|r| r.name.as_str())
            .unwrap_or("")
    }
}

/// The edge gateway.
pub struct Gateway {
    table: RwLock<Arc<Table>>,
    relay: Arc<dyn RelayBackend>,
    /// Each route name's metric handles, kept across reloads.
    route_stats: RwLock<HashMap<String, RouteStats>>,
    families: RouteFamilies,
    /// The access log (`gateway.access_log*` of the main config), swapped by a reload of that file; `None`: off.
    access: RwLock<Option<Arc<crate::access_log::AccessLogger>>>,
    /// The node's listeners as routes name them (`listeners`), with their bound addresses: what the table in
    /// force was compiled with, and what a reload of the routes alone compiles with.
    listeners: RwLock<ListenerNames>,
}

impl Gateway {
    /// Compile `config` (every error names its key; with `file` set, that file is read) into a gateway whose
    /// relay routes go to `relay`. To reload a routes file, call [`Gateway::spawn_reload`] afterwards. Only the
    /// main listener is known, and not bound: routes limited to listeners take no request
    /// ([`Gateway::with_listeners`]).
    pub fn new(
        config: &GatewayConfig,
        relay: Arc<dyn RelayBackend>,
    ) -> Result<Arc<Self>, EdgeError> {
        Self::with_listeners(config, ListenerNames::default(), relay)
    }

    /// [`Gateway::new`] for a node whose listeners are `listeners` (their names, and the addresses they are bound
    /// to): a route's `listeners` must name them.
    pub fn with_listeners(
        config: &GatewayConfig,
        listeners: ListenerNames,
        relay: Arc<dyn RelayBackend>,
    ) -> Result<Arc<Self>, EdgeError> {
        let access = crate::access_log::AccessLogger::from_config(config)?;
        let config = crate::reload::effective(config)?;
        let (mut table, fresh) = Table::compile(&config, None, &listeners)?;
        fresh.iter().for_each(Pool::spawn_health_checks);
        tracing::info!(
            routes = table.routes.len(),
            upstreams = table.pools.len(),
            "gateway route table loaded"
        );
        let route_stats = RwLock::default();
        let families = RouteFamilies::default();
        attach_stats(&mut table, &route_stats, &families);
        Ok(Arc::new(Self {
            table: RwLock::new(Arc::new(table)),
            relay,
            route_stats,
            families,
            access: RwLock::new(access),
            listeners: RwLock::new(listeners),
        }))
        .inspect(|gateway| gateway.spawn_reopen_on_sigusr1())
    }

    /// The access log's format in force.
    pub fn access_log(&self) -> AccessLog {
        self.access_logger()
            .map_or(AccessLog::Off, |logger| logger.kind())
    }

    /// The access log in force, `None` when off.
    pub fn access_logger(&self) -> Option<Arc<crate::access_log::AccessLogger>> {
        match self.access.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Apply the access-log settings of `config` (a reload): the same log is kept (its file reopened), another
    /// replaces it. On error nothing changes.
    pub(crate) fn set_access_log(&self, config: &GatewayConfig) -> Result<(), EdgeError> {
        if let Some(current) = self.access_logger() {
            if current.same_as(config) {
                current.reopen();
                return Ok(());
            }
        }
        let fresh = crate::access_log::AccessLogger::from_config(config)?;
        match self.access.write() {
            Ok(mut a) => *a = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Reopen the access log's file (logrotate moved it away).
    pub fn reopen_access_log(&self) {
        if let Some(logger) = self.access_logger() {
            logger.reopen();
        }
    }

    /// Reopen the access log's file on SIGUSR1 (nginx's `kill -USR1`), until the gateway is dropped.
    fn spawn_reopen_on_sigusr1(self: &Arc<Self>) {
        #[cfg(unix)]
        {
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let mut usr1 = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::user_defined1(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGUSR1 ({e}); the access log is reopened on SIGHUP only");
                    return;
                }
            };
            let weak = Arc::downgrade(self);
            handle.spawn(async move {
                while usr1.recv().await.is_some() {
                    let Some(gateway) = weak.upgrade() else {
                        return;
                    };
                    tracing::info!("SIGUSR1: reopening the access log");
                    gateway.reopen_access_log();
                }
            });
        }
    }

    /// Check `config` as [`Gateway::new`] would, without keeping anything: for validating before binding.
    pub fn validate(config: &GatewayConfig) -> Result<(), EdgeError> {
        Self::validate_on(config, &ListenerNames::default())
    }

    /// [`Gateway::validate`] for a node whose listeners are `listeners` (bound or not:
    /// [`ListenerNames::of_config`] before binding).
    pub fn validate_on(config: &GatewayConfig, listeners: &ListenerNames) -> Result<(), EdgeError> {
        Table::compile(&crate::reload::effective(config)?, None, listeners).map(|_| ())
    }

    /// The node's listeners as the table in force knows them.
    pub fn listener_names(&self) -> ListenerNames {
        match self.listeners.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replace the table with `config` (the routes themselves; a `file` key is not followed), atomically: requests already routed finish on the old one, new ones use
    /// the new one. On error nothing changes.
    pub fn reload(&self, config: &GatewayConfig) -> Result<(), EdgeError> {
        self.reload_on(config, self.listener_names())
    }

    /// [`Gateway::reload`] for the listeners the node has from now on (a reload that adds, renames or removes
    /// listeners): kept with the table when it compiles.
    pub fn reload_on(
        &self,
        config: &GatewayConfig,
        listeners: ListenerNames,
    ) -> Result<(), EdgeError> {
        let current = self.current();
        let (mut table, fresh) = Table::compile(config, Some(&current), &listeners)?;
        attach_stats(&mut table, &self.route_stats, &self.families);
        fresh.iter().for_each(Pool::spawn_health_checks);
        let (routes, upstreams) = (table.routes.len(), table.pools.len());
        let mut names = match self.listeners.write() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Ok(mut t) = self.table.write() {
            *t = Arc::new(table);
        }
        *names = listeners;
        drop(names);
        tracing::info!(routes, upstreams, "gateway route table reloaded");
        Ok(())
    }

    pub(crate) fn current(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The route that claims `req`, judged by its normalised path ([`ferry_proto::normalize`]); when one does, the
    /// request's path becomes the normalised one (what prefix stripping, the client-certificate check and the
    /// upstream see). A path that cannot be normalised (encoded slash, NUL, climbing above the root) is answered
    /// `400 path_escape` (`bad_request` for NUL) when routes are configured. Without routes nothing is changed.
    pub fn route_normalized<B>(
        &self,
        req: &mut Request<B>,
    ) -> Result<Option<Matched>, Box<Response<Body>>> {
        self.route_normalized_on(req, false)
    }

    /// [`Gateway::route_normalized`] for a request of a listener that redirects to HTTPS: only the routes that
    /// name that listener in their `listeners` can take it (`None`: redirect it).
    pub fn route_named<B>(
        &self,
        req: &mut Request<B>,
    ) -> Result<Option<Matched>, Box<Response<Body>>> {
        self.route_normalized_on(req, true)
    }

    /// Whether any route in force is limited to some listeners (else [`Gateway::route_named`] finds nothing).
    pub fn routes_by_listener(&self) -> bool {
        self.current().routes.by_listener()
    }

    fn route_normalized_on<B>(
        &self,
        req: &mut Request<B>,
        named_only: bool,
    ) -> Result<Option<Matched>, Box<Response<Body>>> {
        let table = self.current();
        let arrival = arrival_of(&table.routes, req, named_only);
        if named_only && !matches!(arrival, Arrival::OnlyNamed(_)) {
            // no route names any listener (or the request's is not known): none can take it
            return Ok(None);
        }
        let routed = match table.routes.find_normalized_on(req, arrival) {
            Ok(routed) => routed,
            Err(problem) => {
                let code = match problem {
                    ferry_proto::normalize::PathProblem::EncodedNul
                    | ferry_proto::normalize::PathProblem::BadEscape => {
                        ferry_proto::ErrorCode::BadRequest
                    }
                    _ => ferry_proto::ErrorCode::PathEscape,
                };
                let request_id = ferry_http::request_id(req);
                tracing::info!(request_id, path = req.uri().path(), code = %code, "request refused: {problem}");
                return Err(Box::new(proxy::error(
                    code,
                    problem.to_string(),
                    &request_id,
                )));
            }
        };
        let Some(routed) = routed else {
            // no route: the request goes on as it came (the relay judges its own paths)
            return Ok(None);
        };
        if let Some(path) = routed.path {
            let pq = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut parts = req.uri().clone().into_parts();
            let Ok(pq) = pq.parse::<http::uri::PathAndQuery>() else {
                return Ok(None);
            };
            parts.path_and_query = Some(pq);
            let Ok(uri) = http::Uri::from_parts(parts) else {
                return Ok(None);
            };
            *req.uri_mut() = uri;
        }
        Ok(Some(Matched {
            table,
            index: routed.index,
        }))
    }

    /// The route that claims `req`, if any.
    pub fn route<B>(&self, req: &Request<B>) -> Option<Matched> {
        let table = self.current();
        let arrival = arrival_of(&table.routes, req, false);
        let index = table.routes.find_request_on(req, arrival)?;
        Some(Matched { table, index })
    }

    /// Remove forged client-certificate headers (the whole family, configured names included) from a request
    /// that no route claimed (a plain `/relay/…` request), unless it comes from a trusted proxy, which is marked
    /// ([`ferry_http::forwarded::TrustedPeer`]) so that the relay extends its forwarding headers.
    pub fn scrub_unrouted<B>(&self, req: &mut Request<B>) {
        let table = self.current();
        let from_trusted = req
            .extensions()
            .get::<ferry_http::ClientInfo>()
            .is_some_and(|c| table.trusted.contains(c.remote_addr.ip()));
        if from_trusted {
            req.extensions_mut()
                .insert(ferry_http::forwarded::TrustedPeer);
        } else {
            crate::forwarded::strip_client_cert_headers(req.headers_mut(), &table.cert_family);
        }
    }

    /// Answer `req` by the action of its route.
    pub async fn handle(&self, matched: Matched, req: Request<RequestBody>) -> Response<Body> {
        let started = std::time::Instant::now();
        let stats = matched.table.stats.get(matched.index).cloned();
        let resp = self.answer(matched, req).await;
        if let Some(stats) = stats {
            stats.classes.inc(resp.status().as_u16());
            stats.duration.observe(started.elapsed());
        }
        resp
    }

    /// Register the gateway's metrics with `registry`: responses and response time per route (kept across
    /// reloads); requests, transport failures, requests in flight and liveness per upstream server, read from the
    /// table in force at scrape time.
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "ferry_gateway_responses",
            "Responses per gateway route and status class.",
            self.families.responses.clone(),
        );
        registry.register(
            "ferry_gateway_request_duration_seconds",
            "Time from a routed request's arrival to its response head, per gateway route.",
            self.families.durations.clone(),
        );
        let families: [(&'static str, Kind, &'static str); 4] = [
            (
                "ferry_gateway_upstream_requests",
                Kind::Counter,
                "Requests sent to an upstream server (each try).",
            ),
            (
                "ferry_gateway_upstream_failures",
                Kind::Counter,
                "Transport failures (connect, broken connection, head timeout).",
            ),
            (
                "ferry_gateway_upstream_in_flight",
                Kind::Gauge,
                "Requests in flight on an upstream server.",
            ),
            (
                "ferry_gateway_upstream_up",
                Kind::Gauge,
                "1 when the server takes requests, 0 when ejected or unhealthy.",
            ),
        ];
        for (k, (name, kind, help)) in families.into_iter().enumerate() {
            let gateway = self.clone();
            Snapshot::new(name, help, kind, move || {
                let table = gateway.current();
                let mut pools: Vec<_> = table.pools.iter().collect();
                pools.sort_by(|a, b| a.0.cmp(b.0));
                let now = std::time::Instant::now();
                let mut out = Vec::new();
                for (pool_name, (_, pool)) in pools {
                    for s in pool.servers() {
                        let v = match k {
                            0 => s.requests.load(Ordering::Relaxed) as f64,
                            1 => s.failures.load(Ordering::Relaxed) as f64,
                            2 => s.inflight() as f64,
                            _ => f64::from(u8::from(s.is_live(now))),
                        };
                        let labels = vec![
                            ("upstream", ferry_metrics::escape(pool_name)),
                            ("server", ferry_metrics::escape(s.authority.as_str())),
                        ];
                        out.push((labels, v));
                    }
                }
                out
            })
            .register(registry);
        }
    }

    /// The gateway's metrics alone, in the OpenMetrics text format (for tests and tools).
    pub fn render_metrics(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        self.register_metrics(&mut registry);
        ferry_metrics::render(&registry)
    }

    async fn answer(&self, matched: Matched, mut req: Request<RequestBody>) -> Response<Body> {
        if ferry_telemetry::trace::enabled() {
            // the gateway's span: continues the client's `traceparent`; the upstream server (or the relay's span,
            // for a relay route) gets this span's instead
            let route = matched
                .table
                .routes
                .get(matched.index)
                .map_or("", |r| &*r.name);
            // one id for the span and the proxy's log lines and headers
            let request_id = ferry_http::request_id(&req);
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                req.headers_mut()
                    .insert(ferry_proto::headers::X_REQUEST_ID, v);
            }
            let span = ferry_telemetry::request_span!(
                "gateway.request",
                otel.kind = "server",
                request_id = %request_id,
                route = route,
                http.request.method = %req.method(),
                http.response.status_code = tracing::field::Empty,
            );
            ferry_telemetry::trace::continue_from(&span, req.headers());
            ferry_telemetry::trace::inject(&span, req.headers_mut());
            let resp = self.answer_in(matched, req).instrument(span.clone()).await;
            span.record("http.response.status_code", resp.status().as_u16());
            return resp;
        }
        self.answer_in(matched, req).await
    }

    async fn answer_in(&self, matched: Matched, mut req: Request<RequestBody>) -> Response<Body> {
        let Matched { table, index } = matched;
        let Some(route) = table.routes.get(index) else {
            return proxy::error(
                ferry_proto::ErrorCode::Internal,
                "route vanished",
                &ferry_http::request_id(&req),
            );
        };
        let control = &route.extra.headers;
        let negotiation = route
            .extra
            .compress
            .then(|| crate::content::Negotiation::of(&req));
        if control.response.is_empty() && control.hsts.is_none() {
            let mut resp = self.answer_route(route, &table, req).await;
            control.error_page(&mut resp);
            if let Some(n) = negotiation {
                resp = n.compress(resp, route.extra.compress_types.as_ref()).await;
            }
            return resp;
        }
        // The response edits are rendered from the request; they apply to every answer of the route, Ferry's
        // own errors included (nginx's `add_header … always`). The request keeps the id `$request_id` names.
        let request_id = ferry_http::request_id(&req);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            req.headers_mut()
                .insert(ferry_proto::headers::X_REQUEST_ID, v);
        }
        let edits = crate::headers::with_vars(&req, &route.name, &request_id, |vars| {
            control.response_for(vars)
        });
        let mut resp = self.answer_route(route, &table, req).await;
        control.error_page(&mut resp);
        if let Some(edits) = edits {
            edits.apply(resp.headers_mut());
        }
        if let Some(n) = negotiation {
            resp = n.compress(resp, route.extra.compress_types.as_ref()).await;
        }
        resp
    }

    async fn answer_route(
        &self,
        route: &crate::route::Route,
        table: &Arc<Table>,
        req: Request<RequestBody>,
    ) -> Response<Body> {
        let logged = self.access_log() != AccessLog::Off;
        if route.require_client_cert {
            let verified = req
                .extensions()
                .get::<Arc<ferry_http::TlsInfo>>()
                .is_some_and(|tls| tls.client_verified());
            if !verified {
                tracing::info!(
                    route = route.name,
                    "request refused: the route requires a client certificate"
                );
                return proxy::error(
                    ferry_proto::ErrorCode::ClientCertificateRequired,
                    format!(
                        "route {} requires a verified client certificate",
                        route.name
                    ),
                    &ferry_http::request_id(&req),
                );
            }
        }
        if let Some(limiter) = &route.extra.rate_limit {
            let ip = req
                .extensions()
                .get::<ferry_http::ClientInfo>()
                .map(|c| c.remote_addr.ip())
                .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            if let Err(wait) = limiter.check(ip, req.headers()) {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let reply = ferry_proto::ErrorReply::new(
                    ferry_proto::ErrorCode::RouteRateLimited,
                    format!("rate limit of route {} reached", route.name),
                )
                .with_retry_after(secs);
                return ferry_http::error_response(&reply, &ferry_http::request_id(&req));
            }
        }
        match &route.action {
            Action::Respond {
                status,
                body,
                content_type,
            } => {
                let mut r = Response::new(full(body.clone()));
                *r.status_mut() = *status;
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
                r
            }
            Action::Redirect {
                to,
                status,
                keep_path,
            } => {
                let mut location = to.clone();
                if *keep_path {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/");
                    if location.ends_with('/') {
                        location.pop();
                    }
                    location.push_str(pq);
                }
                let mut r = Response::new(ferry_http::empty());
                *r.status_mut() = *status;
                match HeaderValue::from_str(&location) {
                    Ok(v) => {
                        r.headers_mut().insert(header::LOCATION, v);
                        r
                    }
                    Err(_) => proxy::error(
                        ferry_proto::ErrorCode::BadRequest,
                        "the redirect target is not a valid header",
                        &ferry_http::request_id(&req),
                    ),
                }
            }
            Action::Relay { tenant, target } => {
                let req = match proxy::prepare_relay(route, table, req) {
                    Ok(r) => r,
                    Err(resp) => return *resp,
                };
                let mut resp = self.relay.relay(tenant, target, req).await;
                if logged {
                    resp.extensions_mut()
                        .insert(crate::Upstream(format!("{tenant}/{target}")));
                }
                resp
            }
            Action::Static(dir) => {
                let path = match route
                    .upstream_path(req.uri().path(), table.routes.allow_encoded_slashes())
                {
                    Ok(p) => p.into_owned(),
                    Err(_) => {
                        return proxy::error(
                            ferry_proto::ErrorCode::PathEscape,
                            "the rewritten path leaves the root",
                            &ferry_http::request_id(&req),
                        )
                    }
                };
                crate::content::serve_file(dir, &path, route.extra.static_fallback.as_deref(), req)
                    .await
            }
            Action::Upstream(name) => match table.pools.get(name) {
                Some((_, pool)) => proxy::forward(pool.clone(), route, table, req, logged).await,
                None => proxy::error(
                    ferry_proto::ErrorCode::Internal,
                    "upstream pool vanished",
                    &ferry_http::request_id(&req),
                ),
            },
        }
    }
}

/// Which listener `req` came in on, by its bound address (`ClientInfo::listener`; `named_only`: a listener that
/// redirects to HTTPS); only looked at when some route is limited to listeners. A request without `ClientInfo` is
/// of no known listener.
fn arrival_of<B>(routes: &RouteTable, req: &Request<B>, named_only: bool) -> Arrival {
    if !routes.by_listener() {
        return Arrival::Unknown;
    }
    let Some(client) = req.extensions().get::<ferry_http::ClientInfo>() else {
        return Arrival::Unknown;
    };
    match named_only {
        true => Arrival::OnlyNamed(client.listener),
        false => Arrival::On(client.listener),
    }
}

/// Give each route of `table` its metric handles: the ones its name had before (a reload keeps them), else new
/// ones from `families`.
fn attach_stats(
    table: &mut Table,
    all: &RwLock<HashMap<String, RouteStats>>,
    families: &RouteFamilies,
) {
    let mut all = match all.write() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    table.stats = table
        .routes
        .iter()
        .map(|r| {
            all.entry(r.name.clone())
                .or_insert_with(|| {
                    let labels: Labels = vec![("route", ferry_metrics::escape(&r.name))];
                    Arc::new(RouteMetrics {
                        classes: ByClass::of(&families.responses, &labels),
                        duration: families.durations.get_or_create_owned(&labels),
                    })
                })
                .clone()
        })
        .collect();
}
