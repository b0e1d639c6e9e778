//! Dynacast: telling a publisher which simulcast layers anyone watches, so it
//! stops encoding and sending the others (LiveKit's `SubscribedQualityUpdate`,
//! `pkg/rtc/dynacast`).
//!
//! The input is the highest layer any subscriber of the track wants now
//! (`None`: nobody wants any). LiveKit's rules, with its defaults:
//! - an upgrade (a higher layer, or any layer after none) is told at once;
//! - a downgrade waits [`PAUSE_DELAY`] (LiveKit's `dynacast_pause_delay`) and
//!   then tells whatever is wanted by then, so a tile that shrinks for a moment
//!   does not make the publisher drop and re-add a layer;
//! - until a first subscriber wants something, nothing is told for
//!   [`INITIAL_WAIT`] after the track is published (LiveKit's
//!   `initialQualityUpdateWait`); then, with nobody watching, every layer is
//!   turned off.
//!
//! Sans IO: the caller passes `now` on every change and from time to time
//! (say every 100 ms while packets arrive, or at [`Dynacast::next_deadline`]),
//! and sends the update it returns.

use std::time::{Duration, Instant};

/// How long a downgrade waits before the publisher is told.
pub const PAUSE_DELAY: Duration = Duration::from_secs(5);
/// How long a track with no subscriber keeps all its layers before they go off.
pub const INITIAL_WAIT: Duration = Duration::from_secs(10);

/// Dynacast state of one published video track.
#[derive(Debug, Clone)]
pub struct Dynacast {
    published_at: Instant,
    /// What the publisher was last told: `Some(max)`, `max` the highest layer
    /// on (`None` inside: all off); `None` before anything was told.
    told: Option<Option<u8>>,
    /// When a pending downgrade is due.
    downgrade_due: Option<Instant>,
}

/// Whether `to` asks for more than `from`.
fn is_upgrade(from: Option<u8>, to: Option<u8>) -> bool {
    match (from, to) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => b > a,
        _ => false,
    }
}

impl Dynacast {
    /// A track published at `now`; nothing told yet.
    pub fn new(now: Instant) -> Self {
        Self { published_at: now, told: None, downgrade_due: None }
    }

    /// What the publisher was last told (`None` before the first update).
    pub fn told(&self) -> Option<Option<u8>> {
        self.told
    }

    /// With `wanted` the highest layer wanted at `now`: the update to send
    /// the publisher, if one is due (`Some(None)`: every layer off).
    pub fn update(&mut self, now: Instant, wanted: Option<u8>) -> Option<Option<u8>> {
        let due = match self.told {
            None => wanted.is_some() || now.saturating_duration_since(self.published_at) >= INITIAL_WAIT,
            Some(told) if told == wanted => {
                self.downgrade_due = None;
                false
            }
            Some(told) if is_upgrade(told, wanted) => true,
            Some(_) => {
                let due_at = *self.downgrade_due.get_or_insert_with(|| now.checked_add(PAUSE_DELAY).unwrap_or(now));
                now >= due_at
            }
        };
        if !due {
            return None;
        }
        self.downgrade_due = None;
        self.told = Some(wanted);
        Some(wanted)
    }

    /// When [`Dynacast::update`] should be called next even if nothing changes.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.told {
            None => self.published_at.checked_add(INITIAL_WAIT),
            Some(_) => self.downgrade_due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_subscriber_is_told_at_once_and_upgrades_too() {
        let t = Instant::now();
        let mut d = Dynacast::new(t);
        assert_eq!(d.update(at(t, 100), Some(0)), Some(Some(0)), "a first wish goes out at once");
        assert_eq!(d.update(at(t, 200), Some(0)), None, "no change, nothing to say");
        assert_eq!(d.update(at(t, 300), Some(2)), Some(Some(2)), "an upgrade at once");
    }

    #[test]
    fn downgrades_wait_the_pause_delay_and_tell_what_is_wanted_then() {
        let t = Instant::now();
        let mut d = Dynacast::new(t);
        d.update(t, Some(2));
        assert_eq!(d.update(at(t, 1000), Some(0)), None, "a downgrade waits");
        assert_eq!(d.next_deadline(), Some(at(t, 6000)));
        assert_eq!(d.update(at(t, 3000), Some(1)), None, "still waiting, from the first downgrade");
        assert_eq!(d.update(at(t, 5999), Some(1)), None);
        assert_eq!(d.update(at(t, 6000), Some(1)), Some(Some(1)), "then what is wanted by then");
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn a_downgrade_that_comes_back_before_the_delay_is_never_told() {
        let t = Instant::now();
        let mut d = Dynacast::new(t);
        d.update(t, Some(2));
        assert_eq!(d.update(at(t, 1000), Some(0)), None);
        assert_eq!(d.update(at(t, 2000), Some(2)), None, "back to what was told");
        assert_eq!(d.update(at(t, 7000), Some(2)), None, "and the pending downgrade is gone");
        assert_eq!(d.update(at(t, 8000), Some(0)), None, "a new downgrade waits afresh");
        assert_eq!(d.update(at(t, 13_000), Some(0)), Some(Some(0)));
    }

    #[test]
    fn with_nobody_watching_layers_go_off_after_the_initial_wait_and_come_back_at_once() {
        let t = Instant::now();
        let mut d = Dynacast::new(t);
        assert_eq!(d.update(at(t, 9_999), None), None, "the publisher keeps everything at first");
        assert_eq!(d.next_deadline(), Some(at(t, 10_000)));
        assert_eq!(d.update(at(t, 10_000), None), Some(None), "then all off");
        assert_eq!(d.update(at(t, 20_000), Some(1)), Some(Some(1)), "a viewer turns them on at once");
        assert_eq!(d.update(at(t, 21_000), None), None, "the last viewer leaving waits the delay");
        assert_eq!(d.update(at(t, 26_000), None), Some(None));
    }
}
