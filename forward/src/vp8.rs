//! The VP8 RTP payload descriptor (RFC 7741 §4.2), read and rewritten in place.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+
//! |X|R|N|S|R| PID | (REQUIRED)
//! +-+-+-+-+-+-+-+-+
//! |I|L|T|K| RSV   | (OPTIONAL, when X)
//! +-+-+-+-+-+-+-+-+
//! |M| PictureID   | (OPTIONAL, when I; 15 bits when M)
//! +-+-+-+-+-+-+-+-+
//! |   PictureID   |
//! +-+-+-+-+-+-+-+-+
//! |   TL0PICIDX   | (OPTIONAL, when L)
//! +-+-+-+-+-+-+-+-+
//! |TID|Y| KEYIDX  | (OPTIONAL, when T or K)
//! +-+-+-+-+-+-+-+-+
//! ```
//!
//! A keyframe starts in the packet with S set and PID 0 whose VP8 payload
//! header has the inverse key frame flag P (bit 0 of its first byte) clear
//! (RFC 6386 §9.1). Every read is bounds-checked: a short or inconsistent
//! descriptor is `None`, never a panic.

/// What the descriptor of one packet says, with where its rewritable fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// S: the first packet of a partition.
    pub start: bool,
    /// PID: the partition index (0..=7).
    pub partition: u8,
    /// The picture id and whether it has 15 bits (M) rather than 7.
    pub picture_id: Option<(u16, bool)>,
    /// TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
    /// TID, the temporal layer, when T is set.
    pub temporal: Option<u8>,
    /// KEYIDX, when K is set.
    pub key_idx: Option<u8>,
    /// Whether this packet starts a keyframe.
    pub keyframe: bool,
    /// Offsets of the picture id, TL0PICIDX and TID/Y/KEYIDX bytes.
    picture_id_at: usize,
    tl0_at: usize,
    tk_at: usize,
}

impl Descriptor {
    /// Parses the descriptor at the start of `payload`; `None` when it is cut
    /// short.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let (start, partition) = (first & 0x10 != 0, first & 0x07);
        let mut d = Descriptor {
            start,
            partition,
            picture_id: None,
            tl0_pic_idx: None,
            temporal: None,
            key_idx: None,
            keyframe: false,
            picture_id_at: 0,
            tl0_at: 0,
            tk_at: 0,
        };
        let mut at = 1usize;
        if first & 0x80 != 0 {
            let x = *payload.get(at)?;
            at += 1;
            if x & 0x80 != 0 {
                let b = *payload.get(at)?;
                d.picture_id_at = at;
                if b & 0x80 != 0 {
                    let low = *payload.get(at + 1)?;
                    d.picture_id = Some(((u16::from(b & 0x7f) << 8) | u16::from(low), true));
                    at += 2;
                } else {
                    d.picture_id = Some((u16::from(b), false));
                    at += 1;
                }
            }
            if x & 0x40 != 0 {
                d.tl0_at = at;
                d.tl0_pic_idx = Some(*payload.get(at)?);
                at += 1;
            }
            if x & 0x30 != 0 {
                let b = *payload.get(at)?;
                d.tk_at = at;
                if x & 0x20 != 0 {
                    d.temporal = Some(b >> 6);
                }
                if x & 0x10 != 0 {
                    d.key_idx = Some(b & 0x1f);
                }
                at += 1;
            }
        }
        // The VP8 payload header follows the descriptor.
        if start && partition == 0 {
            d.keyframe = payload.get(at).is_some_and(|h| h & 0x01 == 0);
        }
        Some(d)
    }

    /// Writes `picture_id`, `tl0_pic_idx` and `key_idx` over the fields this
    /// descriptor has in `payload` (the packet it was parsed from), each
    /// truncated to the field's width; fields it does not have are left alone.
    pub fn rewrite(&self, payload: &mut [u8], picture_id: u16, tl0_pic_idx: u8, key_idx: u8) {
        if let Some((_, long)) = self.picture_id {
            if long {
                if let Some(field) = payload.get_mut(self.picture_id_at..self.picture_id_at + 2) {
                    field[0] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
                    field[1] = picture_id as u8;
                }
            } else if let Some(b) = payload.get_mut(self.picture_id_at) {
                *b = picture_id as u8 & 0x7f;
            }
        }
        if self.tl0_pic_idx.is_some() {
            if let Some(b) = payload.get_mut(self.tl0_at) {
                *b = tl0_pic_idx;
            }
        }
        if self.key_idx.is_some() {
            if let Some(b) = payload.get_mut(self.tk_at) {
                *b = (*b & 0xe0) | (key_idx & 0x1f);
            }
        }
    }
}

/// The picture id field's modulus: 2^15 or 2^7.
pub fn picture_id_modulus(long: bool) -> u16 {
    if long {
        1 << 15
    } else {
        1 << 7
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A descriptor with a 15-bit picture id, TL0PICIDX and TID/KEYIDX, then a
    /// VP8 payload header (keyframe or not) and a few bytes.
    pub(crate) fn packet(picture_id: u16, tl0: u8, start: bool, keyframe: bool) -> Vec<u8> {
        let s = if start { 0x10 } else { 0 };
        vec![
            0x80 | s,
            0xf0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            0x40 | 0x05,
            if keyframe { 0x00 } else { 0x01 },
            0xaa,
            0xbb,
        ]
    }

    #[test]
    fn reads_every_field_and_the_keyframe_flag() {
        let d = Descriptor::parse(&packet(0x1234, 9, true, true)).unwrap();
        assert_eq!(d.picture_id, Some((0x1234, true)));
        assert_eq!((d.tl0_pic_idx, d.temporal, d.key_idx), (Some(9), Some(1), Some(5)));
        assert!(d.start && d.keyframe);
        let d = Descriptor::parse(&packet(7, 9, true, false)).unwrap();
        assert!(!d.keyframe, "P set: an interframe");
        let d = Descriptor::parse(&packet(7, 9, false, true)).unwrap();
        assert!(!d.keyframe, "not the start of the frame");
        let short = Descriptor::parse(&[0x90, 0x00, 0x00]).unwrap();
        assert_eq!(short.picture_id, None);
        assert!(short.keyframe, "no extensions; P clear");
        let seven = Descriptor::parse(&[0x90, 0x80, 0x05, 0x01]).unwrap();
        assert_eq!(seven.picture_id, Some((5, false)));
    }

    #[test]
    fn rewrites_in_place_within_each_fields_width() {
        let mut p = packet(0x1234, 9, true, true);
        let d = Descriptor::parse(&p).unwrap();
        d.rewrite(&mut p, 0x8001, 200, 33);
        let after = Descriptor::parse(&p).unwrap();
        assert_eq!(after.picture_id, Some((0x0001, true)), "15 bits");
        assert_eq!((after.tl0_pic_idx, after.key_idx, after.temporal), (Some(200), Some(1), Some(1)));
        assert_eq!(&p[6..], &packet(0, 0, true, true)[6..], "the VP8 payload is untouched");
    }

    #[test]
    fn a_descriptor_cut_short_anywhere_is_none_not_a_panic() {
        let p = packet(0x1234, 9, true, true);
        for len in 0..6 {
            assert_eq!(Descriptor::parse(&p[..len]), None, "{len} bytes");
        }
        for len in 6..p.len() {
            assert!(Descriptor::parse(&p[..len]).is_some());
        }
        // Every byte pattern of two bytes parses or not, without a panic.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = Descriptor::parse(&[a, b]);
            }
        }
    }
}
