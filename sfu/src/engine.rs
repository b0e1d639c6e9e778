//! The WebRTC engine: one `webrtc` API object shared by every peer connection of
//! the node, with the codecs, header extensions and interceptors the SFU needs.
//!
//! Codecs: Opus, VP8, VP9, H.264 (the crate's defaults). Header extensions for
//! simulcast (`sdes:mid`, `rtp-stream-id`, `repaired-rtp-stream-id`) so rid-based
//! layers from `livekit-client` are demultiplexed, on the PCs that receive media
//! only (see [`Engine::subscriber_peer_connection`]), and RFC 6464 audio levels
//! on those for audio. Interceptors: NACK, RTCP
//! reports and TWCC feedback (the crate's defaults).

use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpHeaderExtensionCapability, RTPCodecType};

/// RTP header extensions registered for video, needed to receive rid simulcast.
const SIMULCAST_EXTENSIONS: [&str; 3] = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];

/// RFC 6464's client-to-mixer audio level, registered for audio on PCs that
/// receive media: active speakers come from it ([`meridian_forward::speakers`]).
pub const AUDIO_LEVEL_EXTENSION: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// How the node gathers ICE candidates.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// Offer 127.0.0.1 host candidates (dev and loopback tests; default false).
    pub include_loopback: bool,
    /// Only gather candidates on loopback addresses (default false).
    pub loopback_only: bool,
    /// The UDP ports ICE binds its host candidates to, first and last
    /// inclusive (LiveKit's `rtc.port_range_start`/`port_range_end`), so that a
    /// firewall can open exactly them; `None` takes the kernel's ephemeral ports
    /// (default). Each peer connection binds one port of it while it lives.
    pub port_range: Option<(u16, u16)>,
    /// The node's public address behind a 1:1 NAT (a cloud's elastic IP),
    /// advertised in place of the host's own address in its host candidates
    /// (LiveKit's `rtc.node_ip`); `None` advertises the host's addresses
    /// (default).
    pub node_ip: Option<std::net::IpAddr>,
}

/// Errors setting up the engine or a peer connection. All are ours or the host's.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The `webrtc` crate refused the configuration or failed.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::Error),
}

/// The node's WebRTC API.
pub struct Engine {
    /// For PCs that receive media: simulcast header extensions registered.
    api: API,
    /// For PCs that only send down-tracks: no `sdes:mid` extension.
    sending_api: API,
}

impl Engine {
    /// Builds the node's engine. Its peer connections use SRTP with
    /// AES_CM_128_HMAC_SHA1_80 only (see [`Engine::client`] for the difference).
    pub fn new(ice: &IceConfig) -> Result<Self, EngineError> {
        Self::build(ice, true)
    }

    /// Builds an engine for peers that play a client's part against an SFU (the
    /// load tester): the same codecs, extensions and ICE settings, but the SRTP
    /// profiles a browser offers (webrtc-rs's default: AEAD_AES_128_GCM first),
    /// so that each SFU under test negotiates its own choice.
    pub fn client(ice: &IceConfig) -> Result<Self, EngineError> {
        Self::build(ice, false)
    }

    fn build(ice: &IceConfig, sfu_srtp: bool) -> Result<Self, EngineError> {
        Ok(Self { api: Self::api(ice, sfu_srtp, true)?, sending_api: Self::api(ice, sfu_srtp, false)? })
    }

    fn api(ice: &IceConfig, sfu_srtp: bool, simulcast_extensions: bool) -> Result<API, EngineError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        for uri in SIMULCAST_EXTENSIONS.iter().filter(|_| simulcast_extensions) {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: (*uri).to_owned() },
                RTPCodecType::Video,
                None,
            )?;
        }
        if simulcast_extensions {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_EXTENSION.to_owned() },
                RTPCodecType::Audio,
                None,
            )?;
        }
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let mut settings = SettingEngine::default();
        settings.set_network_types(vec![NetworkType::Udp4]);
        // Browsers hide host addresses behind mDNS names; we learn their address from
        // their connectivity checks (peer-reflexive), so no mDNS queries are needed.
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        if ice.include_loopback || ice.loopback_only {
            settings.set_include_loopback_candidate(true);
        }
        if ice.loopback_only {
            settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
        }
        if let Some(ip) = ice.node_ip {
            settings.set_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
        }
        if let Some((first, last)) = ice.port_range {
            let ports = EphemeralUDP::new(first, last).map_err(|e| EngineError::WebRtc(e.into()))?;
            settings.set_udp_network(UDPNetwork::Ephemeral(ports));
        }
        // SRTP with AES_CM_128_HMAC_SHA1_80 only (RFC 3711; WebRTC's mandatory
        // profile, RFC 8827 §6.5), not AEAD_AES_128_GCM: webrtc-srtp's GCM path costs
        // 8.0 µs per 1200-byte packet here against 1.2 µs, and a browser, as the DTLS
        // client, would pick GCM if we allowed it (docs/decisions.md §13).
        if sfu_srtp {
            settings.set_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]);
        }
        Ok(APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build())
    }

    /// A new peer connection with no ICE servers (the SFU is reachable directly),
    /// able to receive rid simulcast: a participant's publisher PC, or any PC of
    /// the load tester.
    pub async fn peer_connection(&self) -> Result<Arc<RTCPeerConnection>, EngineError> {
        Ok(Arc::new(self.api.new_peer_connection(RTCConfiguration::default()).await?))
    }

    /// A new peer connection for a participant's subscriber PC, which sends
    /// down-tracks and receives no media. It negotiates no `sdes:mid` extension:
    /// webrtc-rs 0.17's `TrackLocalStaticRTP` writes the extensions of each of its
    /// bindings into one shared packet, so the second subscriber of a track got the
    /// first one's `sdes:mid` under an id that means something else on its own PC
    /// (seen as transport-cc with one byte: its receiver failed and `on_track`
    /// never fired). Down-tracks are declared by SSRC, so receivers need no MID
    /// to demultiplex them (RFC 9143 §9.2).
    pub async fn subscriber_peer_connection(&self) -> Result<Arc<RTCPeerConnection>, EngineError> {
        Ok(Arc::new(self.sending_api.new_peer_connection(RTCConfiguration::default()).await?))
    }
}

