//! The public listener's paths: health, readiness, the token endpoint, the tunnel endpoint, then the gateway's
//! routes and the relay, whose requests get an access-log line (`ferry_edge::access_log`).

use crate::Node;
use bytes::Bytes;
use ferry_edge::{AccessEntry, Upstream};
use ferry_gateway::Handler;
use ferry_http::RequestBody;
use ferry_http::{error_response, full, Body};
use ferry_proto::path::RELAY_PREFIX;
use ferry_proto::{tunnel, ErrorCode, ErrorReply};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Largest token request body accepted.
const TOKEN_BODY_LIMIT: usize = 16 * 1024;
/// How long a token request waits for a free verification slot before 503.
const TOKEN_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn handler(node: Arc<Node>) -> Handler {
    // `route`'s future straight into the box: a wrapping `async` block would copy its 5 KB once more per request.
    Arc::new(move |req| Box::pin(route(node.clone(), req)))
}

/// The handler of a plain-HTTP listener that sends everyone to HTTPS: `308` to `https://HOST[:port]/path?query`
/// (the method and body are kept by a 308). A request without a usable host gets `400`. With `node`, a gateway
/// route that names the listener in its `listeners` answers the requests it takes instead (an ACME challenge on
/// port 80, as nginx's `location` beside `return 301 https://…`); routes of every listener do not.
pub(crate) fn redirect_to_https(port: u16, node: Option<Arc<Node>>) -> Handler {
    Arc::new(move |req| {
        let routed = node
            .as_ref()
            .filter(|n| n.edge.as_ref().is_some_and(|e| e.routes_by_listener()));
        if let Some(node) = routed {
            return Box::pin(route_or_redirect(node.clone(), port, req));
        }
        let resp = https_redirect(&req, port);
        Box::pin(async move { resp })
    })
}

/// On a listener that redirects to HTTPS: the route that names the listener, if one takes `req`, else the
/// redirect.
async fn route_or_redirect(
    node: Arc<Node>,
    port: u16,
    mut req: Request<RequestBody>,
) -> Response<Body> {
    let Some(edge) = node.edge.clone() else {
        return https_redirect(&req, port);
    };
    let matched = match edge.route_named(&mut req) {
        Ok(Some(matched)) => matched,
        // no route of this listener takes it (a path that cannot be normalised neither): redirected as before
        Ok(None) | Err(_) => return https_redirect(&req, port),
    };
    if let Some(refused) = ferry_http::checks::refuse_head(&req) {
        return refused;
    }
    if let Some(refused) = headers_too_large(&node, &req) {
        return refused;
    }
    let entry = AccessEntry::begin(edge.access_logger(), &mut req);
    let name = entry.is_some().then(|| matched.route_name().to_owned());
    let resp = edge.handle(matched, req).await;
    match entry {
        Some(entry) => entry.finish(name.as_deref(), resp),
        None => resp,
    }
}

fn https_redirect<B>(req: &Request<B>, port: u16) -> Response<Body> {
    // the host as routing reads it: lowercased, without its port, checked to be a host
    let Some(host) = ferry_edge::route::request_host(req) else {
        let reply = ErrorReply::new(
            ErrorCode::BadRequest,
            "this listener redirects to https and needs the request's host",
        );
        return error_response(&reply, &ferry_http::request_id(req));
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut resp = Response::new(ferry_http::empty());
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    match http::HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(http::header::LOCATION, v);
            resp
        }
        Err(_) => error_response(
            &ErrorReply::new(
                ErrorCode::BadRequest,
                "the request target cannot be redirected",
            ),
            &ferry_http::request_id(req),
        ),
    }
}

async fn route(node: Arc<Node>, mut req: Request<RequestBody>) -> Response<Body> {
    if let Some(refused) = ferry_http::checks::refuse_head(&req) {
        return refused;
    }
    if is_ferry_path(req.uri().path()) {
        return ferry_own(node, req).await;
    }
    let Some(edge) = node.edge.clone() else {
        return not_this_role(&req, "gateway");
    };
    // everything else is a gateway route's, the relay's or a 404, and gets an access-log line
    let entry = AccessEntry::begin(edge.access_logger(), &mut req);
    let (route, resp) = answer(&node, &edge, req, entry.is_some()).await;
    match entry {
        Some(entry) => entry.finish(route.as_deref(), resp),
        None => resp,
    }
}

