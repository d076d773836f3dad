//! The client side of the relay (the `gateway` role): `/relay/{tenant}/{target}/…`.
//!
//! The endpoint checks the request (names, path, framing, sizes), turns it into a tunnel request (the rest of the
//! path byte for byte, end-to-end headers, forwarding headers, the request id), sends it through
//! [`crate::dispatch`] (a tunnel on this node, or another node's through the bus) and streams the response back.
//! Upgrades (WebSocket) travel as an extended CONNECT and are bridged byte for byte once both sides agreed.

use crate::cluster::origin::RemoteUpgrade;
use crate::dispatch::{Answer, Dispatcher, Outbound, RelayError};
use crate::metrics::Metered;
use crate::registry::TunnelSlot;
use crate::stats::{LogDetails, Outcome, Stats};
use crate::tenants::{Effective, TenantCache, TenantSlot};
use ferry_auth::TokenVerifier;
use ferry_config::RelaySettings;
use ferry_http::RequestBody;
use ferry_http::{error_response, Body, BoxError, ClientInfo, Guarded, SizeLimited};
use ferry_proto::headers::{strip_hop_by_hop, X_REQUEST_ID};
use ferry_proto::path::{split_relay_path_with, PathError, PathRule};
use ferry_proto::{tunnel, ErrorCode, ErrorReply, TargetName, TenantName};
use ferry_store::{unix_now, Store};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// The client side of the relay on one node.
pub struct Relay {
    pub(crate) node_id: String,
    pub(crate) settings: RelaySettings,
    pub(crate) store: Arc<dyn Store>,
    verifier: Arc<dyn TokenVerifier>,
    pub(crate) tenants: Arc<TenantCache>,
    /// The secrets in force, for client tokens (a token must not outlive its revoked secret).
    pub(crate) secrets: crate::secrets::ActiveSecrets,
    pub(crate) stats: Stats,
    dispatcher: Dispatcher,
    draining: AtomicBool,
}

