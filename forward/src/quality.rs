//! Connection quality, LiveKit's way (`pkg/sfu/connectionquality`): a score
//! from 0 to 100 per track and direction, every [`UPDATE_INTERVAL`], from the
//! loss, round-trip time and jitter seen in that window, then LiveKit's
//! buckets: over 80 EXCELLENT, over 40 GOOD, over 20 POOR, else LOST.
//!
//! The window's score is a simplified E-model (LiveKit's
//! `calculatePacketScore`): 100, less the delay effect (half the RTT plus
//! twice the jitter, in ms, over 40; past 160 ms, (delay - 120) / 10), less the
//! loss in percent times a weight (Opus 8: 2.5 % loss falls to GOOD, 7.5 % to
//! POOR; video 10: 2 % and 6 %). The score moves towards it slowly when rising
//! (0.4) and fast when falling (0.8), never below 30; a window with no packets
//! is POOR (40), or LOST (20) once reports stopped too.
//!
//! A participant's quality is the worst of its tracks', published and
//! subscribed ([`worst`]). Sans IO: the caller closes windows.

use std::time::Duration;

/// How often scores are updated (LiveKit's `connectionquality.UpdateInterval`).
pub const UPDATE_INTERVAL: Duration = Duration::from_secs(5);
/// Start and best score.
pub const MAX_SCORE: f64 = 100.0;
/// Floor of a score that has packets behind it.
pub const MIN_SCORE: f64 = 30.0;
const INCREASE_FACTOR: f64 = 0.4;
const DECREASE_FACTOR: f64 = 0.8;

/// LiveKit's `ConnectionQuality`, in its proto numbering (so not ordered by
/// how good it is: see [`worst`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// POOR (0).
    Poor = 0,
    /// GOOD (1).
    Good = 1,
    /// EXCELLENT (2).
    Excellent = 2,
    /// LOST (3).
    Lost = 3,
}

impl Quality {
    /// The bucket of `score`.
    pub fn of(score: f64) -> Self {
        if score > 80.0 {
            Quality::Excellent
        } else if score > 40.0 {
            Quality::Good
        } else if score > 20.0 {
            Quality::Poor
        } else {
            Quality::Lost
        }
    }

    /// A MOS-like figure for `ConnectionQualityInfo.score` (LiveKit's runs
    /// from 1.0 to 4.5): the middle of the bucket, so a client that reads the
    /// score agrees with the quality.
    pub fn mos(self) -> f32 {
        match self {
            Quality::Excellent => 4.5,
            Quality::Good => 3.5,
            Quality::Poor => 2.5,
            Quality::Lost => 1.0,
        }
    }

    /// How bad it is: LOST worst, then POOR, GOOD, EXCELLENT.
    fn badness(self) -> u8 {
        match self {
            Quality::Excellent => 0,
            Quality::Good => 1,
            Quality::Poor => 2,
            Quality::Lost => 3,
        }
    }
}

/// The worst of `qualities` (EXCELLENT when there are none: nothing is wrong).
pub fn worst(qualities: impl IntoIterator<Item = Quality>) -> Quality {
    qualities.into_iter().max_by_key(|q| q.badness()).unwrap_or(Quality::Excellent)
}

/// What one window saw of a track in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Packets that went through (sent to the subscriber, or received).
    pub packets: u32,
    /// Fraction of packets lost, 0..=1 (receiver reports, or sequence gaps).
    pub loss: f64,
    /// Largest round-trip time reported, if measured.
    pub rtt: Option<Duration>,
    /// Largest interarrival jitter reported, if measured.
    pub jitter: Option<Duration>,
    /// Whether any report about the track arrived (receiver reports downstream;
    /// upstream, packets are the report).
    pub reported: bool,
}

impl Window {
    /// LiveKit's packet score of this window with loss weight `weight`.
    pub fn packet_score(&self, weight: f64) -> f64 {
        let rtt_ms = self.rtt.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let jitter_ms = self.jitter.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let delay = rtt_ms / 2.0 + jitter_ms * 2.0;
        let delay_effect = if delay > 160.0 { (delay - 120.0) / 10.0 } else { delay / 40.0 };
        let loss_effect = self.loss.clamp(0.0, 1.0) * 100.0 * weight;
        (MAX_SCORE - delay_effect - loss_effect).max(0.0)
    }
}

/// Loss weight for audio (Opus, no FEC) and video.
pub fn loss_weight(audio: bool) -> f64 {
    if audio {
        8.0
    } else {
        10.0
    }
}

/// The running score of one track in one direction.
#[derive(Debug, Clone)]
pub struct Scorer {
    weight: f64,
    score: f64,
}

impl Scorer {
    /// A scorer with loss weight `weight` ([`loss_weight`]), starting at 100.
    pub fn new(weight: f64) -> Self {
        Self { weight, score: MAX_SCORE }
    }

    /// The score now.
    pub fn score(&self) -> f64 {
        self.score
    }

    /// Closes a window; returns the new score. `muted` tracks keep theirs.
    pub fn update(&mut self, window: &Window, muted: bool) -> f64 {
        if muted {
            return self.score;
        }
        self.score = if window.packets == 0 {
            if window.reported {
                40.0
            } else {
                20.0
            }
        } else {
            let target = window.packet_score(self.weight);
            let factor = if target < self.score { DECREASE_FACTOR } else { INCREASE_FACTOR };
            (factor * target + (1.0 - factor) * self.score).max(MIN_SCORE)
        };
        self.score
    }
}

