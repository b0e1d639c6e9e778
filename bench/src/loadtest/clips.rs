//! The media publishers send: `Clips` read from files (`bench/clips.sh` makes
//! them with ffmpeg) and how each track's frames are cut into RTP packets
//! (`Clips::packetized`). Video is VP8 from an IVF file or H.264 from an Annex B
//! stream, audio Opus from an Ogg file; both targets publish the same clips.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use livekit_protocol as proto;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::rtp::packetizer::Packetizer;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;

/// The video codec of a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    /// VP8 from an IVF file.
    Vp8,
    /// H.264 from an Annex B byte stream (constrained baseline, one slice per frame).
    H264,
}

impl VideoCodec {
    /// MIME type, clock rate and SDP `fmtp` line to publish with.
    pub(crate) fn capability(self) -> RTCRtpCodecCapability {
        match self {
            Self::Vp8 => {
                RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90_000, ..Default::default() }
            }
            Self::H264 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90_000,
                sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                ..Default::default()
            },
        }
    }

    /// The codec's name in LiveKit's `SimulcastCodec.codec` and Janus's `videocodec`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Vp8 => "vp8",
            Self::H264 => "h264",
        }
    }
}

/// Opus at 48 kHz, stereo as SDP writes it (RFC 7587).
pub(crate) fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability { mime_type: MIME_TYPE_OPUS.into(), clock_rate: 48_000, channels: 2, ..Default::default() }
}

/// Media read from the clip files.
pub(crate) struct Clips {
    /// Video frames, in order; empty for audio only.
    pub(crate) video: Vec<Bytes>,
    pub(crate) video_codec: VideoCodec,
    /// Time between two video frames (the IVF timebase; 30 fps for H.264).
    frame: Duration,
    /// Opus packets (one Ogg page each, 20 ms); empty for no audio.
    pub(crate) audio: Vec<Bytes>,
}

/// One track's media as the sender loops it.
pub(crate) struct Packetized<'a> {
    /// The frames to send, one every `period`.
    pub(crate) frames: &'a [Bytes],
    /// Time between two frames.
    pub(crate) period: Duration,
    /// RTP timestamp ticks per frame (`period` at the clock rate: 90 kHz video, 48 kHz Opus).
    pub(crate) samples: u32,
    /// Cuts a frame into RTP packets of at most 1200 bytes, from a random first
    /// sequence number; payload type and SSRC are 0, the track rewrites them per binding.
    pub(crate) packetizer: Box<dyn Packetizer + Send + Sync>,
}

impl Clips {
    /// Reads the clips: `video` is H.264 Annex B if its name ends in `.h264` or
    /// `.264`, VP8 in IVF otherwise; `audio` is Ogg Opus. `None` leaves that kind
    /// empty.
    ///
    /// Errors: a file that cannot be opened, is not of its format, or holds no frames.
    pub(crate) fn read(video: Option<&Path>, audio: Option<&Path>) -> anyhow::Result<Self> {
        let mut clips = Self {
            video: Vec::new(),
            video_codec: VideoCodec::Vp8,
            frame: Duration::from_millis(33),
            audio: Vec::new(),
        };
        if let Some(path) = video.filter(|p| p.extension().is_some_and(|e| e == "h264" || e == "264")) {
            // A raw byte stream has no timing: bench/clips.sh makes it at 30 fps.
            clips.video = h264_frames(path)?;
            clips.video_codec = VideoCodec::H264;
            clips.frame = Duration::from_secs_f64(1.0 / 30.0);
            if clips.video.is_empty() {
                bail!("{}: no H.264 frames", path.display());
            }
        } else if let Some(path) = video {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let (mut reader, header) = webrtc::media::io::ivf_reader::IVFReader::new(std::io::BufReader::new(file))
                .with_context(|| format!("{} is not an IVF file", path.display()))?;
            if &header.four_cc != b"VP80" {
                bail!("{}: VP8 IVF expected, found {:?}", path.display(), header.four_cc);
            }
            if header.timebase_denominator > 0 {
                clips.frame = Duration::from_secs_f64(
                    f64::from(header.timebase_numerator) / f64::from(header.timebase_denominator),
                );
            }
            while let Ok((frame, _)) = reader.parse_next_frame() {
                clips.video.push(frame.freeze());
            }
            if clips.video.is_empty() {
                bail!("{}: no frames", path.display());
            }
        }
        if let Some(path) = audio {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let (mut reader, _) = webrtc::media::io::ogg_reader::OggReader::new(std::io::BufReader::new(file), true)
                .with_context(|| format!("{} is not an Ogg file", path.display()))?;
            while let Ok((page, _)) = reader.parse_next_page() {
                // OpusHead and OpusTags pages carry no audio.
                if !page.starts_with(b"OpusHead") && !page.starts_with(b"OpusTags") {
                    clips.audio.push(page.freeze());
                }
            }
            if clips.audio.is_empty() {
                bail!("{}: no Opus pages", path.display());
            }
        }
        Ok(clips)
    }

