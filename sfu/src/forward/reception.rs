//! What one RTCP reception report block (RFC 3550 §6.4.1) says about a
//! down-track: loss, jitter and round trip. Pure: the block, the codec's clock
//! rate and the time it arrived in; numbers out. Every field is the subscriber's
//! word, so each one is converted with checks, and a value that makes no sense
//! (a clock rate of 0, a round trip that would be negative or longer than
//! [`MAX_ROUND_TRIP`]) gives no observation rather than a wrong one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use webrtc::rtcp::reception_report::ReceptionReport;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// The longest round trip believed. A block whose LSR and DLSR say more is
/// stale (an SR from long ago), from a host whose clock stepped, or crafted.
pub const MAX_ROUND_TRIP: Duration = Duration::from_secs(10);

/// One report block's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reception {
    /// Fraction of packets lost since the previous report, 0..1.
    pub loss_ratio: f64,
    /// Interarrival jitter; `None` for a clock rate of 0.
    pub jitter: Option<Duration>,
    /// Round trip; `None` before the subscriber has had a sender report, or when
    /// implausible.
    pub round_trip: Option<Duration>,
}

impl Reception {
    /// The numbers of `block`, about a down-track whose codec runs at
    /// `clock_rate` Hz, received at `now` (see [`compact_ntp`]; `None` if the
    /// clock could not be read, which leaves out the round trip).
    pub fn of(block: &ReceptionReport, clock_rate: u32, now: Option<u32>) -> Self {
        Self {
            loss_ratio: loss_ratio(block.fraction_lost),
            jitter: jitter(block.jitter, clock_rate),
            round_trip: now.and_then(|now| round_trip(now, block.last_sender_report, block.delay)),
        }
    }
}

impl Reception {
    /// The numbers of str0m's egress stats of a down-track whose codec runs at
    /// `clock_rate` Hz: loss and round trip as str0m took them from the
    /// subscriber's last receiver reports, jitter as the report said it. `None`
    /// when no report came since the last stats (nothing to observe).
    pub fn of_egress(stats: &str0m::stats::MediaEgressStats, clock_rate: u32) -> Option<Self> {
        let loss = stats.loss.filter(|l| l.is_finite())?;
        Some(Self {
            // str0m averages the reports' fractions; clamp what a peer may send.
            loss_ratio: f64::from(loss).clamp(0.0, 1.0),
            jitter: stats.remote.as_ref().and_then(|r| jitter(r.jitter, clock_rate)),
            round_trip: stats.rtt.filter(|rtt| *rtt <= MAX_ROUND_TRIP),
        })
    }
}

/// The fraction lost field, an 8-bit fixed point number with the binary point at
/// its left edge, as a ratio in 0..1 (255 is 255/256).
pub fn loss_ratio(fraction_lost: u8) -> f64 {
    f64::from(fraction_lost) / 256.0
}

/// The interarrival jitter field, in RTP timestamp units, as a duration at the
/// codec's `clock_rate` (90 000 for video, 48 000 for Opus). `None` when the
/// clock rate is 0.
pub fn jitter(jitter: u32, clock_rate: u32) -> Option<Duration> {
    let whole = jitter.checked_div(clock_rate)?;
    let rest = jitter.checked_rem(clock_rate)?;
    // rest < clock_rate, so this is below 1e9 and fits a u32.
    let nanos = u64::from(rest).checked_mul(1_000_000_000)? / u64::from(clock_rate);
    Some(Duration::new(u64::from(whole), u32::try_from(nanos).ok()?))
}

/// The round trip of RFC 3550 §6.4.1: `now - LSR - DLSR`, all in compact NTP
/// (16.16 fixed point seconds). The subtraction from `now` is modulo 2^32, as
/// the RFC has it: compact NTP wraps every 18.2 hours, and an SR sent before a
/// wrap is answered after it. `None` when the subscriber has had no SR yet
/// (`lsr` 0), when DLSR is longer than the time since the SR (a negative round
/// trip), or when the result is over [`MAX_ROUND_TRIP`].
pub fn round_trip(now: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let since_sr = now.wrapping_sub(lsr);
    let rtt = since_sr.checked_sub(dlsr)?;
    let d = from_compact(rtt)?;
    (d <= MAX_ROUND_TRIP).then_some(d)
}

/// A compact NTP duration (16 bits of seconds, 16 of fraction) as a [`Duration`].
fn from_compact(compact: u32) -> Option<Duration> {
    let secs = compact >> 16;
    let fraction = compact & 0xFFFF;
    // fraction < 2^16, so this is below 1e9 and fits a u32.
    let nanos = (u64::from(fraction) * 1_000_000_000) >> 16;
    Some(Duration::new(u64::from(secs), u32::try_from(nanos).ok()?))
}

