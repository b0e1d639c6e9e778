//! The token bucket under both of the relay's limits: the gate's request rate per
//! source IP ([`crate::gate`]) and the bandwidth cap per allocation
//! ([`crate::bandwidth`]). Pure: the caller passes `now`.

use std::time::{Duration, Instant};

/// How a bucket fills: `rate` tokens per second, up to `depth` tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Refill {
    /// Tokens added per second.
    pub rate: f64,
    /// Tokens held at most (a full bucket's burst).
    pub depth: f64,
}

impl Refill {
    /// How long an empty bucket takes to fill up: `depth / rate`.
    ///
    /// Panics when that is not a finite, non-negative number of seconds (a rate
    /// of zero or less with a positive depth); the rates come from configuration.
    pub fn time_to_fill(self) -> Duration {
        Duration::from_secs_f64(self.depth / self.rate.max(f64::MIN_POSITIVE))
    }
}

/// Tokens at an instant; filled by [`Refill`] on each [`take`](Self::take).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(refill: Refill, now: Instant) -> Self {
        Self { tokens: refill.depth, last: now }
    }

    /// Refills for the time since the last take, then takes `cost` tokens;
    /// `false` (and nothing taken) when fewer are there.
    pub fn take(&mut self, cost: f64, refill: Refill, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * refill.rate).min(refill.depth);
        self.last = now;
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }

    /// When tokens were last taken (or the bucket made).
    pub fn last(&self) -> Instant {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_passes_the_rate_and_drops_the_excess() {
        let start = Instant::now();
        let refill = Refill { rate: 1000.0, depth: 1000.0 };
        let mut b = TokenBucket::full(refill, start);
        assert!(b.take(1000.0, refill, start), "one second of burst");
        assert!(!b.take(1.0, refill, start), "then nothing");
        assert!(b.take(500.0, refill, start.checked_add(Duration::from_millis(500)).unwrap()), "refilled at the rate");
        assert!(!b.take(600.0, refill, start.checked_add(Duration::from_millis(500)).unwrap()));
    }

    #[test]
    fn a_bucket_fills_to_its_depth_and_no_further() {
        let start = Instant::now();
        let refill = Refill { rate: 10.0, depth: 2.0 };
        let mut b = TokenBucket::full(refill, start);
        assert!(b.take(2.0, refill, start), "the burst");
        assert!(!b.take(1.0, refill, start.checked_add(Duration::from_millis(99)).unwrap()), "not yet one token");
        assert!(b.take(1.0, refill, start.checked_add(Duration::from_millis(199)).unwrap()), "one token after 100 ms");
        let much_later = start.checked_add(Duration::from_secs(3600)).unwrap();
        assert!(b.take(2.0, refill, much_later), "full again");
        assert!(!b.take(1.0, refill, much_later), "but only to its depth");
        assert_eq!(refill.time_to_fill(), Duration::from_millis(200));
    }
}
