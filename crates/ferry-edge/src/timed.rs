//! A body with an idle timeout (longest wait for its next frame) and an optional overall deadline: the upstream's
//! response body, and the client's request body (whose idle cut raises a flag, so that the proxy answers 408 and
//! does not count it against the server).

use bytes::Bytes;
use ferry_http::BoxError;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error a [`TimedBody`] ends with.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    #[error("upstream sent nothing for {0:?}")]
    Idle(Duration),
    #[error("client sent nothing of its request body for {0:?}")]
    ClientIdle(Duration),
    #[error("upstream exchange took longer than {0:?}")]
    Total(Duration),
}

pin_project_lite::pin_project! {
    /// Fails with [`BodyTimeout`] when `inner` yields nothing for `idle` while it is being waited for (time the
    /// reader spends elsewhere, e.g. held back by a slow peer, does not count), or when `deadline` passes.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        idle_sleep: LazySleep,
        waiting: bool,
        // the overall limit, the instant it passes, and its timer
        total: Option<(Duration, Instant, LazySleep)>,
        // set when this is a client's request body and its idle timeout cut it
        client_idle: Option<Arc<AtomicBool>>,
    }
}

/// A timer made when a body first has to wait: most small bodies never do, and a timer reads the clock and the
/// runtime handle as soon as it is made, polled or not.
#[derive(Default)]
struct LazySleep(Option<Pin<Box<Sleep>>>);

impl LazySleep {
    fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Set (or move) the timer to `at`.
    fn set(&mut self, at: Instant) {
        match self.0.as_mut() {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Whether the time set has come; a timer never set never fires.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> bool {
        self.0
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, idle: Duration, total: Option<(Duration, Instant)>) -> Self {
        Self {
            inner,
            idle,
            idle_sleep: LazySleep::default(),
            waiting: false,
            total: total.map(|(d, at)| (d, at, LazySleep::default())),
            client_idle: None,
        }
    }

    /// A client's request body cut after `idle` without data; the flag tells that this happened.
    pub fn request(inner: B, idle: Duration) -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        let mut body = Self::new(inner, idle, None);
        body.client_idle = Some(flag.clone());
        (body, flag)
    }
}

impl<B> HttpBody for TimedBody<B>
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
                *this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !*this.waiting {
                    // the wait for the next frame starts now
                    *this.waiting = true;
                    this.idle_sleep.set(Instant::now() + *this.idle);
                }
                if let Some((d, at, sleep)) = this.total.as_mut() {
                    if !sleep.is_set() {
                        sleep.set(*at);
                    }
                    if sleep.poll_elapsed(cx) {
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout::Total(*d)))));
                    }
                }
                if this.idle_sleep.poll_elapsed(cx) {
                    let err = match this.client_idle {
                        Some(flag) => {
                            flag.store(true, Ordering::Release);
                            BodyTimeout::ClientIdle(*this.idle)
                        }
                        None => BodyTimeout::Idle(*this.idle),
                    };
                    return Poll::Ready(Some(Err(Box::new(err))));
                }
                Poll::Pending
            }
        }
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
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn idle_gap_fails_the_body() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = futures_lite_stream(rx);
        let body = TimedBody::new(StreamBody::new(stream), Duration::from_secs(5), None);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .expect("send");
        let mut body = std::pin::pin!(body);
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "a");
        let err = body.frame().await.expect("frame").expect_err("idle");
        assert!(err.to_string().contains("sent nothing"), "{err}");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn time_not_spent_waiting_does_not_count_and_a_request_body_raises_its_flag() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let (body, flag) = TimedBody::request(
            StreamBody::new(futures_lite_stream(rx)),
            Duration::from_secs(5),
        );
        let mut body = std::pin::pin!(body);
        // the reader is busy elsewhere for longer than the idle timeout; the data waiting is not late
        tokio::time::sleep(Duration::from_secs(30)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .expect("send");
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "a");
        assert!(!flag.load(Ordering::Acquire));
        let err = body.frame().await.expect("frame").expect_err("idle");
        assert!(err.to_string().contains("client sent nothing"), "{err}");
        assert!(flag.load(Ordering::Acquire));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn total_deadline_fails_the_body() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let body = TimedBody::new(
            StreamBody::new(futures_lite_stream(rx)),
            Duration::from_secs(60),
            Some((
                Duration::from_secs(2),
                Instant::now() + Duration::from_secs(2),
            )),
        );
        let err = body.collect().await.expect_err("deadline");
        assert!(err.to_string().contains("longer than"), "{err}");
        drop(tx);
    }

    /// A stream over an mpsc receiver.
    fn futures_lite_stream<T>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
    }
}
