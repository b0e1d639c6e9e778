//! The SFU's SDP scanning (`sfu/src/sdp.rs`) of a publisher offer, as
//! `Participant::handle_offer` runs it on `SessionDescription.sdp`:
//! `media_sections`, `MediaSection::declared_streams`, `section_lines`; and the
//! webrtc-rs SDP parse that follows it (`RTCSessionDescription::offer`).
//!
//! Input: the SDP (protobuf strings are UTF-8, so invalid bytes are replaced).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_sfu::sdp::{media_sections, section_lines};
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

fuzz_target!(|data: &[u8]| {
    let sdp = String::from_utf8_lossy(data);
    let sections = media_sections(&sdp);
    let m_lines = sdp.lines().filter(|l| l.starts_with("m=")).count();
    assert_eq!(sections.len(), m_lines, "one section per m= line");
    for s in &sections {
        let declared = s.declared_streams();
        assert!(s.sending || declared.is_empty(), "a section that does not send declares nothing");
    }
    // Every other section's lines, by mid, as the media-arrival warning picks them.
    let mids: Vec<&str> = sections.iter().step_by(2).filter_map(|s| s.mid.as_deref()).collect();
    for line in section_lines(&sdp, |mid| mids.contains(&mid)) {
        assert!(sdp.lines().any(|l| l.trim_end() == line), "section_lines returned a line not in the SDP: {line:?}");
    }
    let _ = RTCSessionDescription::offer(sdp.into_owned());
});
