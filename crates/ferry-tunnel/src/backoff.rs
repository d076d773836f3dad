//! Reconnect delays: exponential from a minimum to a maximum, doubling per failed attempt, with full jitter (a
//! uniformly random delay between half the current step and the step itself), reset after a tunnel stayed up.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with jitter (docs/protocol.md §6).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `min` and never exceeding `max` (a `max` below `min` is raised to `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            step: min,
        }
    }

    /// The delay before the next attempt: uniformly random in `[step/2, step]`; the step then doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        let half = step / 2;
        let delay = if step.is_zero() {
            step
        } else {
            let nanos = rand::thread_rng().gen_range(half.as_nanos()..=step.as_nanos());
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        self.step = step.saturating_mul(2).min(self.max);
        delay
    }

    /// Change the bounds (settings pushed at run time); the current step is clamped into them.
    pub fn set_bounds(&mut self, min: Duration, max: Duration) {
        self.min = min;
        self.max = max.max(min);
        self.step = self.step.clamp(self.min, self.max);
    }

    /// The current bounds, `(min, max)`.
    pub fn bounds(&self) -> (Duration, Duration) {
        (self.min, self.max)
    }

    /// Start again from the minimum (after a tunnel stayed up long enough).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bounds_change_at_run_time() {
        let mut b = Backoff::new(500 * MS, 4000 * MS);
        for _ in 0..5 {
            b.next_delay();
        }
        b.set_bounds(100 * MS, 200 * MS);
        assert_eq!(b.bounds(), (100 * MS, 200 * MS));
        assert!(b.next_delay() <= 200 * MS);
        b.set_bounds(300 * MS, 100 * MS);
        assert_eq!(b.bounds(), (300 * MS, 300 * MS));
    }

    #[test]
    fn doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(500 * MS, 4000 * MS);
        for step in [500u32, 1000, 2000, 4000, 4000, 4000] {
            let d = b.next_delay();
            let step = step * MS;
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} not in [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn resets_to_min() {
        let mut b = Backoff::new(100 * MS, 10_000 * MS);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= 50 * MS && d <= 100 * MS, "{d:?}");
    }

    #[test]
    fn jitter_varies() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(1000 * MS, 1000 * MS);
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1, "delays never vary");
    }

    #[test]
    fn zero_and_inverted_bounds() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::ZERO);
        let mut b = Backoff::new(200 * MS, 10 * MS);
        for _ in 0..5 {
            let d = b.next_delay();
            assert!(d >= 100 * MS && d <= 200 * MS, "{d:?}");
        }
    }
}
