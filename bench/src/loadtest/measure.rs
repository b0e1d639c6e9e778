//! The measurement: what publishers sent (`SendLog`), what every received
//! track got (`read_track`), and the run's [`Report`], all held in the one
//! `Shared` state of a run. Target-neutral: a target hands each received track
//! to `read_track` with the key of the send log behind it, and the sender
//! (`send`) logs into `Shared`.
//!
//! Per received track it counts packets, bytes, frames (marker bits), loss
//! (sequence gaps), interarrival jitter (RFC 3550 §6.4.1), and the forwarding
//! delay (send and receive time of the same packet on this process's clock; the
//! SFU's shift of sequence numbers is learned from payload fingerprints, see
//! `SeqOffset`). Loss counts sequence gaps, plus, for a track that got less than
//! half of what its publisher sent while measuring (a stalled track), everything
//! it missed. With `sfu_pid`, the SFU process's CPU seconds and RSS are read from
//! `/proc` around the run. `LOADTEST_DEBUG=1` prints each received track's start,
//! end and counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use webrtc::track::track_remote::TrackRemote;

use super::sync::lock;

/// One run's figures. Delays and jitter in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Participants that joined.
    pub participants: usize,
    /// Tracks every participant should receive (everyone subscribes to every
    /// other publisher's tracks), summed.
    pub tracks_expected: usize,
    /// Tracks received, summed over participants.
    pub tracks_received: usize,
    /// Of those, tracks that got less than half of what their publisher sent
    /// while measuring; their missing packets count in `loss_percent`.
    pub tracks_stalled: usize,
    /// RTP packets received by all participants during the measurement.
    pub packets: u64,
    /// Of those, per second.
    pub packets_per_second: f64,
    /// Bytes of RTP payload and header received.
    pub bytes: u64,
    /// Video frames received (marker bits).
    pub frames: u64,
    /// Packets missing from the sequence, as a percentage of those expected.
    pub loss_percent: f64,
    /// Forwarding delay (publisher's send to subscriber's receive), median.
    pub delay_p50_ms: f64,
    /// Forwarding delay, 99th percentile.
    pub delay_p99_ms: f64,
    /// Interarrival jitter at the end, median over tracks.
    pub jitter_p50_ms: f64,
    /// Interarrival jitter at the end, 99th percentile over tracks.
    pub jitter_p99_ms: f64,
    /// SFU CPU seconds (user + system) during the measurement.
    pub sfu_cpu_seconds: Option<f64>,
    /// SFU resident memory at the end, MiB.
    pub sfu_rss_mib: Option<f64>,
    /// SFU CPU microseconds per received packet.
    pub sfu_cpu_us_per_packet: Option<f64>,
}

/// What a publisher sent on one track.
pub(crate) struct SendLog {
    /// Send times by sequence number, nanoseconds since [`Shared::epoch`] plus one
    /// (0: not sent).
    times: Vec<AtomicU64>,
    /// Sequence number by payload fingerprint (the latest packet with that payload).
    /// A receiver learns from it how the SFU shifted the sequence numbers: Janus
    /// rewrites them, Meridian keeps them.
    fingerprints: Mutex<HashMap<u64, u16>>,
    /// Packets sent while measuring.
    measured: AtomicU64,
}

impl SendLog {
    pub(crate) fn new() -> Self {
        Self {
            times: (0..65_536).map(|_| AtomicU64::new(0)).collect(),
            fingerprints: Mutex::default(),
            measured: AtomicU64::new(0),
        }
    }
}

