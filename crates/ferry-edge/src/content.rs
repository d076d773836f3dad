//! What a route does to content itself rather than pass it on: serving files from a directory (`static_dir`,
//! with a fallback file for single-page apps) and compressing responses (`compress`, for the content types
//! `compress_types` names). Both are tower-http's (`ServeDir`, `CompressionLayer`), called once per request; this
//! module only checks the route's settings, feeds them the request and turns their bodies into Ferry's.

use crate::EdgeError;
use ferry_http::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::{Layer, ServiceExt};

/// Serve the file `path` names under `dir` (an already normalised path), as [`tower_http::services::ServeDir`]
/// does: `index.html` for a directory, precompressed `.br`/`.gz` siblings for clients that accept them, ranges,
/// conditional requests; for a missing file the `fallback` file (`200`) or 404; 405 for methods other than GET
/// and HEAD.
pub(crate) async fn serve_file<B>(
    dir: &Path,
    path: &str,
    fallback: Option<&Path>,
    req: Request<B>,
) -> Response<Body> {
    let (mut parts, _) = req.into_parts();
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    let probe = Request::from_parts(parts, http_body_util::Empty::<bytes::Bytes>::new());
    let serve = tower_http::services::ServeDir::new(dir)
        .precompressed_br()
        .precompressed_gzip();
    let served = match fallback {
        None => serve.oneshot(probe).await,
        Some(file) => {
            let file = tower_http::services::ServeFile::new(file)
                .precompressed_br()
                .precompressed_gzip();
            serve.fallback(file).oneshot(probe).await
        }
    };
    match served {
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

/// The fallback file of a `static_dir` route (`static_fallback`), checked: a file name or relative path inside
/// the directory, without `..`, that exists.
pub(crate) fn fallback_file(
    key: &str,
    dir: Option<&Path>,
    fallback: Option<&str>,
) -> Result<Option<PathBuf>, EdgeError> {
    let Some(name) = fallback else {
        return Ok(None);
    };
    let err = |message: String| EdgeError::Config {
        path: format!("{key}.static_fallback"),
        message,
    };
    let Some(dir) = dir else {
        return Err(err("goes with static_dir".into()));
    };
    let relative = Path::new(name.trim_start_matches('/'));
    let inside = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if name.trim_start_matches('/').is_empty() || !inside {
        return Err(err(format!(
            "{name:?} must name a file inside static_dir (like \"index.html\"), without \"..\""
        )));
    }
    let file = dir.join(relative);
    if !file.is_file() {
        return Err(err(format!("{} is not a file", file.display())));
    }
    Ok(Some(file))
}

/// The content types a route compresses (`compress_types`): `type/subtype`, `type/*` or `*/*`, without case.
#[derive(Debug, Clone)]
pub(crate) struct ContentTypes(Arc<[String]>);

impl ContentTypes {
    /// `None` for an empty list (every type the default rule compresses).
    pub(crate) fn compile(key: &str, list: &[String]) -> Result<Option<Self>, EdgeError> {
        if list.is_empty() {
            return Ok(None);
        }
        let mut types = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            let t = t.trim().to_ascii_lowercase();
            let well_formed = match t.split_once('/') {
                Some((main, sub)) => {
                    let token = |s: &str| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                    };
                    (token(main) || (main == "*" && sub == "*")) && (token(sub) || sub == "*")
                }
                None => false,
            };
            if !well_formed {
                return Err(EdgeError::Config {
                    path: format!("{key}.compress_types[{i}]"),
                    message: format!(
                        "{t:?} is not a content type (text/html), a type with any subtype (text/*) or */*"
                    ),
                });
            }
            types.push(t);
        }
        Ok(Some(Self(types.into())))
    }

    /// Whether a response with `content_type` (parameters and case ignored) is one of these types.
    fn covers(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(mime) = content_type.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let mime = mime.split(';').next().unwrap_or("").trim();
        self.0.iter().any(|t| match t.strip_suffix("/*") {
            Some("*") => true,
            Some(main) => mime
                .split_once('/')
                .is_some_and(|(m, _)| m.eq_ignore_ascii_case(main)),
            None => mime.eq_ignore_ascii_case(t),
        })
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
    /// `101`, `204` and `304` answers, content types outside `types` (when given), and clients that accept no
    /// encoding it has.
    pub(crate) async fn compress(
        self,
        resp: Response<Body>,
        types: Option<&ContentTypes>,
    ) -> Response<Body> {
        if self.accept.is_empty()
            || self.method == Method::HEAD
            || types.is_some_and(|t| !t.covers(resp.headers().get(header::CONTENT_TYPE)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn types(list: &[&str]) -> Result<Option<ContentTypes>, EdgeError> {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        ContentTypes::compile("gateway.routes[0]", &list)
    }

    #[test]
    fn content_types_match_without_case_or_parameters() {
        let t = types(&["text/*", "Application/JSON"])
            .expect("valid")
            .expect("a list");
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(t.covers(Some(&v("text/html; charset=utf-8"))));
        assert!(t.covers(Some(&v("TEXT/css"))));
        assert!(t.covers(Some(&v("application/json"))));
        assert!(!t.covers(Some(&v("application/javascript"))));
        assert!(!t.covers(Some(&v("textual/plain"))));
        assert!(!t.covers(None));
        let all = types(&["*/*"]).expect("valid").expect("a list");
        assert!(all.covers(Some(&v("image/png"))));
        assert!(types(&[]).expect("valid").is_none());
        for bad in ["text", "*/html", "text/", "te xt/html", ""] {
            let e = types(&["text/html", bad]).expect_err(bad).to_string();
            assert!(
                e.starts_with("gateway.routes[0].compress_types[1]: "),
                "{e}"
            );
        }
    }

    #[test]
    fn the_fallback_is_a_file_inside_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), "app").expect("write");
        let ok = fallback_file("r", Some(dir.path()), Some("/index.html")).expect("valid");
        assert_eq!(ok, Some(dir.path().join("index.html")));
        assert!(fallback_file("r", Some(dir.path()), None)
            .expect("none")
            .is_none());
        for bad in ["../etc/passwd", "a/../index.html", "missing.html", "/", ""] {
            let e = fallback_file("r", Some(dir.path()), Some(bad))
                .expect_err(bad)
                .to_string();
            assert!(e.starts_with("r.static_fallback: "), "{bad}: {e}");
        }
        let e = fallback_file("r", None, Some("index.html"))
            .expect_err("no dir")
            .to_string();
        assert!(e.contains("goes with static_dir"), "{e}");
    }
}
