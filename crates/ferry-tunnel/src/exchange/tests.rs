//! Heads written and read back, and whole exchanges between a [`Sender`] and [`serve`] over an in-memory pipe.

use super::*;
use http_body_util::{BodyExt, Full, StreamBody as FrameStream};
use std::convert::Infallible;
use std::time::Duration;

fn request(method: Method, uri: &str) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri.parse().expect("uri");
    req.into_parts().0
}

#[test]
fn a_request_head_reads_back_as_it_was_written() {
    let mut parts = request(Method::POST, "http://app.example:8080/a/b%2Fc?q=1&r");
    parts.headers.append("x-one", HeaderValue::from_static("1"));
    parts.headers.append("x-one", HeaderValue::from_static("2"));
    parts
        .headers
        .insert("x-request-id", HeaderValue::from_static("abc"));
    let head = request_head(&parts);
    assert!(head.starts_with(b"POST /a/b%2Fc?q=1&r HTTP/1.1\r\nhost: app.example:8080\r\n"));
    let back = parse_request(&head).expect("parses");
    assert_eq!(back.method, Method::POST);
    assert_eq!(back.uri, parts.uri);
    assert_eq!(back.headers, parts.headers);
    assert!(back.extensions.get::<hyper::ext::Protocol>().is_none());
}

#[test]
fn an_extended_connect_travels_as_an_upgrade_and_comes_back_as_one() {
    let mut parts = request(Method::CONNECT, "http://app.example/chat");
    parts
        .extensions
        .insert(hyper::ext::Protocol::from("websocket"));
    let head = request_head(&parts);
    let text = std::str::from_utf8(&head).expect("text");
    assert!(text.starts_with("GET /chat HTTP/1.1\r\n"), "{text}");
    assert!(
        text.contains("connection: upgrade\r\nupgrade: websocket\r\n"),
        "{text}"
    );
    let back = parse_request(&head).expect("parses");
    assert_eq!(back.method, Method::CONNECT);
    assert_eq!(
        back.extensions
            .get::<hyper::ext::Protocol>()
            .map(|p| p.as_str().to_owned()),
        Some("websocket".to_owned())
    );
    assert!(!back.headers.contains_key(UPGRADE) && !back.headers.contains_key(CONNECTION));
}

#[test]
fn response_heads_and_trailers_read_back() {
    let mut res = Response::new(());
    *res.status_mut() = StatusCode::NOT_FOUND;
    res.headers_mut()
        .insert("content-length", HeaderValue::from_static("5"));
    let (parts, ()) = res.into_parts();
    let back = parse_response(&response_head(&parts)).expect("parses");
    assert_eq!(back.status, StatusCode::NOT_FOUND);
    assert_eq!(back.headers, parts.headers);

    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
    assert_eq!(parse_trailers(&trailers_head(&trailers)), Ok(trailers));
}

#[test]
fn heads_that_are_not_http_are_refused_with_a_reason() {
    assert!(matches!(
        parse_request(b"GARBAGE\r\n\r\n"),
        Err(HeadError::Malformed(_))
    ));
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nx: 1\r\n").err(),
        Some(HeadError::Incomplete)
    );
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\n\r\nextra").err(),
        Some(HeadError::TrailingBytes)
    );
    assert!(matches!(
        parse_request(b"GET * HTTP/1.1\r\n\r\n"),
        Err(HeadError::Target(_))
    ));
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(matches!(parse_request(&many), Err(HeadError::Malformed(_))));
    assert!(matches!(
        parse_response(b"HTTP/1.1 99 No\r\n\r\n"),
        Err(HeadError::Malformed(_)) | Err(HeadError::Status(_))
    ));
}

/// A node's [`Sender`] and a connector's [`serve`] with `handle`, joined by an in-memory pipe.
fn pair<H, F>(handle: H) -> Sender
where
    H: Fn(Request<StreamBody>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<TunnelBody>> + Send + 'static,
{
    let (node, connector) = tokio::io::duplex(256 * 1024);
    let options = MuxOptions::default();
    tokio::spawn(serve(
        connector,
        options.clone(),
        handle,
        std::future::pending(),
    ));
    let (mux, _accepted) = mux::start(node, options.clone());
    Sender::new(mux, &options)
}

fn boxed<B>(body: B) -> TunnelBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Answers with the request's method, path and `x-in` header in headers, its body echoed, and a trailer.
async fn echo(req: Request<StreamBody>) -> Response<TunnelBody> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.expect("request body");
    let request_trailer = collected.trailers().and_then(|t| t.get("x-sum")).cloned();
    let bytes = collected.to_bytes();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-len", HeaderValue::from(bytes.len()));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(bytes)),
        Ok(Frame::trailers(trailers)),
    ];
    let mut res = Response::new(boxed(FrameStream::new(futures_util::stream::iter(frames))));
    let h = res.headers_mut();
    h.insert(
        "x-method",
        HeaderValue::from_str(parts.method.as_str()).expect("method"),
    );
    h.insert(
        "x-path",
        HeaderValue::from_str(parts.uri.path()).expect("path"),
    );
    if let Some(v) = parts.headers.get("x-in") {
        h.insert("x-in", v.clone());
    }
    if let Some(v) = request_trailer {
        h.insert("x-request-trailer", v);
    }
    res
}

