//! The frames of tunnel protocol 2, and the credit that bounds what a stream may send.
//!
//! Protocol 2 is issue 16's lighter tunnel, the first piece of it: no node or connector speaks it yet (the tunnel
//! is HTTP/2, docs/protocol.md); docs/performance.md ("Lighter designs, measured as floors") has the design and
//! the pieces still to come. Written by hand where the project otherwise uses a well-kept crate (`h2`), for a
//! measured reason: carried over HTTP/2 through `h2` directly, the same relay spent about 38,000 more
//! instructions per small request in its two processes than over these frames (`bench/floor`, the h2-raw and mux
//! floors, 76,811 against 38,773), and made 0.97× rathole's requests per second against 1.07 to 1.18×.
//!
//! A frame is a 12-byte header, then its payload:
//!
//! ```text
//! stream id: u32 | kind: u8 | flags: u8 | reserved: u16 (zero) | payload length: u32      (big-endian)
//! ```
//!
//! | kind | stream | payload | flags |
//! |---|---|---|---|
//! | HEAD (1) | not 0 | an HTTP/1.1 message head, as text | END_STREAM |
//! | DATA (2) | not 0 | body bytes | END_STREAM |
//! | RESET (3) | not 0 | reason: u32 | |
//! | WINDOW (4) | 0 for the connection, else the stream | credit increment: u32, 1 to 2³¹ − 1 | |
//! | PING (5) | 0 | 8 opaque bytes | ACK |
//! | GOAWAY (6) | 0 | last stream id: u32, reason: u32 | |
//!
//! A frame of an unknown kind is skipped whole (so that later versions can add kinds); a frame larger than the
//! receiver's limit, or a known kind with the wrong stream or payload size, is a connection error. Owns the
//! encoding and decoding and the flow-control arithmetic; does not own any I/O, streams or HTTP parsing.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame's header.
pub const HEADER_LEN: usize = 12;
/// The default most payload bytes of one frame a receiver accepts (Ferry's HTTP/2 tunnel: 256 KiB frames).
pub const DEFAULT_MAX_PAYLOAD: u32 = 256 * 1024;
/// The most credit a window can hold, as in HTTP/2 (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

const KIND_HEAD: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_RESET: u8 = 3;
const KIND_WINDOW: u8 = 4;
const KIND_PING: u8 = 5;
const KIND_GOAWAY: u8 = 6;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;

/// Why a stream was reset or a connection is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0);
    pub const PROTOCOL: Reason = Reason(1);
    /// The sender gave the stream up (its client went away).
    pub const CANCEL: Reason = Reason(2);
    /// The stream was refused before any of it was processed: safe to send again elsewhere.
    pub const REFUSED: Reason = Reason(3);
    pub const FLOW_CONTROL: Reason = Reason(4);
    pub const FRAME_SIZE: Reason = Reason(5);
    pub const INTERNAL: Reason = Reason(6);
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Head {
        stream: u32,
        end_stream: bool,
        head: Bytes,
    },
    Data {
        stream: u32,
        end_stream: bool,
        data: Bytes,
    },
    Reset {
        stream: u32,
        reason: Reason,
    },
    /// More credit for a stream, or for the whole connection (`stream` 0).
    Window {
        stream: u32,
        increment: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
    },
}

/// A frame the receiver cannot accept: the connection must end (a GOAWAY with the reason, then close).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes is larger than the {max} allowed")]
    TooLarge { len: u32, max: u32 },
    #[error("a {kind} frame on stream {stream}, where that kind belongs on {expected}")]
    WrongStream {
        kind: &'static str,
        stream: u32,
        expected: &'static str,
    },
    #[error("a {kind} frame with {len} payload bytes, where that kind has {expected}")]
    WrongSize {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("a WINDOW frame with an increment of {0}")]
    BadIncrement(u32),
}

impl Reason {
    /// The reason a connection ends with after this error.
    pub fn of(error: &FrameError) -> Reason {
        match error {
            FrameError::TooLarge { .. } | FrameError::WrongSize { .. } => Reason::FRAME_SIZE,
            FrameError::WrongStream { .. } => Reason::PROTOCOL,
            FrameError::BadIncrement(_) => Reason::FLOW_CONTROL,
        }
    }
}

