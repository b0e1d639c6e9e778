//! The sans-IO forwarding core (`forward/`): a down-track fed arbitrary packets
//! (any layer, sequence number, timestamp, payload: VP8 descriptors and H.264
//! NAL units as they come off the wire) and target changes, for each codec. The
//! harness checks what the core promises: no panic, and every forwarded packet
//! is at once known to NACK translation as the layer and number it came with.
//!
//! Input: one byte choosing the codec, then operations: a byte `op`; `op % 8 ==
//! 0` sets the target (`op / 8 % 4`: layer 0-2, or 3 for paused), else a packet
//! of layer `op % 3`: sequence number (2 bytes), timestamp (4), payload length
//! (1), payload. Operations are 10 ms apart in virtual time.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meridian_forward::downtrack::{Codec, DownTrack, Packet, Verdict};

fuzz_target!(|data: &[u8]| {
    let Some((&codec, mut rest)) = data.split_first() else { return };
    let codec = [Codec::Vp8, Codec::H264, Codec::Other][usize::from(codec) % 3];
    let mut dt = DownTrack::new(codec, 90_000, Some(0));
    let start = Instant::now();
    let mut step = 0u64;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        step += 1;
        let now = start + Duration::from_millis(step * 10);
        if op % 8 == 0 {
            let layer = op / 8 % 4;
            dt.set_target((layer < 3).then_some(layer));
            continue;
        }
        let [s0, s1, t0, t1, t2, t3, len, tail @ ..] = rest else { return };
        let take = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(take);
        rest = tail;
        let packet = Packet {
            layer: op % 3,
            seq: u16::from_be_bytes([*s0, *s1]),
            timestamp: u32::from_be_bytes([*t0, *t1, *t2, *t3]),
            payload,
        };
        if let Verdict::Forward(rewrite) = dt.on_packet(now, &packet) {
            assert_eq!(dt.source_of(rewrite.seq), Some((packet.layer, packet.seq)), "NACK translation knows it");
            let mut copy = payload.to_vec();
            rewrite.apply_to_payload(&mut copy);
            assert_eq!(copy.len(), payload.len(), "rewritten in place");
        }
    }
});
