//! Proxying one request to an upstream pool: header rewriting (hop-by-hop out, forwarding headers, request id),
//! body limit, choosing a server, retrying an idempotent request whose connection failed before anything was sent (its body too), timeouts,
//! streaming the response back with its in-flight count held until the body ends, and WebSocket upgrades.

use crate::forwarded::{set_forwarding, strip_client_cert_headers};
use crate::gateway::Table;
use crate::pool::{cookie_value, HashOn, InflightGuard, Pool};
use crate::route::Route;
use crate::splice::SpliceEnd;
use crate::timed::TimedBody;
use ferry_http::client::ResponseBody;
use ferry_http::RequestBody;
use ferry_http::{error_response, Body, ClientInfo, Guarded, SizeLimited, TlsInfo};
use ferry_proto::headers::{detach_values, join_cookie_crumbs, strip_hop_by_hop, X_REQUEST_ID};
use ferry_proto::{ErrorCode, ErrorReply};
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Ferry's error response for `code`.
pub(crate) fn error(
    code: ErrorCode,
    message: impl Into<String>,
    request_id: &str,
) -> Response<Body> {
    error_response(&ErrorReply::new(code, message), request_id)
}

fn too_large(limit: u64, request_id: &str) -> Response<Body> {
    error(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than {limit} bytes"),
        request_id,
    )
}

/// Check a relay-bound request against its route (body limit), strip forged client-certificate headers, and
/// rewrite its path (prefix stripping).
pub(crate) fn prepare_relay(
    route: &Route,
    table: &Table,
    mut req: Request<RequestBody>,
) -> Result<Request<RequestBody>, Box<Response<Body>>> {
    let from_trusted = req
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|c| table.trusted.contains(c.remote_addr.ip()));
    if from_trusted {
        req.extensions_mut()
            .insert(ferry_http::forwarded::TrustedPeer);
    } else {
        let tls = req.extensions().get::<Arc<TlsInfo>>().cloned();
        strip_client_cert_headers(req.headers_mut(), &table.cert_family);
        route
            .extra
            .cert_headers
            .apply(req.headers_mut(), tls.as_deref());
    }
    if let Some(limit) = route.max_body_size {
        if ferry_http::declared_length(req.headers()).is_some_and(|n| n > limit) {
            return Err(Box::new(too_large(limit, &ferry_http::request_id(&req))));
        }
        // a streamed body is counted by the relay, against this limit if it is the stricter
        req.extensions_mut().insert(ferry_http::BodyLimit(limit));
    }
    let control = &route.extra.headers;
    if !control.request.is_empty() {
        // one id for `$request_id` and the relay, which keeps a valid incoming one
        let request_id = ferry_http::request_id(&req);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            req.headers_mut().insert(X_REQUEST_ID, v);
        }
        let edits = crate::headers::with_vars(&req, &route.name, &request_id, |vars| {
            control.request.render(vars)
        });
        edits.apply(req.headers_mut());
    }
    let path = match route.upstream_path(req.uri().path(), table.routes.allow_encoded_slashes()) {
        Ok(path) => path,
        Err(problem) => return Err(Box::new(rewrite_refused(route, &problem, &req))),
    };
    if *path != *req.uri().path() {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    Ok(req)
}

/// A rewrite whose result climbs above the root (captures put together into `..`): `400 path_escape`.
fn rewrite_refused<B>(
    route: &Route,
    problem: &ferry_proto::normalize::PathProblem,
    req: &Request<B>,
) -> Response<Body> {
    let request_id = ferry_http::request_id(req);
    tracing::info!(
        request_id,
        route = route.name,
        path = req.uri().path(),
        "request refused: the route's rewrite gave a bad path: {problem}"
    );
    error(
        ErrorCode::PathEscape,
        format!(
            "the path rewritten by route {} is not usable: {problem}",
            route.name
        ),
        &request_id,
    )
}

/// A request body handed to one upstream attempt: it takes the client's body out of the shared slot only when
/// the connection first polls it, so until then the next attempt can take it instead. Written by hand: a body
/// that can be given back unread is specific to retrying on another server.
struct Reclaimable {
    slot: Arc<std::sync::Mutex<Option<Body>>>,
    taken: Option<Body>,
}

impl Reclaimable {
    fn new(slot: Arc<std::sync::Mutex<Option<Body>>>) -> Self {
        Self { slot, taken: None }
    }

