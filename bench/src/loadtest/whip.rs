//! The WHIP/WHEP target: the same participants, media and measurements as the
//! other targets, signalled by one HTTP POST per peer connection, as the
//! str0m engine spike (`spike/`, issue 13) takes them: `POST {url}/whip/{room}`
//! with a publisher's offer, `POST {url}/whep/{room}` with a subscriber's
//! receive-only offer (one video and one audio section); each answer is the
//! `201` body. No trickle: each offer carries its candidates.
//!
//! One publisher per room (the spike's rooms have one); its tracks are known
//! to the receivers as `whip:{room}:{kind}`. The SFU rewrites sequence
//! numbers per subscriber; the receivers learn the shift from payload
//! fingerprints, as for Janus.

use std::sync::Arc;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use meridian_sfu::engine::Engine;
use tokio::sync::watch;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

use super::clips::Clips;
use super::config::Config;
use super::measure::{read_track, Shared};
use super::sdp::gathered;
use super::send::{send_media, Published};
use super::sync::lock;

/// One peer connection of the run.
pub(crate) struct Participant {
    pc: Arc<RTCPeerConnection>,
}

impl Participant {
    /// Closes the peer connection.
    pub(crate) async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// POSTs `sdp` to `url` and returns the `201` body.
///
/// Errors: the connection, or any other status (with its body).
async fn post(url: &str, sdp: String) -> anyhow::Result<String> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    let authority = uri.authority().context("URL without host")?.to_string();
    let stream =
        tokio::net::TcpStream::connect(&authority).await.with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post(uri.path())
        .header("host", authority)
        .header("content-type", "application/sdp")
        .body(Full::new(Bytes::from(sdp)))?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = String::from_utf8_lossy(&res.into_body().collect().await?.to_bytes()).into_owned();
    if status != hyper::StatusCode::CREATED {
        bail!("{url}: {status}: {body}");
    }
    Ok(body)
}

/// Joins each room's publisher and subscribers.
///
/// Errors: a refused offer or a peer that could not gather, with who met it.
pub(crate) async fn join_rooms(
    cfg: &Config,
    clips: &Arc<Clips>,
    engine: &Arc<Engine>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<Participant>> {
    if cfg.publishers != 1 {
        bail!("the WHIP target has one publisher per room");
    }
    let mut everyone = Vec::new();
    for r in 0..cfg.rooms {
        let room = format!("r{:08x}", rand::random::<u32>());
        everyone.push(
            publish(cfg, &room, clips, engine, shared, stop).await.with_context(|| format!("room {r} publisher"))?,
        );
        for i in 0..cfg.subscribers {
            everyone.push(
                subscribe(cfg, &room, engine, shared, stop)
                    .await
                    .with_context(|| format!("room {r} subscriber {i}"))?,
            );
        }
    }
    Ok(everyone)
}

async fn publish(
    cfg: &Config,
    room: &str,
    clips: &Arc<Clips>,
    engine: &Engine,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Participant> {
    let pc = engine.peer_connection().await?;
    let published: Published = Arc::default();
    let mut sending = Vec::new();
    for (codec, kind) in clips.tracks() {
        let name = kind.as_str_name().to_lowercase();
        let cid = format!("{name}-{room}");
        let track = Arc::new(TrackLocalStaticRTP::new(codec, cid.clone(), "loadtest".into()));
        pc.add_track(Arc::clone(&track) as _).await?;
        lock(&published).insert(cid.clone(), format!("whip:{room}:{name}"));
        sending.push((cid, kind, track));
    }
    let offer = pc.create_offer(None).await?;
    let local = gathered(&pc, offer).await?;
    let answer = post(&format!("{}/whip/{room}", cfg.url), local.sdp).await?;
    pc.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
    for (cid, kind, track) in sending {
        let (clips, published, shared, stop) =
            (Arc::clone(clips), Arc::clone(&published), Arc::clone(shared), stop.clone());
        tokio::spawn(async move { send_media(cid, kind, track, clips, (published, shared), stop).await });
    }
    Ok(Participant { pc })
}

async fn subscribe(
    cfg: &Config,
    room: &str,
    engine: &Engine,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Participant> {
    let pc = engine.peer_connection().await?;
    for kind in [RTPCodecType::Video, RTPCodecType::Audio] {
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, send_encodings: vec![] };
        pc.add_transceiver_from_kind(kind, Some(init)).await?;
    }
    let (reading, stop_reading, room_key) = (Arc::clone(shared), stop.clone(), room.to_owned());
    pc.on_track(Box::new(move |track: Arc<TrackRemote>, _, _| {
        let kind = if track.kind() == RTPCodecType::Video { "video" } else { "audio" };
        let source = format!("whip:{room_key}:{kind}");
        tokio::spawn(read_track(track, source, Arc::clone(&reading), stop_reading.clone()));
        Box::pin(async {})
    }));
    let offer = pc.create_offer(None).await?;
    let local = gathered(&pc, offer).await?;
    let answer = post(&format!("{}/whep/{room}", cfg.url), local.sdp).await?;
    pc.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
    Ok(Participant { pc })
}