impl Relay {
    pub fn new(
        node_id: String,
        settings: RelaySettings,
        store: Arc<dyn Store>,
        verifier: Arc<dyn TokenVerifier>,
        tenants: Arc<TenantCache>,
        dispatcher: Dispatcher,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            store,
            verifier,
            tenants,
            secrets: Default::default(),
            stats: Stats::new(settings.request_log),
            settings,
            dispatcher,
            draining: AtomicBool::new(false),
        })
    }

    /// Take no new requests from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Register the client side's metrics: the tenant families (shared with the tunnel side through the tenant
    /// cache) are registered by [`crate::metrics::RelayMetrics::register`]; this adds the gauge of requests in
    /// flight from this node, per tenant.
    pub fn register_metrics(
        self: &Arc<Self>,
        registry: &mut ferry_metrics::prometheus_client::registry::Registry,
    ) {
        let tenants = self.tenants.clone();
        ferry_metrics::Snapshot::new(
            "ferry_relay_requests_in_flight",
            "Relayed requests in flight from this node, per tenant.",
            ferry_metrics::Kind::Gauge,
            move || {
                tenants
                    .inflight_by_label()
                    .into_iter()
                    .map(|(tenant, n)| (vec![("tenant", tenant)], n as f64))
                    .collect()
            },
        )
        .register(registry);
    }

    /// Requests in flight from this node, over all tenants.
    pub fn inflight(&self) -> usize {
        self.tenants.inflight().iter().map(|(_, n)| n).sum()
    }

    /// The tenant changed (an event): its settings and secrets are read again on its next request.
    pub fn tenant_changed(&self, tenant: &TenantName) {
        self.tenants.forget(tenant);
        self.secrets.forget(tenant);
    }

    /// A secret of the tenant was revoked (an event): client tokens are checked against a fresh list.
    pub fn secret_revoked(&self, tenant: &TenantName) {
        self.secrets.forget(tenant);
    }

    /// The settings in force for the tenant's requests, with the metric handles of the tenant and the target;
    /// `None` when the tenant does not exist.
    async fn tenant_settings(
        &self,
        tenant: &TenantName,
        target: &TargetName,
    ) -> Result<Option<(Effective, Metered)>, RelayError> {
        let found = self
            .tenants
            .get_metered(&*self.store, tenant, target)
            .await
            .map_err(|e| RelayError::Store(e.to_string()))?;
        Ok(found.map(|(t, metered)| (Effective::of(&self.settings, &t), metered)))
    }

    /// Handle `/relay/{tenant}/{target}/…`.
    pub async fn handle_relay(self: &Arc<Self>, req: Request<RequestBody>) -> Response<Body> {
        let request_id = ferry_http::request_id(&req);
        if ferry_telemetry::trace::enabled() {
            let span = ferry_telemetry::request_span!(
                "relay.request",
                otel.kind = "server",
                request_id = %request_id,
                http.request.method = %req.method(),
                tenant = tracing::field::Empty,
                target = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            );
            ferry_telemetry::trace::continue_from(&span, req.headers());
            let resp = self
                .handle_relay_in(req, request_id)
                .instrument(span.clone())
                .await;
            span.record("http.response.status_code", resp.status().as_u16());
            return resp;
        }
        self.handle_relay_in(req, request_id).await
    }

    async fn handle_relay_in(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        request_id: String,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let client_addr = req.extensions().get::<ClientInfo>().map(|c| c.remote_addr);
        let mut meter = Meter::default();
        let resp = self.relay(req, &request_id, &mut meter).await;
        // Only requests of an existing tenant are counted: the rest has no tenant to count them under.
        let record = meter.tenant.take().map(|tenant| {
            let details = self.stats.log_enabled().then(|| LogDetails {
                at_ms: unix_millis() - i64::try_from(started.elapsed().as_millis()).unwrap_or(0),
                request_id: request_id.clone(),
                method: method.to_string(),
                target: meter.target.clone(),
                path: meter.path.clone(),
                client_addr: client_addr.map(|a| a.to_string()).unwrap_or_default(),
            });
            Recorder {
                relay: self.clone(),
                tenant,
                metered: meter.metered.take(),
                expired: meter.expired,
                remote: meter.remote,
                bytes_in: meter.bytes_in.clone(),
                bytes_out: Arc::new(AtomicU64::new(0)),
                latency: started.elapsed(),
                status: 0,
                details,
            }
        });
        match resp {
            Ok(resp) => {
                tracing::debug!(request_id, %method, path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "relayed");
                match record {
                    Some(mut record) => {
                        record.status = resp.status().as_u16();
                        let counter = record.bytes_out.clone();
                        resp.map(|body| {
                            Guarded::new(ferry_http::Counted::new(body, counter), record)
                                .boxed_unsync()
                        })
                    }
                    None => resp,
                }
            }
            Err(reply) => {
                if let Some(mut record) = record {
                    record.status = reply.code.status().as_u16();
                    drop(record);
                }
                if reply.code.is_client_error() {
                    tracing::info!(request_id, %method, path, code = %reply.code, "relay request refused: {}", reply.log_text());
                } else {
                    tracing::warn!(request_id, %method, path, code = %reply.code, elapsed_ms = started.elapsed().as_millis() as u64, "relay request failed: {}", reply.log_text());
                }
                error_response(&reply, &request_id)
            }
        }
    }

    async fn relay(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        request_id: &str,
        meter: &mut Meter,
    ) -> Result<Response<Body>, ErrorReply> {
        let rule = PathRule {
            allow_encoded_slashes: self.settings.allow_encoded_slashes,
        };
        let parts =
            split_relay_path_with(req.uri().path(), req.uri().query(), rule).map_err(|e| {
                let code = match e {
                    PathError::Shape | PathError::EncodedNul => ErrorCode::BadRequest,
                    PathError::DotSegment | PathError::EncodedSlash => ErrorCode::PathEscape,
                };
                ErrorReply::new(code, e.to_string())
            })?;
        let bad =
            |e: ferry_proto::InvalidName| ErrorReply::new(ErrorCode::BadRequest, e.to_string());
        let tenant = TenantName::new(parts.tenant).map_err(bad)?;
        let target = TargetName::new(parts.target).map_err(bad)?;
        let rest = parts.rest;

        if self.is_draining() {
            return Err(RelayError::Draining.reply());
        }
        if ferry_http::has_ambiguous_framing(&req) {
            return Err(ErrorReply::new(
                ErrorCode::AmbiguousFraming,
                "Content-Length with Transfer-Encoding, or conflicting Content-Length values",
            ));
        }
        let effective = match self
            .tenant_settings(&tenant, &target)
            .await
            .map_err(|e| e.reply())?
        {
            Some((effective, metered)) => {
                meter.metered = Some(metered);
                effective
            }
            None => return Err(RelayError::UnknownTenant(tenant.to_string()).reply()),
        };
        meter.tenant = Some(tenant.clone());
        if self.stats.log_enabled() {
            meter.target = target.as_str().to_owned();
            meter.path = rest.split('?').next().unwrap_or_default().to_owned();
        }
        if effective.require_client_auth {
            self.check_client(&req, &tenant).await?;
            // Ferry's own token is for Ferry: the target never sees it (nor could replay it here)
            req.headers_mut().remove(header::AUTHORIZATION);
        }
        // the tenant's limit, or a gateway route's if that is stricter (0: none)
        let limit = match req.extensions().get::<ferry_http::BodyLimit>() {
            Some(route) if effective.max_body_size == 0 || route.0 < effective.max_body_size => {
                route.0
            }
            _ => effective.max_body_size,
        };
        if limit > 0 && ferry_http::declared_length(req.headers()).is_some_and(|n| n > limit) {
            return Err(RelayError::PayloadTooLarge(limit).reply());
        }

        let client = req.extensions().get::<ClientInfo>().copied();
        let trusted = req
            .extensions()
            .get::<ferry_http::forwarded::TrustedPeer>()
            .is_some();
        let upgrade = if req.version() <= http::Version::HTTP_11 {
            ferry_http::checks::allowed_upgrade(&req, &self.settings.upgrades)
        } else {
            None
        };
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let (head, body) = req.into_parts();
        let authority = head
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| head.uri.authority().map(|a| a.as_str()))
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .unwrap_or_else(|| http::uri::Authority::from_static("relay.invalid"));
        // from parts, not `Uri::builder()`: the scheme is a constant and the path keeps its buffer
        let path_and_query =
            http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(rest))
                .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("path: {e}")))?;
        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(http::uri::Scheme::HTTP);
        uri_parts.authority = Some(authority);
        uri_parts.path_and_query = Some(path_and_query);
        let uri = Uri::from_parts(uri_parts)
            .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("path: {e}")))?;

        let mut headers = head.headers;
        let host = headers.remove(header::HOST);
        let wants_trailers = strip_hop_by_hop(&mut headers);
        remove_internal(&mut headers, false);
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(client) = &client {
            ferry_http::forwarded::set_forwarding(&mut headers, client, host.as_ref(), trusted);
        }
        // The connector reads the request id from `x-request-id` (docs/protocol.md); `ferry-request-id`, which
        // carried the same value, is no longer sent: one unique header less to compress per request.
        if let Ok(mut v) = HeaderValue::from_str(request_id) {
            // Unique per request: "sensitive" makes HPACK send it as a never-indexed literal instead of inserting
            // it into the tunnel's dynamic table, where it would only evict the entries that do repeat.
            v.set_sensitive(true);
            headers.insert(X_REQUEST_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(target.as_str()) {
            headers.insert(tunnel::TARGET, v);
        }
        // the connector's span continues this request's span (nothing happens while tracing is off)
        if ferry_telemetry::trace::enabled() {
            let span = tracing::Span::current();
            span.record("tenant", tenant.as_str());
            span.record("target", target.as_str());
            ferry_telemetry::trace::inject(&span, &mut headers);
        }

        let exceeded;
        // raised when the client's own body fails (malformed chunks, the client gone): its fault, not the
        // connector's
        let mut client_failed = None;
        let mut out = if let Some(protocol) = &upgrade {
            exceeded = None;
            let mut r = Request::new(ferry_http::empty());
            *r.method_mut() = Method::CONNECT;
            r.extensions_mut()
                .insert(hyper::ext::Protocol::from(protocol.as_str()));
            r
        } else if body.is_end_stream() {
            // nothing to count or limit (nearly every GET): no body to wrap and box
            exceeded = None;
            let mut r = Request::new(ferry_http::empty());
            *r.method_mut() = head.method;
            r
        } else {
            let (body, failed) = ferry_http::ClientBody::new(body);
            client_failed = Some(failed);
            let body = ferry_http::Counted::new(body, meter.bytes_in.clone());
            let body: Body = if limit > 0 {
                let (b, flag) = SizeLimited::new(body, limit);
                exceeded = Some(flag);
                b.boxed_unsync()
            } else {
                exceeded = None;
                body.boxed_unsync()
            };
            let mut r = Request::new(body);
            *r.method_mut() = head.method;
            r
        };
        *out.uri_mut() = uri;
        *out.headers_mut() = headers;

        let tenant_slot = self
            .tenants
            .admit(&tenant, effective.max_concurrent_requests)
            .ok_or_else(|| {
                RelayError::TenantBusy(tenant.to_string(), effective.max_concurrent_requests)
                    .reply()
            })?;
        let expiration = effective.request_expiration;
        let deadline = tokio::time::Instant::now() + expiration;
        let sent = tokio::time::timeout_at(
            deadline,
            self.dispatcher.send(
                Outbound {
                    tenant: &tenant,
                    target: &target,
                    request_id,
                    upgrade: upgrade.clone(),
                    deadline,
                    by_link: true,
                },
                out,
            ),
        )
        .await;
        let answer = match sent {
            Err(_) => {
                meter.expired = true;
                return Err(RelayError::Expired(expiration).reply());
            }
            Ok(Err(e)) => {
                if exceeded.is_some_and(|f| f.load(Ordering::Acquire)) {
                    return Err(RelayError::PayloadTooLarge(limit).reply());
                }
                if client_failed.is_some_and(|f| f.load(Ordering::Acquire)) {
                    return Err(ErrorReply::new(
                        ErrorCode::BadRequest,
                        format!("the client's request body was malformed or broke off: {e}"),
                    ));
                }
                return Err(match e {
                    RelayError::Expired(_) => {
                        meter.expired = true;
                        RelayError::Expired(expiration)
                    }
                    other => other,
                }
                .reply());
            }
            Ok(Ok(answer)) => answer,
        };
        meter.remote = Some(matches!(answer, Answer::Remote(_)));
        match answer {
            Answer::Local(resp, tunnel_slot) => {
                if let Some(code) = resp.headers().get(ferry_proto::headers::FERRY_ERROR) {
                    tracing::warn!(request_id, tenant = %tenant, target = %target, code = ?code, status = resp.status().as_u16(), "connector answered with an error");
                }
                let guard = InflightGuard {
                    _tenant: tenant_slot,
                    _tunnel: Some(tunnel_slot),
                };
                match (upgrade, client_upgrade) {
                    (Some(protocol), Some(client_upgrade)) if resp.status() == StatusCode::OK => {
                        let headers = resp.headers().clone();
                        let pipe = async move {
                            crate::local::upgraded(resp)
                                .await
                                .map(|u| Box::new(u) as Box<dyn Io>)
                        };
                        Ok(bridge_upgrade(
                            headers,
                            client_upgrade,
                            protocol,
                            guard,
                            request_id,
                            pipe,
                        ))
                    }
                    _ => Ok(into_client_response(resp, guard, request_id)),
                }
            }
            Answer::Remote(remote) => {
                let resp = remote.response;
                if let Some(code) = resp.headers().get(ferry_proto::headers::FERRY_ERROR) {
                    tracing::warn!(request_id, tenant = %tenant, target = %target, code = ?code, status = resp.status().as_u16(), "connector answered with an error");
                }
                let guard = InflightGuard {
                    _tenant: tenant_slot,
                    _tunnel: None,
                };
                match (upgrade, client_upgrade, remote.upgrade) {
                    (Some(protocol), Some(client_upgrade), Some(up)) => {
                        let (head, _) = resp.into_parts();
                        let pipe = async move { Ok(remote_pipe(up)) };
                        Ok(bridge_upgrade(
                            head.headers,
                            client_upgrade,
                            protocol,
                            guard,
                            request_id,
                            pipe,
                        ))
                    }
                    _ => Ok(into_client_response(resp, guard, request_id)),
                }
            }
        }
    }
}