    /// Look at the body wherever it is now (this attempt's, or still in the slot).
    fn peek<T>(&self, f: impl Fn(&Body) -> T, absent: T) -> T {
        match &self.taken {
            Some(b) => f(b),
            None => match self.slot.lock() {
                Ok(slot) => slot.as_ref().map_or(absent, f),
                Err(_) => absent,
            },
        }
    }
}

impl http_body::Body for Reclaimable {
    type Data = bytes::Bytes;
    type Error = ferry_http::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.taken.is_none() {
            let body = self.slot.lock().ok().and_then(|mut slot| slot.take());
            self.taken = body;
        }
        match self.taken.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            // Another attempt has it: this one ends empty (it is abandoned anyway).
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.peek(|b| b.is_end_stream(), true)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.peek(|b| b.size_hint(), http_body::SizeHint::with_exact(0))
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Proxy `req` to `pool` for `route`. With `logged` (an access log is kept), the response carries the server
/// that answered as an [`Upstream`](crate::Upstream) extension.
pub(crate) async fn forward(
    pool: Arc<Pool>,
    route: &Route,
    table: &Table,
    mut req: Request<RequestBody>,
    logged: bool,
) -> Response<Body> {
    let trusted = &table.trusted;
    let request_id = ferry_http::request_id(&req);
    let started = Instant::now();
    if ferry_http::has_ambiguous_framing(&req) {
        return error(
            ErrorCode::AmbiguousFraming,
            "Content-Length with Transfer-Encoding, or conflicting Content-Length values",
            &request_id,
        );
    }
    if let Some(limit) = route.max_body_size {
        if ferry_http::declared_length(req.headers()).is_some_and(|n| n > limit) {
            return too_large(limit, &request_id);
        }
    }
    let connection = req.extensions().get::<ClientInfo>().copied();
    let client = connection.unwrap_or(ClientInfo {
        remote_addr: ([0, 0, 0, 0], 0).into(),
        local_addr: ([0, 0, 0, 0], 0).into(),
        tls: false,
        listener: ([0, 0, 0, 0], 0).into(),
    });
    let tls = req.extensions().get::<Arc<TlsInfo>>().cloned();
    // an answer to an HTTP/2 client goes through that connection's HPACK table (see `respond`)
    let multiplexed = req.version() == Version::HTTP_2;
    // only the protocols the route allows (websocket by default); another is ignored, and `Upgrade` goes with
    // the other hop-by-hop headers
    let upgrade = ferry_http::checks::allowed_upgrade(&req, &route.upgrades)
        .and_then(|_| req.headers().get(header::UPGRADE).cloned());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    // The host the request names, as routing saw it (RFC 9110 §7.2, RFC 9112 §3.2.2): the URI's authority
    // (HTTP/2's `:authority`, an HTTP/1.1 absolute-form target) wins over a `Host` header that disagrees. The
    // header value shares the request's buffer: a copy of it costs no allocation.
    let host = match req.uri().authority() {
        // user info in an absolute-form target is not a host (RFC 9110 §4.2.4): the header then, if any
        Some(a) if !a.as_str().contains('@') => HeaderValue::from_str(a.as_str()).ok(),
        _ => req.headers().get(header::HOST).cloned(),
    };
    let hash_key: Option<Vec<u8>> = match &pool.hash_on {
        Some(HashOn::Header(n)) => req.headers().get(n).map(|v| v.as_bytes().to_vec()),
        Some(HashOn::Cookie(c)) => cookie_value(req.headers(), c).map(|v| v.as_bytes().to_vec()),
        Some(HashOn::ClientIp) => Some(client.remote_addr.ip().to_string().into_bytes()),
        None => None,
    };
    // a sticky-session cookie naming a live server pins the request there
    let pinned = pool
        .sticky_cookie
        .as_deref()
        .and_then(|name| cookie_value(req.headers(), name))
        .and_then(|token| pool.sticky_server(token));
    let target = {
        let path = match route.upstream_path(req.uri().path(), table.routes.allow_encoded_slashes())
        {
            Ok(path) => path,
            Err(problem) => return rewrite_refused(route, &problem, &req),
        };
        let pq = match (req.uri().path_and_query(), req.uri().query()) {
            // an unchanged path: the request's own, shared rather than copied and parsed again
            (Some(pq), _) if *path == *req.uri().path() => Ok(pq.clone()),
            (_, Some(q)) => PathAndQuery::try_from(format!("{path}?{q}")),
            (_, None) => PathAndQuery::try_from(path.as_ref()),
        };
        match pq {
            Ok(pq) => pq,
            Err(e) => {
                return error(
                    ErrorCode::BadRequest,
                    format!("bad request target: {e}"),
                    &request_id,
                )
            }
        }
    };
    // the route's header edits and Host, rendered while the request is whole (`$http_NAME` reads what the client
    // sent); nothing is done for a route without them
    let control = &route.extra.headers;
    let (request_edits, own_host) =
        if control.request.is_empty() && control.host_template().is_none() {
            (None, None)
        } else {
            crate::headers::with_vars(&req, &route.name, &request_id, |vars| {
                (
                    Some(control.request.render(vars)).filter(|_| !control.request.is_empty()),
                    control.host_template().and_then(|t| t.render(vars)),
                )
            })
        };
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    if strip_hop_by_hop(&mut headers) {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    if let Some(v) = &host {
        headers.insert(header::HOST, v.clone());
    }
    join_cookie_crumbs(&mut headers);
    let from_trusted = trusted.contains(client.remote_addr.ip());
    if !from_trusted {
        strip_client_cert_headers(&mut headers, &table.cert_family);
        route.extra.cert_headers.apply(&mut headers, tls.as_deref());
    }
    set_forwarding(&mut headers, &client, host.as_ref(), from_trusted);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
    if let Some(edits) = request_edits {
        edits.apply(&mut headers);
    }
    if let Some(v) = own_host {
        headers.insert(header::HOST, v);
    }
    let host_is_upstream = control.host_is_upstream();
    let idempotent = is_idempotent(&parts.method);
    let timeouts = pool.timeouts;
    // A request without a body (nearly every GET) needs no limit, no idle timer and nothing to hand over to a
    // retry: each attempt sends an empty body of its own.
    // with `buffer_request_body`, the whole body: each attempt can be given it again
    let mut buffered: Option<crate::buffer::Buffered> = None;
    let (body, exceeded, client_idle, client_failed) = if body.is_end_stream() {
        (None, None, None, None)
    } else {
        // raised when the client's own body fails: its fault, never the upstream server's
        let (body, client_failed) = ferry_http::ClientBody::new(body);
        let (body, exceeded) = match route.max_body_size {
            Some(limit) => {
                let (b, flag) = SizeLimited::new(body, limit);
                (b.boxed_unsync(), Some(flag))
            }
            None => (body.boxed_unsync(), None),
        };
        // a client that stops sending its body mid-way is cut after the pool's idle timeout
        let (body, client_idle) = TimedBody::request(body, timeouts.idle);
        let body = if let Some(settings) = &route.extra.buffer_request_body {
            // nginx's `proxy_request_buffering on`: the whole body first (in memory or on disk), then the
            // upstream, with a length
            match crate::buffer::Buffered::read(body.boxed_unsync(), settings).await {
                Ok(whole) => {
                    headers.remove(header::TRANSFER_ENCODING);
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(whole.len()));
                    let first = whole.body();
                    buffered = Some(whole);
                    first
                }
                Err(crate::buffer::BufferError::Disk(e)) => {
                    tracing::error!(
                        request_id,
                        pool = pool.name,
                        "request body not buffered: {e} (see [gateway] body_buffer_dir)"
                    );
                    return error(
                        ErrorCode::Internal,
                        "the request body could not be buffered",
                        &request_id,
                    );
                }
                Err(crate::buffer::BufferError::Body(_)) => {
                    return if exceeded.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) {
                        too_large(route.max_body_size.unwrap_or(0), &request_id)
                    } else if client_idle.load(Ordering::Acquire) {
                        tracing::info!(request_id, pool = pool.name, idle = ?timeouts.idle, "request body idle: cut");
                        error(
                            ErrorCode::RequestTimeout,
                            format!(
                                "the client sent nothing of its request body for {:?}",
                                timeouts.idle
                            ),
                            &request_id,
                        )
                    } else {
                        tracing::info!(
                            request_id,
                            pool = pool.name,
                            "request refused: the client's request body was malformed or broke off"
                        );
                        error(
                            ErrorCode::BadRequest,
                            "the request body was malformed or broke off",
                            &request_id,
                        )
                    };
                }
            }
        } else {
            body.boxed_unsync()
        };
        // The body stays reclaimable until the upstream connection first reads it: after a failed connect, an
        // idempotent request goes to the next server with its body intact.
        let body = Arc::new(std::sync::Mutex::new(Some(body)));
        (Some(body), exceeded, Some(client_idle), Some(client_failed))
    };
    let deadline = timeouts.total.map(|t| (t, started + t));
    let head_wait = match timeouts.total {
        Some(t) => timeouts.header.min(t),
        None => timeouts.header,
    };
    let max_attempts = pool.servers().len().min(3);
    // at most three attempts: on the stack
    let mut tried = smallvec::SmallVec::<[usize; 4]>::new();
    // the retry under way, counted against the pool's retry budget until the answer is in
    let mut _retry: Option<crate::pool::RetryGuard> = None;
    loop {
        let choice = match pinned {
            Some(p) if tried.is_empty() => Ok(p),
            _ => pool.pick(hash_key.as_deref(), &tried),
        };
        let i = match choice {
            Ok(i) => i,
            Err(crate::pool::NoServer::AllFull) => {
                tracing::warn!(
                    request_id,
                    pool = pool.name,
                    "every server of the upstream is at its max_conns"
                );
                return error(
                    ErrorCode::UpstreamBusy,
                    format!("every server of upstream {} is busy", pool.name),
                    &request_id,
                );
            }
            Err(crate::pool::NoServer::AllTried) => {
                return error(
                    ErrorCode::TargetUnreachable,
                    format!("no server of upstream {} left to try", pool.name),
                    &request_id,
                )
            }
        };
        tried.push(i);
        let server = pool.servers()[i].clone();
        let mut out = Request::new(match &body {
            Some(body) => Reclaimable::new(body.clone()).boxed_unsync(),
            None => ferry_http::empty(),
        });
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = Uri::from(target.clone());
        // a copy only while another attempt may follow
        *out.headers_mut() = if idempotent && tried.len() < max_attempts {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        if host_is_upstream {
            if let Ok(v) = HeaderValue::from_str(server.authority.as_str()) {
                out.headers_mut().insert(header::HOST, v);
            }
        }
        let guard = pool.start(i);
        let sent = Instant::now();
        match tokio::time::timeout(head_wait, pool.send(i, out, connection.as_ref())).await {
            Ok(Ok(resp)) => {
                let upstream_time = sent.elapsed();
                pool.record_success(i);
                tracing::debug!(request_id, pool = pool.name, server = %server.authority, status = resp.status().as_u16(), "proxied");
                // pin (or re-pin, after a fail-over) the session to the server that answered
                let set_cookie = match pinned {
                    Some(p) if p == i => None,
                    _ => pool.sticky_set_cookie(&server.token, client.tls),
                };
                let mut resp = respond(
                    resp,
                    guard,
                    &request_id,
                    timeouts.idle,
                    deadline,
                    client_upgrade,
                    multiplexed,
                );
                if let Some(v) = set_cookie {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
                tag_upstream(&mut resp, logged, &server.authority);
                if logged {
                    resp.extensions_mut()
                        .insert(crate::access_log::UpstreamTime(upstream_time));
                }
                return resp;
            }
            Ok(Err(e)) => {
                if exceeded.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) {
                    return too_large(route.max_body_size.unwrap_or(0), &request_id);
                }
                if client_idle
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Acquire))
                {
                    tracing::info!(request_id, pool = pool.name, idle = ?timeouts.idle, "request body idle: cut");
                    return error(
                        ErrorCode::RequestTimeout,
                        format!(
                            "the client sent nothing of its request body for {:?}",
                            timeouts.idle
                        ),
                        &request_id,
                    );
                }
                if client_failed
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Acquire))
                {
                    let why = chain(&e);
                    tracing::info!(request_id, pool = pool.name, "request refused: the client's request body was malformed or broke off: {why}");
                    return error(
                        ErrorCode::BadRequest,
                        "the request body was malformed or broke off",
                        &request_id,
                    );
                }
                let connect = e.is_connect();
                pool.record_failure(i);
                let why = chain(&e);
                let unsent = body
                    .as_ref()
                    .is_none_or(|body| body.lock().is_ok_and(|slot| slot.is_some()));
                if connect
                    && idempotent
                    && (unsent || buffered.is_some())
                    && tried.len() < max_attempts
                {
                    refill(&body, &buffered);
                    match pool.try_retry() {
                        Some(retry) => {
                            tracing::info!(request_id, pool = pool.name, server = %server.authority, "upstream connect failed, retrying on another server: {why}");
                            _retry = Some(retry);
                            continue;
                        }
                        None => tracing::info!(
                            request_id,
                            pool = pool.name,
                            "retry budget spent: not retrying"
                        ),
                    }
                }
                let code = if connect && timed_out(&e) {
                    ErrorCode::TargetConnectTimeout
                } else {
                    ErrorCode::TargetUnreachable
                };
                tracing::warn!(request_id, pool = pool.name, server = %server.authority, code = %code, "upstream request failed: {why}");
                // the cause names the server's address: the log line above has it, the client gets none
                let what = if code == ErrorCode::TargetConnectTimeout {
                    "connecting took too long"
                } else if connect {
                    "cannot connect"
                } else {
                    "failed before answering"
                };
                let mut resp = error(code, format!("upstream {}: {what}", pool.name), &request_id);
                tag_upstream(&mut resp, logged, &server.authority);
                return resp;
            }
            Err(_) => {
                pool.record_failure(i);
                tracing::warn!(request_id, pool = pool.name, server = %server.authority, timeout = ?head_wait, "upstream response head timed out");
                // nginx's `proxy_next_upstream timeout`, for requests that can be sent again as they were: idempotent
                // and without a body; never past the exchange's total_timeout
                let time_left = deadline.is_none_or(|(_, at)| Instant::now() + head_wait <= at);
                if pool.retry_timeouts
                    && idempotent
                    && (body.is_none() || buffered.is_some())
                    && tried.len() < max_attempts
                    && time_left
                {
                    refill(&body, &buffered);
                    match pool.try_retry() {
                        Some(retry) => {
                            tracing::info!(
                                request_id,
                                pool = pool.name,
                                "retrying on another server after the timeout"
                            );
                            _retry = Some(retry);
                            continue;
                        }
                        None => tracing::info!(
                            request_id,
                            pool = pool.name,
                            "retry budget spent: not retrying"
                        ),
                    }
                }
                let mut resp = error(
                    ErrorCode::TargetTimeout,
                    format!("upstream {} did not answer within {head_wait:?}", pool.name),
                    &request_id,
                );
                tag_upstream(&mut resp, logged, &server.authority);
                return resp;
            }
        }
    }
}

