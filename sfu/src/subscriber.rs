//! A participant's subscriber PC (LiveKit's: the SFU offers its down-tracks
//! and its two data channels, the client answers) on the node's str0m driver
//! ([`crate::rtc`]; docs/decisions.md §24): one UDP port for every peer, and
//! str0m's RTP stack per down-track: its own SSRC and RTX SSRC, NACKs answered
//! from its send buffer, header extensions (MID, abs-send-time, transport-wide
//! sequence numbers) written as negotiated on this PC, TWCC bandwidth
//! estimation from the subscriber's feedback.
//!
//! str0m applies a media section only when its offer is answered, and a new
//! offer invalidates one still unanswered ([`str0m::change::SdpPendingOffer`]).
//! So each offer carries every down-track not yet answered (the participant
//! keeps them, see [`OfferRequest`]), and one answer binds what its offer
//! added ([`SubscriberPc::accept_answer`]).

use std::sync::Mutex;
use std::time::Duration;

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec as Str0mCodec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::Rtc;

use crate::participant::DataKind;
use crate::rtc::{AddError, Closed, Driver, Peer, PeerHandle};

/// The estimate str0m's BWE starts from before the subscriber's feedback says
/// more: 300 kbit/s (str0m's example; LiveKit starts its probing near it).
pub const INITIAL_ESTIMATE_BPS: u64 = 300_000;
/// How often str0m reports each down-track's egress stats (loss, RTT and
/// jitter from the subscriber's receiver reports).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Why an answer was not applied. The client's fault, except `Closed`.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No offer is waiting for an answer (a stale or repeated answer).
    #[error("no subscriber offer is waiting for an answer")]
    NotAwaited,
    /// The SDP does not parse, or str0m refused it.
    #[error("subscriber answer: {0}")]
    Refused(String),
    /// The PC is gone.
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// A down-track to add in the next offer: a send-only media section with the
/// `a=msid` livekit-client maps it by.
#[derive(Debug, Clone)]
pub struct NewMedia<K> {
    /// The caller's key for it (the track sid), handed back with its mid.
    pub key: K,
    /// Audio or video.
    pub kind: MediaKind,
    /// `a=msid` stream id: `PA_…|TR_…`.
    pub stream_id: String,
    /// `a=msid` track id: `TR_…` (`TR_…~n` for a later down-track of the same track).
    pub track_id: String,
}

/// What the next offer changes.
#[derive(Debug, Clone)]
pub struct OfferRequest<K> {
    /// Down-tracks not yet carried by an answered offer.
    pub add: Vec<NewMedia<K>>,
    /// Media sections of removed down-tracks, to stop (port 0; str0m may reuse them).
    pub stop: Vec<Mid>,
    /// New ICE credentials (after a resume, as livekit-client waits for).
    pub ice_restart: bool,
}

/// An offer made: its SDP and the media section each added down-track got.
#[derive(Debug)]
pub struct Offer<K> {
    /// The SDP for `SignalResponse.offer`.
    pub sdp: String,
    /// Keys of [`OfferRequest::add`] with their mids, valid once answered.
    pub added: Vec<(K, Mid)>,
}

struct Pending<K> {
    sdp: SdpPendingOffer,
    added: Vec<(K, Mid)>,
    channels: Option<[ChannelId; 2]>,
}

struct State<K> {
    pending: Option<Pending<K>>,
    /// `_reliable` and `_lossy`, once an answer has opened them.
    channels: Option<[ChannelId; 2]>,
}

/// A participant's subscriber PC on a [`Driver`].
pub struct SubscriberPc<K> {
    peer: PeerHandle,
    state: Mutex<State<K>>,
}