impl Relay {
    /// For a tenant that requires client authentication: the request must carry a bearer token that the node's
    /// verifier accepts and that names this tenant.
    async fn check_client(
        &self,
        req: &Request<RequestBody>,
        tenant: &TenantName,
    ) -> Result<(), ErrorReply> {
        let token = bearer_token(req.headers()).ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::Unauthorized,
                format!("tenant {tenant} requires a bearer token"),
            )
        })?;
        let claims =
            self.verifier.verify_client(token).await.map_err(|e| {
                ErrorReply::new(ErrorCode::Unauthorized, format!("token refused: {e}"))
            })?;
        if &claims.tenant != tenant {
            return Err(ErrorReply::new(
                ErrorCode::Unauthorized,
                format!("the token is for tenant {}, not {tenant}", claims.tenant),
            ));
        }
        // A token outlives its secret by up to its lifetime: a revoked or expired secret's tokens stop here.
        if let Some(id) = &claims.secret_id {
            let active = self
                .secrets
                .is_active(&*self.store, tenant, id, unix_now())
                .await
                .map_err(|e| {
                    ErrorReply::new(ErrorCode::Internal, "the store could not be read")
                        .with_detail(format!("store: {e}"))
                })?;
            if !active {
                return Err(ErrorReply::new(
                    ErrorCode::Unauthorized,
                    format!("the secret {id} of the token was revoked or expired"),
                ));
            }
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive, RFC 7235; read by
/// `ferry-token`, which is fuzzed).
pub(crate) fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    ferry_auth::bearer_token_in(headers)
}