/// The header of a frame whose payload of `len` bytes follows separately: a writer sends a large DATA payload from
/// where it lies (a vectored write) instead of copying it behind its header.
pub fn header(stream: u32, kind: u8, flags: u8, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&stream.to_be_bytes());
    h[4] = kind;
    h[5] = flags;
    // a payload is never near 4 GiB: writers split bodies into frames of at most the peer's limit
    h[8..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// The header of a DATA frame carrying `len` bytes (see [`header`]).
pub fn data_header(stream: u32, end_stream: bool, len: usize) -> [u8; HEADER_LEN] {
    header(stream, KIND_DATA, end_flag(end_stream), len)
}

fn end_flag(end: bool) -> u8 {
    if end {
        FLAG_END_STREAM
    } else {
        0
    }
}

impl Frame {
    /// Appends the frame, header and payload, to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Head {
                stream,
                end_stream,
                head,
            } => {
                dst.put_slice(&header(
                    *stream,
                    KIND_HEAD,
                    end_flag(*end_stream),
                    head.len(),
                ));
                dst.put_slice(head);
            }
            Frame::Data {
                stream,
                end_stream,
                data,
            } => {
                dst.put_slice(&data_header(*stream, *end_stream, data.len()));
                dst.put_slice(data);
            }
            Frame::Reset { stream, reason } => {
                dst.put_slice(&header(*stream, KIND_RESET, 0, 4));
                dst.put_u32(reason.0);
            }
            Frame::Window { stream, increment } => {
                dst.put_slice(&header(*stream, KIND_WINDOW, 0, 4));
                dst.put_u32(*increment);
            }
            Frame::Ping { ack, payload } => {
                dst.put_slice(&header(0, KIND_PING, if *ack { FLAG_ACK } else { 0 }, 8));
                dst.put_slice(payload);
            }
            Frame::GoAway {
                last_stream,
                reason,
            } => {
                dst.put_slice(&header(0, KIND_GOAWAY, 0, 8));
                dst.put_u32(*last_stream);
                dst.put_u32(reason.0);
            }
        }
    }

    /// Takes the next whole frame off the front of `src`: `Ok(None)` until all of it has arrived (a frame larger
    /// than `max_payload` is refused as soon as its header is in). Frames of unknown kinds are skipped.
    pub fn decode(src: &mut BytesMut, max_payload: u32) -> Result<Option<Frame>, FrameError> {
        loop {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let len = u32::from_be_bytes([src[8], src[9], src[10], src[11]]);
            if len > max_payload {
                return Err(FrameError::TooLarge {
                    len,
                    max: max_payload,
                });
            }
            if src.len() < HEADER_LEN + len as usize {
                src.reserve(HEADER_LEN + len as usize - src.len());
                return Ok(None);
            }
            let stream = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
            let (kind, flags) = (src[4], src[5]);
            src.advance(HEADER_LEN);
            let payload = src.split_to(len as usize).freeze();
            if let Some(frame) = Frame::parse(stream, kind, flags, payload)? {
                return Ok(Some(frame));
            }
        }
    }

    /// The frame of a header's fields and its payload; `None` for an unknown kind.
    fn parse(
        stream: u32,
        kind: u8,
        flags: u8,
        mut payload: Bytes,
    ) -> Result<Option<Frame>, FrameError> {
        let on_stream = |name: &'static str| {
            if stream == 0 {
                Err(FrameError::WrongStream {
                    kind: name,
                    stream,
                    expected: "a stream (not 0)",
                })
            } else {
                Ok(())
            }
        };
        let on_connection = |name: &'static str| {
            if stream != 0 {
                Err(FrameError::WrongStream {
                    kind: name,
                    stream,
                    expected: "stream 0",
                })
            } else {
                Ok(())
            }
        };
        let sized = |name: &'static str, payload: &Bytes, expected: usize| {
            if payload.len() != expected {
                Err(FrameError::WrongSize {
                    kind: name,
                    len: payload.len(),
                    expected,
                })
            } else {
                Ok(())
            }
        };
        let end_stream = flags & FLAG_END_STREAM != 0;
        Ok(Some(match kind {
            KIND_HEAD => {
                on_stream("HEAD")?;
                Frame::Head {
                    stream,
                    end_stream,
                    head: payload,
                }
            }
            KIND_DATA => {
                on_stream("DATA")?;
                Frame::Data {
                    stream,
                    end_stream,
                    data: payload,
                }
            }
            KIND_RESET => {
                on_stream("RESET")?;
                sized("RESET", &payload, 4)?;
                Frame::Reset {
                    stream,
                    reason: Reason(payload.get_u32()),
                }
            }
            KIND_WINDOW => {
                sized("WINDOW", &payload, 4)?;
                let increment = payload.get_u32();
                if increment == 0 || increment > MAX_WINDOW {
                    return Err(FrameError::BadIncrement(increment));
                }
                Frame::Window { stream, increment }
            }
            KIND_PING => {
                on_connection("PING")?;
                sized("PING", &payload, 8)?;
                let mut bytes = [0u8; 8];
                payload.copy_to_slice(&mut bytes);
                Frame::Ping {
                    ack: flags & FLAG_ACK != 0,
                    payload: bytes,
                }
            }
            KIND_GOAWAY => {
                on_connection("GOAWAY")?;
                sized("GOAWAY", &payload, 8)?;
                Frame::GoAway {
                    last_stream: payload.get_u32(),
                    reason: Reason(payload.get_u32()),
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// Sending more than a window's credit, or being granted past its limit: a flow-control error, which ends the
/// stream (a stream's window) or the connection (the connection's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("{sent} bytes sent against a window of {credit}")]
    Overrun { sent: usize, credit: u32 },
    #[error("a window of {credit} granted {increment} more, past the limit of 2^31 - 1")]
    Overflow { credit: u32, increment: u32 },
}

/// The credit of one flow-control window: what the peer may still send on a stream, or on the connection. The
/// receiver takes credit as DATA arrives and gives it back (a WINDOW frame) as the bytes are consumed; the sender
/// keeps the same account and waits when it is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    credit: u32,
}

impl Window {
    pub fn new(credit: u32) -> Self {
        Window {
            credit: credit.min(MAX_WINDOW),
        }
    }

    /// What may still be sent.
    pub fn credit(&self) -> u32 {
        self.credit
    }

    /// `n` bytes sent (or received) against the window.
    pub fn take(&mut self, n: usize) -> Result<(), FlowError> {
        match u32::try_from(n).ok().filter(|&n| n <= self.credit) {
            Some(n) => {
                self.credit -= n;
                Ok(())
            }
            None => Err(FlowError::Overrun {
                sent: n,
                credit: self.credit,
            }),
        }
    }

    /// A WINDOW frame's increment.
    pub fn grant(&mut self, increment: u32) -> Result<(), FlowError> {
        match self
            .credit
            .checked_add(increment)
            .filter(|&c| c <= MAX_WINDOW)
        {
            Some(credit) => {
                self.credit = credit;
                Ok(())
            }
            None => Err(FlowError::Overflow {
                credit: self.credit,
                increment,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Frame> {
        vec![
            Frame::Head {
                stream: 1,
                end_stream: true,
                head: Bytes::from_static(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"),
            },
            Frame::Head {
                stream: 3,
                end_stream: false,
                head: Bytes::from_static(b"POST /up HTTP/1.1\r\ncontent-length: 2\r\n\r\n"),
            },
            Frame::Data {
                stream: 3,
                end_stream: true,
                data: Bytes::from_static(b"hi"),
            },
            Frame::Data {
                stream: 5,
                end_stream: false,
                data: Bytes::new(),
            },
            Frame::Reset {
                stream: 7,
                reason: Reason::CANCEL,
            },
            Frame::Window {
                stream: 0,
                increment: MAX_WINDOW,
            },
            Frame::Window {
                stream: 9,
                increment: 1,
            },
            Frame::Ping {
                ack: false,
                payload: *b"12345678",
            },
            Frame::Ping {
                ack: true,
                payload: *b"12345678",
            },
            Frame::GoAway {
                last_stream: 11,
                reason: Reason::NO_ERROR,
            },
        ]
    }

    #[test]
    fn every_kind_reads_back_as_written_whole_or_a_byte_at_a_time() {
        let mut wire = BytesMut::new();
        for f in every_kind() {
            f.encode(&mut wire);
        }
        let mut whole = wire.clone();
        let mut read = Vec::new();
        while let Some(f) = Frame::decode(&mut whole, DEFAULT_MAX_PAYLOAD).expect("valid") {
            read.push(f);
        }
        assert_eq!(read, every_kind());
        assert!(whole.is_empty());

        let mut trickle = BytesMut::new();
        let mut read = Vec::new();
        for b in wire.iter() {
            trickle.put_u8(*b);
            while let Some(f) = Frame::decode(&mut trickle, DEFAULT_MAX_PAYLOAD).expect("valid") {
                read.push(f);
            }
        }
        assert_eq!(read, every_kind());
    }

    #[test]
    fn a_data_header_written_apart_from_its_payload_is_the_same_frame() {
        let mut apart = BytesMut::new();
        apart.put_slice(&data_header(5, true, 3));
        apart.put_slice(b"abc");
        let mut whole = BytesMut::new();
        Frame::Data {
            stream: 5,
            end_stream: true,
            data: Bytes::from_static(b"abc"),
        }
        .encode(&mut whole);
        assert_eq!(apart, whole);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header_alone() {
        let mut src = BytesMut::from(&header(1, KIND_DATA, 0, 1025)[..]);
        let err = Frame::decode(&mut src, 1024).expect_err("too large");
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 1025,
                max: 1024
            }
        );
        assert_eq!(Reason::of(&err), Reason::FRAME_SIZE);
    }

    #[test]
    fn known_kinds_on_the_wrong_stream_or_with_the_wrong_size_are_refused() {
        let cases: Vec<(Vec<u8>, Reason)> = vec![
            (header(0, KIND_HEAD, 0, 0).to_vec(), Reason::PROTOCOL),
            (header(0, KIND_DATA, 0, 0).to_vec(), Reason::PROTOCOL),
            (
                [&header(0, KIND_RESET, 0, 4)[..], &[0; 4]].concat(),
                Reason::PROTOCOL,
            ),
            (
                [&header(1, KIND_RESET, 0, 3)[..], &[0; 3]].concat(),
                Reason::FRAME_SIZE,
            ),
            (
                [&header(1, KIND_PING, 0, 8)[..], &[0; 8]].concat(),
                Reason::PROTOCOL,
            ),
            (
                [&header(0, KIND_PING, 0, 7)[..], &[0; 7]].concat(),
                Reason::FRAME_SIZE,
            ),
            (
                [&header(3, KIND_GOAWAY, 0, 8)[..], &[0; 8]].concat(),
                Reason::PROTOCOL,
            ),
            (
                [&header(0, KIND_WINDOW, 0, 4)[..], &[0; 4]].concat(),
                Reason::FLOW_CONTROL,
            ),
            (
                [&header(0, KIND_WINDOW, 0, 4)[..], &[0x80, 0, 0, 0]].concat(),
                Reason::FLOW_CONTROL,
            ),
            (
                [&header(1, KIND_WINDOW, 0, 5)[..], &[0; 5]].concat(),
                Reason::FRAME_SIZE,
            ),
        ];
        for (bytes, reason) in cases {
            let mut src = BytesMut::from(&bytes[..]);
            let err = Frame::decode(&mut src, DEFAULT_MAX_PAYLOAD).expect_err("refused");
            assert_eq!(Reason::of(&err), reason, "{err}");
        }
    }

    #[test]
    fn unknown_kinds_are_skipped_whole() {
        let mut src = BytesMut::new();
        src.put_slice(&header(1, 0x7f, 0xff, 5));
        src.put_slice(b"later");
        Frame::Reset {
            stream: 1,
            reason: Reason::REFUSED,
        }
        .encode(&mut src);
        assert_eq!(
            Frame::decode(&mut src, DEFAULT_MAX_PAYLOAD),
            Ok(Some(Frame::Reset {
                stream: 1,
                reason: Reason::REFUSED
            }))
        );
        assert!(src.is_empty());
    }

    #[test]
    fn a_window_refuses_overruns_and_grants_past_its_limit() {
        let mut w = Window::new(10);
        w.take(4).expect("within credit");
        assert_eq!(w.credit(), 6);
        assert_eq!(w.take(7), Err(FlowError::Overrun { sent: 7, credit: 6 }));
        w.grant(4).expect("within the limit");
        assert_eq!(w.credit(), 10);
        assert!(w.grant(MAX_WINDOW).is_err());
        assert_eq!(w.credit(), 10);
        assert_eq!(Window::new(u32::MAX).credit(), MAX_WINDOW);
        assert!(Window::new(0).take(usize::MAX).is_err());
    }
}
