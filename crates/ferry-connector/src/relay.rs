//! The service behind each tunnel stream (docs/protocol.md §3): pick the target named by `ferry-target`, clean the
//! headers, build the target's URI without re-encoding, set `Host`, send the request with a pooled client,
//! stream both bodies (trailers included), map failures to Ferry's error replies, and bridge upgrades (extended
//! CONNECT on the tunnel ↔ HTTP/1.1 `Upgrade` at the target).
//!
//! Does not own: the tunnel itself (ferry-tunnel), tokens or reconnecting (the crate root).

use bytes::Bytes;
use ferry_config::{HostMode, TargetConfig};
use ferry_http::client::{ClientOptions, OriginClient, ResponseBody, SendError};
use ferry_proto::headers::{
    detach_values, join_cookie_crumbs, remove_where, strip_hop_by_hop, X_FORWARDED_HOST,
    X_REQUEST_ID,
};
use ferry_proto::tunnel::{
    CONTROL, CONTROL_SETTINGS, HOST_MODE, MAX_CONTROL_BODY, REQUEST_ID, SETTINGS_PATH, TARGET,
};
use ferry_proto::{ErrorCode, ErrorReply, TenantSettings};
use ferry_tunnel::exchange::PendingUpgrade;
use ferry_tunnel::{BoxError, TunnelBody};
use http::header::{HeaderMap, HeaderValue, CONNECTION, HOST, TE, TRAILER, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// One target, parsed from its configuration.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    name: String,
    scheme: Scheme,
    authority: Authority,
    /// The URL's path, `/` when it has none.
    base_path: String,
    host_mode: HostMode,
    /// The client of an `http://` target, set by [`Relay::new`] (`https://` targets use the relay's shared
    /// client, for TLS and ALPN).
    origin: Option<Arc<OriginClient>>,
    /// The target's metric handles, set by [`Relay::with_metrics`].
    metrics: Option<crate::metrics::TargetMetrics>,
}

impl Target {
    /// Parse a target's URL: `http(s)://host[:port][/base]`, no user info, no query.
    pub(crate) fn parse(config: &TargetConfig) -> Result<Self, String> {
        let uri: Uri = config
            .url
            .parse()
            .map_err(|e| format!("{:?} is not a URL: {e}", config.url))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => {
                return Err(format!(
                    "{:?} must start with http:// or https://",
                    config.url
                ))
            }
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{:?} has no host", config.url))?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(format!(
                "{:?} must be http(s)://host[:port][/path]",
                config.url
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{:?} must not have a query", config.url));
        }
        Ok(Self {
            name: config.name.as_str().to_owned(),
            scheme,
            authority,
            base_path: uri.path().to_owned(),
            host_mode: config.host,
            origin: None,
            metrics: None,
        })
    }

    /// The URI of a relayed request: the target's scheme and authority, and its base path joined with the
    /// request's path and query, byte for byte.
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let rest = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        let joined = ferry_proto::path::join_base(&self.base_path, rest);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(joined)?)
            .build()
    }
}

type TargetClient = Client<HttpsConnector<HttpConnector>, TunnelBody>;

/// Timeouts of the relay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

/// The per-stream service: shared by every stream of every tunnel of the process (one connection pool).
pub(crate) struct Relay {
    tenant: String,
    /// By name; looked up on every request (names come from this connector's config: foldhash, not SipHash).
    targets: HashMap<String, Target, foldhash::fast::RandomState>,
    /// HTTP/1.1, or HTTP/2 when an https target offers it (ALPN).
    client: TargetClient,
    /// HTTP/1.1 only: upgrades.
    upgrade_client: TargetClient,
    timeouts: Timeouts,
    /// The tenant's settings as last pushed by the node (all unset until the first push).
    pushed: Mutex<TenantSettings>,
}

