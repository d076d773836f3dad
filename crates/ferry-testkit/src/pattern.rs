//! A deterministic, fast pseudo-random byte stream, for big transfers whose integrity is checked by SHA-256
//! without keeping the bytes anywhere.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The chunk size [`PatternStream`] produces (the last chunk may be shorter).
pub const CHUNK: usize = 64 * 1024;

/// `len` bytes from a xorshift generator seeded with `seed`, in chunks of [`CHUNK`] bytes. The same seed and
/// length always give the same bytes.
#[derive(Debug, Clone)]
pub struct PatternStream {
    state: u64,
    remaining: u64,
}

impl PatternStream {
    pub fn new(seed: u64, len: u64) -> Self {
        Self {
            // xorshift must not start at 0
            state: seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
            remaining: len,
        }
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk, or `None` at the end.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = (self.remaining.min(CHUNK as u64)) as usize;
        let mut buf = vec![0u8; CHUNK];
        for word in buf.chunks_exact_mut(8) {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            word.copy_from_slice(&x.to_le_bytes());
        }
        buf.truncate(n);
        self.remaining -= n as u64;
        Some(Bytes::from(buf))
    }

    /// As a `futures` stream of `Result<Bytes, E>` (for request and response bodies).
    pub fn into_stream<E>(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move {
            let chunk = s.next_chunk()?;
            Some((Ok(chunk), s))
        })
    }
}

impl Iterator for PatternStream {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        self.next_chunk()
    }
}

/// The SHA-256 (hex) of `PatternStream::new(seed, len)`; CPU-bound, run it in `spawn_blocking` for big lengths.
pub fn pattern_sha256(seed: u64, len: u64) -> String {
    let mut h = Sha256Hex::new();
    for chunk in PatternStream::new(seed, len) {
        h.update(&chunk);
    }
    h.finish()
}

/// A SHA-256 that also counts bytes.
#[derive(Debug, Clone, Default)]
pub struct Sha256Hex {
    hasher: Sha256,
    len: u64,
}

impl Sha256Hex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.hasher.update(bytes);
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest in lowercase hex.
    pub fn finish(self) -> String {
        crate::hex(&self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_exact_length() {
        let a: Vec<u8> = PatternStream::new(7, 200_001)
            .flat_map(|b| b.to_vec())
            .collect();
        let b: Vec<u8> = PatternStream::new(7, 200_001)
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(a.len(), 200_001);
        assert_eq!(a, b);
        let c: Vec<u8> = PatternStream::new(8, 200_001)
            .flat_map(|b| b.to_vec())
            .collect();
        assert_ne!(a, c);
        assert_eq!(pattern_sha256(7, 200_001), {
            let mut h = Sha256Hex::new();
            h.update(&a);
            h.finish()
        });
    }
}