fn fingerprint(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// State shared by every participant of a run.
pub(crate) struct Shared {
    epoch: Instant,
    /// Send logs by source key: the track SID (LiveKit) or `janus:FEED:KIND`.
    sent: RwLock<HashMap<String, Arc<SendLog>>>,
    received: Mutex<Vec<Arc<Mutex<TrackStats>>>>,
    measuring: AtomicBool,
}

impl Shared {
    /// A run's state, its clock starting now, not yet measuring.
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            sent: RwLock::default(),
            received: Mutex::default(),
            measuring: AtomicBool::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Files `log` under `source`, the key its receivers know the track by (see
    /// [`Shared::sent`]).
    pub(crate) fn register(&self, source: String, log: Arc<SendLog>) {
        self.sent.write().unwrap_or_else(|e| e.into_inner()).insert(source, log);
    }

    /// Logs, just before it goes out, that the packet with sequence number `seq`
    /// and `payload` is sent now.
    pub(crate) fn record_sent(&self, log: &SendLog, seq: u16, payload: &[u8]) {
        let now = self.now_ns();
        log.times[usize::from(seq)].store(now + 1, Ordering::Relaxed);
        lock(&log.fingerprints).insert(fingerprint(payload), seq);
        if self.measuring.load(Ordering::Relaxed) {
            log.measured.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets what the tracks received so far (negotiation, first keyframes) and
    /// starts counting.
    pub(crate) fn start_measuring(&self) {
        let tracks: Vec<_> = lock(&self.received).clone();
        for t in tracks {
            let mut t = lock(&t);
            let (clock_rate, source) = (t.clock_rate, std::mem::take(&mut t.source));
            *t = TrackStats { clock_rate, source, ..TrackStats::default() };
        }
        self.measuring.store(true, Ordering::Relaxed);
    }

    /// Stops counting; what the tracks got until now is the run's.
    pub(crate) fn stop_measuring(&self) {
        self.measuring.store(false, Ordering::Relaxed);
    }

    /// The figures of the measurement that has just stopped: `participants` and
    /// `tracks_expected` as the run was set up, `elapsed` how long it measured,
    /// and the SFU's CPU seconds and RSS (MiB) if it was watched.
    pub(crate) fn report(
        &self,
        participants: usize,
        tracks_expected: usize,
        elapsed: Duration,
        sfu_cpu_seconds: Option<f64>,
        sfu_rss_mib: Option<f64>,
    ) -> Report {
        let tracks: Vec<_> = lock(&self.received).clone();
        let (mut packets, mut bytes, mut frames, mut expected) = (0u64, 0u64, 0u64, 0u64);
        let mut delays: Vec<u32> = Vec::new();
        let mut jitters: Vec<f64> = Vec::new();
        let debug = std::env::var_os("LOADTEST_DEBUG").is_some();
        let mut stalled = 0;
        let sent = self.sent.read().unwrap_or_else(|e| e.into_inner()).clone();
        for t in &tracks {
            let t = lock(t);
            // Sequence gaps cannot show a track that stopped (or never started): the
            // publisher's own count can. Under half of it is a stalled track, and what
            // it missed counts as lost.
            let sent = sent.get(&t.source).map(|l| l.measured.load(Ordering::Relaxed)).unwrap_or(0);
            let mut track_expected = t.expected();
            if t.packets * 2 < sent {
                stalled += 1;
                track_expected = track_expected.max(sent);
            }
            if debug {
                eprintln!(
                    "track {}: clock {} packets {} expected {track_expected} sent {sent} frames {}",
                    t.source, t.clock_rate, t.packets, t.frames
                );
            }
            packets += t.packets;
            bytes += t.bytes;
            frames += t.frames;
            expected += track_expected;
            delays.extend_from_slice(&t.delays_us);
            if t.packets > 1 {
                jitters.push(t.jitter / f64::from(t.clock_rate.max(1)) * 1000.0);
            }
        }
        delays.sort_unstable();
        jitters.sort_by(f64::total_cmp);
        let pct = |v: &[f64], p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
        let delays_ms: Vec<f64> = delays.iter().map(|d| f64::from(*d) / 1000.0).collect();
        Report {
            participants,
            tracks_expected,
            tracks_received: tracks.len(),
            tracks_stalled: stalled,
            packets,
            packets_per_second: packets as f64 / elapsed.as_secs_f64(),
            bytes,
            frames,
            loss_percent: if expected > 0 {
                100.0 * expected.saturating_sub(packets) as f64 / expected as f64
            } else {
                0.0
            },
            delay_p50_ms: pct(&delays_ms, 0.5),
            delay_p99_ms: pct(&delays_ms, 0.99),
            jitter_p50_ms: pct(&jitters, 0.5),
            jitter_p99_ms: pct(&jitters, 0.99),
            sfu_cpu_seconds,
            sfu_rss_mib,
            sfu_cpu_us_per_packet: sfu_cpu_seconds.filter(|_| packets > 0).map(|c| c * 1e6 / packets as f64),
        }
    }
}

/// What one received track got.
#[derive(Default)]
pub(crate) struct TrackStats {
    clock_rate: u32,
    /// The send log's key (see [`Shared::sent`]).
    source: String,
    packets: u64,
    bytes: u64,
    frames: u64,
    base_seq: Option<i64>,
    highest_seq: i64,
    jitter: f64,
    last_transit: Option<f64>,
    delays_us: Vec<u32>,
}

impl TrackStats {
    fn on_packet(&mut self, seq: u16, rtp_ts: u32, marker: bool, len: usize, arrival: Duration, delay_us: Option<u32>) {
        // Extend the 16-bit sequence number.
        let ext = match self.base_seq {
            None => {
                self.base_seq = Some(i64::from(seq));
                self.highest_seq = i64::from(seq);
                i64::from(seq)
            }
            Some(_) => {
                let last = self.highest_seq;
                let mut ext = (last & !0xffff) | i64::from(seq);
                if ext < last - 0x8000 {
                    ext += 0x1_0000;
                } else if ext > last + 0x8000 {
                    ext -= 0x1_0000;
                }
                ext
            }
        };
        self.highest_seq = self.highest_seq.max(ext);
        self.packets += 1;
        self.bytes += len as u64;
        if marker && self.clock_rate == 90_000 {
            self.frames += 1;
        }
        let rate = f64::from(self.clock_rate.max(1));
        let transit = arrival.as_secs_f64() * rate - f64::from(rtp_ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // Timestamps wrap; a jump of more than a minute is a wrap, not jitter.
            if d < 60.0 * rate {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        if let Some(d) = delay_us {
            if self.delays_us.len() < 200_000 {
                self.delays_us.push(d);
            }
        }
    }

    fn expected(&self) -> u64 {
        self.base_seq.map(|b| u64::try_from(self.highest_seq - b + 1).unwrap_or(0)).unwrap_or(0)
    }
}

/// Reads one received track until the run stops. `source` names the send log of
/// the publisher's track (see [`Shared::sent`]).
pub(crate) async fn read_track(
    track: Arc<TrackRemote>,
    source: String,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stats = Arc::new(Mutex::new(TrackStats {
        clock_rate: track.codec().capability.clock_rate,
        source: source.clone(),
        ..Default::default()
    }));
    lock(&shared.received).push(Arc::clone(&stats));
    let debug = std::env::var_os("LOADTEST_DEBUG").is_some();
    if debug {
        eprintln!("track {source}: on_track ssrc {} kind {}", track.ssrc(), track.kind());
    }
    let mut log: Option<Arc<SendLog>> = None;
    let mut offset = SeqOffset::default();
    loop {
        let read = tokio::select! {
            r = track.read_rtp() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((pkt, _)) = read else {
            if debug {
                eprintln!("track {source}: read ended: {:?}", read.err());
            }
            return;
        };
        let now = shared.now_ns();
        if log.is_none() {
            log = shared.sent.read().unwrap_or_else(|e| e.into_inner()).get(&source).cloned();
        }
        let seq = pkt.header.sequence_number;
        if let Some(l) = log.as_ref().filter(|_| offset.learned.is_none()) {
            let sent = lock(&l.fingerprints).get(&fingerprint(&pkt.payload)).copied();
            offset.observe(sent, seq);
            if debug && offset.learned.is_some() {
                eprintln!("track {source}: sequence offset {:?}", offset.learned);
            }
        }
        if !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        let delay_us = log.as_ref().zip(offset.learned).and_then(|(l, off)| {
            let sent = l.times[usize::from(seq.wrapping_add(off))].load(Ordering::Relaxed);
            (sent > 0 && now + 1 >= sent).then(|| u32::try_from((now + 1 - sent) / 1000).unwrap_or(u32::MAX))
        });
        let len = pkt.payload.len() + 12;
        lock(&stats).on_packet(seq, pkt.header.timestamp, pkt.header.marker, len, Duration::from_nanos(now), delay_us);
    }
}

/// Learns the constant shift between a publisher's sequence numbers and those
/// received: the sent sequence number of a payload (by fingerprint) minus the
/// received one, taken once three packets in a row agree (a repeated payload,
/// such as steady audio, gives disagreeing guesses and is skipped).
#[derive(Default)]
struct SeqOffset {
    guess: Option<u16>,
    agreeing: u8,
    learned: Option<u16>,
}

impl SeqOffset {
    fn observe(&mut self, sent: Option<u16>, received: u16) {
        let Some(sent) = sent else { return };
        let guess = sent.wrapping_sub(received);
        if self.guess == Some(guess) {
            self.agreeing += 1;
            if self.agreeing >= 3 {
                self.learned = Some(guess);
            }
        } else {
            self.guess = Some(guess);
            self.agreeing = 1;
        }
    }
}

/// `/proc/PID/stat` utime + stime, in seconds (USER_HZ is 100 on Linux).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `/proc/PID/status` VmRSS, in MiB.
pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_frames_are_counted_across_a_sequence_wrap() {
        let mut t = TrackStats { clock_rate: 90_000, ..Default::default() };
        let mut at = Duration::ZERO;
        for (i, seq) in [65_533u16, 65_534, 65_535, 1, 2].into_iter().enumerate() {
            at += Duration::from_millis(33);
            t.on_packet(seq, i as u32 * 2970, true, 100, at, Some(1000)); // 33 ms at 90 kHz
        }
        assert_eq!((t.packets, t.expected(), t.frames), (5, 6, 5), "0 is missing; five frames");
        assert!(t.jitter < 1.0, "evenly spaced packets have no jitter: {}", t.jitter);
    }

    #[test]
    fn sequence_offset_is_learned_from_three_agreeing_packets() {
        let mut o = SeqOffset::default();
        // Janus-style rewrite: received = sent - 999. A repeated payload first
        // points at the wrong packet, then three true matches agree.
        o.observe(Some(5000), 4001);
        o.observe(Some(5000), 4002);
        o.observe(None, 4003);
        assert_eq!(o.learned, None, "disagreeing guesses teach nothing");
        for received in [4004u16, 4005, 4006] {
            o.observe(Some(received.wrapping_add(999)), received);
        }
        assert_eq!(o.learned, Some(999));
        let mut wrap = SeqOffset::default();
        for received in [10u16, 11, 12] {
            wrap.observe(Some(received.wrapping_sub(20)), received);
        }
        assert_eq!(wrap.learned.map(|o| 12u16.wrapping_add(o)), Some(65_528), "offsets wrap like sequence numbers");
    }
}
