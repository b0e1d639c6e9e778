//! One subscriber's down-track of one published track: which packets it gets
//! and how their headers are rewritten so that, across simulcast layer
//! switches and pauses, the subscriber sees one continuous RTP stream.
//!
//! Rules (each is a test below, in virtual time):
//! - a layer is joined only at a keyframe of it (VP8: S, PID 0, P clear; H.264:
//!   SPS or IDR); until then the layer being left goes on, so a switch never
//!   freezes the picture longer than the wait for that keyframe;
//! - sequence numbers continue across switches and pauses: the first packet
//!   of a new layer gets the last sent number plus one; packets lost upstream
//!   leave their gap (so the subscriber NACKs them), packets dropped here
//!   (padding-only) leave none;
//! - timestamps continue too: the first packet of a new layer gets the last
//!   sent timestamp plus the time since it was sent, in the codec's clock
//!   (never less than one tick), so the subscriber's jitter buffer sees time
//!   move on, not jump;
//! - VP8 picture id, TL0PICIDX and KEYIDX continue the same way, so the
//!   decoder sees no missing pictures at a switch;
//! - a NACK from the subscriber is translated back to the layer and sequence
//!   number the packet came with ([`DownTrack::source_of`]).
//!
//! No clock, no IO: the caller passes `now` and sends what comes out.

use std::time::{Duration, Instant};

use crate::vp8::{self, Descriptor};

/// How many sent packets a down-track remembers for NACK translation.
pub const HISTORY: usize = 1024;
/// How many sequence offset changes (one per padding packet dropped) are kept
/// for packets that arrive late, from before the change.
pub const OFFSET_CHANGES: usize = 16;

/// What a down-track needs to know about the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// VP8: keyframes from the payload descriptor; picture ids rewritten.
    Vp8,
    /// H.264: keyframes from the NAL units.
    H264,
    /// Anything else (Opus, or video whose keyframes are not read here): one
    /// layer, joined at any packet.
    Other,
}

/// One RTP packet of the published track, as received.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Simulcast layer index, 0 the lowest (always 0 without simulcast).
    pub layer: u8,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP payload (after the header and any padding is removed).
    pub payload: &'a [u8],
}

/// New header fields for a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// RTP sequence number to send.
    pub seq: u16,
    /// RTP timestamp to send.
    pub timestamp: u32,
    /// Whether this packet starts a keyframe.
    pub keyframe: bool,
    vp8: Option<(Descriptor, u16, u8, u8)>,
}

impl Rewrite {
    /// The VP8 fields this rewrite writes (picture id, TL0PICIDX, KEYIDX), when
    /// it changes any of them: packets whose rewrites have the same key get the
    /// same payload, so a caller makes one copy for all of them, and none when
    /// this is `None` (the payload goes out as it came).
    pub fn payload_key(&self) -> Option<(u16, u8, u8)> {
        let (d, picture_id, tl0, key_idx) = self.vp8?;
        let same = d.picture_id.is_none_or(|(p, _)| p == picture_id)
            && d.tl0_pic_idx.is_none_or(|t| t == tl0)
            && d.key_idx.is_none_or(|k| k == key_idx);
        (!same).then_some((picture_id, tl0, key_idx))
    }

    /// Rewrites the payload of the packet in place (VP8 picture id, TL0PICIDX,
    /// KEYIDX); a no-op for other codecs.
    pub fn apply_to_payload(&self, payload: &mut [u8]) {
        if let Some((d, picture_id, tl0, key_idx)) = self.vp8 {
            d.rewrite(payload, picture_id, tl0, key_idx);
        }
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for this subscriber.
    Drop,
    /// Send it with these header fields.
    Forward(Rewrite),
}

/// The last packet sent, that the next layer continues from.
#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u16,
    timestamp: u32,
    at: Instant,
    picture_id: Option<(u16, bool)>,
    tl0_pic_idx: Option<u8>,
    key_idx: Option<u8>,
}

