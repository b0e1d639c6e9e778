//! Bandwidth accounting per allocation: a cap in each direction, as a token bucket
//! of bytes one second deep. Traffic over the cap is dropped, as a congested link
//! would drop it (coturn's `max-bps`). Pure: no sockets, the caller passes `now`.
//!
//! One [`Cap`] per allocation, made with its relayed socket ([`crate::relayed`]),
//! which charges what crosses that socket; the channel data path
//! ([`crate::channel_data`]) holds the same `Arc` and charges what it carries
//! past the socket (a hairpin charges both allocations).

use std::num::NonZeroU64;
use std::sync::Mutex;
use std::time::Instant;

use crate::token_bucket::{Refill, TokenBucket};

/// Which way relayed data goes, as seen from the allocation's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client, out of the relayed socket to a peer.
    ToPeer,
    /// From a peer, into the relayed socket and on to the client.
    FromPeer,
}

/// One allocation's bandwidth cap, the same in each direction.
#[derive(Debug)]
pub struct Cap {
    /// `None`: no cap, every charge passes.
    limit: Option<Limit>,
}

#[derive(Debug)]
struct Limit {
    refill: Refill,
    to_peer: Mutex<TokenBucket>,
    from_peer: Mutex<TokenBucket>,
}

impl Cap {
    /// A cap of `bits_per_second` in each direction (`None`: no cap), with a
    /// burst of one second's worth, full at `now`.
    ///
    /// The buckets count whole bytes per second (`bits_per_second / 8`, rounded
    /// down), so a cap under 8 bit/s is no cap.
    pub fn new(bits_per_second: Option<NonZeroU64>, now: Instant) -> Self {
        let bytes_per_second = bits_per_second.and_then(|bits| NonZeroU64::new(bits.get() / 8));
        Self {
            limit: bytes_per_second.map(|bytes| {
                // Exact up to 2^53 bytes per second; this is configuration, not wire input.
                let rate = bytes.get() as f64;
                let refill = Refill { rate, depth: rate };
                Limit {
                    refill,
                    to_peer: Mutex::new(TokenBucket::full(refill, now)),
                    from_peer: Mutex::new(TokenBucket::full(refill, now)),
                }
            }),
        }
    }

    /// Charges `bytes` going `direction` at `now`: `true` when they fit under the
    /// cap (and are counted), `false` when they are to be dropped. Always `true`
    /// without a cap.
    pub fn charge(&self, direction: Direction, bytes: usize, now: Instant) -> bool {
        let Some(limit) = &self.limit else { return true };
        // A datagram's length; one over 4 GiB cannot fit any cap worth having.
        let Ok(cost) = u32::try_from(bytes).map(f64::from) else { return false };
        let bucket = match direction {
            Direction::ToPeer => &limit.to_peer,
            Direction::FromPeer => &limit.from_peer,
        };
        // A bucket is two numbers a panicking holder cannot leave half-written.
        bucket.lock().unwrap_or_else(|e| e.into_inner()).take(cost, limit.refill, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bits(n: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(n)
    }

    #[test]
    fn a_cap_passes_one_second_of_its_rate_then_refills_at_it() {
        let now = Instant::now();
        let cap = Cap::new(bits(8_000), now);
        assert!(cap.charge(Direction::ToPeer, 1000, now), "1000 bytes: one second at 8 kbit/s");
        assert!(!cap.charge(Direction::ToPeer, 1, now), "then nothing");
        assert!(
            cap.charge(Direction::ToPeer, 250, now.checked_add(Duration::from_millis(250)).unwrap()),
            "refilled at the rate"
        );
    }

    #[test]
    fn the_two_directions_are_capped_apart() {
        let now = Instant::now();
        let cap = Cap::new(bits(8_000), now);
        assert!(cap.charge(Direction::ToPeer, 1000, now));
        assert!(cap.charge(Direction::FromPeer, 1000, now), "the other direction has its own second");
        assert!(!cap.charge(Direction::FromPeer, 1, now));
    }

    #[test]
    fn no_cap_passes_everything() {
        let now = Instant::now();
        for cap in [Cap::new(None, now), Cap::new(bits(7), now)] {
            assert!(cap.charge(Direction::ToPeer, 1 << 20, now), "{cap:?}");
            assert!(cap.charge(Direction::FromPeer, usize::MAX, now), "{cap:?}");
        }
    }
}
