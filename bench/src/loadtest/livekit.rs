//! The LiveKit target: participants that speak LiveKit's signal protocol over
//! `ws(s)://HOST/rtc` (Meridian's gateway or a node, or a LiveKit server) with a
//! dual peer connection, as livekit-client does: a publisher PC that offers, a
//! subscriber PC that answers the SFU's offers. Joining mints a token per
//! participant; the SFU subscribes everyone to everything (auto-subscribe), and
//! each received track is measured under its track SID.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use meridian_auth::{Grants, MintRequest, TokenAuthority};
use meridian_sfu::engine::Engine;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

use super::clips::Clips;
use super::config::Config;
use super::measure::{read_track, Shared};
use super::send::{send_media, Published};
use super::sync::lock;

/// Joins every room's publishers (who then publish) and subscribers through
/// LiveKit's signal protocol; the SFU subscribes everyone to everything.
pub(crate) async fn join_rooms(
    cfg: &Config,
    clips: &Arc<Clips>,
    engine: &Arc<Engine>,
    shared: &Arc<Shared>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Participant>> {
    let authority = TokenAuthority::new(&cfg.api_key, &cfg.api_secret);
    let mut joined = Vec::new();
    for room in 0..cfg.rooms {
        for i in 0..cfg.publishers + cfg.subscribers {
            let publisher = i < cfg.publishers;
            let identity = format!("{}-{room}-{i}", if publisher { "pub" } else { "sub" });
            let token = authority
                .mint(&MintRequest {
                    room: format!("load-{room}").into(),
                    identity: identity.as_str().into(),
                    name: String::new(),
                    metadata: String::new(),
                    ttl: Duration::from_secs(3600),
                    grants: Grants::default(),
                })?
                .jwt;
            let url = format!("{}/rtc?access_token={token}&auto_subscribe=1&sdk=rust&protocol=16", cfg.url);
            let p = tokio::time::timeout(
                Duration::from_secs(20),
                Participant::join(&url, Arc::clone(engine), Arc::clone(shared), stop_rx.clone()),
            )
            .await
            .with_context(|| format!("{identity} did not join within 20 s"))??;
            if publisher {
                p.publish(clips, stop_rx.clone()).await.with_context(|| format!("{identity} publishing"))?;
            }
            joined.push(p);
        }
    }
    Ok(joined)
}

/// The channel to a participant's signal connection.
type Out = mpsc::UnboundedSender<proto::signal_request::Message>;

/// One participant: a signal connection and two peer connections.
pub(crate) struct Participant {
    out: Out,
    publisher: Arc<RTCPeerConnection>,
    subscriber: Arc<RTCPeerConnection>,
    published: Published,
    /// Answers to the publisher's offers fully applied (`set_remote_description`
    /// returned), counted by the signal loop.
    answers: tokio::sync::watch::Receiver<u32>,
    shared: Arc<Shared>,
}

impl Participant {
    async fn join(
        url: &str,
        engine: Arc<Engine>,
        shared: Arc<Shared>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.context("signal connection")?;
        let (mut sink, mut stream) = ws.split();
        let join = loop {
            let Some(frame) = stream.next().await else { bail!("signal closed before JoinResponse") };
            if let Frame::Binary(b) = frame? {
                if let Some(proto::signal_response::Message::Join(j)) = proto::SignalResponse::decode(b)?.message {
                    break j;
                }
            }
        };
        if join.participant.is_none() {
            bail!("JoinResponse without a participant");
        }
        let (out, mut out_rx) = mpsc::unbounded_channel::<proto::signal_request::Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let bytes = proto::SignalRequest { message: Some(m) }.encode_to_vec();
                if sink.send(Frame::Binary(bytes.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let publisher = engine.peer_connection().await?;
        let subscriber = engine.peer_connection().await?;
        for (pc, target) in
            [(&publisher, proto::SignalTarget::Publisher), (&subscriber, proto::SignalTarget::Subscriber)]
        {
            let out = out.clone();
            pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
                let out = out.clone();
                Box::pin(async move {
                    let Some(json) = c.and_then(|c| c.to_json().ok()).and_then(|i| serde_json::to_string(&i).ok())
                    else {
                        return;
                    };
                    let _ = out.send(proto::signal_request::Message::Trickle(proto::TrickleRequest {
                        candidate_init: json,
                        target: target as i32,
                        r#final: false,
                    }));
                })
            }));
        }
        let stats_shared = Arc::clone(&shared);
        let stop_reading = stop.clone();
        subscriber.on_track(Box::new(move |track: Arc<TrackRemote>, _, _| {
            let shared = Arc::clone(&stats_shared);
            let stop = stop_reading.clone();
            // webrtc-rs awaits this handler before it reports the next track, so
            // the reading runs on its own task.
            tokio::spawn(read_track(Arc::clone(&track), track.id(), shared, stop));
            Box::pin(async {})
        }));
        let published: Published = Arc::default();
        let (answered, answers) = tokio::sync::watch::channel(0);
        let p = Self {
            out: out.clone(),
            publisher: Arc::clone(&publisher),
            subscriber: Arc::clone(&subscriber),
            published: Arc::clone(&published),
            answers,
            shared,
        };
        tokio::spawn(signal_loop(stream, out, (publisher, subscriber), published, answered, stop));
        Ok(p)
    }

    /// Adds a video track (VP8 or H.264, as the clip is) and an Opus track (as
    /// the clips allow) one at a time, as livekit-client does: announce
    /// (AddTrackRequest, naming the video codec), offer, wait for the answer,
    /// then the next; each starts sending once answered.
    async fn publish(&self, clips: &Arc<Clips>, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        for (offer_id, (codec, kind)) in (1u32..).zip(clips.tracks()) {
            let cid = format!("{}-{}", kind.as_str_name().to_lowercase(), rand::random::<u32>());
            let video = kind == proto::TrackType::Video;
            let source = if video { proto::TrackSource::Camera } else { proto::TrackSource::Microphone };
            let track = Arc::new(TrackLocalStaticRTP::new(codec, cid.clone(), "loadtest".into()));
            self.publisher.add_track(Arc::clone(&track) as _).await?;
            let _ = self.out.send(proto::signal_request::Message::AddTrack(proto::AddTrackRequest {
                cid: cid.clone(),
                name: cid.clone(),
                r#type: kind as i32,
                width: if video { 1280 } else { 0 },
                height: if video { 720 } else { 0 },
                source: source as i32,
                simulcast_codecs: if video {
                    vec![proto::SimulcastCodec {
                        codec: clips.video_codec.name().into(),
                        cid: cid.clone(),
                        ..Default::default()
                    }]
                } else {
                    Vec::new()
                },
                ..Default::default()
            }));
            let offer = self.publisher.create_offer(None).await?;
            self.publisher.set_local_description(offer.clone()).await?;
            let _ = self.out.send(proto::signal_request::Message::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.sdp,
                id: offer_id,
                ..Default::default()
            }));
            // Not the signaling state: webrtc-rs reports `stable` before it has
            // taken the answer's codecs, and an offer made in between has a
            // section with none ("RTPSender created with no codecs").
            let mut answers = self.answers.clone();
            tokio::time::timeout(Duration::from_secs(10), answers.wait_for(|n| *n >= offer_id))
                .await
                .context("no answer within 10 s")?
                .context("signal connection closed")?;
            let clips = Arc::clone(clips);
            let published = Arc::clone(&self.published);
            let shared = Arc::clone(&self.shared);
            let stop = stop.clone();
            tokio::spawn(async move { send_media(cid, kind, track, clips, (published, shared), stop).await });
        }
        Ok(())
    }

    /// Leaves the room and closes both peer connections.
    pub(crate) async fn close(self) {
        let _ = self.out.send(proto::signal_request::Message::Leave(proto::LeaveRequest::default()));
        let _ = self.publisher.close().await;
        let _ = self.subscriber.close().await;
    }
}