/// The layer being forwarded and how its numbers map to the subscriber's.
#[derive(Debug, Clone, Copy)]
struct Current {
    layer: u8,
    /// The first sequence number forwarded from this layer; older ones are dropped.
    first_seq: u16,
    /// The newest sequence number seen from this layer.
    highest_seq: u16,
    ts_offset: u32,
    picture_id_offset: u16,
    tl0_offset: u8,
    key_idx_offset: u8,
}

/// A subscriber's down-track of one published track. See the module doc.
#[derive(Debug)]
pub struct DownTrack {
    codec: Codec,
    clock_rate: u32,
    target: Option<u8>,
    current: Option<Current>,
    /// The current layer's sequence offsets, oldest first: `(from, offset)`
    /// applies to its sequence numbers from `from` on, until the next entry.
    seq_offsets: std::collections::VecDeque<(u16, u16)>,
    last: Option<Last>,
    /// `(out seq, layer, in seq)` of recently sent packets, by out seq modulo [`HISTORY`].
    history: Vec<Option<(u16, u8, u16)>>,
}

/// Whether sequence number `a` comes after `b` (RFC 3550 A.1 arithmetic).
fn newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// `elapsed` in ticks of a `clock_rate` Hz clock, at least one.
fn ticks(elapsed: Duration, clock_rate: u32) -> u32 {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let t = micros.saturating_mul(u64::from(clock_rate)) / 1_000_000;
    // RTP timestamps are modulo 2^32; so is this.
    (t.max(1) & u64::from(u32::MAX)) as u32
}

impl DownTrack {
    /// A down-track of a `codec` track with an RTP clock of `clock_rate` Hz,
    /// wanting layer `target` (`None`: paused).
    pub fn new(codec: Codec, clock_rate: u32, target: Option<u8>) -> Self {
        Self {
            codec,
            clock_rate,
            target,
            current: None,
            seq_offsets: std::collections::VecDeque::with_capacity(OFFSET_CHANGES),
            last: None,
            history: vec![None; HISTORY],
        }
    }

    /// Asks for layer `target` from now on (`None` pauses the down-track).
    /// Switching waits for a keyframe of the new layer; resuming after a pause
    /// does too, since the subscriber's decoder missed what went by.
    pub fn set_target(&mut self, target: Option<u8>) {
        if target.is_none() {
            self.current = None;
        }
        self.target = target;
    }

    /// The layer asked for.
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// The layer being forwarded now.
    pub fn current(&self) -> Option<u8> {
        self.current.map(|c| c.layer)
    }

    /// The layer a keyframe is awaited from, when a switch (or the start) is
    /// pending: the caller asks the publisher for one (PLI, throttled per
    /// publisher layer).
    pub fn awaiting_keyframe(&self) -> Option<u8> {
        match (self.target, self.current) {
            (Some(t), Some(c)) if c.layer != t => Some(t),
            (Some(t), None) => Some(t),
            _ => None,
        }
    }

    /// Decides about `packet`, received at `now`.
    pub fn on_packet(&mut self, now: Instant, packet: &Packet<'_>) -> Verdict {
        let Some(target) = self.target else { return Verdict::Drop };
        let descriptor = if self.codec == Codec::Vp8 { Descriptor::parse(packet.payload) } else { None };
        let keyframe = match self.codec {
            Codec::Vp8 => descriptor.is_some_and(|d| d.keyframe),
            Codec::H264 => crate::h264::is_keyframe(packet.payload),
            Codec::Other => true,
        };
        match self.current {
            // The current layer goes on until the target's keyframe arrives.
            Some(c) if c.layer == packet.layer => self.forward(now, packet, descriptor, keyframe),
            _ if packet.layer == target && keyframe => {
                self.switch(now, packet, descriptor);
                self.forward(now, packet, descriptor, keyframe)
            }
            _ => Verdict::Drop,
        }
    }

