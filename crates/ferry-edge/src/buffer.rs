//! Request bodies read whole before they go upstream (a route's `buffer_request_body`, nginx's
//! `proxy_request_buffering on`): up to `[gateway] body_buffer_memory` in memory, a larger body whole in a
//! temporary file of `body_buffer_dir` (nginx's `client_body_temp_path`), so that a large upload costs disk, not
//! memory. The file has no name (created with `O_TMPFILE` where the file system allows, else unlinked at once), so
//! nothing is left behind by a crash, and it is readable by Ferry's user only. Each attempt at an upstream reads
//! the file from its start with positional reads, so an attempt still sending when the next one starts (after a
//! response-head timeout) does not disturb it.

use bytes::{Bytes, BytesMut};
use ferry_http::Body;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Bytes written to the file at once: pieces of a body (about 16 KiB each) are gathered to this size first.
const WRITE_BATCH: usize = 256 * 1024;
/// Bytes read from the file for one frame of an attempt's body.
const READ_CHUNK: usize = 64 * 1024;

/// Where and how a route buffers request bodies.
#[derive(Debug, Clone)]
pub(crate) struct BufferSettings {
    /// Bodies up to this many bytes stay in memory.
    pub memory: usize,
    /// The directory of the files of larger ones.
    pub dir: PathBuf,
}

/// Why a body could not be buffered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BufferError {
    /// The client's body failed (over the limit, idle, broken off): the client's fault.
    #[error("reading the request body: {0}")]
    Body(ferry_http::BoxError),
    /// The file could not be made or written (a full disk, a missing directory): Ferry's.
    #[error("buffering the request body to disk: {0}")]
    Disk(#[source] std::io::Error),
}

/// A request body read whole: in memory or in a file.
#[derive(Debug, Clone)]
pub(crate) enum Buffered {
    Memory(Bytes),
    File { file: Arc<std::fs::File>, len: u64 },
}

impl Buffered {
    /// Read all of `body`, into memory while it fits in `settings.memory`, else into a file.
    pub(crate) async fn read(body: Body, settings: &BufferSettings) -> Result<Self, BufferError> {
        let mut body = body;
        let mut memory = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BufferError::Body)?;
            if let Ok(data) = frame.into_data() {
                memory.extend_from_slice(&data);
                if memory.len() > settings.memory {
                    return Self::spill(memory, body, &settings.dir).await;
                }
            }
        }
        Ok(Self::Memory(memory.freeze()))
    }

    /// Go on with `rest` of a body in a file, after the `head` read so far.
    async fn spill(head: BytesMut, mut rest: Body, dir: &Path) -> Result<Self, BufferError> {
        let dir = dir.to_owned();
        let file = blocking(move || tempfile::tempfile_in(dir)).await?;
        let file = Arc::new(file);
        let mut len = 0u64;
        let mut batch = head;
        loop {
            let frame = rest.frame().await;
            let done = frame.is_none();
            if let Some(frame) = frame {
                if let Ok(data) = frame.map_err(BufferError::Body)?.into_data() {
                    batch.extend_from_slice(&data);
                }
            }
            if batch.len() >= WRITE_BATCH || (done && !batch.is_empty()) {
                let bytes = std::mem::take(&mut batch).freeze();
                let (f, at) = (file.clone(), len);
                len += bytes.len() as u64;
                blocking(move || f.write_all_at(&bytes, at)).await?;
            }
            if done {
                tracing::debug!(bytes = len, "request body buffered to disk");
                return Ok(Self::File { file, len });
            }
        }
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    /// The body as one attempt sends it, from its start.
    pub(crate) fn body(&self) -> Body {
        match self {
            Self::Memory(bytes) => http_body_util::Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
            Self::File { file, len } => FileBody {
                file: file.clone(),
                at: 0,
                len: *len,
                reading: None,
            }
            .boxed_unsync(),
        }
    }
}

/// Run a file operation on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BufferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BufferError::Disk(std::io::Error::other(e)))?
        .map_err(BufferError::Disk)
}

/// A buffered body read back from its file, a chunk at a time.
struct FileBody {
    file: Arc<std::fs::File>,
    /// The offset of the next chunk.
    at: u64,
    len: u64,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = ferry_http::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.reading.is_none() {
            if self.at >= self.len {
                return Poll::Ready(None);
            }
            let (file, at) = (self.file.clone(), self.at);
            let n = usize::try_from(self.len - at).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
            self.reading = Some(tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, at)?;
                Ok(Bytes::from(buf))
            }));
        }
        let Some(reading) = self.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let read = ready!(Pin::new(reading).poll(cx));
        self.reading = None;
        match read {
            Ok(Ok(chunk)) => {
                self.at += chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Ok(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reading.is_none() && self.at >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.at.min(self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(pieces: usize, size: usize) -> Body {
        let frames = (0..pieces).map(move |i| {
            Ok::<_, ferry_http::BoxError>(Frame::data(Bytes::from(vec![(i % 251) as u8; size])))
        });
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    async fn read_all(body: Body) -> Vec<u8> {
        body.collect().await.expect("body").to_bytes().to_vec()
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_and_large_ones_go_to_a_file_read_again_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = BufferSettings {
            memory: 64 * 1024,
            dir: dir.path().to_owned(),
        };
        let small = Buffered::read(chunked(3, 1000), &settings)
            .await
            .expect("small");
        assert!(matches!(small, Buffered::Memory(_)));
        assert_eq!(small.len(), 3000);
        assert_eq!(read_all(small.body()).await.len(), 3000);

        let expected = read_all(chunked(200, 16 * 1024)).await;
        let large = Buffered::read(chunked(200, 16 * 1024), &settings)
            .await
            .expect("large");
        assert!(matches!(large, Buffered::File { .. }));
        assert_eq!(large.len(), expected.len() as u64);
        // two attempts read it at once, each whole and in order
        let (a, b) = tokio::join!(read_all(large.body()), read_all(large.body()));
        assert!(a == expected && b == expected);
        assert_eq!(
            large.body().size_hint().exact(),
            Some(expected.len() as u64)
        );
        // the file has no name: nothing is left in the directory
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_disk_error_and_a_broken_body_the_clients() {
        let dir = tempfile::tempdir().expect("dir");
        let gone = dir.path().join("gone");
        let settings = BufferSettings {
            memory: 10,
            dir: gone,
        };
        let err = Buffered::read(chunked(2, 100), &settings)
            .await
            .expect_err("no directory");
        assert!(matches!(err, BufferError::Disk(_)), "{err}");

        let broken = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err::<Frame<Bytes>, ferry_http::BoxError>("cut".into()),
        ]))
        .boxed_unsync();
        let settings = BufferSettings {
            memory: 1,
            dir: dir.path().to_owned(),
        };
        let err = Buffered::read(broken, &settings).await.expect_err("broken");
        assert!(matches!(err, BufferError::Body(_)), "{err}");
    }
}
