//! Extended RTP sequence numbers (RFC 3550 §A.1): the 16-bit sequence number
//! with its rollover count above it. SRTP derives each packet's index from it
//! (RFC 3711 §3.3.1), so a sender that wraps without counting fails every
//! packet after the first 65 536 of a stream.

/// `seq` extended relative to `last`, the previous extended sequence number of
/// the stream: of the values with `seq` as their low 16 bits, the nearest to
/// `last` (so up to 32 767 ahead counts as ahead, and a packet reordered behind
/// as behind). The first packet of a stream (`last` `None`) starts at rollover 0.
/// Never wraps below 0 or past `u64::MAX`: it saturates at `last` instead.
pub fn extend(last: Option<u64>, seq: u16) -> u64 {
    let Some(last) = last else { return u64::from(seq) };
    // The low 16 bits of `last` are a u16 by construction.
    let delta = i64::from(seq.wrapping_sub((last & 0xffff) as u16) as i16);
    last.checked_add_signed(delta).unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rollovers_forward() {
        let mut last = None;
        let mut seq = 65_000u16;
        for _ in 0..2_000 {
            let ext = extend(last, seq);
            assert!(last.is_none_or(|l| ext == l + 1), "{last:?} then {ext}");
            last = Some(ext);
            seq = seq.wrapping_add(1);
        }
        assert_eq!(last, Some(65_000 + 1_999), "past the wrap, counted");
    }

    #[test]
    fn a_reordered_packet_stays_behind_across_a_wrap() {
        assert_eq!(extend(Some(65_536 + 2), 65_535), 65_535, "one before the wrap");
        assert_eq!(extend(Some(65_535), 1), 65_537, "two after it");
    }

    #[test]
    fn saturates_at_the_ends() {
        assert_eq!(extend(Some(3), 65_530), 3, "below rollover 0 is not a number");
        assert_eq!(extend(Some(u64::MAX), 10), u64::MAX);
    }
}