/// `time` in compact NTP: the middle 32 bits of its 64-bit NTP timestamp, as
/// the LSR field carries them (RFC 3550 §4 and §6.4.1). The node's sender
/// reports take their NTP time from the same clock (webrtc-rs's sender report
/// interceptor reads `SystemTime::now`). `None` before 1970.
pub fn compact_ntp(time: SystemTime) -> Option<u32> {
    let since_unix = time.duration_since(UNIX_EPOCH).ok()?;
    let ntp_secs = since_unix.as_secs().checked_add(NTP_UNIX_OFFSET_SECS)?;
    let low_secs = u32::try_from(ntp_secs & 0xFFFF).ok()?;
    // subsec_nanos < 1e9, so the fraction is below 2^16.
    let fraction = u32::try_from((u64::from(since_unix.subsec_nanos()) << 16) / 1_000_000_000).ok()?;
    Some((low_secs << 16) | fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1.0 s, 0.5 s and 0.25 s in compact NTP.
    const ONE: u32 = 0x0001_0000;
    const HALF: u32 = 0x0000_8000;
    const QUARTER: u32 = 0x0000_4000;

    #[test]
    fn fraction_lost_is_a_ratio_with_the_binary_point_at_the_left() {
        assert_eq!(loss_ratio(0), 0.0);
        assert_eq!(loss_ratio(64), 0.25);
        assert_eq!(loss_ratio(128), 0.5);
        assert_eq!(loss_ratio(255), 255.0 / 256.0);
    }

    #[test]
    fn jitter_is_timestamp_units_at_the_codec_clock_rate() {
        assert_eq!(jitter(900, 90_000), Some(Duration::from_millis(10)), "video");
        assert_eq!(jitter(480, 48_000), Some(Duration::from_millis(10)), "opus");
        assert_eq!(jitter(45, 90_000), Some(Duration::from_micros(500)));
        assert_eq!(jitter(0, 90_000), Some(Duration::ZERO));
        assert_eq!(jitter(135_000, 90_000), Some(Duration::from_millis(1500)), "over a second");
        assert_eq!(jitter(u32::MAX, 8_000), Some(Duration::new(536_870, 911_875_000)), "the largest field");
        assert_eq!(jitter(900, 0), None, "a clock rate of 0 is no answer");
    }

    #[test]
    fn round_trip_is_now_minus_lsr_minus_dlsr() {
        // SR sent at 1.0 s, held 0.25 s by the subscriber, report back at 1.5 s.
        assert_eq!(round_trip(ONE + HALF, ONE, QUARTER), Some(Duration::from_millis(250)));
        // 16.16 fixed point: one unit is 1/65536 s.
        assert_eq!(round_trip(ONE + 1, ONE, 0), Some(Duration::from_nanos(15_258)));
        assert_eq!(round_trip(ONE + HALF, ONE, HALF), Some(Duration::ZERO));
    }

    #[test]
    fn round_trip_survives_the_compact_ntp_wrap() {
        // The SR goes out 0.25 s before the 32-bit compact time wraps; the report
        // comes back 0.25 s after it, having been held 0.25 s.
        let lsr = u32::MAX - QUARTER + 1;
        assert_eq!(round_trip(QUARTER, lsr, QUARTER), Some(Duration::from_millis(250)));
        assert_eq!(round_trip(QUARTER, lsr, 0), Some(Duration::from_millis(500)));
    }

    #[test]
    fn round_trips_that_cannot_be_are_not_observed() {
        assert_eq!(round_trip(ONE + HALF, 0, 0), None, "no SR received yet: LSR is 0");
        assert_eq!(round_trip(ONE + QUARTER, ONE, HALF), None, "DLSR longer than the time since the SR");
        assert_eq!(round_trip(ONE, ONE + QUARTER, 0), None, "an LSR from the future wraps to ~18 h");
        assert_eq!(round_trip(11 * ONE, ONE, 0), Some(MAX_ROUND_TRIP), "10 s is the most believed");
        assert_eq!(round_trip(11 * ONE + 1, ONE, 0), None, "over it is stale or crafted");
        assert_eq!(round_trip(ONE, ONE, u32::MAX), None, "the largest DLSR");
    }

    #[test]
    fn a_block_gives_all_three() {
        let block = ReceptionReport {
            ssrc: 7,
            fraction_lost: 26,
            total_lost: 100,
            last_sequence_number: 5000,
            jitter: 1800,
            last_sender_report: ONE,
            delay: QUARTER,
        };
        let r = Reception::of(&block, 90_000, Some(ONE + HALF));
        assert_eq!(r.loss_ratio, 26.0 / 256.0);
        assert_eq!(r.jitter, Some(Duration::from_millis(20)));
        assert_eq!(r.round_trip, Some(Duration::from_millis(250)));
        assert_eq!(Reception::of(&block, 90_000, None).round_trip, None, "no clock, no round trip");
    }

    #[test]
    fn compact_ntp_is_the_middle_of_the_ntp_timestamp_the_sender_reports_carry() {
        let t = UNIX_EPOCH.checked_add(Duration::from_millis(1500)).unwrap();
        // NTP seconds 2 208 988 801 = 0x83AA_7E81; the low 16 bits, then half a second.
        assert_eq!(compact_ntp(t), Some(0x7E81_8000));
        for t in [t, UNIX_EPOCH.checked_add(Duration::new(1_796_000_000, 123_456_789)).unwrap()] {
            let sr = webrtc::rtp::extension::abs_send_time_extension::unix2ntp(t);
            let middle = u32::try_from((sr >> 16) & 0xFFFF_FFFF).unwrap();
            let ours = compact_ntp(t).unwrap();
            assert!(ours.abs_diff(middle) <= 1, "as webrtc-rs's SR has it: {ours:#x} vs {middle:#x}");
        }
        assert_eq!(compact_ntp(UNIX_EPOCH.checked_sub(Duration::from_secs(1)).unwrap()), None);
    }
}