    /// Starts forwarding `packet.layer`, continuing from the last packet sent.
    fn switch(&mut self, now: Instant, packet: &Packet<'_>, descriptor: Option<Descriptor>) {
        let (out_seq, out_ts) = match self.last {
            Some(l) => (
                l.seq.wrapping_add(1),
                l.timestamp.wrapping_add(ticks(now.saturating_duration_since(l.at), self.clock_rate)),
            ),
            None => (packet.seq, packet.timestamp),
        };
        let mut c = Current {
            layer: packet.layer,
            first_seq: packet.seq,
            highest_seq: packet.seq,
            ts_offset: out_ts.wrapping_sub(packet.timestamp),
            picture_id_offset: 0,
            tl0_offset: 0,
            key_idx_offset: 0,
        };
        if let Some(d) = descriptor {
            let last = self.last;
            if let Some((pid, long)) = d.picture_id {
                let modulus = vp8::picture_id_modulus(long);
                let next = last.and_then(|l| l.picture_id).map_or(pid, |(p, _)| p.wrapping_add(1) % modulus);
                c.picture_id_offset = next.wrapping_sub(pid).wrapping_add(modulus) % modulus;
            }
            if let Some(tl0) = d.tl0_pic_idx {
                let next = last.and_then(|l| l.tl0_pic_idx).map_or(tl0, |t| t.wrapping_add(1));
                c.tl0_offset = next.wrapping_sub(tl0);
            }
            if let Some(k) = d.key_idx {
                let next = last.and_then(|l| l.key_idx).map_or(k, |x| x.wrapping_add(1) & 0x1f);
                c.key_idx_offset = next.wrapping_sub(k) & 0x1f;
            }
        }
        self.seq_offsets.clear();
        self.seq_offsets.push_back((packet.seq, out_seq.wrapping_sub(packet.seq)));
        self.current = Some(c);
    }

    /// The sequence offset for `seq` of the current layer.
    fn seq_offset(&self, seq: u16) -> Option<u16> {
        self.seq_offsets.iter().rev().find(|(from, _)| !newer(*from, seq)).map(|(_, offset)| *offset)
    }

    fn forward(
        &mut self,
        now: Instant,
        packet: &Packet<'_>,
        descriptor: Option<Descriptor>,
        keyframe: bool,
    ) -> Verdict {
        let Some(mut c) = self.current else { return Verdict::Drop };
        if newer(c.first_seq, packet.seq) {
            // From before the switch: the subscriber's stream had the old layer then.
            return Verdict::Drop;
        }
        let Some(offset) = self.seq_offset(packet.seq) else { return Verdict::Drop };
        if packet.payload.is_empty() && packet.seq == c.highest_seq.wrapping_add(1) {
            // Padding only, in order: dropped, and the numbers after it move
            // down one so it leaves no gap.
            c.highest_seq = packet.seq;
            if self.seq_offsets.len() == OFFSET_CHANGES {
                self.seq_offsets.pop_front();
            }
            self.seq_offsets.push_back((packet.seq.wrapping_add(1), offset.wrapping_sub(1)));
            self.current = Some(c);
            return Verdict::Drop;
        }
        if newer(packet.seq, c.highest_seq) {
            c.highest_seq = packet.seq;
        }
        let seq = packet.seq.wrapping_add(offset);
        let timestamp = packet.timestamp.wrapping_add(c.ts_offset);
        let vp8 = descriptor.map(|d| {
            let pid = d.picture_id.map_or(0, |(p, long)| {
                let modulus = vp8::picture_id_modulus(long);
                p.wrapping_add(c.picture_id_offset) % modulus
            });
            let tl0 = d.tl0_pic_idx.map_or(0, |t| t.wrapping_add(c.tl0_offset));
            let key = d.key_idx.map_or(0, |k| k.wrapping_add(c.key_idx_offset) & 0x1f);
            (d, pid, tl0, key)
        });
        self.current = Some(c);
        if self.last.is_none_or(|l| newer(seq, l.seq)) {
            self.last = Some(Last {
                seq,
                timestamp,
                at: now,
                picture_id: vp8.and_then(|(d, pid, _, _)| d.picture_id.map(|(_, long)| (pid, long))),
                tl0_pic_idx: vp8.and_then(|(d, _, tl0, _)| d.tl0_pic_idx.map(|_| tl0)),
                key_idx: vp8.and_then(|(d, _, _, key)| d.key_idx.map(|_| key)),
            });
        }
        self.history[usize::from(seq) % HISTORY] = Some((seq, packet.layer, packet.seq));
        Verdict::Forward(Rewrite { seq, timestamp, keyframe, vp8 })
    }

