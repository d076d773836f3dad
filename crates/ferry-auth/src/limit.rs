//! Limits on repeated failures at the token endpoint, per client IP and per client id: each failure takes one
//! token from a bucket that refills at `failures / window`; an empty bucket answers 429 with `Retry-After`.
//!
//! A small bounded map rather than `governor`: the limiter must *look* before the request is checked and *take*
//! only when it failed (successes cost nothing), which governor's keyed limiters do not offer (every check
//! consumes). The maps are bounded ([`MAX_TRACKED`] keys each): when full, buckets that have refilled are
//! dropped first, then the least recently touched one, so a flood of addresses costs bounded memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked per map at most.
pub const MAX_TRACKED: usize = 10_000;
/// Client ids longer than this are cut before they are used as keys.
const MAX_CLIENT_ID_KEY: usize = 128;

/// How many failed token requests are tolerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Failed token requests allowed per client IP within `window`; 0 turns this limit off.
    pub failures_per_ip: u32,
    /// Failed token requests allowed per client id within `window`; 0 turns this limit off.
    pub failures_per_client: u32,
    /// The window over which the failures are counted (the buckets refill over it).
    pub window: Duration,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            failures_per_ip: 10,
            failures_per_client: 20,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key, at most [`MAX_TRACKED`] of them.
#[derive(Debug)]
struct Buckets<K> {
    capacity: f64,
    /// Tokens per second.
    rate: f64,
    map: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(limit: u32, window: Duration) -> Self {
        let capacity = f64::from(limit);
        let rate = capacity / window.as_secs_f64().max(0.001);
        Buckets {
            capacity,
            rate,
            map: HashMap::new(),
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0.0
    }

    fn level(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        (bucket.tokens + refill).min(self.capacity)
    }

    /// `Some(wait)` if the key has no failure left.
    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let level = self.level(self.map.get(key)?, now);
        (level < 1.0).then(|| Duration::from_secs_f64((1.0 - level) / self.rate))
    }

    fn take(&mut self, key: &K, now: Instant) {
        if !self.enabled() {
            return;
        }
        if !self.map.contains_key(key) && self.map.len() >= MAX_TRACKED {
            self.evict(now);
        }
        let level = match self.map.get(key) {
            Some(bucket) => self.level(bucket, now),
            None => self.capacity,
        };
        self.map.insert(
            key.clone(),
            Bucket {
                tokens: (level - 1.0).max(0.0),
                at: now,
            },
        );
    }

    fn evict(&mut self, now: Instant) {
        let (capacity, rate) = (self.capacity, self.rate);
        self.map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < capacity
        });
        if self.map.len() >= MAX_TRACKED {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
    }
}

/// Which limit refused a request, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// `"ip"` or `"client_id"`.
    pub by: &'static str,
    /// When a failure is allowed again; rounded up to whole seconds for `Retry-After`.
    pub retry_after: Duration,
}

impl Limited {
    /// The `Retry-After` value: whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        let secs = if self.retry_after.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs
        };
        secs.max(1)
    }
}

/// Failure limits per client IP and per client id.
#[derive(Debug)]
pub struct FailureLimiter {
    ips: Mutex<Buckets<IpAddr>>,
    clients: Mutex<Buckets<String>>,
}

fn client_key(client_id: &str) -> String {
    client_id.chars().take(MAX_CLIENT_ID_KEY).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl FailureLimiter {
    pub fn new(settings: RateLimitSettings) -> Self {
        FailureLimiter {
            ips: Mutex::new(Buckets::new(settings.failures_per_ip, settings.window)),
            clients: Mutex::new(Buckets::new(settings.failures_per_client, settings.window)),
        }
    }

    /// Whether the IP has used up its failures.
    pub fn check_ip(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        match ip.and_then(|ip| lock(&self.ips).blocked(&ip, now)) {
            Some(retry_after) => Err(Limited {
                by: "ip",
                retry_after,
            }),
            None => Ok(()),
        }
    }

    /// Whether the client id has used up its failures.
    pub fn check_client(&self, client_id: &str, now: Instant) -> Result<(), Limited> {
        match lock(&self.clients).blocked(&client_key(client_id), now) {
            Some(retry_after) => Err(Limited {
                by: "client_id",
                retry_after,
            }),
            None => Ok(()),
        }
    }

    /// Count one failure against the IP and, when known, the client id.
    pub fn record_failure(&self, ip: Option<IpAddr>, client_id: Option<&str>, now: Instant) {
        if let Some(ip) = ip {
            lock(&self.ips).take(&ip, now);
        }
        if let Some(client_id) = client_id {
            lock(&self.clients).take(&client_key(client_id), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    fn limiter(per_ip: u32, per_client: u32) -> FailureLimiter {
        FailureLimiter::new(RateLimitSettings {
            failures_per_ip: per_ip,
            failures_per_client: per_client,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn ip_is_blocked_after_its_failures_and_recovers() {
        let l = limiter(3, 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.check_ip(ip(1), t0).is_ok(), "failure {i} allowed");
            l.record_failure(ip(1), None, t0);
        }
        let limited = l.check_ip(ip(1), t0).expect_err("blocked");
        assert_eq!(limited.by, "ip");
        // One failure back every 20 s (3 per minute).
        assert_eq!(limited.retry_after_secs(), 20);
        assert!(
            l.check_ip(ip(2), t0).is_ok(),
            "other addresses are not affected"
        );
        assert!(l.check_ip(None, t0).is_ok());
        assert!(l.check_ip(ip(1), t0 + Duration::from_secs(19)).is_err());
        assert!(l.check_ip(ip(1), t0 + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn client_id_is_blocked_across_addresses() {
        let l = limiter(100, 2);
        let t0 = Instant::now();
        l.record_failure(ip(1), Some("demo"), t0);
        l.record_failure(ip(2), Some("demo"), t0);
        let limited = l.check_client("demo", t0).expect_err("blocked");
        assert_eq!(limited.by, "client_id");
        assert_eq!(limited.retry_after_secs(), 30);
        assert!(l.check_client("other", t0).is_ok());
        assert!(l.check_ip(ip(1), t0).is_ok());
        // Long client ids share the key of their first 128 characters.
        let long = "x".repeat(500);
        l.record_failure(None, Some(&long), t0);
        l.record_failure(None, Some(&format!("{long}y")), t0);
        assert!(l.check_client(&long, t0).is_err());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = limiter(0, 0);
        let t0 = Instant::now();
        for _ in 0..50 {
            l.record_failure(ip(1), Some("demo"), t0);
        }
        assert!(l.check_ip(ip(1), t0).is_ok());
        assert!(l.check_client("demo", t0).is_ok());
    }

    #[test]
    fn the_maps_stay_bounded() {
        let l = limiter(1, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let addr = IpAddr::from(i.to_be_bytes());
            l.record_failure(Some(addr), None, t0 + Duration::from_micros(u64::from(i)));
        }
        assert!(lock(&l.ips).map.len() <= MAX_TRACKED);
        // The most recent offender is still tracked.
        let last = IpAddr::from((MAX_TRACKED as u32 + 499).to_be_bytes());
        assert!(l.check_ip(Some(last), t0 + Duration::from_secs(1)).is_err());
    }
}
