//! When each peer of a [`super::Driver`] next wants time: a min-heap with lazy
//! deletion, so a turn of the driver's loop finds the next deadline and the due
//! peers in O(log n) per peer served, not by looking at every peer.
//!
//! Each key has at most one deadline that counts (the last [`Deadlines::set`]);
//! earlier heap entries for it are stale and skipped when they surface. Stale
//! entries are bounded: past [`COMPACT_ABOVE`] entries and twice the keys, the
//! heap is rebuilt from the deadlines that count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Heap entries kept before stale ones are swept (and twice the live keys).
pub const COMPACT_ABOVE: usize = 1024;

/// Deadlines by key (a peer's id).
#[derive(Debug)]
pub struct Deadlines<K> {
    current: HashMap<K, Instant>,
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self { current: HashMap::new(), heap: BinaryHeap::new() }
    }
}

impl<K: Copy + Eq + Hash + Ord> Deadlines<K> {
    /// `key` next wants time at `at`, replacing any deadline it had.
    pub fn set(&mut self, key: K, at: Instant) {
        if self.current.insert(key, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > COMPACT_ABOVE.max(self.current.len().saturating_mul(2)) {
            self.heap = self.current.iter().map(|(k, t)| Reverse((*t, *k))).collect();
        }
    }

    /// Forgets `key` (a removed peer).
    pub fn remove(&mut self, key: K) {
        self.current.remove(&key);
    }

    /// The earliest deadline of any key, if any has one.
    pub fn earliest(&mut self) -> Option<Instant> {
        self.skip_stale();
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// A key whose deadline is at or before `now`, with that deadline cleared
    /// (it has none until the next [`Deadlines::set`]); `None` when none is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        self.skip_stale();
        let Reverse((t, key)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.current.remove(&key);
        Some(key)
    }

    /// Heap entries, stale ones included (for tests of the bound).
    pub fn entries(&self) -> usize {
        self.heap.len()
    }

    fn skip_stale(&mut self) {
        while let Some(Reverse((t, key))) = self.heap.peek() {
            if self.current.get(key) == Some(t) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn due_keys_come_out_earliest_first_and_once() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set(1u64, ms(t0, 30));
        d.set(2, ms(t0, 10));
        d.set(3, ms(t0, 20));
        assert_eq!(d.earliest(), Some(ms(t0, 10)));
        assert_eq!(d.pop_due(ms(t0, 5)), None, "nothing due yet");
        assert_eq!(d.pop_due(ms(t0, 25)), Some(2));
        assert_eq!(d.pop_due(ms(t0, 25)), Some(3));
        assert_eq!(d.pop_due(ms(t0, 25)), None, "each once; 1 is not due");
        assert_eq!(d.earliest(), Some(ms(t0, 30)));
    }

    #[test]
    fn a_later_set_replaces_the_earlier_deadline_either_way() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set(1u64, ms(t0, 10));
        d.set(1, ms(t0, 50)); // later
        assert_eq!(d.earliest(), Some(ms(t0, 50)), "the stale 10 ms entry is skipped");
        assert_eq!(d.pop_due(ms(t0, 20)), None);
        d.set(1, ms(t0, 5)); // earlier
        assert_eq!(d.pop_due(ms(t0, 20)), Some(1));
        assert_eq!(d.pop_due(ms(t0, 100)), None, "the 50 ms entry went stale with the pop");
        assert_eq!(d.earliest(), None);
    }

    #[test]
    fn removed_keys_never_come_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set(1u64, ms(t0, 10));
        d.set(2, ms(t0, 20));
        d.remove(1);
        assert_eq!(d.pop_due(ms(t0, 100)), Some(2));
        assert_eq!(d.pop_due(ms(t0, 100)), None);
    }

    /// A peer touched on every datagram leaves a stale entry each time; the
    /// heap stays bounded and the deadlines that count survive the sweep.
    #[test]
    fn stale_entries_are_swept() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for n in 0..100_000u64 {
            d.set(n % 3, ms(t0, 1_000_000 - n));
            assert!(d.entries() <= COMPACT_ABOVE + 1, "{} entries", d.entries());
        }
        let mut due = Vec::new();
        while let Some(k) = d.pop_due(ms(t0, 1_000_000)) {
            due.push(k);
        }
        assert_eq!(due, vec![0, 2, 1], "the last set of each key, earliest first");
    }
}
