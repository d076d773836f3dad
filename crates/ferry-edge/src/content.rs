//! What a route does to content itself rather than pass it on: serving files from a directory (`static_dir`)
//! and compressing responses (`compress`). Both are tower-http's (`ServeDir`, `CompressionLayer`), called once per
//! request; this module only feeds them the request and turns their bodies into Ferry's.

use ferry_http::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::path::Path;
use tower::{Layer, ServiceExt};

/// Serve the file `path` names under `dir` (an already normalised path), as [`tower_http::services::ServeDir`]
/// does: `index.html` for a directory, precompressed `.br`/`.gz` siblings for clients that accept them, ranges,
/// conditional requests; 404 for a missing file, 405 for methods other than GET and HEAD.
pub(crate) async fn serve_file<B>(dir: &Path, path: &str, req: Request<B>) -> Response<Body> {
    let (mut parts, _) = req.into_parts();
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    let probe = Request::from_parts(parts, http_body_util::Empty::<bytes::Bytes>::new());
    let serve = tower_http::services::ServeDir::new(dir)
        .precompressed_br()
        .precompressed_gzip();
    match serve.oneshot(probe).await {
        Ok(resp) => {
            if resp.status() == StatusCode::NOT_FOUND {
                tracing::debug!(dir = %dir.display(), path, "static file not found");
            }
            resp.map(|b| b.map_err(Into::into).boxed_unsync())
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), path, "static file could not be read: {e}");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(ferry_http::empty());
    *r.status_mut() = code;
    r
}

/// The request facts compression needs, taken before the request is handed on.
pub(crate) struct Negotiation {
    accept: Vec<HeaderValue>,
    method: Method,
}

impl Negotiation {
    pub(crate) fn of<B>(req: &Request<B>) -> Self {
        Self {
            accept: req
                .headers()
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .cloned()
                .collect(),
            method: req.method().clone(),
        }
    }

    /// `resp` compressed for the client (tower-http's `CompressionLayer` with its default predicate: not
    /// already encoded, not under 32 bytes, not images, gRPC or `text/event-stream`), or unchanged: HEAD,
    /// `101`, `204` and `304` answers, and clients that accept no encoding it has.
    pub(crate) async fn compress(self, resp: Response<Body>) -> Response<Body> {
        if self.accept.is_empty()
            || self.method == Method::HEAD
            || matches!(
                resp.status(),
                StatusCode::SWITCHING_PROTOCOLS | StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            return resp;
        }
        let mut probe = Request::new(());
        for v in self.accept {
            probe.headers_mut().append(header::ACCEPT_ENCODING, v);
        }
        let compressed = tower_http::compression::CompressionLayer::new()
            .layer(Answer(Some(resp)))
            .oneshot(probe)
            .await;
        match compressed {
            Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed_unsync()),
            Err(never) => match never {},
        }
    }
}

/// A service that answers its one call with a response already at hand: how a finished response goes through
/// tower-http's compression layer. (A `service_fn` closure here makes the gateway's future lose `Send` under
/// higher-ranked lifetimes.)
struct Answer(Option<Response<Body>>);

impl tower::Service<Request<()>> for Answer {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        std::future::ready(Ok(self
            .0
            .take()
            .unwrap_or_else(|| status(StatusCode::INTERNAL_SERVER_ERROR))))
    }
}
