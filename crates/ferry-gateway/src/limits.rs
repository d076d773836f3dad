//! What one client may hold of a node: caps on open connections (all together and per client address), the
//! clear refusal a connection beyond them gets, and log lines at a bounded rate for what a flood would otherwise
//! repeat thousands of times a second (accept errors, refused connections).

use bytes::Bytes;
use ferry_proto::{ErrorCode, ErrorReply};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a refused connection is given to read its `503` before it is closed; and how many refused
/// connections may be lingering so at once (beyond, they are closed at once).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
const MAX_LINGERING: usize = 64;

/// A listener's caps on open connections: all of its own together, and from one client address (0: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// The open connections of a listener, counted against its caps (which a reload may change: connections
/// accepted from then on are counted against the new ones).
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max: AtomicUsize,
    per_ip: AtomicUsize,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    lingering: AtomicUsize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The listener holds `max_connections`.
    Total(usize),
    /// The address holds `max_connections_per_ip`.
    PerIp(usize),
}

impl Refusal {
    pub(crate) fn reply(self, ip: IpAddr) -> ErrorReply {
        let message = match self {
            Self::Total(n) => format!("the node holds its limit of {n} connections"),
            Self::PerIp(n) => format!("{ip} holds its limit of {n} connections"),
        };
        ErrorReply::new(ErrorCode::TooManyConnections, message)
    }
}

/// One admitted connection; counted until dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    limits: Arc<ConnectionLimits>,
    /// The client address it counts against; `None` while it is not known yet (a PROXY protocol header not read).
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    /// `max` and `per_ip` of 0 mean no cap.
    pub(crate) fn new(max: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max: AtomicUsize::new(no_cap_is_max(max)),
            per_ip: AtomicUsize::new(no_cap_is_max(per_ip)),
            open: AtomicUsize::new(0),
            by_ip: Mutex::default(),
            lingering: AtomicUsize::new(0),
        })
    }

    /// Count connections admitted from now on against `caps` (those already open stay).
    pub(crate) fn set_caps(&self, caps: ConnectionCaps) {
        self.max
            .store(no_cap_is_max(caps.max_connections), Ordering::Relaxed);
        self.per_ip.store(
            no_cap_is_max(caps.max_connections_per_ip),
            Ordering::Relaxed,
        );
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    fn per_ip(&self) -> usize {
        self.per_ip.load(Ordering::Relaxed)
    }

    /// Count a new connection from `ip`, unless a cap is reached: then the newest connection (this one) is the
    /// one refused, so that connections already served keep their service.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let ip = canonical(ip);
        let mut by_ip = match self.by_ip.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let max = self.max();
        if self.open.load(Ordering::Acquire) >= max {
            return Err(Refusal::Total(max));
        }
        let held = by_ip.entry(ip).or_insert(0);
        let per_ip = self.per_ip();
        if *held >= per_ip {
            return Err(Refusal::PerIp(per_ip));
        }
        *held += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Permit {
            limits: self.clone(),
            ip: Some(ip),
        })
    }

    /// Count a new connection whose client address comes later (behind a load balancer speaking the PROXY
    /// protocol): against the total cap now, against its address's cap by [`Permit::attribute`].
    pub(crate) fn admit_unattributed(self: &Arc<Self>) -> Result<Permit, Refusal> {
        let max = self.max();
        if self.open.load(Ordering::Acquire) >= max {
            return Err(Refusal::Total(max));
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Permit {
            limits: self.clone(),
            ip: None,
        })
    }

    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Answer a refused plain-HTTP connection `503` with Ferry's error and close it: the response is written
    /// without waiting, then the connection is given a moment to read it (a close with unread data in the
    /// kernel would reset it and lose the answer), at most [`MAX_LINGERING`] at once.
    pub(crate) fn refuse(self: &Arc<Self>, mut stream: TcpStream, reply: &ErrorReply) {
        let _ = stream.try_write(&refusal_bytes(reply));
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let limits = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                use tokio::io::AsyncWriteExt;
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            limits.lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

impl Permit {
    /// Count this connection against `ip`'s cap too, now that its client is known.
    pub(crate) fn attribute(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        let mut by_ip = match self.limits.by_ip.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let held = by_ip.entry(ip).or_insert(0);
        let per_ip = self.limits.per_ip();
        if *held >= per_ip {
            return Err(Refusal::PerIp(per_ip));
        }
        *held += 1;
        self.ip = Some(ip);
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut by_ip = match self.limits.by_ip.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(held) = by_ip.get_mut(&ip) {
                *held -= 1;
                if *held == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A cap of 0 is none.
fn no_cap_is_max(cap: usize) -> usize {
    if cap == 0 {
        usize::MAX
    } else {
        cap
    }
}

/// An IPv4 client seen through an IPv6 socket counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The `503` a refused connection gets, before any request was read: Ferry's error response, with `Connection:
/// close`.
fn refusal_bytes(reply: &ErrorReply) -> Bytes {
    ferry_http::error_response_bytes(reply, &ferry_proto::new_request_id())
}

/// A log line that a flood would repeat: written at most once per `every`, saying how many were left out since.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were left out since the last one), else `None`.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_the_newest_and_free_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let a1 = limits.admit(a).expect("first");
        let _a2 = limits.admit(mapped).expect("second, the same address");
        assert_eq!(limits.admit(a).err(), Some(Refusal::PerIp(2)));
        let _b1 = limits.admit(b).expect("another address");
        assert_eq!(limits.admit(b).err(), Some(Refusal::Total(3)));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(a).is_ok());
        // new caps count from now on: the open connections stay, new ones are measured against them
        limits.set_caps(ConnectionCaps {
            max_connections: 2,
            max_connections_per_ip: 0,
        });
        assert_eq!(limits.admit(b).err(), Some(Refusal::Total(2)));
        limits.set_caps(ConnectionCaps {
            max_connections: 10,
            max_connections_per_ip: 0,
        });
        let more: Vec<_> = (0..5).filter_map(|_| limits.admit(b).ok()).collect();
        assert_eq!(more.len(), 5, "no cap per address");
        let unlimited = ConnectionLimits::new(0, 0);
        let held: Vec<_> = (0..1000).filter_map(|_| unlimited.admit(a).ok()).collect();
        assert_eq!(held.len(), 1000);
    }

    #[test]
    fn refusal_is_ferrys_error_format() {
        let reply = Refusal::PerIp(5).reply("192.0.2.1".parse().expect("ip"));
        let text = String::from_utf8(refusal_bytes(&reply).to_vec()).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(
            text.contains("ferry-error: too_many_connections\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.starts_with("too_many_connections: 192.0.2.1 holds its limit of 5"));
    }

    #[test]
    fn rate_limited_log_counts_what_it_left_out() {
        let log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        let log2 = RateLimitedLog::new(Duration::ZERO);
        assert_eq!(log2.admit(), Some(0));
        assert_eq!(log2.admit(), Some(0));
    }
}
