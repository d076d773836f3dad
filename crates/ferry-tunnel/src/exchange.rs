//! HTTP messages on tunnel protocol 2 streams (docs/protocol.md §9): the node's request sender ([`Sender`]), the
//! connector's stream server ([`serve`]), and the heads between them.
//!
//! A request travels as its head (HTTP/1.1 text: request line, `host`, the headers as the node normalised them)
//! in the stream's first HEAD frame, its body as DATA, its trailers as a last HEAD of header lines alone. The
//! answer comes back the same way: interim heads (`1xx`), the final head, the body, the trailers. An upgrade
//! (protocol 1's extended CONNECT) is a `GET` with `connection: upgrade` and `upgrade: <protocol>`; once the
//! connector answers `200`, the stream carries the upgraded connection's bytes both ways ([`into_io`]).
//!
//! Owns: writing and parsing the heads ([`request_head`], [`parse_request`], [`response_head`],
//! [`parse_response`], trailers), the body type both ends read a stream with ([`StreamBody`]), pumping a body
//! onto a stream, and a stream as a byte stream for upgrades.
//! Does not own: the streams and their windows ([`crate::mux`]), what the connector does with a request, or the
//! node's choice of tunnel.

use crate::mux::{self, Event, Mux, MuxError, MuxOptions, StreamReceiver, StreamSender};
use crate::{BoxError, TunnelBody};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_proto::frames::Reason;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The most header lines one head may carry (the node's own limit on a client's headers is lower).
pub const MAX_HEADERS: usize = 256;

/// Why a head could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the head is not HTTP/1.1: {0}")]
    Malformed(String),
    #[error("the head ends early")]
    Incomplete,
    #[error("bytes follow the head")]
    TrailingBytes,
    #[error("invalid header {0:?}")]
    Header(String),
    #[error("invalid request target {0:?}")]
    Target(String),
    #[error("invalid method")]
    Method,
    #[error("invalid status {0}")]
    Status(u16),
}