async fn signal_loop(
    mut stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    >,
    out: Out,
    (publisher, subscriber): (Arc<RTCPeerConnection>, Arc<RTCPeerConnection>),
    published: Published,
    answered: tokio::sync::watch::Sender<u32>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Trickled candidates that came before the description, [publisher, subscriber].
    let mut pending: [Vec<RTCIceCandidateInit>; 2] = [Vec::new(), Vec::new()];
    loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(Ok(Frame::Binary(b))) = frame else { return };
        let Ok(proto::SignalResponse { message: Some(m) }) = proto::SignalResponse::decode(b) else { continue };
        use proto::signal_response::Message as In;
        let result: anyhow::Result<()> = async {
            match m {
                In::Answer(a) => {
                    publisher.set_remote_description(RTCSessionDescription::answer(a.sdp)?).await?;
                    answered.send_modify(|n| *n += 1);
                    for init in pending[0].drain(..) {
                        publisher.add_ice_candidate(init).await?;
                    }
                }
                In::Offer(o) => {
                    subscriber.set_remote_description(RTCSessionDescription::offer(o.sdp.clone())?).await?;
                    for init in pending[1].drain(..) {
                        subscriber.add_ice_candidate(init).await?;
                    }
                    let answer = subscriber.create_answer(None).await?;
                    subscriber.set_local_description(answer.clone()).await?;
                    await_receivers(&subscriber, &o.sdp).await;
                    let _ = out.send(proto::signal_request::Message::Answer(proto::SessionDescription {
                        r#type: "answer".into(),
                        sdp: answer.sdp,
                        id: o.id,
                        ..Default::default()
                    }));
                }
                In::Trickle(t) => {
                    let init: RTCIceCandidateInit = serde_json::from_str(&t.candidate_init)?;
                    let subscriber_side = t.target == proto::SignalTarget::Subscriber as i32;
                    let pc = if subscriber_side { &subscriber } else { &publisher };
                    if pc.remote_description().await.is_none() {
                        // Before the answer (or offer): keep it for then.
                        pending[usize::from(subscriber_side)].push(init);
                    } else {
                        pc.add_ice_candidate(init).await?;
                    }
                }
                In::TrackPublished(t) => {
                    if let Some(track) = t.track {
                        lock(&published).insert(t.cid, track.sid);
                    }
                }
                _ => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("signal: {e:#}");
        }
    }
}

/// Waits (at most 2 s) until the receivers for every SSRC the SFU's `offer`
/// declares have started, so the answer goes out only then: the SFU sends media
/// once it has the answer, and media that comes first leaves the track reading
/// nothing (`ErrBufferClosed`). Browsers have no such gap.
async fn await_receivers(pc: &RTCPeerConnection, offer: &str) {
    let declared: Vec<_> = meridian_sfu::sdp::media_sections(offer)
        .iter()
        .flat_map(meridian_sfu::sdp::MediaSection::declared_streams)
        .collect();
    let _ = meridian_sfu::engine::await_receivers(pc, &declared, Duration::from_secs(2)).await;
}
