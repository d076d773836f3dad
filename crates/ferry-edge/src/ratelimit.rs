//! Per-route rate limits: a token bucket per client address (or per value of a header), answering 429 with
//! `Retry-After` when a bucket is empty.

use crate::EdgeError;
use ferry_config::RateLimitConfig;
use http::{HeaderMap, HeaderName};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most; beyond it, the full (idle) ones are forgotten first.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone)]
enum By {
    ClientIp,
    Header(HeaderName),
}

/// The token buckets of one route.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per second.
    rate: f64,
    burst: f64,
    by: By,
    buckets: Mutex<HashMap<Vec<u8>, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(key: &str, c: &RateLimitConfig) -> Result<Self, EdgeError> {
        let invalid = |field: &str, message: String| EdgeError::Config {
            path: format!("{key}.rate_limit.{field}"),
            message,
        };
        if c.requests == 0 {
            return Err(invalid("requests", "must be at least 1".into()));
        }
        if c.per.is_zero() {
            return Err(invalid("per", "must be above zero".into()));
        }
        let by = match c.by.trim() {
            "client_ip" => By::ClientIp,
            other => match other.strip_prefix("header:") {
                Some(h) => By::Header(
                    HeaderName::from_bytes(h.trim().as_bytes())
                        .map_err(|_| invalid("by", format!("{h:?} is not a header name")))?,
                ),
                None => {
                    return Err(invalid(
                        "by",
                        format!("{other:?}: expected client_ip or header:NAME"),
                    ))
                }
            },
        };
        let burst = c.burst.unwrap_or(c.requests);
        if burst == 0 {
            return Err(invalid("burst", "must be at least 1".into()));
        }
        Ok(Self {
            rate: f64::from(c.requests) / c.per.as_secs_f64(),
            burst: f64::from(burst),
            by,
            buckets: Mutex::default(),
        })
    }

    /// Take a token for this request; `Err(wait)` when its bucket is empty, with the time until the next token.
    pub fn check(&self, client: IpAddr, headers: &HeaderMap) -> Result<(), Duration> {
        let key = match &self.by {
            By::ClientIp => client.to_string().into_bytes(),
            By::Header(h) => headers
                .get(h)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        };
        self.take(key, Instant::now())
    }

    fn take(&self, key: Vec<u8>, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, per_ms: u64, burst: Option<u32>, by: &str) -> RateLimiter {
        RateLimiter::new(
            "r",
            &RateLimitConfig {
                requests,
                per: Duration::from_millis(per_ms),
                burst,
                by: by.into(),
            },
        )
        .expect("limiter")
    }

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let l = limiter(10, 1000, Some(3), "client_ip");
        let t0 = Instant::now();
        let k = || b"1.2.3.4".to_vec();
        for _ in 0..3 {
            assert!(l.take(k(), t0).is_ok());
        }
        let wait = l.take(k(), t0).expect_err("empty");
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // another key has its own bucket
        assert!(l.take(b"5.6.7.8".to_vec(), t0).is_ok());
        // 100 ms later one token is back
        let t1 = t0 + Duration::from_millis(101);
        assert!(l.take(k(), t1).is_ok());
        assert!(l.take(k(), t1).is_err());
    }

    #[test]
    fn keyed_by_header() {
        let l = limiter(1, 60_000, None, "header:x-api-key");
        let mut a = HeaderMap::new();
        a.insert("x-api-key", "a".parse().expect("v"));
        let mut b = HeaderMap::new();
        b.insert("x-api-key", "b".parse().expect("v"));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(l.check(ip, &a).is_ok());
        assert!(l.check(ip, &a).is_err());
        assert!(l.check(ip, &b).is_ok());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = RateLimiter::new(
            "gateway.routes[1]",
            &RateLimitConfig {
                requests: 5,
                per: Duration::from_secs(1),
                burst: None,
                by: "cookie:x".into(),
            },
        )
        .expect_err("bad");
        assert!(
            e.to_string().starts_with("gateway.routes[1].rate_limit.by"),
            "{e}"
        );
    }
}
