//! Active speakers, LiveKit's way (`pkg/sfu/audio/audiolevel.go` and the room's
//! `audioUpdateWorker`), from the RFC 6464 audio levels publishers put in their
//! RTP headers.
//!
//! Per published microphone track, [`AudioLevel`] sums, over each update
//! interval (400 ms), how long the audio was louder than the active level
//! (35, i.e. -35 dBov; levels are 0 loudest to 127 silent). A track that was
//! loud for at least the minimum percentile of the interval (40 %) gets the
//! loudest level it reached, adjusted by how much of the interval was loud and
//! turned linear, smoothed over 2 intervals; below that, 0. It is a speaker
//! while that value is at least the active level's linear value.
//!
//! Per room, [`Speakers`] turns each interval's speakers (loudest first,
//! levels quantized to eighths) into what changed since the last: speakers
//! whose level changed or who started, and those who stopped (level 0,
//! inactive). Only changes go out (`SpeakersChanged`).
//!
//! Sans IO: `now` and the RTP timestamps come from the caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// LiveKit's defaults (`DefaultAudioLevelConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevelConfig {
    /// Level (0 loudest .. 127 silent) at or under which audio counts as active: 35.
    pub active_level: u8,
    /// Percent of an interval that must be active: 40.
    pub min_percentile: u8,
    /// Update interval: 400 ms.
    pub interval: Duration,
    /// Intervals the reported level is smoothed over: 2.
    pub smooth_intervals: u32,
}

impl Default for AudioLevelConfig {
    fn default() -> Self {
        Self { active_level: 35, min_percentile: 40, interval: Duration::from_millis(400), smooth_intervals: 2 }
    }
}

/// Level `level` in -dBov, as a linear value (0 dBov is 1).
pub fn linear(level: f64) -> f64 {
    10f64.powf(-level / 20.0)
}

/// The audio level of one published track.
#[derive(Debug, Clone)]
pub struct AudioLevel {
    config: AudioLevelConfig,
    clock_rate: u32,
    smoothed: f64,
    loudest: u8,
    active_ms: u32,
    observed_ms: u32,
    last_observed: Option<Instant>,
    highest_timestamp: Option<u32>,
}

impl AudioLevel {
    /// A track with an RTP clock of `clock_rate` Hz, nothing heard yet.
    pub fn new(config: AudioLevelConfig, clock_rate: u32) -> Self {
        Self {
            config,
            clock_rate,
            smoothed: 0.0,
            loudest: 127,
            active_ms: 0,
            observed_ms: 0,
            last_observed: None,
            highest_timestamp: None,
        }
    }

    fn interval_ms(&self) -> u32 {
        u32::try_from(self.config.interval.as_millis()).unwrap_or(u32::MAX).max(1)
    }

    /// A packet with audio level `level` (the extension's 7 bits) and RTP
    /// timestamp `timestamp` arrived at `now`. The time it covers is the
    /// timestamp's advance over the newest seen; older packets are skipped.
    pub fn observe(&mut self, now: Instant, level: u8, timestamp: u32) {
        let level = level & 0x7f;
        let highest = *self.highest_timestamp.get_or_insert(timestamp);
        let advance = timestamp.wrapping_sub(highest);
        if advance >= 1 << 31 {
            return;
        }
        self.highest_timestamp = Some(timestamp);
        let ms = u64::from(advance).saturating_mul(1000) / u64::from(self.clock_rate.max(1));
        let ms = u32::try_from(ms).unwrap_or(u32::MAX);
        self.last_observed = Some(now);
        self.observed_ms = self.observed_ms.saturating_add(ms);
        if level <= self.config.active_level {
            self.active_ms = self.active_ms.saturating_add(ms);
            self.loudest = self.loudest.min(level);
        }
        let interval = self.interval_ms();
        if self.observed_ms >= interval {
            let min_active = u32::from(self.config.min_percentile).saturating_mul(interval) / 100;
            let mut smoothed = 0.0;
            if self.active_ms >= min_active && self.active_ms > 0 {
                let weight = 20.0 * (f64::from(self.active_ms) / f64::from(interval)).log10();
                let level = linear(f64::from(self.loudest) - weight);
                let factor = if self.config.smooth_intervals > 0 {
                    2.0 / (f64::from(self.config.smooth_intervals) + 1.0)
                } else {
                    1.0
                };
                smoothed = self.smoothed + (level - self.smoothed) * factor;
            }
            self.reset(smoothed);
        }
    }

    fn reset(&mut self, smoothed: f64) {
        self.smoothed = smoothed;
        self.loudest = 127;
        self.active_ms = 0;
        self.observed_ms = 0;
    }

    /// The smoothed level at `now` and whether the track is a speaker; a
    /// track silent for two intervals (no packets: muted) is reset to 0.
    pub fn level(&mut self, now: Instant) -> (f64, bool) {
        let stale = self.last_observed.is_none_or(|t| now.saturating_duration_since(t) >= self.config.interval * 2);
        if stale {
            self.reset(0.0);
        }
        (self.smoothed, self.smoothed >= linear(f64::from(self.config.active_level)) && self.smoothed > 0.0)
    }
}