    /// The tracks a publisher publishes, as the clips allow: video (VP8 or H.264,
    /// as the clip is), then Opus audio.
    pub(crate) fn tracks(&self) -> Vec<(RTCRtpCodecCapability, proto::TrackType)> {
        let mut tracks = Vec::new();
        if !self.video.is_empty() {
            tracks.push((self.video_codec.capability(), proto::TrackType::Video));
        }
        if !self.audio.is_empty() {
            tracks.push((opus_capability(), proto::TrackType::Audio));
        }
        tracks
    }

    /// The frames of `kind` (video, or else audio) with their timing and a fresh
    /// packetizer for them.
    pub(crate) fn packetized(&self, kind: proto::TrackType) -> Packetized<'_> {
        let video = kind == proto::TrackType::Video;
        let (frames, period, clock_rate, payloader): (
            &[Bytes],
            Duration,
            u32,
            Box<dyn webrtc::rtp::packetizer::Payloader + Send + Sync>,
        ) = if video && self.video_codec == VideoCodec::H264 {
            (&self.video, self.frame, 90_000, Box::<webrtc::rtp::codecs::h264::H264Payloader>::default())
        } else if video {
            (&self.video, self.frame, 90_000, Box::<webrtc::rtp::codecs::vp8::Vp8Payloader>::default())
        } else {
            (&self.audio, Duration::from_millis(20), 48_000, Box::<webrtc::rtp::codecs::opus::OpusPayloader>::default())
        };
        let packetizer = webrtc::rtp::packetizer::new_packetizer(
            1200,
            0, // the track rewrites payload type and SSRC per binding
            0,
            payloader,
            Box::new(webrtc::rtp::sequence::new_random_sequencer()),
            clock_rate,
        );
        let samples = u32::try_from((period.as_secs_f64() * f64::from(clock_rate)).round() as u64).unwrap_or(0);
        Packetized { frames, period, samples, packetizer: Box::new(packetizer) }
    }
}

/// Splits an H.264 Annex B stream into frames: each frame is its NAL units (SPS,
/// PPS, SEI...) up to and including its slice, with start codes, as the RTP
/// payloader takes them.
fn h264_frames(path: &Path) -> anyhow::Result<Vec<Bytes>> {
    use webrtc::media::io::h264_reader::{H264Reader, NalUnitType};
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = H264Reader::new(std::io::BufReader::new(file), 1 << 20);
    let (mut frames, mut frame) = (Vec::new(), bytes::BytesMut::new());
    while let Ok(nal) = reader.next_nal() {
        frame.extend_from_slice(&[0, 0, 0, 1]);
        frame.extend_from_slice(&nal.data);
        if matches!(nal.unit_type, NalUnitType::CodedSliceIdr | NalUnitType::CodedSliceNonIdr) {
            frames.push(frame.split().freeze());
        }
    }
    Ok(frames)
}