fn put_headers(buf: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        buf.put_slice(name.as_str().as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
}

fn head_capacity(headers: &HeaderMap) -> usize {
    64 + headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

/// A request's head as the node sends it: the request line in origin form, `host` from the URI's authority
/// (unless the headers carry one), the headers, and for an extended CONNECT (`hyper::ext::Protocol`) a `GET`
/// with `connection: upgrade` and `upgrade: <protocol>`.
pub fn request_head(parts: &http::request::Parts) -> Bytes {
    let protocol = parts
        .extensions
        .get::<hyper::ext::Protocol>()
        .filter(|_| parts.method == Method::CONNECT);
    let method = match protocol {
        Some(_) => "GET",
        None => parts.method.as_str(),
    };
    let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let mut buf = BytesMut::with_capacity(head_capacity(&parts.headers) + path.len());
    buf.put_slice(method.as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(path.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
    if let Some(authority) = parts.uri.authority() {
        if !parts.headers.contains_key(HOST) {
            buf.put_slice(b"host: ");
            buf.put_slice(authority.as_str().as_bytes());
            buf.put_slice(b"\r\n");
        }
    }
    put_headers(&mut buf, &parts.headers);
    if let Some(protocol) = protocol {
        buf.put_slice(b"connection: upgrade\r\nupgrade: ");
        buf.put_slice(protocol.as_str().as_bytes());
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(b"\r\n");
    buf.freeze()
}

/// A response's head as the connector sends it: the status line and the headers.
pub fn response_head(parts: &http::response::Parts) -> Bytes {
    let mut buf = BytesMut::with_capacity(head_capacity(&parts.headers));
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(parts.status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    buf.put_slice(b"\r\n");
    put_headers(&mut buf, &parts.headers);
    buf.put_slice(b"\r\n");
    buf.freeze()
}

/// Trailers as a head of header lines alone.
pub fn trailers_head(trailers: &HeaderMap) -> Bytes {
    let mut buf = BytesMut::with_capacity(head_capacity(trailers));
    put_headers(&mut buf, trailers);
    buf.put_slice(b"\r\n");
    buf.freeze()
}

fn complete(status: httparse::Result<usize>, len: usize) -> Result<(), HeadError> {
    match status {
        Ok(httparse::Status::Complete(n)) if n == len => Ok(()),
        Ok(httparse::Status::Complete(_)) => Err(HeadError::TrailingBytes),
        Ok(httparse::Status::Partial) => Err(HeadError::Incomplete),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

fn header_map(lines: &[httparse::Header<'_>]) -> Result<HeaderMap, HeadError> {
    let mut map = HeaderMap::with_capacity(lines.len());
    for line in lines {
        let name = HeaderName::from_bytes(line.name.as_bytes())
            .map_err(|_| HeadError::Header(line.name.to_owned()))?;
        let value = HeaderValue::from_bytes(line.value)
            .map_err(|_| HeadError::Header(line.name.to_owned()))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Reads a request head (the connector's side): `host` becomes the URI's authority, and `connection: upgrade`
/// with `upgrade: <protocol>` becomes an extended CONNECT, as protocol 1 delivers them.
pub fn parse_request(head: &[u8]) -> Result<http::request::Parts, HeadError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    complete(req.parse(head), head.len())?;
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(HeadError::Method)?;
    let path = req.path.unwrap_or("/");
    if !path.starts_with('/') {
        return Err(HeadError::Target(path.to_owned()));
    }
    let mut headers = header_map(req.headers)?;
    let (mut parts, ()) = Request::new(()).into_parts();
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(
        PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes()))
            .map_err(|_| HeadError::Target(path.to_owned()))?,
    );
    if let Some(host) = headers.remove(HOST) {
        let authority = Authority::from_maybe_shared(Bytes::copy_from_slice(host.as_bytes()))
            .map_err(|_| HeadError::Header("host".to_owned()))?;
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
    }
    parts.uri = Uri::from_parts(uri).map_err(|_| HeadError::Target(path.to_owned()))?;
    let upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if upgrade {
        if let Some(protocol) = headers.remove(UPGRADE) {
            let protocol = protocol
                .to_str()
                .map_err(|_| HeadError::Header("upgrade".to_owned()))?;
            parts
                .extensions
                .insert(hyper::ext::Protocol::from(protocol));
            headers.remove(CONNECTION);
            parts.method = Method::CONNECT;
        }
    }
    if parts.method != Method::CONNECT {
        parts.method = method;
    }
    parts.headers = headers;
    Ok(parts)
}

/// Reads a response head (the node's side).
pub fn parse_response(head: &[u8]) -> Result<http::response::Parts, HeadError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut lines);
    complete(res.parse(head), head.len())?;
    let code = res.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Status(code))?;
    let headers = header_map(res.headers)?;
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    Ok(parts)
}

/// Reads a head of trailers.
pub fn parse_trailers(head: &[u8]) -> Result<HeaderMap, HeadError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(head, &mut lines) {
        Ok(httparse::Status::Complete((n, found))) if n == head.len() => header_map(found),
        Ok(httparse::Status::Complete(_)) => Err(HeadError::TrailingBytes),
        Ok(httparse::Status::Partial) => Err(HeadError::Incomplete),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

/// The body of a message arriving on a stream: DATA as data frames, a last head as trailers. Dropping it before
/// its end resets the stream (`CANCEL`) once the sending half is gone too.
pub struct StreamBody {
    receiver: Option<StreamReceiver>,
    /// Kept for an upgrade, whose bytes go both ways once the answer is in ([`into_io`]).
    sender: Option<StreamSender>,
    /// What `content-length` announced and has not arrived yet.
    remaining: Option<u64>,
}

impl StreamBody {
    /// A body with nothing in it.
    pub fn empty() -> Self {
        StreamBody {
            receiver: None,
            sender: None,
            remaining: Some(0),
        }
    }

    fn new(receiver: StreamReceiver, headers: &HeaderMap) -> Self {
        StreamBody {
            receiver: Some(receiver),
            sender: None,
            remaining: headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(receiver) = this.receiver.as_mut() else {
                return Poll::Ready(None);
            };
            let event = ready!(receiver.poll_recv(cx));
            let (frame, last) = match event {
                Some(Ok(Event::Data(data, last))) => {
                    if let Some(n) = &mut this.remaining {
                        *n = n.saturating_sub(data.len() as u64);
                    }
                    ((!data.is_empty()).then(|| Ok(Frame::data(data))), last)
                }
                Some(Ok(Event::Head(head, _))) => {
                    let trailers = parse_trailers(&head)
                        .map(Frame::trailers)
                        .map_err(|e| Box::new(e) as BoxError);
                    (Some(trailers), true)
                }
                Some(Err(e)) => (Some(Err(Box::new(e) as BoxError)), true),
                None => (None, true),
            };
            if last {
                this.receiver = None;
            }
            if frame.is_some() || last {
                return Poll::Ready(frame);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.receiver.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.receiver.is_none(), self.remaining) {
            (true, _) => SizeHint::with_exact(0),
            (false, Some(n)) => SizeHint::with_exact(n),
            (false, None) => SizeHint::default(),
        }
    }
}

/// Sends `body` on a stream: its data as DATA, its trailers as a last head, the end as END_STREAM; a body that
/// fails resets the stream (`INTERNAL`), so the peer learns the message is incomplete.
pub async fn send_body<B>(sender: StreamSender, body: B)
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    loop {
        match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let last = body.is_end_stream();
                    if sender.send_data(data, last).await.is_err() || last {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = sender.send_head(trailers_head(&trailers), true);
                        return;
                    }
                }
            },
            Some(Err(error)) => {
                tracing::debug!(%error, "body failed: stream reset");
                sender.reset(Reason::INTERNAL);
                return;
            }
            None => {
                let _ = sender.send_data(Bytes::new(), true).await;
                return;
            }
        }
    }
}

/// An upgraded stream as a byte stream: what is written to the returned end goes out as DATA, what arrives is
/// read from it; shutting down the write side sends END_STREAM. Two pump tasks carry the bytes; they end when
/// both directions have.
pub fn stream_io(sender: StreamSender, mut receiver: StreamReceiver) -> tokio::io::DuplexStream {
    const CHUNK: usize = 16 * 1024;
    let (near, far) = tokio::io::duplex(4 * CHUNK);
    let (mut far_read, mut far_write) = tokio::io::split(far);
    tokio::spawn(async move {
        let out = async {
            let mut buf = BytesMut::with_capacity(CHUNK);
            loop {
                buf.reserve(CHUNK);
                match far_read.read_buf(&mut buf).await {
                    Ok(0) => {
                        let _ = sender.send_data(Bytes::new(), true).await;
                        break;
                    }
                    Ok(_) => {
                        if sender.send_data(buf.split().freeze(), false).await.is_err() {
                            break;
                        }
                    }
                    Err(_) => {
                        sender.reset(Reason::CANCEL);
                        return None;
                    }
                }
            }
            Some(sender)
        };
        let back = async {
            while let Some(Ok(event)) = receiver.recv().await {
                match event {
                    Event::Data(data, last) => {
                        if far_write.write_all(&data).await.is_err() || last {
                            break;
                        }
                    }
                    Event::Head(..) => break,
                }
            }
            let _ = far_write.shutdown().await;
            receiver
        };
        // both halves live until both directions ended: a half-closed upgrade is not reset
        let _halves = tokio::join!(out, back);
    });
    near
}

/// The byte stream of an upgraded answer (a `200` to an extended CONNECT), once: `None` for any other body.
pub fn into_io(body: &mut StreamBody) -> Option<tokio::io::DuplexStream> {
    match (body.sender.take(), body.receiver.take()) {
        (Some(sender), Some(receiver)) => Some(stream_io(sender, receiver)),
        _ => None,
    }
}

/// Why [`Sender::send`] gave no answer.
#[derive(Debug)]
pub enum SendError {
    /// Nothing of the request reached the connector (the tunnel is closing or closed, or the connector refused
    /// the stream): it may go to another tunnel.
    Unsent(Box<Request<TunnelBody>>, MuxError),
    /// The request left and the stream or the tunnel broke before the answer's head: it may have reached the
    /// target.
    Lost(String),
}

/// The node's end: sends requests on a protocol 2 tunnel.
#[derive(Clone)]
pub struct Sender {
    mux: Mux,
    max_head: usize,
}

impl Sender {
    /// The sender of a tunnel whose connection is `mux`; heads larger than `options.max_payload` are refused.
    pub fn new(mux: Mux, options: &MuxOptions) -> Self {
        Sender {
            mux,
            max_head: options.max_payload as usize,
        }
    }

    /// The connection this sender opens streams on.
    pub fn mux(&self) -> &Mux {
        &self.mux
    }

    /// Sends a request and waits for its answer's head; the body streams on (a task sends the request body
    /// meanwhile). Interim answers (`1xx` but `101`) are skipped.
    pub async fn send(&self, req: Request<TunnelBody>) -> Result<Response<StreamBody>, SendError> {
        let (parts, body) = req.into_parts();
        let upgrade = parts.method == Method::CONNECT
            && parts.extensions.get::<hyper::ext::Protocol>().is_some();
        let head = request_head(&parts);
        if head.len() > self.max_head {
            return Err(SendError::Lost(format!(
                "the request head of {} bytes is larger than the tunnel's frame limit of {} bytes",
                head.len(),
                self.max_head
            )));
        }
        let end = !upgrade && body.is_end_stream();
        let stream = loop {
            match self.mux.open(head.clone(), end) {
                Ok(stream) => break stream,
                // as many streams as the connector takes are open: wait for one to end, like HTTP/2 does (the
                // caller's deadline bounds the wait)
                Err(mux::OpenError {
                    error: MuxError::TooManyStreams(_),
                    ..
                }) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                Err(e) => {
                    return Err(SendError::Unsent(
                        Box::new(Request::from_parts(parts, body)),
                        e.error,
                    ))
                }
            }
        };
        let (sender, mut receiver) = stream.split();
        let mut kept = None;
        // a request without a body can still be given back if the connector refuses its stream
        let mut unsent = None;
        if upgrade {
            kept = Some(sender);
        } else if !end {
            tokio::spawn(send_body(sender, body));
        } else {
            unsent = Some((parts, body));
        }
        loop {
            match receiver.recv().await {
                Some(Ok(Event::Head(head, end))) => {
                    let parts = parse_response(&head).map_err(|e| {
                        SendError::Lost(format!("the connector's answer head is invalid: {e}"))
                    })?;
                    if parts.status.is_informational()
                        && parts.status != StatusCode::SWITCHING_PROTOCOLS
                        && !end
                    {
                        continue;
                    }
                    let mut body = if end {
                        StreamBody::empty()
                    } else {
                        StreamBody::new(receiver, &parts.headers)
                    };
                    body.sender = kept;
                    return Ok(Response::from_parts(parts, body));
                }
                Some(Ok(Event::Data(..))) => {
                    return Err(SendError::Lost(
                        "the connector sent body bytes before an answer head".to_owned(),
                    ))
                }
                Some(Err(MuxError::Reset(Reason::REFUSED))) if unsent.is_some() => {
                    if let Some((parts, body)) = unsent.take() {
                        let e = MuxError::Reset(Reason::REFUSED);
                        return Err(SendError::Unsent(
                            Box::new(Request::from_parts(parts, body)),
                            e,
                        ));
                    }
                }
                Some(Err(e)) => return Err(SendError::Lost(e.to_string())),
                None => {
                    return Err(SendError::Lost(
                        "the stream ended without an answer".to_owned(),
                    ))
                }
            }
        }
    }
}

/// The stream side of an upgrade on the connector: resolves to the upgraded byte stream once the answer (`200`)
/// has been sent; an error when the answer was anything else or the stream went away.
///
/// (Shared and taken once, because request extensions must be `Clone`.)
#[derive(Clone)]
pub struct PendingUpgrade(Arc<Mutex<Option<oneshot::Receiver<tokio::io::DuplexStream>>>>);

impl PendingUpgrade {
    /// Waits for the upgraded byte stream.
    pub async fn upgraded(self) -> Result<tokio::io::DuplexStream, BoxError> {
        let taken = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match taken {
            Some(rx) => rx.await.map_err(|_| "the stream was not upgraded".into()),
            None => Err("the upgrade was already taken".into()),
        }
    }
}

/// Serves a protocol 2 tunnel on the connector: each stream's request goes to `handle` (as the stream's task),
/// its answer back on the stream. An upgrade request carries a [`PendingUpgrade`] in its extensions. When
/// `drain` resolves: GOAWAY (the node opens no new stream here), the streams in flight finish, then this returns
/// `Ok`; so does a GOAWAY from the node, once its streams are done. Returns `Err` with the reason when the
/// connection ends otherwise.
pub async fn serve<IO, H, F, D>(
    io: IO,
    options: MuxOptions,
    handle: H,
    drain: D,
) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    H: Fn(Request<StreamBody>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<TunnelBody>> + Send + 'static,
    D: Future<Output = ()>,
{
    let (mux, mut accepted) = mux::start(io, options);
    tokio::pin!(drain);
    let mut draining = false;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            stream = accepted.recv() => match stream {
                Some(stream) => {
                    tokio::spawn(answer(stream, handle.clone()));
                }
                None => return Err(mux.closed().await),
            },
            () = &mut drain, if !draining => {
                tracing::debug!("tunnel draining: goaway sent");
                mux.go_away(Reason::NO_ERROR);
                draining = true;
            }
            _ = tick.tick() => {
                // draining, or the node going away (it closes its tunnels): done once the streams in flight are
                if (draining || mux.is_peer_going_away()) && mux.open_streams() == 0 {
                    mux.close();
                    return Ok(());
                }
            }
        }
    }
}

/// One stream on the connector: read the request head, hand the request over, send the answer back.
async fn answer<H, F>(stream: mux::Stream, handle: H)
where
    H: Fn(Request<StreamBody>) -> F,
    F: Future<Output = Response<TunnelBody>>,
{
    let id = stream.id();
    let (sender, mut receiver) = stream.split();
    let (head, end) = match receiver.recv().await {
        Some(Ok(Event::Head(head, end))) => (head, end),
        _ => return,
    };
    let mut parts = match parse_request(&head) {
        Ok(parts) => parts,
        Err(error) => {
            tracing::warn!(stream = id, %error, "the node sent a request head that cannot be read");
            sender.reset(Reason::PROTOCOL);
            return;
        }
    };
    let upgrade = parts.extensions.get::<hyper::ext::Protocol>().is_some();
    let mut upgraded = None;
    let (body, kept) = if upgrade {
        let (tx, rx) = oneshot::channel();
        parts
            .extensions
            .insert(PendingUpgrade(Arc::new(Mutex::new(Some(rx)))));
        upgraded = Some(tx);
        (StreamBody::empty(), Some(receiver))
    } else if end {
        (StreamBody::empty(), None)
    } else {
        let body = StreamBody::new(receiver, &parts.headers);
        (body, None)
    };
    // a node that resets the stream (its client left) cancels the work, as protocol 1's HTTP/2 server does
    let response = tokio::select! {
        biased;
        response = handle(Request::from_parts(parts, body)) => response,
        why = sender.gone() => {
            tracing::debug!(stream = id, %why, "stream reset before its answer: request cancelled");
            return;
        }
    };
    let (parts, body) = response.into_parts();
    if let (Some(upgraded), Some(receiver), true) = (upgraded, kept, parts.status == StatusCode::OK)
    {
        if sender.send_head(response_head(&parts), false).is_ok() {
            let _ = upgraded.send(stream_io(sender, receiver));
        }
        return;
    }
    let end = body.is_end_stream();
    if sender.send_head(response_head(&parts), end).is_err() || end {
        return;
    }
    send_body(sender, body).await;
}

#[cfg(test)]
mod tests;
