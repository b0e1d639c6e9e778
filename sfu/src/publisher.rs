//! A participant's publisher PC on the node's str0m driver (LiveKit's: the
//! client offers its tracks and its data channels, the SFU answers), the
//! counterpart of [`crate::subscriber`] (docs/decisions.md §24, fourth step).
//!
//! ICE-lite on the node's one UDP port, RTP mode: each packet arrives as an
//! `Event::RtpPacket` on the [`Peer`], with the media section and simulcast
//! RID str0m has mapped its SSRC to ([`PublisherPc::layer_of`]: Chrome sends
//! the MID and RID header extensions only on a stream's first packets).
//! str0m sends the publisher receiver reports, NACKs for lost packets and
//! TWCC feedback (so its encoder's estimate, and with it its simulcast
//! layers, can ramp up); keyframes are asked for per layer
//! ([`PublisherPc::request_keyframe`]). The client's data channels
//! (`_reliable`, `_lossy`) open on it and are known by label
//! ([`PublisherPc::channel_opened`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::Codec as Str0mCodec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::Ssrc;
use str0m::Rtc;

use crate::participant::DataKind;
use crate::rtc::{AddError, Closed, Driver, Peer, PeerHandle};

/// How often str0m reports each received stream's ingress stats.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Why an offer was not answered. The client's fault, except `Closed`.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The SDP does not parse, or str0m refused it.
    #[error("publisher offer: {0}")]
    Refused(String),
    /// The PC is gone.
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// What a publisher's media section carries, as negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec's MIME type as LiveKit writes it (`video/VP8`, `video/H264`,
    /// `audio/opus`, …): the first the answer accepted.
    pub mime_type: String,
    /// Its RTP clock rate, in Hz.
    pub clock_rate: u32,
}

/// A participant's publisher PC on a [`Driver`].
pub struct PublisherPc {
    peer: PeerHandle,
    /// The client's data channels opened so far, by str0m's id.
    channels: Mutex<HashMap<ChannelId, DataKind>>,
}

impl PublisherPc {
    /// A new ICE-lite publisher PC on `driver`; the caller reads the returned
    /// [`Peer`]'s events (connection state, RTP, the client's data channels,
    /// ingress stats). Dropping that `Peer` closes the PC.
    ///
    /// Errors: the driver has ended.
    pub async fn new(driver: &Driver) -> Result<(Self, Peer), AddError> {
        let rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(crate::rtc::now());
        let peer = driver.add(rtc).await?;
        Ok((Self { peer: peer.handle(), channels: Mutex::new(HashMap::new()) }, peer))
    }

    /// Answers the client's offer `sdp`. A media section whose mid
    /// `preferred` maps to a codec (the MIME type its track asked for in
    /// `AddTrackRequest`) is offered that codec only ([`crate::sdp::keep_codec`]),
    /// so the publisher sends it.
    ///
    /// Errors: the offer does not parse or str0m refuses it (nothing changes
    /// then), or the PC is gone.
    pub async fn accept_offer(&self, sdp: &str, preferred: &HashMap<String, String>) -> Result<String, OfferError> {
        let sdp = crate::sdp::keep_codec(&crate::sdp::trimmed(sdp), |mid| preferred.get(mid).map(String::as_str));
        let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| OfferError::Refused(e.to_string()))?;
        self.peer
            .with(move |rtc| rtc.sdp_api().accept_offer(offer).map(|answer| answer.to_sdp_string()))
            .await?
            .map_err(|e| OfferError::Refused(e.to_string()))
    }

    /// What media section `mid` carries, once an answer has accepted it;
    /// `None` for a section str0m does not have, or with no codec it knows.
    ///
    /// Errors: the PC is gone.
    pub async fn negotiated(&self, mid: Mid) -> Result<Option<Negotiated>, Closed> {
        self.peer
            .with(move |rtc| {
                let media = rtc.media(mid)?;
                let (kind, pts) = (media.kind(), media.remote_pts().to_vec());
                let params = rtc.codec_config().params();
                let spec = pts.iter().find_map(|pt| params.iter().find(|p| p.pt() == *pt))?.spec();
                let mime_type = mime_of(spec.codec)?;
                Some(Negotiated { kind, mime_type: mime_type.to_owned(), clock_rate: spec.clock_rate.get() })
            })
            .await
    }

    /// The media section and simulcast RID (`None` without simulcast) that
    /// str0m has mapped the stream `ssrc` to; `None` for an SSRC it does not know.
    ///
    /// Errors: the PC is gone.
    pub async fn layer_of(&self, ssrc: Ssrc) -> Result<Option<(Mid, Option<Rid>)>, Closed> {
        self.peer.with(move |rtc| rtc.direct_api().stream_rx(&ssrc).map(|s| (s.mid(), s.rid()))).await
    }

    /// Asks the publisher for a keyframe of layer `rid` of media section
    /// `mid` ([`request_keyframe`]).
    pub fn request_keyframe(&self, mid: Mid, rid: Option<Rid>) {
        request_keyframe(&self.peer, mid, rid);
    }

    /// Records the client's data channel `id` opened with `label`; returns its
    /// kind, or `None` for a label LiveKit does not use (its data is ignored).
    pub fn channel_opened(&self, id: ChannelId, label: &str) -> Option<DataKind> {
        let kind = DataKind::from_label(label)?;
        lock(&self.channels).insert(id, kind);
        Some(kind)
    }

    /// The kind of the client's data channel `id`, once open.
    pub fn channel_kind(&self, id: ChannelId) -> Option<DataKind> {
        lock(&self.channels).get(&id).copied()
    }

    /// Adds a candidate the client trickled (see [`PeerHandle::add_remote_candidate`]).
    pub fn add_remote_candidate(&self, candidate: &str) {
        self.peer.add_remote_candidate(candidate);
    }

    /// A handle on the PC's peer in the driver.
    pub fn handle(&self) -> PeerHandle {
        self.peer.clone()
    }

    /// Closes the PC. Idempotent.
    pub fn close(&self) {
        self.peer.close();
    }
}