/// A media stream a remote description declares, whose receiver webrtc-rs must
/// have started before the stream's first packet arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclaredStream {
    /// A stream declared by `a=ssrc:` (RFC 5576 §4.1).
    Ssrc(u32),
    /// A simulcast layer declared by `a=rid:<rid> send` in media section `mid`
    /// (RFC 8851 §4); its SSRC is learned from its first packet's RID header
    /// extension.
    Rid {
        /// The section's `a=mid:`.
        mid: String,
        /// The layer's RID (`q`, `h`, `f` from livekit-client).
        rid: String,
    },
}

/// Waits until `pc` has started a receiver for each of `streams`, polling every
/// 2 ms, at most `wait`. webrtc-rs starts receivers on its operations queue after
/// `set_local_description` returns. RTP that arrives before then is lost for good:
/// an SSRC stream is taken for an undeclared one, and a RID layer fails its
/// simulcast probe (`ErrRTPReceiverForRIDTrackStreamNotFound`); either way
/// `on_track` never fires for it. So whoever answers an offer that sends media
/// waits here before sending the answer (the node for publishers, the load tester
/// for the SFU's offers).
///
/// Errors: the streams whose receivers had not started when `wait` ran out.
pub async fn await_receivers(
    pc: &RTCPeerConnection,
    streams: &[DeclaredStream],
    wait: Duration,
) -> Result<(), Vec<DeclaredStream>> {
    // `wait` is ours, but an Instant past its range would panic: no wait then.
    let deadline = Instant::now().checked_add(wait).unwrap_or_else(Instant::now);
    loop {
        let mut started = Vec::new();
        for t in pc.get_transceivers().await {
            let mid = t.mid().map(|m| m.to_string()).unwrap_or_default();
            for track in t.receiver().await.tracks().await {
                let rid = track.rid();
                if rid.is_empty() {
                    started.push(DeclaredStream::Ssrc(track.ssrc()));
                } else {
                    started.push(DeclaredStream::Rid { mid: mid.clone(), rid: rid.to_string() });
                }
            }
        }
        let missing: Vec<DeclaredStream> = streams.iter().filter(|s| !started.contains(s)).cloned().collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(missing);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host candidates of a node's peer connection use ports of its range only.
    #[tokio::test]
    async fn host_candidates_take_their_ports_from_the_configured_range() {
        let range = (47_100, 47_119);
        let ice = IceConfig { include_loopback: true, loopback_only: true, port_range: Some(range), node_ip: None };
        let candidates = gathered(&ice).await;
        let ports: Vec<u16> = candidates.iter().filter_map(|c| c.get(5)?.parse().ok()).collect();
        assert!(!ports.is_empty(), "some host candidate: {candidates:?}");
        assert!(ports.iter().all(|p| (range.0..=range.1).contains(p)), "{ports:?} within {range:?}");
    }

    /// Behind a 1:1 NAT the host candidates carry the public address.
    #[tokio::test]
    async fn host_candidates_carry_the_node_ip_when_one_is_set() {
        let public = std::net::IpAddr::from([203, 0, 113, 7]);
        let ice = IceConfig { include_loopback: true, loopback_only: true, port_range: None, node_ip: Some(public) };
        let candidates = gathered(&ice).await;
        let addresses: Vec<&str> = candidates.iter().filter_map(|c| c.get(4).map(String::as_str)).collect();
        assert!(!addresses.is_empty(), "some host candidate: {candidates:?}");
        assert!(addresses.iter().all(|a| *a == "203.0.113.7"), "{addresses:?}");
    }

    /// The words of each `a=candidate:` line of a node PC's gathered offer.
    async fn gathered(ice: &IceConfig) -> Vec<Vec<String>> {
        let engine = Engine::new(ice).unwrap();
        let pc = engine.peer_connection().await.unwrap();
        pc.create_data_channel("probe", None).await.unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(offer).await.unwrap();
        let _ = gathered.recv().await;
        let sdp = pc.local_description().await.unwrap().sdp;
        pc.close().await.unwrap();
        sdp.lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .map(|c| c.split(' ').map(str::to_owned).collect())
            .collect()
    }
}
