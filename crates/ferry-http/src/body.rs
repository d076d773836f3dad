//! Body types: the body of every request a listener hands to a handler ([`RequestBody`]), the boxed body every
//! Ferry handler answers with, a size limit that remembers it was hit, and a wrapper that keeps a guard (an
//! in-flight count, a permit) alive until the body is done.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response Ferry produces and every request it forwards.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The body of a request as a listener received it: hyper's for HTTP/1.1 and HTTP/2 (no box, no extra
/// indirection on that path), or any other body (HTTP/3's streams, tests) boxed.
pub enum RequestBody {
    Hyper(hyper::body::Incoming),
    /// `SyncWrapper`: handlers hold `&Request` across awaits, so the request must be `Sync`; the wrapper is, as
    /// it only hands out `&mut` access (the size hint and end-of-stream of such bodies are not asked for).
    Boxed(sync_wrapper::SyncWrapper<Body>),
}

impl RequestBody {
    /// Any body, boxed.
    pub fn boxed<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::Boxed(sync_wrapper::SyncWrapper::new(
            body.map_err(Into::into).boxed_unsync(),
        ))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Boxed(sync_wrapper::SyncWrapper::new(empty()))
    }
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(body: hyper::body::Incoming) -> Self {
        Self::Hyper(body)
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hyper(b) => b.fmt(f),
            Self::Boxed(_) => f.write_str("RequestBody::Boxed"),
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Boxed(b) => Pin::new(b.get_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(b) => b.is_end_stream(),
            Self::Boxed(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(b) => b.size_hint(),
            Self::Boxed(_) => SizeHint::default(),
        }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The error a [`SizeLimited`] body ends with when its limit is passed.
#[derive(Debug)]
pub struct LimitExceeded(pub u64);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "body is larger than the limit of {} bytes", self.0)
    }
}

impl std::error::Error for LimitExceeded {}

pin_project_lite::pin_project! {
    /// A body that fails with [`LimitExceeded`] once more than `limit` bytes passed, and raises a flag the
    /// caller can read afterwards (to answer 413 instead of a generic error).
    pub struct SizeLimited<B> {
        #[pin]
        inner: B,
        seen: u64,
        limit: u64,
        exceeded: Arc<AtomicBool>,
    }
}

impl<B> SizeLimited<B> {
    pub fn new(inner: B, limit: u64) -> (Self, Arc<AtomicBool>) {
        let exceeded = Arc::new(AtomicBool::new(false));
        (
            Self {
                inner,
                seen: 0,
                limit,
                exceeded: exceeded.clone(),
            },
            exceeded,
        )
    }
}

impl<B> HttpBody for SizeLimited<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if *this.seen > *this.limit {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(LimitExceeded(*this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A client's request body that raises a flag when it fails (malformed chunks, the client gone mid-body), so
    /// that the error the upstream or tunnel side then reports is put down to the client: `400`, not `502`, and
    /// nothing counted against an upstream server or connector.
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        failed: Arc<AtomicBool>,
    }
}

impl<B> ClientBody<B> {
    pub fn new(inner: B) -> (Self, Arc<AtomicBool>) {
        let failed = Arc::new(AtomicBool::new(false));
        (
            Self {
                inner,
                failed: failed.clone(),
            },
            failed,
        )
    }
}

impl<B> HttpBody for ClientBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.failed.store(true, Ordering::Release);
                Poll::Ready(Some(Err(e.into())))
            }
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A body that adds the length of every data frame that passes to a shared counter (bytes in or out of a
    /// request, read when the request is counted).
    pub struct Counted<B> {
        #[pin]
        inner: B,
        counter: Arc<AtomicU64>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: Arc<AtomicU64>) -> Self {
        Self { inner, counter }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A body that holds `guard` until the body ends or is dropped.
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> HttpBody for Guarded<B, G>
where
    B: HttpBody,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_trips_and_flags() {
        let (body, flag) = SizeLimited::new(Full::new(Bytes::from_static(b"hello")), 4);
        let err = body.collect().await.expect_err("over the limit");
        assert!(err.to_string().contains("limit of 4"));
        assert!(flag.load(Ordering::Acquire));

        let (body, flag) = SizeLimited::new(Full::new(Bytes::from_static(b"hello")), 5);
        assert_eq!(body.collect().await.expect("fits").to_bytes().len(), 5);
        assert!(!flag.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn client_body_failures_are_flagged() {
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"ok"))),
            Err::<Frame<Bytes>, BoxError>("malformed chunk".into()),
        ]));
        let (body, failed) = ClientBody::new(failing);
        assert!(body.collect().await.is_err());
        assert!(failed.load(Ordering::Acquire));
        let (body, failed) = ClientBody::new(Full::new(Bytes::from_static(b"fine")));
        assert_eq!(body.collect().await.expect("fine").to_bytes().len(), 4);
        assert!(!failed.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn guard_dropped_at_end() {
        let guard = Arc::new(());
        let body = Guarded::new(Full::new(Bytes::from_static(b"x")), guard.clone());
        assert_eq!(Arc::strong_count(&guard), 2);
        let _ = body.collect().await;
        assert_eq!(Arc::strong_count(&guard), 1);
    }
}