#[tokio::test]
async fn a_request_with_a_body_gets_its_answer_with_body_and_trailers() {
    let sender = pair(echo);
    let payload = Bytes::from(vec![7u8; 3 * 1024 * 1024 + 5]);
    let mut req = Request::new(boxed(Full::new(payload.clone())));
    *req.method_mut() = Method::PUT;
    *req.uri_mut() = "http://app/upload".parse().expect("uri");
    req.headers_mut()
        .insert("x-in", HeaderValue::from_static("yes"));
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send(req))
        .await
        .expect("in time")
        .expect("answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-method"], "PUT");
    assert_eq!(res.headers()["x-path"], "/upload");
    assert_eq!(res.headers()["x-in"], "yes");
    let collected = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect())
        .await
        .expect("in time")
        .expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["x-len"], payload.len().to_string().as_str());
    assert_eq!(collected.to_bytes(), payload);
}

#[tokio::test]
async fn request_trailers_reach_the_connector_and_a_get_has_an_empty_body() {
    let sender = pair(echo);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("42"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"abc"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut req = Request::new(boxed(FrameStream::new(futures_util::stream::iter(frames))));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/t".parse().expect("uri");
    let res = sender.send(req).await.expect("answered");
    assert_eq!(res.headers()["x-request-trailer"], "42");

    let req = Request::new(boxed(http_body_util::Empty::<Bytes>::new()));
    let res = sender.send(req).await.expect("answered");
    assert_eq!(res.headers()["x-method"], "GET");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert!(body.is_empty());
}

#[tokio::test]
async fn interim_answers_are_skipped_and_an_empty_answer_ends_at_once() {
    let (node, connector) = tokio::io::duplex(64 * 1024);
    let options = MuxOptions::default();
    let (_c, mut accepted) = mux::start(connector, options.clone());
    let (mux, _) = mux::start(node, options.clone());
    let sender = Sender::new(mux, &options);
    let peer = tokio::spawn(async move {
        let stream = accepted.recv().await.expect("stream");
        stream
            .send_head(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"), false)
            .expect("interim");
        stream
            .send_head(
                Bytes::from_static(b"HTTP/1.1 204 No Content\r\nx-a: b\r\n\r\n"),
                true,
            )
            .expect("final");
        stream
    });
    let res = sender
        .send(Request::new(boxed(http_body_util::Empty::<Bytes>::new())))
        .await
        .expect("answered");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.body().is_end_stream());
    drop(peer.await);
}

#[tokio::test]
async fn an_upgrade_carries_bytes_both_ways() {
    let sender = pair(|mut req: Request<StreamBody>| async move {
        let pending = req
            .extensions_mut()
            .remove::<PendingUpgrade>()
            .expect("pending upgrade");
        tokio::spawn(async move {
            let mut io = pending.upgraded().await.expect("upgraded");
            let mut buf = [0u8; 5];
            io.read_exact(&mut buf).await.expect("read");
            io.write_all(&buf).await.expect("echo");
            io.shutdown().await.expect("shutdown");
        });
        Response::new(boxed(http_body_util::Empty::<Bytes>::new()))
    });
    let mut req = Request::new(boxed(http_body_util::Empty::<Bytes>::new()));
    *req.method_mut() = Method::CONNECT;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from("websocket"));
    let res = sender.send(req).await.expect("answered");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut io = into_io(&mut body).expect("an upgraded stream");
    io.write_all(b"hello").await.expect("write");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(back, b"hello");
}

#[tokio::test]
async fn a_request_on_a_closed_tunnel_comes_back_unsent() {
    let (node, connector) = tokio::io::duplex(1024);
    drop(connector);
    let options = MuxOptions::default();
    let (mux, _) = mux::start(node, options.clone());
    let sender = Sender::new(mux, &options);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !sender.mux().is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("closed");
    let mut req = Request::new(boxed(Full::new(Bytes::from_static(b"body"))));
    *req.uri_mut() = "/again".parse().expect("uri");
    match sender.send(req).await {
        Err(SendError::Unsent(back, _)) => assert_eq!(back.uri().path(), "/again"),
        other => panic!(
            "expected the request back, got {:?}",
            other.map(|r| r.status())
        ),
    }
}
