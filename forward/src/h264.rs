//! Keyframes in H.264 RTP payloads (RFC 6184 §5.6-5.8).
//!
//! A packet starts a keyframe when it carries an SPS (NAL type 7) or the start
//! of an IDR slice (type 5): as a single NAL unit, inside a STAP-A (type 24),
//! or as the first fragment of an FU-A (type 28). Switching to a layer waits
//! for one, since a decoder cannot start on anything else.

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

fn is_key(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
}

/// Whether `payload` starts a keyframe; a malformed payload is not one.
pub fn is_keyframe(payload: &[u8]) -> bool {
    let Some(first) = payload.first() else { return false };
    match first & 0x1f {
        STAP_A => {
            let mut rest = payload.get(1..).unwrap_or_default();
            while let [hi, lo, tail @ ..] = rest {
                let size = usize::from(*hi) << 8 | usize::from(*lo);
                let Some(nal) = tail.get(..size) else { return false };
                if nal.first().is_some_and(|h| is_key(h & 0x1f)) {
                    return true;
                }
                rest = tail.get(size..).unwrap_or_default();
            }
            false
        }
        FU_A => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sps_and_idr_alone_aggregated_and_fragmented() {
        assert!(is_keyframe(&[0x67, 0x42]), "SPS");
        assert!(is_keyframe(&[0x65, 0x88]), "IDR");
        assert!(!is_keyframe(&[0x41, 0x9a]), "a non-IDR slice");
        // STAP-A with an SEI (6) then an SPS.
        assert!(is_keyframe(&[0x78, 0, 2, 0x06, 0x05, 0, 2, 0x67, 0x42]));
        assert!(!is_keyframe(&[0x78, 0, 2, 0x06, 0x05, 0, 2, 0x41, 0x9a]));
        // FU-A: the start of an IDR, a middle piece of one, the start of a P slice.
        assert!(is_keyframe(&[0x7c, 0x85, 0xaa]));
        assert!(!is_keyframe(&[0x7c, 0x05, 0xaa]));
        assert!(!is_keyframe(&[0x7c, 0x81, 0xaa]));
    }

    #[test]
    fn malformed_payloads_are_not_keyframes_and_do_not_panic() {
        assert!(!is_keyframe(&[]));
        assert!(!is_keyframe(&[0x78]));
        assert!(!is_keyframe(&[0x78, 0]));
        assert!(!is_keyframe(&[0x78, 0xff, 0xff, 0x67]), "a size past the end");
        assert!(!is_keyframe(&[0x7c]));
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = is_keyframe(&[0x78, a, b, 0x67]);
            }
        }
    }
}