impl<K: Clone + Send + 'static> SubscriberPc<K> {
    /// A new ICE-lite subscriber PC on `driver`, with BWE on; the caller reads
    /// the returned [`Peer`]'s events (connection state, keyframe requests,
    /// egress stats, the bitrate estimate). Dropping that `Peer` closes the PC.
    ///
    /// Errors: the driver has ended.
    pub async fn new(driver: &Driver) -> Result<(Self, Peer), AddError> {
        let rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE_BPS)))
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(crate::rtc::now());
        let peer = driver.add(rtc).await?;
        let me = Self { peer: peer.handle(), state: Mutex::new(State { pending: None, channels: None }) };
        Ok((me, peer))
    }

    /// Makes an offer of `request` (and of the data channels, until an answer
    /// has opened them), superseding one still unanswered. `None` when it
    /// changes nothing that needs negotiating.
    ///
    /// Errors: the PC is gone.
    pub async fn offer(&self, request: OfferRequest<K>) -> Result<Option<Offer<K>>, Closed> {
        let channels_open = lock(&self.state).channels.is_some();
        let made = self
            .peer
            .with(move |rtc| {
                let mut api = rtc.sdp_api();
                let channels = (!channels_open).then(|| {
                    [
                        api.add_channel(DataKind::Reliable.label().to_owned()),
                        api.add_channel_with_config(ChannelConfig {
                            label: DataKind::Lossy.label().to_owned(),
                            ordered: false,
                            reliability: Reliability::MaxRetransmits { retransmits: 0 },
                            ..Default::default()
                        }),
                    ]
                });
                let added: Vec<(K, Mid)> = request
                    .add
                    .into_iter()
                    .map(|m| {
                        let mid = api.add_media(
                            m.kind,
                            str0m::media::Direction::SendOnly,
                            Some(m.stream_id),
                            Some(m.track_id),
                            None,
                        );
                        (m.key, mid)
                    })
                    .collect();
                for mid in request.stop {
                    api.stop_media(mid);
                }
                if request.ice_restart {
                    api.ice_restart(true);
                }
                api.apply().map(|(offer, sdp)| (offer.to_sdp_string(), Pending { sdp, added, channels }))
            })
            .await?;
        let Some((sdp, pending)) = made else { return Ok(None) };
        let added = pending.added.clone();
        lock(&self.state).pending = Some(pending);
        Ok(Some(Offer { sdp, added }))
    }

    /// Applies the client's answer to the last offer; returns what that offer
    /// added (keys and mids), which can carry media from now on.
    ///
    /// Errors: no offer awaits an answer, or the answer is refused (the offer
    /// stays unanswered then: the caller offers again or closes).
    pub async fn accept_answer(&self, sdp: &str) -> Result<Vec<(K, Mid)>, AnswerError> {
        let answer =
            SdpAnswer::from_sdp_string(&crate::sdp::trimmed(sdp)).map_err(|e| AnswerError::Refused(e.to_string()))?;
        let Some(pending) = lock(&self.state).pending.take() else { return Err(AnswerError::NotAwaited) };
        let Pending { sdp, added, channels } = pending;
        self.peer
            .with(move |rtc| rtc.sdp_api().accept_answer(sdp, answer))
            .await?
            .map_err(|e| AnswerError::Refused(e.to_string()))?;
        let mut state = lock(&self.state);
        if channels.is_some() {
            state.channels = channels;
        }
        Ok(added)
    }

    /// Whether an offer is waiting for its answer.
    pub fn awaiting_answer(&self) -> bool {
        lock(&self.state).pending.is_some()
    }

    /// The payload type the subscriber accepted on `mid` for a track whose
    /// codec is `mime` (`video/VP8`, `video/H264`, `audio/opus`, …; H.264 with
    /// packetization mode 1, as browsers send it); `None` when it accepted none.
    ///
    /// Errors: the PC is gone.
    pub async fn payload_type(&self, mid: Mid, mime: &str) -> Result<Option<Pt>, Closed> {
        let want = codec_of(mime);
        self.peer
            .with(move |rtc| {
                let want = want?;
                let media = rtc.media(mid)?;
                let params = rtc.codec_config().params();
                let accepts = |pt: &Pt| {
                    params.iter().any(|p| {
                        let spec = p.spec();
                        p.pt() == *pt
                            && spec.codec == want
                            && (want != Str0mCodec::H264 || spec.format.packetization_mode == Some(1))
                    })
                };
                media.remote_pts().iter().copied().find(accepts)
            })
            .await
    }

    /// Adds a candidate the client trickled (see [`PeerHandle::add_remote_candidate`]).
    pub fn add_remote_candidate(&self, candidate: &str) {
        self.peer.add_remote_candidate(candidate);
    }

    /// Sends `bytes` on `kind`'s channel. Before an answer has opened the
    /// channels, or when the driver is behind, the packet is dropped (and logged).
    pub fn send_data(&self, kind: DataKind, bytes: bytes::Bytes) {
        let Some(channels) = lock(&self.state).channels else {
            tracing::debug!(?kind, "data packet before the subscriber's channels opened: dropped");
            return;
        };
        let id = channels[kind as usize];
        let posted = self.peer.post(move |rtc| {
            let sent = rtc.channel(id).map(|mut c| c.write(true, &bytes));
            if !matches!(sent, Some(Ok(true))) {
                tracing::debug!(?kind, ?sent, "data packet not taken by the channel");
            }
        });
        if let Err(e) = posted {
            tracing::debug!(?kind, error = %e, "data packet dropped");
        }
    }

    /// A handle for writing RTP on this PC (a down-track's sink).
    pub fn handle(&self) -> PeerHandle {
        self.peer.clone()
    }

    /// Closes the PC. Idempotent.
    pub fn close(&self) {
        self.peer.close();
    }
}