impl Relay {
    /// `tls` must have no ALPN protocols set (each client sets its own).
    pub(crate) fn new(
        tenant: String,
        targets: Vec<Target>,
        tls: rustls::ClientConfig,
        timeouts: Timeouts,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let https_h1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let build = |connector| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .build(connector)
        };
        let options = ClientOptions::keep_alive(timeouts.connect);
        let with_client = |mut t: Target| {
            if t.scheme == Scheme::HTTP {
                t.origin = Some(OriginClient::for_authority(&t.authority, options));
            }
            (t.name.clone(), t)
        };
        Self {
            tenant,
            targets: targets.into_iter().map(with_client).collect(),
            client: build(https),
            upgrade_client: build(https_h1),
            timeouts,
            pushed: Mutex::new(TenantSettings::default()),
        }
    }

    /// Count every target's requests into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: &crate::metrics::ConnectorMetrics) -> Self {
        for t in self.targets.values_mut() {
            t.metrics = Some(metrics.target(&t.name));
        }
        self
    }

    /// The tenant's settings as last pushed by the node.
    pub(crate) fn pushed_settings(&self) -> TenantSettings {
        self.pushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The response timeout in force: the pushed one, else the configured one.
    fn response_timeout(&self) -> Duration {
        self.pushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .target_response_timeout_ms
            .map_or(self.timeouts.response, Duration::from_millis)
    }

    /// A control message of the node (a settings push): never relayed; answered `204`, or `400` when unreadable.
    async fn control<B>(&self, req: Request<B>, request_id: &str) -> Response<TunnelBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let is_settings = req.method() == Method::POST
            && req.uri().path() == SETTINGS_PATH
            && req
                .headers()
                .get(CONTROL)
                .is_some_and(|v| v == CONTROL_SETTINGS);
        if !is_settings {
            return error_response(
                &ErrorReply::new(ErrorCode::BadRequest, "unknown control message"),
                request_id,
            );
        }
        let mut stream = req.into_body();
        let mut body = Vec::new();
        while let Some(frame) = stream.frame().await {
            let unreadable = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if body.len() + data.len() <= MAX_CONTROL_BODY => {
                        body.extend_from_slice(&data);
                        None
                    }
                    Ok(_) => Some(format!("larger than {MAX_CONTROL_BODY} bytes")),
                    Err(_) => None,
                },
                Err(error) => Some(error.into().to_string()),
            };
            if let Some(why) = unreadable {
                tracing::warn!(tenant = %self.tenant, why, "settings push unreadable");
                return error_response(
                    &ErrorReply::new(ErrorCode::BadRequest, format!("settings body: {why}")),
                    request_id,
                );
            }
        }
        match serde_json::from_slice::<TenantSettings>(&body) {
            Ok(settings) => {
                // the settings as the node sent them (JSON), not Rust's debug form
                let shown = String::from_utf8_lossy(&body);
                tracing::info!(tenant = %self.tenant, settings = %shown, "settings pushed by the node");
                *self.pushed.lock().unwrap_or_else(PoisonError::into_inner) = settings;
                let mut res =
                    Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
                *res.status_mut() = StatusCode::NO_CONTENT;
                res
            }
            Err(error) => {
                tracing::warn!(tenant = %self.tenant, %error, "settings push refused");
                error_response(
                    &ErrorReply::new(ErrorCode::BadRequest, format!("settings: {error}")),
                    request_id,
                )
            }
        }
    }

    /// Relay one stream's request to its target and return the response to send back on the stream.
    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<TunnelBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let request_id = request_id(req.headers());
        if ferry_telemetry::trace::enabled() && !req.headers().contains_key(CONTROL) {
            // a child of the node's span (the `traceparent` the node sent), the parent of the target's
            let span = ferry_telemetry::request_span!(
                "connector.request",
                otel.kind = "server",
                request_id = %request_id,
                tenant = %self.tenant,
                target = tracing::field::Empty,
                http.request.method = %req.method(),
                http.response.status_code = tracing::field::Empty,
            );
            ferry_telemetry::trace::continue_from(&span, req.headers());
            if let Some(name) = req.headers().get(TARGET).and_then(|v| v.to_str().ok()) {
                span.record("target", name);
            }
            let response = self
                .handle_in(req, request_id)
                .instrument(span.clone())
                .await;
            span.record("http.response.status_code", response.status().as_u16());
            return response;
        }
        self.handle_in(req, request_id).await
    }

    async fn handle_in<B>(&self, mut req: Request<B>, request_id: String) -> Response<TunnelBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        if req.headers().contains_key(CONTROL) && !req.headers().contains_key(TARGET) {
            return self.control(req, &request_id).await;
        }
        // the target by the name the node sent, looked up without copying the name (only an unknown one is kept,
        // for the error)
        let found = match req.headers().get(TARGET).and_then(|v| v.to_str().ok()) {
            Some(name) => self.targets.get(name).ok_or_else(|| name.to_owned()),
            None => Err(String::new()),
        };
        let response = match found {
            Err(ref unknown) => error_response(
                &ErrorReply::new(
                    ErrorCode::UnknownTarget,
                    format!("this connector has no target {unknown:?}"),
                ),
                &request_id,
            ),
            Ok(target) => {
                let protocol = req
                    .extensions_mut()
                    .remove::<hyper::ext::Protocol>()
                    .map(|p| p.as_str().to_owned());
                match protocol {
                    Some(protocol) => self.upgrade(target, req, protocol, &request_id).await,
                    None => self.forward(target, req, &request_id).await,
                }
            }
        };
        let target_name = match &found {
            Ok(target) => {
                if let Some(m) = &target.metrics {
                    m.classes.inc(response.status().as_u16());
                    m.duration.observe(started.elapsed());
                }
                target.name.as_str()
            }
            Err(unknown) => unknown.as_str(),
        };
        tracing::debug!(
            tenant = %self.tenant,
            target = %target_name,
            request_id = %request_id,
            status = response.status().as_u16(),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "request relayed"
        );
        response
    }

    async fn forward<B>(
        &self,
        target: &Target,
        req: Request<B>,
        request_id: &str,
    ) -> Response<TunnelBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let out = match target_request(target, parts, request_id) {
            Ok(out) => out,
            Err(reply) => return error_response(&reply, request_id),
        };
        // The response timeout runs from the end of the request body: a long upload is not a slow target.
        let (body, body_sent) = TrackEnd::new(body);
        let out = out.map(|()| body.boxed_unsync());
        let res = self
            .send(&self.client, target, out, body_sent, request_id)
            .await;
        match res {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                clean_response_headers(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(reply) => error_response(&reply, request_id),
        }
    }

    async fn upgrade<B>(
        &self,
        target: &Target,
        mut req: Request<B>,
        protocol: String,
        request_id: &str,
    ) -> Response<TunnelBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        // the stream's side: protocol 2 hands it over once the answer is sent, protocol 1 through hyper
        let stream_upgrade: StreamUpgrade = match req.extensions_mut().remove::<PendingUpgrade>() {
            Some(pending) => Box::pin(async move {
                pending
                    .upgraded()
                    .await
                    .map(|io| Box::new(io) as Box<dyn UpgradedIo>)
            }),
            None => {
                let on = hyper::upgrade::on(&mut req);
                Box::pin(async move {
                    let upgraded = on.await?;
                    Ok(Box::new(TokioIo::new(upgraded)) as Box<dyn UpgradedIo>)
                })
            }
        };
        let (parts, _body) = req.into_parts();
        let mut out = match target_request(target, parts, request_id) {
            Ok(out) => out,
            Err(reply) => return error_response(&reply, request_id),
        };
        let Ok(upgrade_value) = HeaderValue::from_str(&protocol) else {
            let reply = ErrorReply::new(ErrorCode::BadRequest, "invalid :protocol");
            return error_response(&reply, request_id);
        };
        *out.method_mut() = Method::GET;
        out.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        out.headers_mut().insert(UPGRADE, upgrade_value);
        let out = out.map(|()| {
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync()
        });
        let (tx, sent) = oneshot::channel::<()>();
        drop(tx);
        let mut res = match self
            .send(&self.upgrade_client, target, out, sent, request_id)
            .await
        {
            Ok(res) => res,
            Err(reply) => return error_response(&reply, request_id),
        };
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = res.into_parts();
            clean_response_headers(&mut parts.headers);
            return Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
        }
        let target_upgrade = hyper::upgrade::on(&mut res);
        let mut headers = res.headers().clone();
        clean_response_headers(&mut headers);
        let tenant = self.tenant.clone();
        let target_name = target.name.clone();
        let rid = request_id.to_owned();
        tokio::spawn(async move {
            let target_upgrade = async move { target_upgrade.await.map_err(BoxError::from) };
            let (mut stream, target) = match tokio::try_join!(stream_upgrade, target_upgrade) {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%tenant, target = %target_name, request_id = %rid, %error, "upgrade failed");
                    return;
                }
            };
            let mut target = TokioIo::new(target);
            match tokio::io::copy_bidirectional(&mut stream, &mut target).await {
                Ok((up, down)) => tracing::debug!(
                    %tenant, target = %target_name, request_id = %rid, bytes_to_target = up,
                    bytes_from_target = down, "upgraded connection closed"
                ),
                Err(error) => tracing::debug!(
                    %tenant, target = %target_name, request_id = %rid, %error, "upgraded connection ended"
                ),
            }
        });
        let mut response = Response::new(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.headers_mut() = headers;
        response
    }

    /// Send a request; `body_sent` resolves (or is dropped) when the request body has gone out, which starts the
    /// response timeout.
    async fn send(
        &self,
        client: &TargetClient,
        target: &Target,
        req: Request<TunnelBody>,
        body_sent: oneshot::Receiver<()>,
        request_id: &str,
    ) -> Result<Response<ResponseBody>, ErrorReply> {
        let response_timeout = self.response_timeout();
        let deadline = async move {
            let _ = body_sent.await;
            tokio::time::sleep(response_timeout).await;
        };
        let exchange = async {
            match &target.origin {
                Some(origin) => {
                    let (mut parts, body) = req.into_parts();
                    // the origin client takes the request target in origin form
                    if let Some(pq) = parts.uri.path_and_query() {
                        parts.uri = Uri::from(pq.clone());
                    }
                    let resp = origin.send(Request::from_parts(parts, body)).await?;
                    Ok(resp.map(ResponseBody::Origin))
                }
                None => Ok(client.request(req).await?.map(ResponseBody::Shared)),
            }
        };
        let result: Result<_, SendError> = tokio::select! {
            res = exchange => res,
            () = deadline => {
                tracing::warn!(
                    tenant = %self.tenant, target = %target.name, request_id,
                    timeout = ?response_timeout, "target did not answer in time"
                );
                return Err(ErrorReply::new(
                    ErrorCode::TargetTimeout,
                    format!("target {:?} did not answer within {response_timeout:?}", target.name),
                ));
            }
        };
        result.map_err(|error| {
            let reply = classify(&error, &target.name, self.timeouts.connect);
            tracing::warn!(
                tenant = %self.tenant, target = %target.name, request_id, code = %reply.code,
                error = %error_chain(&error), "target request failed"
            );
            reply
        })
    }
}

