//! The WebRTC engines: the node's, the str0m driver every participant's PCs
//! run on, on the node's one media UDP port and one ICE/TCP port
//! ([`crate::rtc`], [`crate::publisher`], [`crate::subscriber`]); and the
//! clients', webrtc-rs, which the node itself never uses (docs/decisions.md
//! §24): the load tester's PCs and the tests' clients are made with it.
//!
//! webrtc-rs: Opus, VP8, VP9, H.264 (the crate's defaults); header extensions
//! for simulcast (`sdes:mid`, `rtp-stream-id`, `repaired-rtp-stream-id`) so
//! rid-based layers from `livekit-client` are demultiplexed, and RFC 6464
//! audio levels for audio; interceptors: NACK, RTCP reports and TWCC feedback
//! (the crate's defaults).

use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
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
    /// The node's public address behind a 1:1 NAT (a cloud's elastic IP),
    /// advertised in place of the host's own address in its host candidates
    /// (LiveKit's `rtc.node_ip`); `None` advertises the host's addresses
    /// (default).
    pub node_ip: Option<std::net::IpAddr>,
    /// The one UDP port of the str0m driver, which every subscriber PC of the
    /// node shares (LiveKit's `rtc.udp_port`); `None` takes an ephemeral port
    /// (default; the candidates say which).
    pub udp_port: Option<u16>,
    /// The driver's TCP port for ICE over TCP (RFC 6544; LiveKit's
    /// `rtc.tcp_port`), for clients whose network lets no UDP through; `None`
    /// takes an ephemeral port (default; the candidates say which). Bound on
    /// the same address as `udp_port`.
    pub tcp_port: Option<u16>,
    /// The address that port binds, and its candidates carry unless `node_ip`
    /// is set (the node's signal address, when it is a specific one); `None`
    /// binds loopback when `loopback_only`, else every address, advertising the
    /// one this host reaches the internet from (default).
    pub udp_ip: Option<std::net::IpAddr>,
}

impl IceConfig {
    /// Loopback only, with loopback candidates, ephemeral ports, no NAT
    /// address: a node or client for tests and the fuzz harness.
    pub fn loopback() -> Self {
        Self { include_loopback: true, loopback_only: true, ..Self::default() }
    }
}

/// Errors setting up the engine or a peer connection. All are ours or the host's.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The `webrtc` crate refused the configuration or failed.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::Error),
    /// The media UDP port could not be bound or driven.
    #[error("media UDP port: {0}")]
    Udp(#[from] std::io::Error),
    /// The str0m driver refused a peer.
    #[error("{0}")]
    Driver(#[from] crate::rtc::AddError),
}

/// The node's WebRTC engines.
pub struct Engine {
    /// webrtc-rs, for the clients' PCs ([`Engine::client`]): simulcast header
    /// extensions registered. `None` for the node's engine.
    api: Option<API>,
    /// The node's str0m driver: its socket bound at startup, its task started
    /// on first use (inside the runtime). `None` for the load tester's engine.
    rtc: Option<RtcPort>,
}

struct RtcPort {
    socket: std::sync::Mutex<Option<(std::net::UdpSocket, std::net::TcpListener)>>,
    advertise: Option<std::net::IpAddr>,
    driver: std::sync::OnceLock<crate::rtc::Driver>,
}

impl Engine {
    /// Builds the node's engine: str0m only (its driver starts on first
    /// use). It binds the node's media UDP port ([`IceConfig::udp_port`]) and
    /// ICE/TCP port ([`IceConfig::tcp_port`]) on [`IceConfig::udp_ip`], else
    /// loopback when `loopback_only`, else every address; its candidates carry
    /// `node_ip`, else the address bound, else (bound to every address) the
    /// one this host reaches the internet from.
    ///
    /// Errors: a port cannot be bound.
    pub fn new(ice: &IceConfig) -> Result<Self, EngineError> {
        let mut engine = Self { api: None, rtc: None };
        let ip: std::net::IpAddr = match ice.udp_ip {
            Some(ip) => ip,
            None if ice.loopback_only => std::net::Ipv4Addr::LOCALHOST.into(),
            None => std::net::Ipv4Addr::UNSPECIFIED.into(),
        };
        let udp = std::net::UdpSocket::bind((ip, ice.udp_port.unwrap_or(0)))?;
        let tcp = std::net::TcpListener::bind((ip, ice.tcp_port.unwrap_or(0)))?;
        let advertise = ice.node_ip.or_else(|| ip.is_unspecified().then(outbound_ip));
        engine.rtc = Some(RtcPort {
            socket: std::sync::Mutex::new(Some((udp, tcp))),
            advertise,
            driver: std::sync::OnceLock::new(),
        });
        Ok(engine)
    }

    /// The node's str0m driver, started on first call (inside a tokio runtime).
    ///
    /// Errors: the load tester's engine has none, or the socket could not be
    /// registered with the runtime.
    pub fn driver(&self) -> Result<&crate::rtc::Driver, EngineError> {
        let Some(port) = &self.rtc else {
            return Err(std::io::Error::other("this engine has no media UDP port").into());
        };
        if let Some(d) = port.driver.get() {
            return Ok(d);
        }
        let mut socket = port.socket.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = port.driver.get() {
            return Ok(d);
        }
        let Some((udp, tcp)) = socket.take() else {
            return Err(std::io::Error::other("media UDP port lost").into());
        };
        let driver = crate::rtc::Driver::start(udp, Some(tcp), port.advertise)?;
        Ok(port.driver.get_or_init(|| driver))
    }

    /// The address of the node's media UDP port, as bound (`None` for the load tester's).
    pub fn udp_addr(&self) -> Option<std::net::SocketAddr> {
        let port = self.rtc.as_ref()?;
        if let Some(d) = port.driver.get() {
            return Some(d.local_addr());
        }
        port.socket.lock().unwrap_or_else(|e| e.into_inner()).as_ref()?.0.local_addr().ok()
    }

    /// The address of the node's ICE/TCP port, as bound (`None` for the load tester's).
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        let port = self.rtc.as_ref()?;
        if let Some(d) = port.driver.get() {
            return d.tcp_local_addr();
        }
        port.socket.lock().unwrap_or_else(|e| e.into_inner()).as_ref()?.1.local_addr().ok()
    }

    /// Builds an engine for webrtc-rs peers that play a client's part against
    /// an SFU (the load tester, the tests): Opus, VP8, VP9, H.264, the
    /// simulcast and audio-level extensions, and the SRTP profiles a browser
    /// offers (webrtc-rs's default: AEAD_AES_128_GCM first), so that each SFU
    /// under test negotiates its own choice.
    pub fn client(ice: &IceConfig) -> Result<Self, EngineError> {
        Ok(Self { api: Some(Self::api(ice)?), rtc: None })
    }

    fn api(ice: &IceConfig) -> Result<API, EngineError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        for uri in SIMULCAST_EXTENSIONS {
            media.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: (*uri).to_owned() },
                RTPCodecType::Video,
                None,
            )?;
        }
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_EXTENSION.to_owned() },
            RTPCodecType::Audio,
            None,
        )?;
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
        Ok(APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build())
    }

    /// A new webrtc-rs peer connection with no ICE servers (the SFU is
    /// reachable directly), able to receive rid simulcast: a PC of the load
    /// tester or of a test's client.
    ///
    /// Errors: the node's engine ([`Engine::new`]) has none to make.
    pub async fn peer_connection(&self) -> Result<Arc<RTCPeerConnection>, EngineError> {
        let Some(api) = &self.api else {
            return Err(std::io::Error::other("the node's engine makes no webrtc-rs peer connections").into());
        };
        Ok(Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?))
    }
}