/// Quantization of reported levels: eighths (LiveKit's `AudioLevelQuantization`).
pub const LEVEL_QUANTUM: f32 = 8.0;

/// One speaker change: who, its level, whether it is speaking.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerChange {
    /// The participant (its sid).
    pub sid: String,
    /// Quantized level (0 when it stopped).
    pub level: f32,
    /// Whether it is speaking.
    pub active: bool,
}

/// The speakers a room last announced.
#[derive(Debug, Default)]
pub struct Speakers {
    last: HashMap<String, f32>,
}

impl Speakers {
    /// Whether the last call announced nobody speaking.
    pub fn is_silent(&self) -> bool {
        self.last.is_empty()
    }

    /// From this interval's speakers `now` (sid and level), what changed
    /// since the last call: loudest first, then those who stopped.
    pub fn changes(&mut self, mut now: Vec<(String, f64)>) -> Vec<SpeakerChange> {
        now.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut changed = Vec::new();
        let mut next = HashMap::with_capacity(now.len());
        for (sid, level) in now {
            // f64 -> f32 of a level in 0..=1.
            let level = ((level as f32) * LEVEL_QUANTUM).ceil() / LEVEL_QUANTUM;
            if self.last.get(&sid) != Some(&level) {
                changed.push(SpeakerChange { sid: sid.clone(), level, active: true });
            }
            next.insert(sid, level);
        }
        let mut stopped: Vec<&String> = self.last.keys().filter(|sid| !next.contains_key(*sid)).collect();
        stopped.sort();
        changed.extend(stopped.into_iter().map(|sid| SpeakerChange { sid: sid.clone(), level: 0.0, active: false }));
        self.last = next;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `ms` of 20 ms Opus packets at `level`, from `start` + `at_ms`.
    fn feed(a: &mut AudioLevel, start: Instant, at_ms: &mut u64, ts: &mut u32, ms: u64, level: u8) {
        for _ in 0..ms / 20 {
            *at_ms += 20;
            *ts = ts.wrapping_add(960);
            a.observe(start + Duration::from_millis(*at_ms), level, *ts);
        }
    }

    #[test]
    fn speech_makes_a_speaker_and_silence_ends_it() {
        let start = Instant::now();
        let (mut at, mut ts) = (0u64, 4_000_000_000u32);
        let mut a = AudioLevel::new(AudioLevelConfig::default(), 48_000);
        feed(&mut a, start, &mut at, &mut ts, 400, 127);
        assert!(!a.level(start + Duration::from_millis(at)).1, "silence");
        feed(&mut a, start, &mut at, &mut ts, 800, 20);
        let (level, active) = a.level(start + Duration::from_millis(at));
        assert!(active, "loud for two intervals: {level}");
        feed(&mut a, start, &mut at, &mut ts, 800, 127);
        assert_eq!(a.level(start + Duration::from_millis(at)), (0.0, false), "quiet again");
    }

    #[test]
    fn brief_sounds_under_the_percentile_are_not_speech() {
        let start = Instant::now();
        let (mut at, mut ts) = (0u64, 0u32);
        let mut a = AudioLevel::new(AudioLevelConfig::default(), 48_000);
        for _ in 0..5 {
            feed(&mut a, start, &mut at, &mut ts, 100, 10); // 25 % of each interval
            feed(&mut a, start, &mut at, &mut ts, 300, 127);
        }
        assert!(!a.level(start + Duration::from_millis(at)).1);
    }

    #[test]
    fn a_muted_track_goes_stale_and_late_packets_are_skipped() {
        let start = Instant::now();
        let (mut at, mut ts) = (0u64, 100u32);
        let mut a = AudioLevel::new(AudioLevelConfig::default(), 48_000);
        feed(&mut a, start, &mut at, &mut ts, 1200, 10);
        assert!(a.level(start + Duration::from_millis(at)).1);
        a.observe(start + Duration::from_millis(at), 10, ts.wrapping_sub(960 * 100));
        assert!(a.level(start + Duration::from_millis(at + 100)).1, "an old packet changes nothing");
        assert_eq!(a.level(start + Duration::from_millis(at + 800)), (0.0, false), "no packets for 2 intervals");
    }

    #[test]
    fn only_changes_are_announced_loudest_first_and_stops_too() {
        let mut s = Speakers::default();
        let first = s.changes(vec![("PA_b".into(), 0.1), ("PA_a".into(), 0.5)]);
        assert_eq!(
            first.iter().map(|c| (c.sid.as_str(), c.level, c.active)).collect::<Vec<_>>(),
            [("PA_a", 0.5, true), ("PA_b", 0.125, true)]
        );
        assert!(s.changes(vec![("PA_a".into(), 0.49), ("PA_b".into(), 0.11)]).is_empty(), "same eighths: no news");
        let next = s.changes(vec![("PA_a".into(), 0.9)]);
        assert_eq!(
            next,
            [
                SpeakerChange { sid: "PA_a".into(), level: 1.0, active: true },
                SpeakerChange { sid: "PA_b".into(), level: 0.0, active: false },
            ]
        );
        assert_eq!(s.changes(vec![]).len(), 1, "a stops");
        assert!(s.changes(vec![]).is_empty());
    }
}
