//! The gate's request rate limit: a token bucket per source IP, in a table of
//! bounded size. Only STUN requests are counted (ChannelData and indications pass
//! before the gate looks at them). Pure: the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::lock;
use crate::token_bucket::{Refill, TokenBucket};

/// Default request rate per source IP (requests per second).
pub const DEFAULT_REQUEST_RATE: f64 = 100.0;
/// Default request burst per source IP.
pub const DEFAULT_REQUEST_BURST: f64 = 200.0;
/// Default cap on source IPs tracked by the rate limiter.
pub const DEFAULT_MAX_SOURCES: usize = 65_536;

/// The sources the limiter tracks, each with its bucket.
pub(super) struct Sources {
    refill: Refill,
    max: usize,
    table: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl Sources {
    /// `rate` requests per second per source with a burst of `burst`, for at
    /// most `max` sources at once.
    pub(super) fn new(rate: f64, burst: f64, max: usize) -> Self {
        Self { refill: Refill { rate, depth: burst }, max, table: Mutex::default() }
    }

    /// Takes a token for a request from `ip` at `now`; `false` when over the rate.
    ///
    /// A new source when the table is full first makes room by forgetting the
    /// sources idle long enough to have refilled; when none has, the new source
    /// goes untracked and passes (everything after this is stateless for it).
    pub(super) fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut table = lock(&self.table);
        if !table.contains_key(&ip) && table.len() >= self.max {
            // A source idle long enough to have refilled is as good as absent.
            let refill = self.refill.time_to_fill();
            table.retain(|_, b| now.duration_since(b.last()) < refill);
            if table.len() >= self.max {
                return true; // untracked: everything after this is stateless
            }
        }
        table.entry(ip).or_insert_with(|| TokenBucket::full(self.refill, now)).take(1.0, self.refill, now)
    }

    /// Sources tracked now.
    pub(super) fn len(&self) -> usize {
        lock(&self.table).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

    fn later(now: Instant, millis: u64) -> Instant {
        now.checked_add(Duration::from_millis(millis)).expect("an instant a few seconds on")
    }

    #[test]
    fn sources_over_the_rate_are_dropped_and_the_table_stays_bounded() {
        let sources = Sources::new(1.0, 2.0, 100);
        let now = Instant::now();
        assert!(sources.admit(IP, now) && sources.admit(IP, now));
        assert!(!sources.admit(IP, now), "burst spent");
        assert!(sources.admit(IP, later(now, 1000)), "refilled");
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert!(sources.admit(ip, now), "a new source is let through");
        }
        assert!(sources.len() <= 100, "{}", sources.len());
    }

    /// 4 requests/s: one token every 250 ms, exactly (the arithmetic is binary-exact).
    #[test]
    fn a_spent_source_gets_one_request_per_refill_interval() {
        let sources = Sources::new(4.0, 2.0, 100);
        let now = Instant::now();
        assert!(sources.admit(IP, now) && sources.admit(IP, now), "the burst");
        assert!(!sources.admit(IP, later(now, 125)), "half a token");
        assert!(sources.admit(IP, later(now, 250)), "one token after 250 ms");
        assert!(!sources.admit(IP, later(now, 250)), "and only one");
        assert!(sources.admit(IP, later(now, 10_000)) && sources.admit(IP, later(now, 10_000)), "refilled");
        assert!(!sources.admit(IP, later(now, 10_000)), "to the burst, no further");
    }

    /// A full table of busy sources leaves a newcomer untracked (and so unlimited);
    /// once they have been idle long enough to refill (burst / rate), they make room.
    #[test]
    fn a_full_table_makes_room_only_by_forgetting_sources_that_have_refilled() {
        let sources = Sources::new(1.0, 2.0, 2);
        let now = Instant::now();
        let [a, b, c] = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]].map(|o| IpAddr::V4(Ipv4Addr::from(o)));
        assert!(sources.admit(a, now) && sources.admit(b, now));
        for _ in 0..10 {
            assert!(sources.admit(c, later(now, 1999)), "untracked: over its burst, still through");
        }
        assert_eq!(sources.len(), 2);
        assert!(sources.admit(c, later(now, 2000)), "a and b have refilled: forgotten");
        assert_eq!(sources.len(), 1, "only c is tracked now");
        assert!(sources.admit(c, later(now, 2000)));
        assert!(!sources.admit(c, later(now, 2000)), "and limited");
    }
}
