//! What the SFU reads from a client's SDP beyond what the engines expose: per media
//! section, its mid, its msid track id (livekit-client's `cid`), whether it sends,
//! its first declared SSRC and its simulcast RIDs; and one edit, narrowing a
//! section to the codec its track asked for ([`keep_codec`]). A line scanner,
//! not a parser: it reads only these attributes (RFC 8866 §5.14 media sections,
//! RFC 8830 msid, RFC 5576 ssrc, RFC 8851 rid, RFC 4588 §8.1 RTX `apt`).

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

/// `sdp` with the whitespace at the end of each line removed (CRLF kept).
/// webrtc-rs writes `a=rtcp-fb:96 transport-cc ` and `nack ` with a trailing
/// space, which str0m does not take for the feedback they name: a client on
/// webrtc-rs would get no TWCC estimate and no NACKs answered.
pub fn trimmed(sdp: &str) -> String {
    let mut out: String = sdp.lines().map(str::trim_end).collect::<Vec<_>>().join("\r\n");
    out.push_str("\r\n");
    out
}

/// `offer` with, in each media section whose mid `preferred` maps to a codec
/// (a MIME type such as `video/H264`, case-insensitively), only that codec's
/// payload types and their RTX (`a=fmtp:<pt> apt=`): the m= line's formats and
/// the `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines of the others go. A section
/// that does not offer the codec, and every other line, is left as it was.
///
/// The answerer's codec order decides what the offerer sends, and str0m
/// answers in its own order for the whole session; this is how a track that
/// asked for H.264 in its `AddTrackRequest` gets it (LiveKit's server reorders
/// the transceiver's codecs instead).
pub fn keep_codec<'a>(offer: &str, preferred: impl Fn(&str) -> Option<&'a str>) -> String {
    let eol = if offer.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out: Vec<String> = Vec::new();
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut Vec<String>| {
        let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:"));
        let codec = mid.and_then(&preferred).and_then(|mime| mime.split_once('/')).map(|(_, name)| name);
        match codec.and_then(|name| kept_payload_types(section, name)) {
            Some(kept) => out.extend(section.iter().filter_map(|l| narrowed(l, &kept))),
            None => out.extend(section.iter().map(|l| l.to_string())),
        }
        section.clear();
    };
    for line in offer.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        if section.is_empty() && !line.starts_with("m=") {
            out.push(line.to_owned());
        } else {
            section.push(line);
        }
    }
    flush(&mut section, &mut out);
    let mut sdp = out.join(eol);
    sdp.push_str(eol);
    sdp
}

/// The payload types of `section` that carry codec `name` (`a=rtpmap:<pt> <name>/…`)
/// and their RTX; `None` when it carries none.
fn kept_payload_types(section: &[&str], name: &str) -> Option<Vec<String>> {
    let wanted: Vec<&str> = section
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|m| m.split_once(' '))
        .filter(|(_, enc)| enc.split('/').next().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|(pt, _)| pt)
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let rtx = section
        .iter()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .filter_map(|f| f.split_once(' '))
        .filter(|(_, params)| {
            params.split(';').any(|p| p.trim().strip_prefix("apt=").is_some_and(|a| wanted.contains(&a)))
        })
        .map(|(pt, _)| pt);
    Some(wanted.iter().copied().chain(rtx).map(str::to_owned).collect())
}

/// `line` of a section narrowed to the payload types `kept`: the m= line with
/// only those formats, a payload type's own attribute line only if kept.
fn narrowed(line: &str, kept: &[String]) -> Option<String> {
    if line.starts_with("m=") {
        let mut words = line.split(' ');
        let head: Vec<&str> = words.by_ref().take(3).collect();
        let formats: Vec<&str> = words.filter(|pt| kept.iter().any(|k| k == pt)).collect();
        return Some([head, formats].concat().join(" "));
    }
    for prefix in ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let pt = rest.split(' ').next().unwrap_or_default();
            return (pt == "*" || kept.iter().any(|k| k == pt)).then(|| line.to_owned());
        }
    }
    Some(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section offering VP8 (96, RTX 97) and H.264 (102, RTX 103) keeps only
    /// H.264 and its RTX when its track asked for it; others are untouched.
    #[test]
    fn a_preferred_codec_is_the_only_one_left_in_its_section() {
        let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\na=mid:0\r\na=sendonly\r\n\
                     a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
                     a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\n\
                     a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
                     a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=rtcp-fb:* transport-cc\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
                     a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let kept = keep_codec(offer, |mid| (mid == "0").then_some("video/h264"));
        let first: Vec<&str> = kept.split("m=").nth(1).unwrap().lines().collect();
        assert_eq!(first[0], "video 9 UDP/TLS/RTP/SAVPF 102 103");
        assert!(!first.iter().any(|l| l.contains(":96 ") || l.contains(":97 ")), "{kept}");
        assert!(first.contains(&"a=fmtp:103 apt=102") && first.contains(&"a=rtcp-fb:* transport-cc"), "{kept}");
        assert!(kept.ends_with("a=fmtp:97 apt=96\r\n"), "the other section as it was: {kept}");
        assert!(kept.starts_with("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\nm=video"), "{kept}");
        assert_eq!(keep_codec(offer, |_| Some("video/AV1")), offer, "a codec not offered changes nothing");
        assert_eq!(keep_codec(offer, |_| None), offer);
    }

    #[test]
    fn trailing_whitespace_goes_and_lines_end_in_crlf() {
        assert_eq!(
            trimmed("v=0\na=rtcp-fb:96 nack \r\na=rtcp-fb:96 transport-cc \t\r\n"),
            "v=0\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 transport-cc\r\n"
        );
    }

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
