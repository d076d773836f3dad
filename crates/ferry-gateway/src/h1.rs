//! Before hyper sees a connection: which protocol it speaks (read within the first request's deadline, so that a
//! connection that never sends anything is closed), and, for HTTP/1.1, a watch on the bytes hyper reads that
//! hyper itself does not keep:
//!
//! - the deadline of each request head (`header_read_timeout`): from the connection's start for the first
//!   request, from its first byte for later ones (hyper's own timer, set to `keepalive_timeout`, runs from the
//!   moment the connection is idle, so it bounds the wait between requests);
//! - a request with both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1, request smuggling), which
//!   hyper would frame by `Transfer-Encoding` and keep its `Transfer-Encoding` only: the head is spoiled before
//!   hyper parses it, so that hyper answers `400 Bad Request` and closes the connection, as nginx does.
//!
//! The watch itself, which finds each request head by following bodies by their framing, is
//! [`ferry_proto::h1::H1Watch`] (pure, fuzzed); this module puts it on a connection.

use ferry_proto::h1::{H1Watch, Seen};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The first 24 bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Why no protocol could be judged.
#[derive(Debug)]
pub(crate) enum SniffError {
    /// The client closed the connection before sending anything that decides.
    Closed,
    /// Nothing that decides arrived before the deadline.
    TimedOut,
    Io(io::Error),
}

/// Read the first bytes of a connection, until they decide between HTTP/1 and the HTTP/2 preface, by `deadline`.
/// Returns the bytes read (to be read again by the server) and the protocol.
pub(crate) async fn sniff<IO: AsyncRead + Unpin>(
    io: &mut IO,
    deadline: Instant,
) -> Result<(Vec<u8>, Protocol), SniffError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) => return Err(SniffError::TimedOut),
            Ok(Err(e)) => return Err(SniffError::Io(e)),
            Ok(Ok(0)) => return Err(SniffError::Closed),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let common = buf.len().min(H2_PREFACE.len());
        if buf[..common] != H2_PREFACE[..common] {
            return Ok((buf, Protocol::Http1));
        }
        if common == H2_PREFACE.len() {
            return Ok((buf, Protocol::Http2));
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner`, with `prefix` read first (the bytes [`sniff`] took).
    pub(crate) struct Prefixed<IO> {
        prefix: Vec<u8>,
        pos: usize,
        #[pin]
        inner: IO,
    }
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<IO: AsyncRead> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.pos < this.prefix.len() {
            let rest = &this.prefix[*this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            *this.pos += n;
            if *this.pos == this.prefix.len() {
                *this.prefix = Vec::new();
                *this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/1.1 connection's bytes on their way to hyper, watched by [`H1Watch`]: each request head must be
    /// complete by its deadline, and a smuggling head is spoiled so that hyper refuses it.
    pub(crate) struct H1Guard<IO> {
        #[pin]
        inner: IO,
        watch: H1Watch,
        header_read_timeout: Duration,
        // when the head being read must be complete
        deadline: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
        // after a refused head: reads end
        refused: bool,
        remote: std::net::SocketAddr,
    }
}

impl<IO> H1Guard<IO> {
    /// `first_deadline`: when the first request's head must be complete (the connection's start plus
    /// `header_read_timeout`).
    pub(crate) fn new(
        inner: IO,
        header_read_timeout: Duration,
        first_deadline: Instant,
        remote: std::net::SocketAddr,
    ) -> Self {
        Self {
            inner,
            watch: H1Watch::new(),
            header_read_timeout,
            deadline: Some(first_deadline),
            sleep: None,
            refused: false,
            remote,
        }
    }
}

/// What the final LF of a smuggling head is replaced with (see [`H1Guard`]).
const SPOILED_END: &[u8] = b"\0\r\n\r\n";

static REFUSED_LOG: crate::limits::RateLimitedLog =
    crate::limits::RateLimitedLog::new(Duration::from_secs(5));

impl<IO: AsyncRead> AsyncRead for H1Guard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if *this.refused {
            // Nothing more reaches hyper, which answers the spoiled head 400 and closes; what the client still
            // sends is read and dropped meanwhile (an end of stream here could make hyper close before it wrote
            // the answer).
            let mut scratch = [0u8; 2048];
            loop {
                let mut sink = ReadBuf::new(&mut scratch);
                match this.inner.as_mut().poll_read(cx, &mut sink) {
                    Poll::Ready(Ok(())) if sink.filled().is_empty() => return Poll::Ready(Ok(())),
                    Poll::Ready(Ok(())) => continue,
                    other => return other,
                }
            }
        }
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.watch.is_off() {
                    return Poll::Ready(Ok(()));
                }
                let seen = this.watch.feed(&buf.filled()[before..]);
                match seen {
                    Seen::Nothing => {}
                    Seen::HeadStarted => {
                        if this.deadline.is_none() {
                            *this.deadline = Some(Instant::now() + *this.header_read_timeout);
                        }
                    }
                    Seen::HeadEnded { .. } => {
                        // the head that ended may be followed by the start of the next one (pipelining)
                        *this.deadline = this
                            .watch
                            .in_head()
                            .then(|| Instant::now() + *this.header_read_timeout);
                    }
                    Seen::Ambiguous { at } => {
                        // Spoil the head's end so that hyper's parser refuses it with 400 and closes: its final
                        // LF becomes `\0\r\n\r\n`, which still looks complete to hyper's quick scan for the end of
                        // a head but is no valid head (a NUL where a field name or the last CRLF belongs).
                        // Nothing after it is handed on.
                        let end = before + at;
                        if buf.capacity() >= end + SPOILED_END.len() {
                            buf.set_filled(end);
                            buf.put_slice(SPOILED_END);
                        } else {
                            buf.filled_mut()[end] = 0;
                            buf.set_filled(end + 1);
                        }
                        *this.refused = true;
                        if let Some(left_out) = REFUSED_LOG.admit() {
                            tracing::info!(remote_addr = %this.remote, left_out, "request refused: Content-Length with Transfer-Encoding (request smuggling); 400 and closed");
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(deadline) = *this.deadline {
                    if this.watch.is_off() {
                        return Poll::Pending;
                    }
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if sleep.deadline() != deadline {
                        sleep.as_mut().reset(deadline);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "request head not complete within {:?}",
                                this.header_read_timeout
                            ),
                        )));
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for H1Guard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniffing_tells_the_protocols_apart() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        a.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        let (bytes, p) = sniff(&mut b, deadline).await.expect("sniff");
        assert_eq!(
            (bytes.as_slice(), p),
            (&b"GET / HTTP/1.1\r\n"[..], Protocol::Http1)
        );
        a.write_all(&H2_PREFACE[..10]).await.expect("write");
        let pending = tokio::spawn(async move {
            let r = sniff(&mut b, Instant::now() + Duration::from_secs(5)).await;
            (r.map(|(bytes, p)| (bytes.len(), p)).ok(), b)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.write_all(&H2_PREFACE[10..]).await.expect("write");
        let (got, mut b) = pending.await.expect("join");
        assert_eq!(got, Some((24, Protocol::Http2)));
        // silence: timed out
        let r = sniff(&mut b, Instant::now() + Duration::from_millis(30)).await;
        assert!(matches!(r, Err(SniffError::TimedOut)));
        drop(a);
        assert!(matches!(
            sniff(&mut b, Instant::now() + Duration::from_secs(1)).await,
            Err(SniffError::Closed)
        ));
    }
}