/// Losses of one received RTP stream, from its sequence numbers (RFC 3550
/// A.3: expected is the extended highest minus the first, plus one).
#[derive(Debug, Clone, Default)]
pub struct SequenceLoss {
    /// Extended highest sequence number (cycles in the high bits).
    highest: Option<u64>,
    window_first: Option<u64>,
    received: u32,
}

impl SequenceLoss {
    /// A packet with sequence number `seq` arrived.
    pub fn received(&mut self, seq: u16) {
        let ext = match self.highest {
            None => u64::from(seq) + (1 << 16),
            Some(h) => {
                let cycles = h & !0xffff;
                let candidate = cycles | u64::from(seq);
                // Pick the candidate nearest to the highest, across a wrap.
                let options = [candidate.wrapping_sub(1 << 16), candidate, candidate + (1 << 16)];
                options.into_iter().min_by_key(|c| c.abs_diff(h)).unwrap_or(candidate)
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        if self.window_first.is_none_or(|f| ext < f) {
            self.window_first = Some(ext);
        }
        self.received = self.received.saturating_add(1);
    }

    /// Closes the window: the packets received in it and the fraction lost.
    pub fn close(&mut self) -> (u32, f64) {
        let received = std::mem::take(&mut self.received);
        let expected = match (self.window_first.take(), self.highest) {
            (Some(first), Some(highest)) if first <= highest => highest - first + 1,
            _ => 0,
        };
        // The next window starts after this one's highest, so a gap at the
        // boundary counts in it.
        self.window_first = self.highest.map(|h| h + 1);
        let loss =
            if expected == 0 { 0.0 } else { expected.saturating_sub(u64::from(received)) as f64 / expected as f64 };
        (received, loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(loss: f64, rtt_ms: u64) -> Window {
        Window { packets: 250, loss, rtt: Some(Duration::from_millis(rtt_ms)), jitter: None, reported: true }
    }

    #[test]
    fn a_clean_link_is_excellent() {
        let mut s = Scorer::new(loss_weight(false));
        for _ in 0..5 {
            s.update(&window(0.0, 20), false);
        }
        assert_eq!(Quality::of(s.score()), Quality::Excellent);
    }

    #[test]
    fn loss_falls_at_livekits_thresholds_fast_and_recovers_slowly() {
        // Video: 2 % loss is the edge of GOOD, 6 % of POOR.
        assert_eq!(Quality::of(window(0.03, 0).packet_score(10.0)), Quality::Good);
        assert_eq!(Quality::of(window(0.07, 0).packet_score(10.0)), Quality::Poor);
        // Opus: 2.5 % and 7.5 %.
        assert_eq!(Quality::of(window(0.02, 0).packet_score(8.0)), Quality::Excellent);
        assert_eq!(Quality::of(window(0.05, 0).packet_score(8.0)), Quality::Good);
        let mut s = Scorer::new(10.0);
        s.update(&window(0.10, 20), false);
        assert_eq!(Quality::of(s.score()), Quality::Poor, "one bad window is enough: {}", s.score());
        s.update(&window(0.0, 20), false);
        assert_eq!(Quality::of(s.score()), Quality::Good, "one good one is not: {}", s.score());
        for _ in 0..3 {
            s.update(&window(0.0, 20), false);
        }
        assert_eq!(Quality::of(s.score()), Quality::Excellent);
    }

    #[test]
    fn long_delays_cost_and_scores_keep_a_floor() {
        assert_eq!(window(0.0, 400).packet_score(10.0), 92.0, "200 ms each way: (200 - 120) / 10");
        assert_eq!(window(0.0, 80).packet_score(10.0), 99.0, "40 ms: 40 / 40");
        let mut s = Scorer::new(10.0);
        for _ in 0..10 {
            s.update(&window(1.0, 2000), false);
        }
        assert_eq!(s.score(), MIN_SCORE);
    }

    #[test]
    fn silence_is_poor_then_lost_and_muted_tracks_keep_their_score() {
        let mut s = Scorer::new(8.0);
        let dry = Window { packets: 0, reported: true, ..Default::default() };
        assert_eq!(Quality::of(s.update(&dry, false)), Quality::Poor);
        let gone = Window { packets: 0, reported: false, ..Default::default() };
        assert_eq!(Quality::of(s.update(&gone, false)), Quality::Lost);
        let mut m = Scorer::new(8.0);
        assert_eq!(m.update(&gone, true), MAX_SCORE);
    }

    #[test]
    fn the_worst_track_decides() {
        assert_eq!(worst([Quality::Excellent, Quality::Poor, Quality::Good]), Quality::Poor);
        assert_eq!(worst([Quality::Good, Quality::Lost]), Quality::Lost);
        assert_eq!(worst([]), Quality::Excellent);
    }

    #[test]
    fn sequence_gaps_are_loss_across_a_wrap_and_reordering() {
        let mut l = SequenceLoss::default();
        for seq in (65_530u16..=65_535).chain(0..=3) {
            if seq != 65_533 && seq != 1 {
                l.received(seq);
            }
        }
        l.received(65_533); // late, not lost
        let (received, loss) = l.close();
        assert_eq!(received, 9);
        assert!((loss - 0.1).abs() < 1e-9, "1 of 10 lost: {loss}");
        for seq in 4..14u16 {
            l.received(seq);
        }
        assert_eq!(l.close(), (10, 0.0), "the next window counts from where it starts");
        assert_eq!(l.close(), (0, 0.0), "nothing received: nothing to judge");
    }
}