/// What the relay learnt of a request while handling it, for counting it.
#[derive(Default)]
struct Meter {
    /// Set once the tenant is known to exist.
    tenant: Option<TenantName>,
    target: String,
    path: String,
    bytes_in: Arc<AtomicU64>,
    /// The metric handles of the tenant and target, once the tenant is known.
    metered: Option<Metered>,
    /// The request expired (504 request_expired).
    expired: bool,
    /// Where the connector that answered was: `Some(false)` this node, `Some(true)` another.
    remote: Option<bool>,
}

/// Counts a request into the node's statistics (and request log) when dropped: at the end of the response body,
/// or at once for an error reply.
struct Recorder {
    relay: Arc<Relay>,
    tenant: TenantName,
    metered: Option<Metered>,
    expired: bool,
    remote: Option<bool>,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    latency: std::time::Duration,
    status: u16,
    details: Option<LogDetails>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let outcome = Outcome {
            tenant: self.tenant.clone(),
            status: self.status,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            latency: self.latency,
        };
        if let Some(m) = &self.metered {
            m.target.inc(self.status);
            m.tenant.duration.observe(self.latency);
            m.tenant.received.inc_by(outcome.bytes_in);
            m.tenant.sent.inc_by(outcome.bytes_out);
            if self.expired {
                m.tenant.expirations.inc();
            }
        }
        if let Some(remote) = self.remote {
            if let Some(h) = self
                .relay
                .tenants
                .metrics()
                .dispatch
                .get(usize::from(remote))
            {
                h.observe(self.latency);
            }
        }
        self.relay
            .stats
            .record(&outcome, unix_now(), self.details.take());
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Remove `ferry-*` headers: all of them from a client's request (a client must not set them), all but
/// `ferry-error` from a connector's response.
fn remove_internal(headers: &mut http::HeaderMap, keep_error: bool) {
    ferry_proto::headers::remove_where(headers, |n| {
        ferry_proto::headers::is_internal(n)
            || (!keep_error && n == ferry_proto::headers::FERRY_ERROR)
    });
}

/// What keeps a relayed request counted until its response body ends.
struct InflightGuard {
    _tenant: TenantSlot,
    _tunnel: Option<TunnelSlot>,
}

/// The connector's response as the client gets it: hop-by-hop and internal headers out, the request id in, and
/// the body holding the request's counts until it ends.
fn into_client_response<B>(
    resp: Response<B>,
    guard: InflightGuard,
    request_id: &str,
) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut head, body) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    remove_internal(&mut head.headers, true);
    if !head.headers.contains_key(X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            head.headers.insert(X_REQUEST_ID, v);
        }
    }
    let body = Guarded::new(body, guard).map_err(Into::into).boxed_unsync();
    Response::from_parts(head, body)
}