/// Answer a request that is not for one of Ferry's own paths; with `logged` (an access log is kept), also returns
/// the name of the gateway route that answered, if one did.
async fn answer(
    node: &Node,
    edge: &ferry_edge::Gateway,
    mut req: Request<RequestBody>,
    logged: bool,
) -> (Option<String>, Response<Body>) {
    if let Some(refused) = headers_too_large(node, &req) {
        return (None, refused);
    }
    match edge.route_normalized(&mut req) {
        Ok(Some(matched)) => {
            let name = logged.then(|| matched.route_name().to_owned());
            return (name, edge.handle(matched, req).await);
        }
        Ok(None) => {}
        Err(refused) => return (None, *refused),
    }
    let path = req.uri().path();
    let relay_here = path.starts_with(RELAY_PREFIX) && Node::arrived_on(&node.relay_on, &req);
    if let (true, Some(relay)) = (relay_here, &node.relay) {
        // The access log's upstream name (`tenant/target`), only built when there is an access log.
        let upstream = (edge.access_log() != ferry_config::AccessLog::Off)
            .then(|| ferry_proto::path::split_relay_path(path, None).ok())
            .flatten()
            .map(|p| Upstream(format!("{}/{}", p.tenant, p.target)));
        edge.scrub_unrouted(&mut req);
        let mut resp = relay.handle_relay(req).await;
        if let Some(u) = upstream {
            resp.extensions_mut().insert(u);
        }
        return (None, resp);
    }
    let request_id = ferry_http::request_id(&req);
    let reply = ErrorReply::new(ErrorCode::NotFound, format!("no route for {path}"));
    (None, error_response(&reply, &request_id))
}

/// Ferry's own endpoints: health, readiness, the tunnel, the token endpoint, discovery and JWKS.
async fn ferry_own(node: Arc<Node>, req: Request<RequestBody>) -> Response<Body> {
    if let Some(refused) = headers_too_large(&node, &req) {
        return refused;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if node.ready.load(Ordering::SeqCst) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        tunnel::TUNNEL_PATH if !Node::arrived_on(&node.tunnel_on, &req) => {
            let request_id = ferry_http::request_id(&req);
            let reply = ErrorReply::new(
                ErrorCode::NotFound,
                "no route for the tunnel on this listener: connectors connect to the listeners of server.tunnel.listeners",
            );
            tracing::info!(
                request_id,
                "tunnel refused: not one of server.tunnel.listeners"
            );
            error_response(&reply, &request_id)
        }
        tunnel::TUNNEL_PATH => match &node.hub {
            Some(hub) => hub.handle_tunnel(req).await,
            None => not_this_role(&req, "relay"),
        },
        ferry_relay::cluster::link::LINK_PATH => match &node.hub {
            Some(_) => node.cluster.handle_link(req).await,
            None => not_this_role(&req, "relay"),
        },
        tunnel::TOKEN_PATH if node.hub.is_some() => token(&node, req).await,
        ferry_auth::OPENID_CONFIGURATION_PATH | ferry_auth::JWKS_PATH if node.hub.is_some() => {
            well_known(&node, &req)
        }
        tunnel::TOKEN_PATH | ferry_auth::OPENID_CONFIGURATION_PATH | ferry_auth::JWKS_PATH => {
            not_this_role(&req, "relay")
        }
        path => {
            let request_id = ferry_http::request_id(&req);
            let reply = ErrorReply::new(ErrorCode::NotFound, format!("no route for {path}"));
            error_response(&reply, &request_id)
        }
    }
}

/// `404` for a path this node would serve with a role it does not run: the load balancer sent it to the wrong
/// kind of node.
fn not_this_role<B>(req: &Request<B>, role: &str) -> Response<Body> {
    let request_id = ferry_http::request_id(req);
    let reply = ErrorReply::new(
        ErrorCode::NotFound,
        format!(
            "no route for {}: this node does not run the {role} role",
            req.uri().path()
        ),
    );
    error_response(&reply, &request_id)
}

/// `431`-style refusal (Ferry's `headers_too_large`) of a request whose head is larger than allowed.
fn headers_too_large(node: &Node, req: &Request<RequestBody>) -> Option<Response<Body>> {
    if ferry_http::head_size(req) <= node.max_header_size {
        return None;
    }
    let request_id = ferry_http::request_id(req);
    let reply = ErrorReply::new(
        ErrorCode::HeadersTooLarge,
        format!(
            "request headers are larger than {} bytes",
            node.max_header_size
        ),
    );
    tracing::info!(request_id, path = req.uri().path(), code = %reply.code, "request refused: {}", reply.message);
    Some(error_response(&reply, &request_id))
}

