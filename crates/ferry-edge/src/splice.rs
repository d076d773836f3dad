//! Joining an upgraded client connection (a WebSocket) to its upstream connection, bounded by the pool's
//! timeouts: cut when no byte has moved either way for `idle_timeout`, and when the exchange passes
//! `total_timeout`, like every other response of the pool.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a spliced connection ended.
#[derive(Debug)]
pub enum SpliceEnd {
    /// One side closed (or failed, with the error); the other was shut down.
    Closed(std::io::Result<(u64, u64)>),
    /// Nothing moved either way for this long.
    Idle(Duration),
    /// The exchange reached the pool's total timeout.
    Total(Duration),
}

/// Copy both ways between `client` and `upstream` until one side ends, nothing moves for `idle`, or
/// `deadline` (the total timeout and the instant it ends) passes. Dropping the streams closes both connections.
pub async fn splice<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    deadline: Option<(Duration, Instant)>,
) -> SpliceEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Active {
        io: client,
        start,
        last: last.clone(),
    };
    let mut upstream = Active {
        io: upstream,
        start,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let total = async {
        match deadline {
            Some((limit, at)) => {
                tokio::time::sleep_until(at).await;
                limit
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(total);
    let mut check_at = start + idle;
    loop {
        tokio::select! {
            ended = &mut copy => return SpliceEnd::Closed(ended),
            limit = &mut total => return SpliceEnd::Total(limit),
            _ = tokio::time::sleep_until(check_at) => {
                // the last activity, as milliseconds after `start`; the idle period runs from it
                let active_at = start + Duration::from_millis(last.load(Ordering::Relaxed));
                let due = active_at + idle;
                if due <= Instant::now() {
                    return SpliceEnd::Idle(idle);
                }
                check_at = due;
            }
        }
    }
}

/// A stream that notes when bytes last moved through it (read or written): one relaxed store per operation,
/// shared by the two sides of a splice.
struct Active<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Active<T> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_idle_splice_is_cut_and_traffic_keeps_it_open() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(10);
        let spliced = tokio::spawn(splice(client, upstream, idle, None));
        // traffic every 6 s keeps it open past 10 s
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_peer.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            upstream_peer.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"ping");
        }
        assert!(!spliced.is_finished());
        tokio::time::sleep(Duration::from_secs(11)).await;
        let end = spliced.await.expect("join");
        assert!(matches!(end, SpliceEnd::Idle(d) if d == idle), "{end:?}");
        // both sides see the end
        let mut rest = Vec::new();
        assert_eq!(client_peer.read_to_end(&mut rest).await.expect("eof"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_timeout_cuts_a_busy_splice() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let total = Duration::from_secs(5);
        let spliced = tokio::spawn(splice(
            client,
            upstream,
            Duration::from_secs(60),
            Some((total, Instant::now() + total)),
        ));
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            client_peer.write_all(b"x").await.expect("write");
            let mut got = [0u8; 1];
            upstream_peer.read_exact(&mut got).await.expect("read");
        }
        let end = spliced.await.expect("join");
        assert!(matches!(end, SpliceEnd::Total(d) if d == total), "{end:?}");
    }

    #[tokio::test]
    async fn a_side_that_closes_ends_the_splice() {
        let (client, client_peer) = tokio::io::duplex(1024);
        let (upstream, upstream_peer) = tokio::io::duplex(1024);
        drop(client_peer);
        drop(upstream_peer);
        let end = splice(client, upstream, Duration::from_secs(60), None).await;
        assert!(matches!(end, SpliceEnd::Closed(_)), "{end:?}");
    }
}
