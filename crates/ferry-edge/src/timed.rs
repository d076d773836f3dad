//! A response body with an idle timeout (longest pause between frames) and an optional overall deadline.

use bytes::Bytes;
use ferry_http::BoxError;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error a [`TimedBody`] ends with.
#[derive(Debug, thiserror::Error)]
pub enum BodyTimeout {
    #[error("upstream sent nothing for {0:?}")]
    Idle(Duration),
    #[error("upstream exchange took longer than {0:?}")]
    Total(Duration),
}

pin_project_lite::pin_project! {
    /// Fails with [`BodyTimeout`] when `inner` yields nothing for `idle`, or when `deadline` passes.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        #[pin]
        idle_sleep: Sleep,
        total: Option<(Duration, Pin<Box<Sleep>>)>,
    }
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, idle: Duration, total: Option<(Duration, Instant)>) -> Self {
        Self {
            inner,
            idle,
            idle_sleep: tokio::time::sleep(idle),
            total: total.map(|(d, at)| (d, Box::pin(tokio::time::sleep_until(at)))),
        }
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
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let idle = *this.idle;
                this.idle_sleep.as_mut().reset(Instant::now() + idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some((d, sleep)) = this.total.as_mut() {
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout::Total(*d)))));
                    }
                }
                if this.idle_sleep.poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout::Idle(*this.idle)))));
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
