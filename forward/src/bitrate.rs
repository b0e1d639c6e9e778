//! The bitrate each simulcast layer of a published track arrives at: what
//! [`crate::allocation`] charges a subscriber's budget for a layer (LiveKit's
//! stream allocator uses the layers' measured bitrates the same way).
//!
//! Each layer's bytes are counted in [`BUCKETS`] buckets of [`BUCKET`]
//! (a window of [`WINDOW`]); its rate is what the window holds over the time
//! the window covers, or since the layer's first packet when that is later, so
//! a layer that just started is not read as slow. A layer with no packet for
//! a whole window is not arriving (`None`). Keyframes make a layer's rate
//! spike for a moment; a one-second window spreads them as the encoder's own
//! rate control does.
//!
//! Bytes are whole RTP packets (header included); rates are in bits per
//! second. Pure: the caller passes `now`.

use std::time::{Duration, Instant};

/// One bucket's span.
pub const BUCKET: Duration = Duration::from_millis(250);
/// Buckets per window.
pub const BUCKETS: usize = 4;
/// The span rates are measured over: [`BUCKETS`] x [`BUCKET`].
pub const WINDOW: Duration = Duration::from_millis(1000);

/// One layer's meter.
#[derive(Debug, Clone, Copy, Default)]
struct Meter {
    /// `(bucket number, bytes)`: bucket numbers count [`BUCKET`]s since the
    /// meters' origin; a slot holds the bucket `n` with `n % BUCKETS` its index.
    slots: [(u64, u64); BUCKETS],
    first: Option<Instant>,
    last: Option<Instant>,
}

/// The arriving bitrate of each of `N` layers.
#[derive(Debug, Clone)]
pub struct LayerBitrates<const N: usize> {
    origin: Instant,
    meters: [Meter; N],
}

impl<const N: usize> LayerBitrates<N> {
    /// Meters that start counting at `origin` (no packet yet).
    pub fn new(origin: Instant) -> Self {
        Self { origin, meters: [Meter::default(); N] }
    }

    fn bucket(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        // u128 -> u64: a bucket count past 2^64 would take 10^11 years.
        u64::try_from(since.as_nanos() / BUCKET.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a packet of `bytes` on `layer` at `now`. A layer past `N` is ignored.
    pub fn observe(&mut self, now: Instant, layer: u8, bytes: usize) {
        let bucket = self.bucket(now);
        let Some(m) = self.meters.get_mut(usize::from(layer)) else { return };
        // Back after a window without packets (or the first): measured afresh.
        if m.last.is_none_or(|last| now.saturating_duration_since(last) >= WINDOW) {
            *m = Meter { first: Some(now), ..Meter::default() };
            m.slots = [(u64::MAX, 0); BUCKETS];
        }
        // The modulo of a u64 by a small constant fits in usize.
        let slot = &mut m.slots[(bucket % BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0);
        }
        slot.1 = slot.1.saturating_add(bytes as u64);
        m.last = Some(now);
    }

    /// Layer `layer`'s bitrate at `now`, in bits per second; `None` when it is
    /// not arriving (nothing within [`WINDOW`]) or past `N`.
    pub fn rate(&self, now: Instant, layer: u8) -> Option<u64> {
        let m = self.meters.get(usize::from(layer))?;
        let first = m.first?;
        if !self.arriving(now, layer) {
            return None;
        }
        let bucket = self.bucket(now);
        let oldest = bucket.saturating_sub(BUCKETS as u64 - 1);
        let bytes: u64 = m.slots.iter().filter(|(n, _)| (oldest..=bucket).contains(n)).map(|(_, b)| *b).sum();
        // The window's start: the oldest bucket's, or the first packet when later.
        let start = self.origin + BUCKET * u32::try_from(oldest).unwrap_or(u32::MAX);
        let span = now.saturating_duration_since(start.max(first)).max(BUCKET);
        let bits = u128::from(bytes).saturating_mul(8);
        Some(u64::try_from(bits.saturating_mul(1_000_000) / span.as_micros().max(1)).unwrap_or(u64::MAX))
    }

    /// Whether `layer` had a packet within [`WINDOW`] of `now`.
    pub fn arriving(&self, now: Instant, layer: u8) -> bool {
        self.meters
            .get(usize::from(layer))
            .and_then(|m| m.last)
            .is_some_and(|last| now.saturating_duration_since(last) < WINDOW)
    }

    /// Every layer's [`LayerBitrates::rate`] at `now`, lowest first.
    pub fn rates(&self, now: Instant) -> [Option<u64>; N] {
        std::array::from_fn(|i| u8::try_from(i).ok().and_then(|l| self.rate(now, l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kbps` of packets of 1 000 bytes on `layer` from `from` to `to` ms.
    fn feed(m: &mut LayerBitrates<3>, start: Instant, layer: u8, kbps: u64, from: u64, to: u64) {
        // One 1 000-byte packet is 8 kbit: kbps / 8 packets per second.
        let every = 8_000 / kbps;
        let mut t = from;
        while t < to {
            m.observe(start + Duration::from_millis(t), layer, 1_000);
            t += every;
        }
    }

    fn near(rate: Option<u64>, kbps: u64) -> bool {
        rate.is_some_and(|r| r.abs_diff(kbps * 1_000) <= kbps * 1_000 / 10)
    }

    #[test]
    fn steady_layers_read_at_their_rates() {
        let start = Instant::now();
        let mut m = LayerBitrates::<3>::new(start);
        feed(&mut m, start, 0, 160, 0, 5_000);
        feed(&mut m, start, 1, 800, 0, 5_000);
        let rates = m.rates(start + Duration::from_millis(4_990));
        assert!(near(rates[0], 160), "{rates:?}");
        assert!(near(rates[1], 800), "{rates:?}");
        assert_eq!(rates[2], None, "never arrived");
    }

    #[test]
    fn a_layer_that_just_started_is_not_read_as_slow() {
        let start = Instant::now();
        let mut m = LayerBitrates::<3>::new(start);
        feed(&mut m, start, 2, 400, 10_000, 10_300);
        let rate = m.rate(start + Duration::from_millis(10_300), 2);
        assert!(near(rate, 400), "{rate:?}");
    }

    #[test]
    fn a_layer_that_stopped_is_not_arriving_and_a_falling_one_follows() {
        let start = Instant::now();
        let mut m = LayerBitrates::<3>::new(start);
        feed(&mut m, start, 0, 800, 0, 3_000);
        feed(&mut m, start, 0, 200, 3_000, 6_000);
        assert!(near(m.rate(start + Duration::from_millis(5_999), 0), 200));
        assert!(m.rate(start + Duration::from_millis(6_500), 0).is_some(), "within the window");
        assert_eq!(m.rate(start + Duration::from_millis(7_000), 0), None, "a window without packets");
        // It comes back: measured afresh, the long gap not counted.
        feed(&mut m, start, 0, 400, 60_000, 60_400);
        assert!(near(m.rate(start + Duration::from_millis(60_400), 0), 400));
    }

    #[test]
    fn layers_past_the_meters_are_ignored() {
        let start = Instant::now();
        let mut m = LayerBitrates::<3>::new(start);
        m.observe(start, 7, 1_000);
        assert_eq!(m.rate(start, 7), None);
        assert_eq!(m.rates(start), [None, None, None]);
    }
}