/// The address this host would reach the internet from (a UDP `connect` picks
/// the route and sends nothing; 192.0.2.1 is TEST-NET-1, RFC 5737), advertised
/// by the media port when no `node_ip` is set; loopback without a route.
fn outbound_ip() -> std::net::IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect("192.0.2.1:9")?;
        s.local_addr()
    });
    match probe {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
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

    /// A node's peers offer two host candidates, both on the node's public
    /// address behind a 1:1 NAT: the media UDP port, and the ICE/TCP port as
    /// a passive TCP candidate (RFC 6544 §4.5).
    #[tokio::test]
    async fn candidates_carry_the_node_ip_and_both_media_ports() {
        let ice = IceConfig { node_ip: Some([203, 0, 113, 7].into()), ..IceConfig::loopback() };
        let engine = Engine::new(&ice).unwrap();
        let (udp, tcp) = (engine.udp_addr().unwrap(), engine.tcp_addr().unwrap());
        assert_eq!(udp.ip(), tcp.ip(), "both bound on one address");
        let peer = engine
            .driver()
            .unwrap()
            .add(str0m::Rtc::builder().set_ice_lite(true).build(crate::rtc::now()))
            .await
            .unwrap();
        let offer = peer
            .with(|rtc| {
                let mut change = rtc.sdp_api();
                change.add_channel("probe".into());
                change.apply().map(|(offer, _)| offer.to_sdp_string())
            })
            .await
            .unwrap()
            .expect("an offer");
        let candidates: Vec<Vec<&str>> =
            offer.lines().filter_map(|l| l.strip_prefix("a=candidate:")).map(|c| c.split(' ').collect()).collect();
        let summary: Vec<(&str, &str, &str, Option<&str>)> =
            candidates.iter().map(|c| (c[2], c[4], c[5], tcptype(c))).collect();
        let (udp_port, tcp_port) = (udp.port().to_string(), tcp.port().to_string());
        assert_eq!(
            summary,
            vec![
                ("udp", "203.0.113.7", udp_port.as_str(), None),
                ("tcp", "203.0.113.7", tcp_port.as_str(), Some("passive"))
            ],
            "{offer}"
        );
    }

    /// The value after `tcptype` in a candidate's words.
    fn tcptype<'a>(words: &[&'a str]) -> Option<&'a str> {
        let at = words.iter().position(|w| *w == "tcptype")?;
        words.get(at + 1).copied()
    }
}