/// A two-way byte stream to the target (a tunnel stream, or a cross-node stream).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The cross-node stream of an upgrade as a byte stream: a pipe whose far end is pumped to and from the bus.
fn remote_pipe(up: RemoteUpgrade) -> Box<dyn Io> {
    let (near, far) = tokio::io::duplex(crate::cluster::flow::CHUNK);
    tokio::spawn(crate::cluster::origin::pump_upgrade(up, far));
    Box::new(near)
}

/// Answer `101` to the client and, once both sides have switched, copy bytes both ways between the client and
/// `pipe` (the target's side) until either closes.
fn bridge_upgrade<P>(
    mut headers: http::HeaderMap,
    client_upgrade: hyper::upgrade::OnUpgrade,
    protocol: String,
    guard: InflightGuard,
    request_id: &str,
    pipe: P,
) -> Response<Body>
where
    P: std::future::Future<Output = Result<Box<dyn Io>, BoxError>> + Send + 'static,
{
    strip_hop_by_hop(&mut headers);
    let request_id = request_id.to_owned();
    let mut client_resp = Response::new(ferry_http::empty());
    *client_resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *client_resp.headers_mut() = headers;
    let h = client_resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    match HeaderValue::from_str(&protocol) {
        Ok(v) => {
            h.insert(header::UPGRADE, v);
        }
        Err(_) => {
            let reply = ErrorReply::new(ErrorCode::BadRequest, "bad upgrade protocol");
            return error_response(&reply, &request_id);
        }
    }
    tokio::spawn(async move {
        let _guard = guard;
        let client_upgrade = async move { client_upgrade.await.map_err(BoxError::from) };
        let (client, mut tunnel) = match tokio::try_join!(client_upgrade, pipe) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(request_id, "upgrade failed: {e}");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        match tokio::io::copy_bidirectional(&mut client, &mut tunnel).await {
            Ok((up, down)) => tracing::debug!(request_id, up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(request_id, "upgraded connection ended: {e}"),
        }
    });
    client_resp
}

#[cfg(test)]
mod tests {
    use super::bearer_token;
    use http::{header, HeaderMap, HeaderValue};

    fn with(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&with("BEARER abc")), Some("abc"));
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("Bearer ")), None);
        assert_eq!(bearer_token(&with("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