/// Asks the publisher on `peer` for a keyframe (PLI, RFC 4585 §6.3.1) of the
/// layer `rid` of media section `mid`. Dropped (and logged) when the driver is
/// behind or the layer has no stream yet.
pub fn request_keyframe(peer: &PeerHandle, mid: Mid, rid: Option<Rid>) {
    let posted = peer.post(move |rtc| {
        let mut api = rtc.direct_api();
        match api.stream_rx_by_mid(mid, rid) {
            Some(rx) => rx.request_keyframe(KeyframeRequestKind::Pli),
            None => tracing::debug!(%mid, ?rid, "keyframe request for a layer with no stream"),
        }
    });
    if let Err(e) = posted {
        tracing::debug!(%mid, ?rid, error = %e, "keyframe request dropped");
    }
}

/// The MIME type LiveKit gives str0m's `codec` in `TrackInfo.mime_type`.
fn mime_of(codec: Str0mCodec) -> Option<&'static str> {
    Some(match codec {
        Str0mCodec::Opus => "audio/opus",
        Str0mCodec::Vp8 => "video/VP8",
        Str0mCodec::Vp9 => "video/VP9",
        Str0mCodec::H264 => "video/H264",
        Str0mCodec::Av1 => "video/AV1",
        _ => return None,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation; a poisoned lock still
    // guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Instant;

    use str0m::Event;
    use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
    use webrtc::peer_connection::RTCPeerConnection;
    use webrtc::rtp::extension::audio_level_extension::AudioLevelExtension;
    use webrtc::rtp::extension::HeaderExtension;
    use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
    use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
    use webrtc::track::track_local::TrackLocalWriter;

    use super::*;
    use crate::engine::{Engine, IceConfig};

    const WAIT: Duration = Duration::from_secs(10);

    fn vp8() -> RTCRtpCodecCapability {
        RTCRtpCodecCapability { mime_type: "video/VP8".into(), clock_rate: 90_000, ..Default::default() }
    }

    /// The client's offer, once its candidates are gathered.
    async fn offer_of(client: &RTCPeerConnection) -> String {
        let offer = client.create_offer(None).await.unwrap();
        let mut gathered = client.gathering_complete_promise().await;
        client.set_local_description(offer).await.unwrap();
        let _ = gathered.recv().await;
        client.local_description().await.unwrap().sdp
    }

    fn packet(seq: u16) -> webrtc::rtp::packet::Packet {
        webrtc::rtp::packet::Packet {
            header: webrtc::rtp::header::Header {
                version: 2,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0x10, 1, 2, 3]),
        }
    }

    /// A webrtc-rs client (a peer we did not write) publishes VP8 in two
    /// simulcast layers, Opus with RFC 6464 levels and a `_reliable` data
    /// channel, as livekit-client does: the answer makes the PC connect, each
    /// layer's SSRC maps to its media section and RID, the audio level comes
    /// through, the channel opens under its kind and its message arrives; a
    /// keyframe request for a layer goes out without error.
    #[tokio::test]
    async fn a_client_publishes_simulcast_audio_and_data_on_it() {
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let (pc, mut events) = PublisherPc::new(&driver).await.unwrap();
        let client = Engine::client(&IceConfig::loopback()).unwrap().peer_connection().await.unwrap();
        let q = Arc::new(TrackLocalStaticRTP::new_with_rid(vp8(), "cam".into(), "q".into(), "PA_x".into()));
        let h = Arc::new(TrackLocalStaticRTP::new_with_rid(vp8(), "cam".into(), "h".into(), "PA_x".into()));
        let sender = client.add_track(Arc::clone(&q) as _).await.unwrap();
        sender.add_encoding(Arc::clone(&h) as _).await.unwrap();
        let opus = RTCRtpCodecCapability {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            ..Default::default()
        };
        let mic = Arc::new(TrackLocalStaticRTP::new(opus, "mic".into(), "PA_x".into()));
        client.add_track(Arc::clone(&mic) as _).await.unwrap();
        let dc = client.create_data_channel("_reliable", None).await.unwrap();
        let offer = offer_of(&client).await;
        let answer = pc.accept_offer(&offer, &HashMap::new()).await.unwrap();
        client.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
        let sections = crate::sdp::media_sections(&offer);
        let mid_of = |cid: &str| {
            let s = sections.iter().find(|s| s.track_id.as_deref() == Some(cid)).expect("a section");
            Mid::from(s.mid.as_deref().expect("a mid"))
        };
        let (video, audio) = (mid_of("cam"), mid_of("mic"));
        let video_is = pc.negotiated(video).await.unwrap().expect("negotiated");
        assert_eq!(
            (video_is.kind, video_is.mime_type.as_str(), video_is.clock_rate),
            (MediaKind::Video, "video/VP8", 90_000)
        );
        assert_eq!(pc.negotiated(audio).await.unwrap().map(|n| n.mime_type), Some("audio/opus".into()));

        let sending = async {
            for seq in 0..500u16 {
                let _ = q.write_rtp(&packet(seq)).await;
                let _ = h.write_rtp(&packet(seq)).await;
                let level = HeaderExtension::AudioLevel(AudioLevelExtension { level: 30, voice: true });
                let _ = mic.write_rtp_with_extensions(&packet(seq), &[level]).await;
                let _ = dc.send_text("hello".to_owned()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let receiving = async {
            let (mut connected, mut layers, mut level, mut data) = (false, HashSet::new(), None, None);
            while let Some(event) = events.next_event().await {
                match event {
                    Event::Connected => connected = true,
                    Event::RtpPacket(p) => {
                        if let Some((mid, rid)) = pc.layer_of(p.header.ssrc).await.unwrap() {
                            if mid == audio {
                                level = level.or(p.header.ext_vals.audio_level);
                            }
                            layers.insert((mid, rid.map(|r| r.to_string())));
                        }
                    }
                    Event::ChannelOpen(id, label) => {
                        assert_eq!(pc.channel_opened(id, &label), Some(DataKind::Reliable))
                    }
                    Event::ChannelData(d) => data = Some((pc.channel_kind(d.id), d.data)),
                    _ => {}
                }
                let video_layers = [Some("q"), Some("h")].map(|r| (video, r.map(str::to_owned)));
                if connected && video_layers.iter().all(|l| layers.contains(l)) && level.is_some() && data.is_some() {
                    return (layers, level, data);
                }
            }
            panic!("peer gone");
        };
        let started = Instant::now();
        let (layers, level, data) = tokio::select! {
            got = tokio::time::timeout(WAIT, receiving) => got.expect("layers, level and data within 10 s"),
            _ = sending => panic!("not everything arrived while the client sent"),
        };
        assert!(layers.contains(&(audio, None)), "audio without simulcast: {layers:?}");
        assert_eq!(level, Some(-30), "RFC 6464 level as str0m gives it (-dBov)");
        assert_eq!(data, Some((Some(DataKind::Reliable), b"hello".to_vec())));
        pc.request_keyframe(video, Some(Rid::from("h")));
        tracing::debug!(elapsed = ?started.elapsed(), "published");
        client.close().await.unwrap();
    }

    /// A video section whose track asked for H.264 is answered with H.264
    /// only, though the client offers VP8 first.
    #[tokio::test]
    async fn the_codec_a_track_asked_for_is_the_one_negotiated() {
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let (pc, _events) = PublisherPc::new(&driver).await.unwrap();
        let client = Engine::client(&IceConfig::loopback()).unwrap().peer_connection().await.unwrap();
        client.add_track(Arc::new(TrackLocalStaticRTP::new(vp8(), "cam".into(), "PA_x".into())) as _).await.unwrap();
        let offer = offer_of(&client).await;
        let mid = crate::sdp::media_sections(&offer)[0].mid.clone().expect("a mid");
        assert!(offer.contains("VP8/90000") && offer.contains("H264/90000"), "both offered: {offer}");
        let preferred = HashMap::from([(mid.clone(), "video/h264".to_owned())]);
        let answer = pc.accept_offer(&offer, &preferred).await.unwrap();
        assert!(!answer.contains("VP8/90000") && answer.contains("H264/90000"), "{answer}");
        let negotiated = pc.negotiated(Mid::from(mid.as_str())).await.unwrap().expect("negotiated");
        assert_eq!(negotiated.mime_type, "video/H264");
        client.close().await.unwrap();
    }
}
