//! What the SFU reads from a client's SDP beyond what webrtc-rs exposes: per media
//! section, its mid, its msid track id (livekit-client's `cid`), whether it sends,
//! its first declared SSRC and its simulcast RIDs. A line scanner, not a parser: it
//! reads only these attributes (RFC 8866 §5.14 media sections, RFC 8830 msid,
//! RFC 5576 ssrc, RFC 8851 rid).

use crate::engine::DeclaredStream;

/// One `m=` section of an SDP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaSection {
    /// `a=mid:` value.
    pub mid: Option<String>,
    /// Track id of `a=msid:<stream> <track>`.
    pub track_id: Option<String>,
    /// False when the section is `a=inactive` or `a=recvonly` (from the offerer's side).
    pub sending: bool,
    /// The first `a=ssrc:` of the section (the primary SSRC; RTX follows it).
    pub first_ssrc: Option<u32>,
    /// RIDs the offerer sends (`a=rid:<rid> send`): its simulcast layers, whose
    /// SSRCs are not declared (livekit-client's `q`, `h`, `f`).
    pub rids: Vec<String>,
}

impl MediaSection {
    /// The streams a sending section declares: its RID layers when it has any,
    /// else its primary SSRC. Empty for a section that does not send.
    pub fn declared_streams(&self) -> Vec<DeclaredStream> {
        if !self.sending {
            return Vec::new();
        }
        match (&self.mid, self.rids.is_empty()) {
            (Some(mid), false) => {
                self.rids.iter().map(|rid| DeclaredStream::Rid { mid: mid.clone(), rid: rid.clone() }).collect()
            }
            _ => self.first_ssrc.map(DeclaredStream::Ssrc).into_iter().collect(),
        }
    }
}

/// The media sections of `sdp`, in order.
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut sections = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            sections.push(MediaSection { sending: true, ..MediaSection::default() });
            continue;
        }
        let Some(section) = sections.last_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.to_owned());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            section.track_id = msid.split(' ').nth(1).map(str::to_owned);
        } else if line == "a=inactive" || line == "a=recvonly" {
            section.sending = false;
        } else if let Some(rid) = line.strip_prefix("a=rid:") {
            let mut words = rid.split(' ');
            if let (Some(id), Some("send")) = (words.next(), words.next()) {
                section.rids.push(id.to_owned());
            }
        } else if let Some(ssrc) = line.strip_prefix("a=ssrc:") {
            if section.first_ssrc.is_none() {
                section.first_ssrc = ssrc.split(' ').next().and_then(|n| n.parse().ok());
            }
        }
    }
    sections
}

/// The direction, `a=rid`, `a=simulcast` and `a=extmap` lines of the media
/// sections of `sdp` whose mid `wanted` picks, for diagnostics.
pub fn section_lines(sdp: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut section: Vec<&str> = Vec::new();
    let mut flush = |section: &mut Vec<&str>| {
        let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:"));
        if mid.is_some_and(&wanted) {
            out.extend(section.iter().map(|l| l.to_string()));
        }
        section.clear();
    };
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            flush(&mut section);
        }
        let keep = line.starts_with("m=")
            || line.starts_with("a=mid:")
            || line.starts_with("a=rid:")
            || line.starts_with("a=simulcast:")
            || line.starts_with("a=extmap:")
            || ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(&line);
        if keep {
            section.push(line);
        }
    }
    flush(&mut section);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_carry_mid_track_direction_and_primary_ssrc() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\na=msid:s1 mic-cid\r\n\
                   a=ssrc:1111 cname:x\r\na=ssrc:1111 msid:s1 mic-cid\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:2\r\na=inactive\r\na=msid:s1 cam-cid\r\n\
                   a=ssrc-group:FID 2222 3333\r\na=ssrc:2222 cname:x\r\na=ssrc:3333 cname:x\r\n";
        let s = media_sections(sdp);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], MediaSection { mid: Some("0".into()), sending: true, ..Default::default() });
        assert_eq!(
            s[1],
            MediaSection {
                mid: Some("1".into()),
                track_id: Some("mic-cid".into()),
                sending: true,
                first_ssrc: Some(1111),
                rids: vec![],
            }
        );
        assert_eq!(
            s[2],
            MediaSection {
                mid: Some("2".into()),
                track_id: Some("cam-cid".into()),
                sending: false,
                first_ssrc: Some(2222),
                rids: vec![],
            }
        );
        assert_eq!(s[1].declared_streams(), vec![DeclaredStream::Ssrc(1111)]);
        assert!(s[2].declared_streams().is_empty(), "an inactive section declares nothing");
        assert_eq!(
            section_lines(sdp, |mid| mid == "2"),
            ["m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=mid:2", "a=inactive"],
            "only the picked section's lines of interest"
        );
        assert!(media_sections("").is_empty());
        let simulcast = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:- cam\r\n\
                         a=rid:q send\r\na=rid:h send\r\na=rid:x recv\r\na=simulcast:send q;~h\r\n";
        let s = media_sections(simulcast);
        assert_eq!(s[0].rids, ["q", "h"], "send RIDs, paused ones too; recv RIDs are not the offerer's");
        assert_eq!(
            s[0].declared_streams(),
            ["q", "h"].map(|rid| DeclaredStream::Rid { mid: "1".into(), rid: rid.into() })
        );
        assert!(media_sections("garbage\r\na=mid:x").is_empty(), "attributes before any m= line are ignored");
    }
}