/// Put the buffered body back in the slot for the next attempt (the last one may have read it).
fn refill(
    slot: &Option<Arc<std::sync::Mutex<Option<Body>>>>,
    buffered: &Option<crate::buffer::Buffered>,
) {
    if let (Some(slot), Some(whole)) = (slot, buffered) {
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(whole.body());
        }
    }
}

/// Name the server that answered for the access log; with no access log, nothing is built (an extension costs
/// two allocations per request).
fn tag_upstream(resp: &mut Response<Body>, logged: bool, server: &http::uri::Authority) {
    if logged {
        resp.extensions_mut()
            .insert(crate::Upstream(server.to_string()));
    }
}

fn respond(
    mut resp: Response<ResponseBody>,
    guard: InflightGuard,
    request_id: &str,
    idle: std::time::Duration,
    deadline: Option<(std::time::Duration, Instant)>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    multiplexed: bool,
) -> Response<Body> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let request_id = request_id.to_owned();
            tokio::spawn(async move {
                let _guard = guard;
                let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!(request_id, "upgrade failed: {e}");
                        return;
                    }
                };
                let client = hyper_util::rt::TokioIo::new(client);
                let upstream = hyper_util::rt::TokioIo::new(upstream);
                let deadline = deadline.map(|(d, at)| (d, tokio::time::Instant::from_std(at)));
                match crate::splice::splice(client, upstream, idle, deadline).await {
                    SpliceEnd::Closed(Ok(_)) => {}
                    SpliceEnd::Closed(Err(e)) => {
                        tracing::debug!(request_id, "upgraded connection ended: {e}");
                    }
                    SpliceEnd::Idle(after) => tracing::info!(
                        request_id,
                        idle_timeout = ?after,
                        "upgraded connection idle for the pool's idle_timeout: closed"
                    ),
                    SpliceEnd::Total(after) => tracing::info!(
                        request_id,
                        total_timeout = ?after,
                        "upgraded connection reached the pool's total_timeout: closed"
                    ),
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, ferry_http::empty());
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if multiplexed {
        // The header values are slices of the upstream connection's read buffer, and the client's HTTP/2
        // connection keeps the ones its HPACK table indexes for as long as it lives: copied, they keep only
        // themselves (`detach_values`). An HTTP/1.1 client's connection keeps nothing of them, nor does an
        // HTTP/3 one (h3 encodes its header blocks without QPACK's dynamic table): no copy.
        detach_values(&mut parts.headers);
    }
    if !parts.headers.contains_key(X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            parts.headers.insert(X_REQUEST_ID, v);
        }
    }
    let body = TimedBody::new(
        body,
        idle,
        deadline.map(|(d, at)| (d, tokio::time::Instant::from_std(at))),
    );
    Response::from_parts(parts, Guarded::new(body, guard).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use crate::gateway::{Gateway, RelayFuture};
    use ferry_config::{GatewayConfig, RouteConfig, UpstreamConfig, UpstreamServer};
    use ferry_http::{Body, RequestBody};
    use http::{Request, Response, Version};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    struct NoRelay;
    impl crate::RelayBackend for NoRelay {
        fn relay(&self, _: &str, _: &str, _: Request<RequestBody>) -> RelayFuture {
            Box::pin(async { Response::new(ferry_http::empty()) })
        }
    }

    /// An upstream on 127.0.0.1 that answers every request of a connection with the same head and body.
    async fn upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            got.drain(..end + 4);
                            let answer = "HTTP/1.1 200 OK\r\nx-one: first\r\nx-two: second\r\n\
                                          content-length: 2\r\n\r\nok";
                            if tcp.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// How far apart in memory the values of `x-one` and `x-two` are: from the first byte of one to the last of
    /// the other.
    fn reach(resp: &Response<Body>) -> usize {
        let span = |name: &str| {
            let value = resp.headers()[name].as_bytes();
            let start = value.as_ptr() as usize;
            start..start + value.len()
        };
        let (one, two) = (span("x-one"), span("x-two"));
        one.end.max(two.end) - one.start.min(two.start)
    }

    /// An answer to an HTTP/2 client goes into that connection's HPACK table, which keeps the values it indexes
    /// for as long as the connection lives; values that were slices of the upstream connection's read buffer
    /// kept that whole buffer (up to 448 KiB) alive with them (docs/performance.md, "Memory after load"). They
    /// are copied into a block of their own; an answer to an HTTP/1.1 client, whose connection keeps nothing of
    /// it, is not (the control: there the values are still where hyper parsed them).
    #[tokio::test]
    async fn answers_to_http2_clients_hold_no_slice_of_the_upstream_read_buffer() {
        let addr = upstream().await;
        let config = GatewayConfig {
            routes: vec![RouteConfig {
                path: Some("/".into()),
                upstream: Some("web".into()),
                ..RouteConfig::default()
            }],
            upstreams: [(
                "web".to_owned(),
                UpstreamConfig {
                    servers: vec![UpstreamServer {
                        url: format!("http://{addr}"),
                        weight: 1,
                        backup: false,
                        max_conns: None,
                    }],
                    ..UpstreamConfig::default()
                },
            )]
            .into_iter()
            .collect(),
            ..GatewayConfig::default()
        };
        let gateway = Gateway::new(&config, Arc::new(NoRelay)).expect("gateway");
        let in_the_head = "first\r\nx-two: second".len();
        let side_by_side = "first".len() + "second".len() + "2".len();
        for version in [Version::HTTP_2, Version::HTTP_11] {
            let req = Request::get("http://app.example/x")
                .version(version)
                .header("host", "app.example")
                .body(RequestBody::empty())
                .expect("request");
            let matched = gateway.route(&req).expect("a route");
            let resp = gateway.handle(matched, req).await;
            assert_eq!(resp.status(), 200, "{version:?}");
            if version == Version::HTTP_2 {
                assert!(
                    reach(&resp) <= side_by_side,
                    "HTTP/2: {} bytes apart",
                    reach(&resp)
                );
            } else {
                assert_eq!(
                    reach(&resp),
                    in_the_head,
                    "HTTP/1.1: still in the read buffer"
                );
            }
        }
    }
}