    /// The `(layer, sequence number)` a sent packet `seq` came with, while it is
    /// remembered: what a NACK for it asks the publisher's cache for.
    pub fn source_of(&self, seq: u16) -> Option<(u8, u16)> {
        match self.history[usize::from(seq) % HISTORY] {
            Some((out, layer, source)) if out == seq => Some((layer, source)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vp8::tests::packet as vp8_payload;

    /// One received packet: layer, sequence number, timestamp, payload.
    type Received = (u8, u16, u32, Vec<u8>);

    /// Three layers of one VP8 track, as a browser sends them: their own
    /// sequence numbers, timestamps and picture ids.
    struct Publisher {
        start: Instant,
        frame: u32,
        seq: [u16; 3],
        picture_id: [u16; 3],
    }

    impl Publisher {
        fn new() -> Self {
            Self { start: Instant::now(), frame: 0, seq: [1000, 30_000, 65_500], picture_id: [100, 7000, 32_760] }
        }

        /// The packets of the next frame (keyframes on the layers `key` says),
        /// 2 per layer, and the time they arrive (30 fps).
        fn frame(&mut self, key: [bool; 3]) -> (Instant, Vec<Received>) {
            self.frame += 1;
            let at = self.start + Duration::from_millis(u64::from(self.frame) * 33);
            let mut out = Vec::new();
            for layer in 0..3u8 {
                let l = usize::from(layer);
                // Different random-looking timestamp bases per layer.
                let ts = (self.frame * 3000).wrapping_add([5, 1_000_000, 4_000_000_000][l]);
                for part in 0..2 {
                    let payload = vp8_payload(self.picture_id[l], 3, part == 0, key[l]);
                    out.push((layer, self.seq[l], ts, payload));
                    self.seq[l] = self.seq[l].wrapping_add(1);
                }
                self.picture_id[l] = (self.picture_id[l] + 1) % 32768;
            }
            (at, out)
        }
    }

    /// Feeds `frames` frames to `dt`; returns what was forwarded:
    /// `(layer, seq, ts, picture id)`.
    fn run(dt: &mut DownTrack, publisher: &mut Publisher, frames: usize, key: [bool; 3]) -> Vec<(u8, u16, u32, u16)> {
        let mut sent = Vec::new();
        for _ in 0..frames {
            let (at, packets) = publisher.frame(key);
            for (layer, seq, timestamp, mut payload) in packets {
                let p = Packet { layer, seq, timestamp, payload: &payload };
                if let Verdict::Forward(r) = dt.on_packet(at, &p) {
                    r.apply_to_payload(&mut payload);
                    let pid = Descriptor::parse(&payload).and_then(|d| d.picture_id).map_or(0, |(p, _)| p);
                    sent.push((layer, r.seq, r.timestamp, pid));
                }
            }
        }
        sent
    }

    fn assert_continuous(sent: &[(u8, u16, u32, u16)]) {
        for w in sent.windows(2) {
            let ((_, s0, t0, p0), (_, s1, t1, p1)) = (w[0], w[1]);
            assert_eq!(s1, s0.wrapping_add(1), "sequence continues: {w:?}");
            let dt = t1.wrapping_sub(t0);
            assert!(dt < 90_000, "timestamps move forward, by less than a second: {w:?}");
            let dp = p1.wrapping_sub(p0).wrapping_add(32768) % 32768;
            assert!(dp <= 1, "picture ids continue: {w:?}");
        }
    }

    #[test]
    fn a_layer_is_joined_only_at_its_keyframe() {
        let mut publisher = Publisher::new();
        let mut dt = DownTrack::new(Codec::Vp8, 90_000, Some(1));
        assert_eq!(dt.awaiting_keyframe(), Some(1));
        assert!(run(&mut dt, &mut publisher, 5, [false; 3]).is_empty(), "nothing before a keyframe");
        let sent = run(&mut dt, &mut publisher, 1, [false, true, false]);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|p| p.0 == 1), "layer 1 only: {sent:?}");
        assert_eq!(dt.awaiting_keyframe(), None);
    }

    #[test]
    fn switching_keeps_the_old_layer_until_the_new_ones_keyframe_and_stays_continuous() {
        let mut publisher = Publisher::new();
        let mut dt = DownTrack::new(Codec::Vp8, 90_000, Some(0));
        let mut sent = run(&mut dt, &mut publisher, 1, [true; 3]);
        sent.extend(run(&mut dt, &mut publisher, 10, [false; 3]));
        dt.set_target(Some(2));
        assert_eq!(dt.awaiting_keyframe(), Some(2));
        let waiting = run(&mut dt, &mut publisher, 5, [false; 3]);
        assert!(waiting.iter().all(|p| p.0 == 0), "layer 0 goes on meanwhile");
        sent.extend(waiting);
        let up = run(&mut dt, &mut publisher, 5, [false, false, true]);
        let switched = up.iter().position(|p| p.0 == 2).expect("layer 2 arrives");
        assert!(
            up[..switched].iter().all(|p| p.0 == 0) && up[switched..].iter().all(|p| p.0 == 2),
            "layer 0 up to layer 2's keyframe, then layer 2 alone: {up:?}"
        );
        sent.extend(up);
        // Down again, with sequence numbers of layer 2 wrapping past 65535 meanwhile.
        dt.set_target(Some(1));
        sent.extend(run(&mut dt, &mut publisher, 3, [false; 3]));
        sent.extend(run(&mut dt, &mut publisher, 5, [false, true, false]));
        assert_eq!(sent.last().unwrap().0, 1);
        assert_continuous(&sent);
    }

    #[test]
    fn a_pause_resumes_at_a_keyframe_with_time_moved_on() {
        let mut publisher = Publisher::new();
        let mut dt = DownTrack::new(Codec::Vp8, 90_000, Some(0));
        let before = run(&mut dt, &mut publisher, 3, [true; 3]);
        dt.set_target(None);
        assert!(run(&mut dt, &mut publisher, 30, [true; 3]).is_empty(), "paused: nothing, keyframes or not");
        dt.set_target(Some(0));
        assert_eq!(dt.awaiting_keyframe(), Some(0), "resuming waits for a keyframe");
        assert!(run(&mut dt, &mut publisher, 2, [false; 3]).is_empty());
        let after = run(&mut dt, &mut publisher, 2, [true; 3]);
        let (last, first) = (before.last().unwrap(), after.first().unwrap());
        assert_eq!(first.1, last.1.wrapping_add(1), "no hole for the pause");
        let gap = first.2.wrapping_sub(last.2);
        // 32 frames of 33 ms went by: about 2.9 s at 90 kHz.
        assert!((85_000..100_000).contains(&gap), "the timestamp moved on by the pause: {gap}");
    }

    #[test]
    fn a_down_track_that_never_switched_leaves_vp8_payloads_as_they_came() {
        let mut publisher = Publisher::new();
        let mut dt = DownTrack::new(Codec::Vp8, 90_000, Some(0));
        let (at, packets) = publisher.frame([true; 3]);
        let (layer, seq, timestamp, payload) = &packets[0];
        let Verdict::Forward(r) =
            dt.on_packet(at, &Packet { layer: *layer, seq: *seq, timestamp: *timestamp, payload })
        else {
            panic!("a keyframe of the wanted layer is forwarded")
        };
        assert_eq!(r.payload_key(), None, "same picture id: nothing to copy");
        dt.set_target(Some(1));
        let mut keys = Vec::new();
        for _ in 0..3 {
            let (at, packets) = publisher.frame([false, true, false]);
            for (layer, seq, timestamp, payload) in &packets {
                if let Verdict::Forward(r) =
                    dt.on_packet(at, &Packet { layer: *layer, seq: *seq, timestamp: *timestamp, payload })
                {
                    keys.push((*layer, r.payload_key()));
                }
            }
        }
        assert!(keys.iter().filter(|(l, _)| *l == 1).all(|(_, k)| k.is_some()), "after a switch, rewritten: {keys:?}");
    }

    #[test]
    fn upstream_loss_leaves_its_gap_and_padding_leaves_none() {
        let start = Instant::now();
        let mut dt = DownTrack::new(Codec::Other, 48_000, Some(0));
        let audio = [1u8, 2, 3];
        let mut out = Vec::new();
        for (seq, payload) in
            [(10u16, &audio[..]), (11, &audio), (13, &audio), (14, &[][..]), (15, &audio), (12, &audio)]
        {
            let p = Packet { layer: 0, seq, timestamp: u32::from(seq) * 960, payload };
            if let Verdict::Forward(r) = dt.on_packet(start, &p) {
                out.push(r.seq);
            }
        }
        // 12 was lost, then came late; 14 was padding.
        assert_eq!(out, [10, 11, 13, 14, 12]);
    }

    #[test]
    fn packets_from_before_a_switch_are_dropped() {
        let start = Instant::now();
        let mut dt = DownTrack::new(Codec::H264, 90_000, Some(1));
        const SPS: [u8; 2] = [0x67, 0x42];
        const SLICE: [u8; 2] = [0x41, 0x9a];
        let (sps, slice) = (&SPS, &SLICE);
        let p = |seq: u16, payload: &'static [u8]| Packet { layer: 1, seq, timestamp: 3000, payload };
        assert_eq!(dt.on_packet(start, &p(500, slice)), Verdict::Drop, "no keyframe yet");
        assert!(matches!(dt.on_packet(start, &p(502, sps)), Verdict::Forward(r) if r.keyframe));
        assert_eq!(dt.on_packet(start, &p(501, slice)), Verdict::Drop, "late, from before the switch");
        assert!(matches!(dt.on_packet(start, &p(503, slice)), Verdict::Forward(r) if !r.keyframe));
    }

    #[test]
    fn nacks_translate_back_to_the_layer_and_number_the_packet_came_with() {
        let mut publisher = Publisher::new();
        let mut dt = DownTrack::new(Codec::Vp8, 90_000, Some(0));
        run(&mut dt, &mut publisher, 2, [true; 3]);
        dt.set_target(Some(1));
        let sent = run(&mut dt, &mut publisher, 2, [false, true, false]);
        let (layer, out_seq, _, _) = *sent.last().unwrap();
        assert_eq!(layer, 1);
        // Layer 1 started at 30 000, two packets a frame: the 4th frame's second.
        assert_eq!(dt.source_of(out_seq), Some((1, 30_000 + 7)));
        assert_eq!(dt.source_of(out_seq.wrapping_add(1)), None, "not sent yet");
        let first_of_layer_1 = sent.iter().position(|p| p.0 == 1).unwrap();
        let before = sent[first_of_layer_1 - 1].1;
        assert_eq!(dt.source_of(before).map(|s| s.0), Some(0), "the one before came from layer 0");
    }

    #[test]
    fn ticks_are_at_least_one_and_wrap_like_rtp_timestamps() {
        assert_eq!(ticks(Duration::ZERO, 90_000), 1);
        assert_eq!(ticks(Duration::from_millis(20), 48_000), 960);
        assert_eq!(ticks(Duration::from_secs(100_000), 90_000), (9_000_000_000u64 % (1u64 << 32)) as u32);
        assert_eq!(ticks(Duration::MAX, 90_000), (u64::MAX / 1_000_000) as u32);
    }
}