/// The stream's side of an upgrade, once both sides switched.
type StreamUpgrade = Pin<Box<dyn Future<Output = Result<Box<dyn UpgradedIo>, BoxError>> + Send>>;

/// A stream's side of an upgraded connection, in either protocol.
trait UpgradedIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> UpgradedIo for T {}

/// The request id of a stream: `ferry-request-id` (sent by earlier nodes), else `x-request-id` (set by the
/// node), else a new one.
fn request_id(headers: &HeaderMap) -> String {
    [REQUEST_ID, X_REQUEST_ID]
        .iter()
        .filter_map(|name| headers.get(name))
        .filter_map(|v| v.to_str().ok())
        .find(|v| ferry_proto::is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(ferry_proto::new_request_id)
}

/// Build the request to the target (method, URI, version, headers) from a stream's request head, whose headers it
/// takes over (no copy).
fn target_request(
    target: &Target,
    parts: http::request::Parts,
    request_id: &str,
) -> Result<Request<()>, ErrorReply> {
    let path = parts
        .uri
        .path_and_query()
        .map(PathAndQuery::as_str)
        .unwrap_or("/");
    let uri = target.uri(path).map_err(|e| {
        ErrorReply::new(ErrorCode::BadRequest, format!("invalid request path: {e}"))
    })?;
    let host = host_for(target, &parts);
    let mut headers = parts.headers;
    clean_request_headers(&mut headers);
    headers.insert(HOST, host);
    // the node's `x-request-id` is nearly always the id already: then it stays as it is
    let has_id = headers
        .get(X_REQUEST_ID)
        .is_some_and(|v| v.as_bytes() == request_id.as_bytes());
    if !has_id {
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert(X_REQUEST_ID, value);
        }
    }
    if ferry_telemetry::trace::enabled() {
        // the target continues the connector's span
        ferry_telemetry::trace::inject(&tracing::Span::current(), &mut headers);
    }
    let mut out = Request::new(());
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The `Host` a target sees: its own authority, or with host mode `client` (from the target's config or the
/// node's `ferry-host-mode: client`) the client's: the stream's `:authority`, else `Host`, else
/// `x-forwarded-host`.
fn host_for(target: &Target, parts: &http::request::Parts) -> HeaderValue {
    let client_mode = target.host_mode == HostMode::Client
        || parts
            .headers
            .get(HOST_MODE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"client"));
    let own = || {
        HeaderValue::from_str(target.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
    };
    if !client_mode {
        return own();
    }
    let from_uri = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let forwarded = || {
        parts
            .headers
            .get(X_FORWARDED_HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .and_then(|v| HeaderValue::from_str(v).ok())
    };
    from_uri
        .or_else(|| parts.headers.get(HOST).cloned())
        .or_else(forwarded)
        .unwrap_or_else(own)
}

/// Remove hop-by-hop headers (keeping `TE: trailers` and `Trailer`, which HTTP/1.1 needs to carry trailers), every
/// `ferry-*` header, and `Host` (set afterwards); join an HTTP/2 client's cookie crumbs into one `Cookie`.
pub(crate) fn clean_request_headers(headers: &mut HeaderMap) {
    let trailer: Vec<HeaderValue> = headers.get_all(TRAILER).iter().cloned().collect();
    let wants_trailers = strip_hop_by_hop(headers);
    remove_ferry_headers(headers);
    headers.remove(HOST);
    join_cookie_crumbs(headers);
    if wants_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    for value in trailer {
        headers.append(TRAILER, value);
    }
}

/// Remove hop-by-hop headers (keeping `Trailer`) and every `ferry-*` header from a target's response, so that a
/// `ferry-error` on a stream's response always comes from the connector; then copy the values that stay into a
/// block of their own. They were slices of the target connection's read buffer, and the tunnel's HPACK table
/// keeps the values it indexes for as long as the tunnel lives: the connector held about 5 MB of idle
/// connections' read buffers that way after a load ([`ferry_proto::headers::detach_values`]).
pub(crate) fn clean_response_headers(headers: &mut HeaderMap) {
    let trailer: Vec<HeaderValue> = headers.get_all(TRAILER).iter().cloned().collect();
    strip_hop_by_hop(headers);
    remove_ferry_headers(headers);
    for value in trailer {
        headers.append(TRAILER, value);
    }
    detach_values(headers);
}

/// Ferry's own `ferry-*` headers never reach a target, nor a client from a target.
fn remove_ferry_headers(headers: &mut HeaderMap) {
    remove_where(headers, |n| n.as_str().starts_with("ferry-"));
}

/// Map a target client error to an error reply (docs/protocol.md §3, "Errors on a stream").
fn classify(error: &SendError, target: &str, connect_timeout: Duration) -> ErrorReply {
    if error.is_connect() {
        let timed_out = sources(error).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        if timed_out {
            ErrorReply::new(
                ErrorCode::TargetConnectTimeout,
                format!("connecting to target {target:?} took longer than {connect_timeout:?}"),
            )
        } else {
            ErrorReply::new(
                ErrorCode::TargetUnreachable,
                format!("cannot connect to target {target:?}"),
            )
        }
    } else {
        ErrorReply::new(
            ErrorCode::TargetUnreachable,
            format!("target {target:?} failed before answering"),
        )
    }
}

fn sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// An error and its causes on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    sources(error)
        .map(|e| e.to_string().replace('\n', " "))
        .collect::<Vec<_>>()
        .join(": ")
}

/// An error response on a tunnel stream: `ferry-http`'s one renderer, with the tunnel's body type.
pub(crate) fn error_response(reply: &ErrorReply, request_id: &str) -> Response<TunnelBody> {
    ferry_http::error_response_with(reply, request_id, |text| {
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync()
    })
}

/// A body that drops its `done` sender once the inner body has ended (or is dropped), so a receiver learns when
/// the request body has gone out.
struct TrackEnd<B> {
    inner: B,
    done: Option<oneshot::Sender<()>>,
}

impl<B: Body + Unpin> TrackEnd<B> {
    fn new(inner: B) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let done = (!inner.is_end_stream()).then_some(tx);
        (Self { inner, done }, rx)
    }
}

impl<B> Body for TrackEnd<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.done = None,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done = None,
            _ => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