/// Paths Ferry answers itself, which no gateway route can claim. Of `/.well-known/`, only the issuer's documents:
/// the others (ACME challenges, `security.txt`) are the routes' (unrouted, `404` as before).
fn is_ferry_path(path: &str) -> bool {
    path.starts_with("/_ferry/")
        || matches!(
            path,
            tunnel::TOKEN_PATH
                | "/healthz"
                | "/readyz"
                | ferry_auth::OPENID_CONFIGURATION_PATH
                | ferry_auth::JWKS_PATH
        )
}

/// The relay as the gateway's `relay = "tenant/target"` routes reach it: the request's path is put under
/// `/relay/{tenant}/{target}` and handled like any relay request.
pub(crate) struct RelayRoutes(pub Arc<ferry_relay::Relay>);

impl ferry_edge::RelayBackend for RelayRoutes {
    fn relay(
        &self,
        tenant: &str,
        target: &str,
        mut req: Request<RequestBody>,
    ) -> ferry_edge::RelayFuture {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let relayed = format!("{RELAY_PREFIX}{tenant}/{target}{pq}");
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = relayed.parse().ok();
        match http::Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => {
                let request_id = ferry_http::request_id(&req);
                let reply = ErrorReply::new(ErrorCode::BadRequest, "bad request target");
                return Box::pin(async move { error_response(&reply, &request_id) });
            }
        }
        let relay = self.0.clone();
        Box::pin(async move { relay.handle_relay(req).await })
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The built-in issuer's discovery document and JWKS (`ferry-auth` builds them from configuration only; any
/// method is answered as GET). Only the JWKS may be cached by shared caches.
fn well_known(node: &Node, req: &Request<RequestBody>) -> Response<Body> {
    let path = req.uri().path();
    let Some(doc) = node.issuer.well_known(path, node.listener_url.as_deref()) else {
        let reply = ErrorReply::new(ErrorCode::NotFound, "no such document");
        return error_response(&reply, &ferry_http::request_id(req));
    };
    let mut r = Response::new(full(doc.body));
    *r.status_mut() = StatusCode::from_u16(doc.status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(doc.content_type),
    );
    let cache = if path == ferry_auth::JWKS_PATH {
        "public, max-age=60"
    } else {
        "private, max-age=60"
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

async fn token(node: &Node, req: Request<RequestBody>) -> Response<Body> {
    let request_id = ferry_http::request_id(&req);
    if req.method() != Method::POST {
        let reply = ErrorReply::method_not_allowed("POST", "the token endpoint takes POST");
        return error_response(&reply, &request_id);
    }
    let header_str = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header_str(header::AUTHORIZATION);
    let content_type = header_str(header::CONTENT_TYPE);
    let remote = req
        .extensions()
        .get::<ferry_http::ClientInfo>()
        .map(|c| c.remote_addr.to_string());
    let client_ip = req
        .extensions()
        .get::<ferry_http::ClientInfo>()
        .map(|c| c.remote_addr.ip());
    let body: Bytes = match Limited::new(req.into_body(), TOKEN_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let reply = ErrorReply::new(
                ErrorCode::PayloadTooLarge,
                format!("token requests are at most {TOKEN_BODY_LIMIT} bytes"),
            );
            return error_response(&reply, &request_id);
        }
    };
    // Each token request costs an argon2 verification (tens of milliseconds of CPU, on purpose): a bounded number
    // run at once, so a flood of token requests cannot starve the relay of CPU.
    let permit = match tokio::time::timeout(TOKEN_QUEUE_WAIT, node.token_checks.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            let reply = ErrorReply::new(
                ErrorCode::TokenEndpointBusy,
                "too many token requests at once",
            );
            return error_response(&reply, &request_id);
        }
    };
    let reply = node
        .issuer
        .client_credentials(
            client_ip,
            authorization.as_deref(),
            content_type.as_deref(),
            &body,
        )
        .await;
    drop(permit);
    node.token_metrics.answered(reply.status);
    if reply.status != 200 {
        tracing::info!(remote, status = reply.status, "token request refused");
    }
    let mut r = Response::new(full(reply.body));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}