/// str0m's codec for a MIME type, case-insensitively.
fn codec_of(mime: &str) -> Option<Str0mCodec> {
    let (_, name) = mime.split_once('/')?;
    Some(match name.to_ascii_lowercase().as_str() {
        "opus" => Str0mCodec::Opus,
        "vp8" => Str0mCodec::Vp8,
        "vp9" => Str0mCodec::Vp9,
        "h264" => Str0mCodec::H264,
        "av1" => Str0mCodec::Av1,
        _ => return None,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is a take or an assignment; a poisoned lock still
    // guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, IceConfig};
    use crate::rtc::tests::answer_to;

    fn video(id: &str) -> NewMedia<String> {
        NewMedia {
            key: id.to_owned(),
            kind: MediaKind::Video,
            stream_id: format!("PA_a|{id}"),
            track_id: id.to_owned(),
        }
    }

    /// An offer superseded before its answer (an ICE restart after a resume)
    /// is made again with what it carried, once; the client's answer to the
    /// new one binds the section with a payload type for the codec, and a
    /// second answer finds nothing waiting. A stopped section goes to port 0.
    #[tokio::test]
    async fn a_superseded_offer_is_made_again_and_its_answer_binds_the_section() {
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let (pc, _events) = SubscriberPc::<String>::new(&driver).await.unwrap();
        let first =
            pc.offer(OfferRequest { add: vec![video("TR_a")], stop: vec![], ice_restart: false }).await.unwrap();
        assert!(first.is_some_and(|o| o.added.len() == 1));
        assert!(pc.awaiting_answer());
        let second =
            pc.offer(OfferRequest { add: vec![video("TR_a")], stop: vec![], ice_restart: true }).await.unwrap();
        let second = second.expect("an offer");
        assert_eq!(second.sdp.matches("m=video").count(), 1, "the section once, not once per offer: {}", second.sdp);
        assert!(second.sdp.contains("a=msid:PA_a|TR_a TR_a"), "{}", second.sdp);

        let ice = IceConfig::loopback();
        let client = Engine::client(&ice).unwrap().peer_connection().await.unwrap();
        let answer = answer_to(&client, second.sdp).await;
        let added = pc.accept_answer(&answer).await.unwrap();
        assert_eq!(added.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["TR_a"]);
        let mid = added[0].1;
        assert!(pc.payload_type(mid, "video/VP8").await.unwrap().is_some(), "the client accepts VP8");
        assert_eq!(pc.payload_type(mid, "video/x-unknown").await.unwrap(), None);
        assert!(matches!(pc.accept_answer(&answer).await, Err(AnswerError::NotAwaited)));

        let stop = pc.offer(OfferRequest { add: vec![], stop: vec![mid], ice_restart: false }).await.unwrap();
        let stop = stop.expect("stopping a section is negotiated");
        assert!(stop.sdp.contains("m=video 0 "), "{}", stop.sdp);
        client.close().await.unwrap();
    }
}
