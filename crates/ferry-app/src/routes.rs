//! The public listener's paths: health, readiness, the token endpoint, the tunnel endpoint and the relay.

use crate::Node;
use bytes::Bytes;
use ferry_gateway::Handler;
use ferry_http::{error_response, full, Body};
use ferry_proto::path::RELAY_PREFIX;
use ferry_proto::{tunnel, ErrorCode, ErrorReply};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Largest token request body accepted.
const TOKEN_BODY_LIMIT: usize = 16 * 1024;
/// How long a token request waits for a free verification slot before 503.
const TOKEN_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn handler(node: Arc<Node>) -> Handler {
    Arc::new(move |req| {
        let node = node.clone();
        Box::pin(async move { route(node, req).await })
    })
}

async fn route(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    if ferry_http::head_size(&req) > node.max_header_size {
        let request_id = ferry_http::request_id(&req);
        let reply = ErrorReply::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "request headers are larger than {} bytes",
                node.max_header_size
            ),
        );
        tracing::info!(request_id, path = req.uri().path(), code = %reply.code, "request refused: {}", reply.message);
        return error_response(&reply, &request_id);
    }
    let path = req.uri().path();
    if path.starts_with(RELAY_PREFIX) {
        return node.relay.handle_relay(req).await;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if node.ready.load(Ordering::SeqCst) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        tunnel::TUNNEL_PATH => node.relay.handle_tunnel(req).await,
        tunnel::TOKEN_PATH => token(&node, req).await,
        _ => {
            let request_id = ferry_http::request_id(&req);
            let reply = ErrorReply::new(ErrorCode::NotFound, format!("no route for {path}"));
            error_response(&reply, &request_id)
        }
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

async fn token(node: &Node, req: Request<Incoming>) -> Response<Body> {
    let request_id = ferry_http::request_id(&req);
    if req.method() != Method::POST {
        let mut r = error_response(
            &ErrorReply::new(ErrorCode::BadRequest, "the token endpoint takes POST"),
            &request_id,
        );
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
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
            let reply = ErrorReply::new(ErrorCode::TenantBusy, "too many token requests at once");
            let mut r = error_response(&reply, &request_id);
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
    };
    let reply = node
        .issuer
        .client_credentials(authorization.as_deref(), content_type.as_deref(), &body)
        .await;
    drop(permit);
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
