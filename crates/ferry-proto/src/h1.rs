//! Following an HTTP/1.1 client's byte stream as a server reads it, to find each request head: what the listener
//! needs to refuse a head hyper would accept in a form that hides request smuggling (`Content-Length` with
//! `Transfer-Encoding`), and to time each head from its first byte. No I/O: bytes in, events out
//! (`ferry-gateway` puts it on connections; the fuzz target `h1_watch` runs it on arbitrary bytes).
//!
//! Request bodies are followed by their framing (`Content-Length`, or chunks with extensions and trailers).
//! Anything the watch does not understand (an upgrade, `CONNECT`, a malformed chunk, a head over 1 MiB) ends the
//! watch for the rest of the connection: hyper refuses what is malformed, and what remains is hyper's behaviour.
//! Written by hand because no crate offers it. It runs on every read of every HTTP/1.1 connection, so its scans
//! are `memchr`'s (SIMD) rather than byte loops, and a head that arrives whole in one read is judged where it lies,
//! not copied first (2,700 instructions per small request before, counted by bench/callgrind.sh).

/// What the watch found in a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine; its body is framed like this.
    Body(Framing),
    /// `Content-Length` together with `Transfer-Encoding`: refuse.
    Ambiguous,
    /// Stop watching (an upgrade, `CONNECT`, something hyper will refuse anyway).
    Stop,
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Judge one complete request head (request line and fields, with the final empty line).
pub fn judge_head(head: &[u8]) -> Verdict {
    if head.starts_with(b"CONNECT ") {
        return Verdict::Stop;
    }
    let Some(first_end) = memchr::memchr(b'\n', head) else {
        return Verdict::Stop;
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let fields = &head[first_end + 1..];
    let mut start = 0;
    while start < fields.len() {
        let end = memchr::memchr(b'\n', &fields[start..]).map_or(fields.len(), |e| start + e);
        let line = &fields[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Verdict::Stop;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Verdict::Stop;
            };
            if length.is_some_and(|l| l != n) {
                return Verdict::Stop;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
            // like hyper: chunked when the last coding of the last field is `chunked`
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .map(trim)
                .is_some_and(|last| last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            return Verdict::Stop;
        }
    }
    match (length, te) {
        (Some(_), true) => Verdict::Ambiguous,
        (_, true) if chunked => Verdict::Body(Framing::Chunked),
        (_, true) => Verdict::Stop,
        (Some(0), false) | (None, false) => Verdict::Body(Framing::None),
        (Some(n), false) => Verdict::Body(Framing::Length(n)),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Where the watch is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head; `started` once its first byte arrived.
    Head,
    Length(u64),
    /// Chunked body: the size line (its digits so far, and whether an extension began).
    ChunkSize {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// The LF after a size line's CR.
    ChunkSizeLf {
        size: u64,
    },
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    /// Trailer fields after the last chunk; `empty` while the current line has no byte yet.
    Trailers {
        empty: bool,
        cr: bool,
    },
    /// Watch no more.
    Off,
}

/// Largest head the watch keeps while it is incomplete; hyper refuses far smaller ones anyway.
const MAX_HEAD: usize = 1 << 20;

/// The watch itself, on byte slices: what [`H1Guard`] runs on each read, and the fuzz target on arbitrary bytes.
#[derive(Debug)]
pub struct H1Watch {
    state: State,
    head: Vec<u8>,
    /// Requests whose head completed.
    heads: u64,
}

/// What [`H1Watch::feed`] saw in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing to act on.
    Nothing,
    /// A head began at this offset (its first byte).
    HeadStarted,
    /// A head ended in these bytes; `at` is the offset of its last byte.
    HeadEnded { at: usize },
    /// A smuggling head ended at this offset; nothing after it is to be read.
    Ambiguous { at: usize },
}

impl Default for H1Watch {
    fn default() -> Self {
        Self::new()
    }
}

impl H1Watch {
    pub fn new() -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            heads: 0,
        }
    }

    /// Whether a head is being read (at least one byte of it has arrived).
    pub fn in_head(&self) -> bool {
        self.state == State::Head && !self.head.is_empty()
    }

    /// How many request heads have ended so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether the watch has given up on this connection.
    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Follow `bytes`; returns the first event that matters in them (a head's start or end), the rest of the
    /// bytes being followed as well. A [`Seen::Ambiguous`] stops the watch at once.
    pub fn feed(&mut self, bytes: &[u8]) -> Seen {
        let mut seen = Seen::Nothing;
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Off => return seen,
                State::Head => {
                    if self.head.is_empty() && seen == Seen::Nothing {
                        seen = Seen::HeadStarted;
                    }
                    let take = &bytes[i..];
                    let found = if self.head.is_empty() {
                        // nearly always: a whole head in these bytes, judged where it lies
                        let found =
                            find_end(take).map(|end| (judge_head(&take[..end + 4]), end + 4));
                        if found.is_none() {
                            self.head.extend_from_slice(take);
                        }
                        found
                    } else {
                        // the end of the head in what is kept from earlier reads plus these bytes
                        let kept = self.head.len();
                        let scan_from = kept.saturating_sub(3);
                        self.head.extend_from_slice(take);
                        find_end(&self.head[scan_from..]).map(|end| {
                            let head_end = scan_from + end + 4;
                            (judge_head(&self.head[..head_end]), head_end - kept)
                        })
                    };
                    match found {
                        Some((verdict, consumed)) => {
                            let at = i + consumed - 1;
                            self.heads += 1;
                            self.head.clear();
                            match verdict {
                                Verdict::Ambiguous => {
                                    self.state = State::Off;
                                    return Seen::Ambiguous { at };
                                }
                                Verdict::Stop => self.state = State::Off,
                                Verdict::Body(Framing::None) => self.state = State::Head,
                                Verdict::Body(Framing::Length(n)) => self.state = State::Length(n),
                                Verdict::Body(Framing::Chunked) => {
                                    self.state = State::ChunkSize {
                                        size: 0,
                                        digits: 0,
                                        ext: false,
                                    }
                                }
                            }
                            if !matches!(seen, Seen::Ambiguous { .. }) {
                                seen = Seen::HeadEnded { at };
                            }
                            i += consumed;
                        }
                        None => {
                            if self.head.len() > MAX_HEAD {
                                self.head = Vec::new();
                                self.state = State::Off;
                            }
                            return seen;
                        }
                    }
                }
                State::Length(n) => {
                    let take = (bytes.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Length(left)
                    };
                }
                State::ChunkData(n) => {
                    let take = (bytes.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(left)
                    };
                }
                _ => {
                    self.state = self.step(bytes[i]);
                    i += 1;
                }
            }
        }
        seen
    }

    /// One byte of chunk framing.
    fn step(&self, b: u8) -> State {
        match self.state {
            State::ChunkSize { size, digits, ext } => match b {
                b'\r' if digits > 0 => State::ChunkSizeLf { size },
                _ if ext => State::ChunkSize { size, digits, ext },
                b';' if digits > 0 => State::ChunkSize {
                    size,
                    digits,
                    ext: true,
                },
                b' ' | b'\t' if digits > 0 => State::ChunkSize {
                    size,
                    digits,
                    ext: true,
                },
                _ => match (hex_digit(b), digits < 16) {
                    (Some(d), true) => State::ChunkSize {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                        ext,
                    },
                    _ => State::Off,
                },
            },
            State::ChunkSizeLf { size } => match (b, size) {
                (b'\n', 0) => State::Trailers {
                    empty: true,
                    cr: false,
                },
                (b'\n', n) => State::ChunkData(n),
                _ => State::Off,
            },
            State::ChunkDataCr => match b {
                b'\r' => State::ChunkDataLf,
                _ => State::Off,
            },
            State::ChunkDataLf => match b {
                b'\n' => State::ChunkSize {
                    size: 0,
                    digits: 0,
                    ext: false,
                },
                _ => State::Off,
            },
            State::Trailers { empty, cr } => match (b, cr) {
                (b'\r', false) => State::Trailers { empty, cr: true },
                (b'\n', true) if empty => State::Head,
                (b'\n', true) => State::Trailers {
                    empty: true,
                    cr: false,
                },
                (_, false) => State::Trailers {
                    empty: false,
                    cr: false,
                },
                _ => State::Off,
            },
            other => other,
        }
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The offset of `\r\n\r\n` in `bytes`.
fn find_end(bytes: &[u8]) -> Option<usize> {
    // built once: building a searcher cost as much as a search of a small head
    static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    HEAD_END.find(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_judged() {
        use Framing::*;
        let j = |s: &str| judge_head(s.as_bytes());
        assert_eq!(j("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Verdict::Body(None));
        assert_eq!(
            j("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Verdict::Body(Length(12))
        );
        assert_eq!(
            j("POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            Verdict::Body(Chunked)
        );
        assert_eq!(
            j("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Verdict::Ambiguous
        );
        assert_eq!(
            j("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 3\r\n\r\n"),
            Verdict::Ambiguous
        );
        assert_eq!(
            j("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Verdict::Stop
        );
        assert_eq!(
            j("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Verdict::Stop
        );
        assert_eq!(j("CONNECT a:1 HTTP/1.1\r\n\r\n"), Verdict::Stop);
        assert_eq!(
            j("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Verdict::Stop
        );
    }

    /// Feed `stream` to a watch in pieces of `step` bytes; returns every event with its absolute offset.
    fn events(stream: &[u8], step: usize) -> Vec<(usize, Seen)> {
        let mut w = H1Watch::new();
        let mut out = Vec::new();
        for (k, piece) in stream.chunks(step).enumerate() {
            let seen = w.feed(piece);
            if seen != Seen::Nothing {
                out.push((k * step, seen));
            }
        }
        out
    }

    #[test]
    fn pipelined_requests_are_followed_through_their_bodies() {
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
GET /c HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
        for step in [1, 2, 3, 7, 64, stream.len()] {
            let mut w = H1Watch::new();
            let mut ambiguous_at = None;
            let mut offset = 0;
            for piece in stream.chunks(step) {
                if let Seen::Ambiguous { at } = w.feed(piece) {
                    ambiguous_at = Some(offset + at);
                    break;
                }
                offset += piece.len();
            }
            assert_eq!(ambiguous_at, Some(stream.len() - 1), "step {step}");
            assert_eq!(w.heads, 3, "step {step}");
        }
        // a head that starts and ends in one read is reported as ended; byte by byte, its start comes first
        assert_eq!(
            events(b"GET / HTTP/1.1\r\n\r\n", 100),
            [(0, Seen::HeadEnded { at: 17 })]
        );
        let byte_by_byte = events(b"GET / HTTP/1.1\r\n\r\n", 1);
        assert_eq!(byte_by_byte[0], (0, Seen::HeadStarted));
        assert_eq!(byte_by_byte[1], (17, Seen::HeadEnded { at: 0 }));
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_not_heads() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let mut w = H1Watch::new();
        for piece in stream.chunks(5) {
            assert!(!matches!(w.feed(piece), Seen::Ambiguous { .. }));
        }
        assert_eq!(w.heads, 2);
        assert!(!w.is_off());
    }

    #[test]
    fn malformed_chunks_end_the_watch() {
        let mut w = H1Watch::new();
        w.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert!(w.is_off());
    }
}
