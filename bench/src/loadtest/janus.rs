//! The Janus target: the same participants, media and measurements as the
//! LiveKit target (`livekit`), spoken to Janus 1.x's VideoRoom plugin, so
//! that the two SFUs are loaded alike (`bench/loadtest.sh` runs them in turn).
//! Built on the shared clips, sender and measurement only.
//!
//! Protocol (Janus's JSON API over WebSocket, subprotocol `janus-protocol`; see
//! <https://janus.conf.meetecho.com/docs/videoroom>): each participant has its own
//! WebSocket and session (`create`), a keepalive every 25 s, and handles
//! (`attach` to `janus.plugin.videoroom`):
//! - the room is created by the room's first participant (`create`, numeric id,
//!   as many publishers as the run has, no bitrate cap, the clip's video codec
//!   and Opus);
//! - a publisher joins (`join`, `ptype: publisher`; the `joined` event gives its
//!   feed id) and sends one offer with all its tracks (`publish`), as janus.js does;
//! - once every publisher of the room is up, each participant subscribes to every
//!   feed but its own on one multistream subscriber handle (`join`,
//!   `ptype: subscriber`, `streams`): Janus offers, the participant answers
//!   (`start`).
//!
//! ICE is not trickled: each side's SDP carries its candidates (`trickle: false`),
//! which Janus supports with half-trickle. Janus rewrites RTP sequence numbers per
//! subscriber; the receiving side learns the shift from payload fingerprints (see
//! `SeqOffset` in [`super::measure`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use meridian_sfu::engine::Engine;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Frame;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

use super::clips::Clips;
use super::config::Config;
use super::measure::{read_track, Shared};
use super::sdp::gathered;
use super::send::{send_media, Published};
use super::sync::lock;

const VIDEOROOM: &str = "janus.plugin.videoroom";
/// Janus's default session timeout is 60 s.
const KEEPALIVE: Duration = Duration::from_secs(25);
/// Longest wait for any answer from Janus.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// One Janus session on its own WebSocket.
struct Session {
    out: mpsc::UnboundedSender<Value>,
    pending: Pending,
    id: u64,
}

impl Session {
    /// Connects to `url` (`ws://HOST:PORT`) and creates a session.
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
        let (ws, _) =
            tokio_tungstenite::connect_async(request).await.with_context(|| format!("connecting to {url}"))?;
        let (mut sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Value>();
        tokio::spawn(async move {
            while let Some(v) = out_rx.recv().await {
                if sink.send(Frame::text(v.to_string())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let answers = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Frame::Text(text) = frame else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                // An `ack` only says a plugin request was queued; its event follows
                // with the same transaction. Events without one (webrtcup, media,
                // other publishers joining) are not needed here.
                if v["janus"] == "ack" {
                    continue;
                }
                let Some(tx) = v["transaction"].as_str().and_then(|t| lock(&answers).remove(t)) else { continue };
                let _ = tx.send(v);
            }
        });
        let mut session = Self { out, pending, id: 0 };
        let created = session.request(json!({"janus": "create"})).await?;
        session.id = created["data"]["id"].as_u64().context("create: no session id")?;
        let keepalive = session.out.clone();
        let id = session.id;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                let ping = json!({"janus": "keepalive", "session_id": id, "transaction": "keepalive"});
                if keepalive.send(ping).is_err() {
                    break;
                }
            }
        });
        Ok(session)
    }

    /// Sends `body` with a fresh transaction (and the session id once there is
    /// one) and returns Janus's final answer: `success` or the plugin's `event`.
    ///
    /// Errors: a Janus `error`, a plugin error (`plugindata.data.error`), no
    /// answer within 20 s, or a closed connection.
    async fn request(&self, mut body: Value) -> anyhow::Result<Value> {
        let transaction = format!("{:016x}", rand::random::<u64>());
        body["transaction"] = json!(transaction);
        if self.id != 0 {
            body["session_id"] = json!(self.id);
        }
        let what = format!("{} {}", body["janus"], body["body"]["request"]);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(transaction.clone(), tx);
        self.out.send(body).map_err(|_| anyhow::anyhow!("{what}: connection closed"))?;
        let Ok(answer) = tokio::time::timeout(ANSWER_WAIT, rx).await else {
            lock(&self.pending).remove(&transaction);
            bail!("{what}: no answer within {ANSWER_WAIT:?}");
        };
        let answer = answer.with_context(|| format!("{what}: connection closed"))?;
        if answer["janus"] == "error" {
            bail!("{what}: {}", answer["error"]);
        }
        let data = &answer["plugindata"]["data"];
        if !data["error"].is_null() {
            bail!("{what}: {} ({})", data["error"], data["error_code"]);
        }
        Ok(answer)
    }

    /// Attaches a VideoRoom handle and returns its id.
    async fn attach(&self) -> anyhow::Result<u64> {
        let answer = self.request(json!({"janus": "attach", "plugin": VIDEOROOM})).await?;
        answer["data"]["id"].as_u64().context("attach: no handle id")
    }

    /// Sends a VideoRoom request on `handle`, with an SDP if given, and returns
    /// the answer (its `plugindata.data` and `jsep`).
    async fn message(&self, handle: u64, body: Value, jsep: Option<&RTCSessionDescription>) -> anyhow::Result<Value> {
        let mut m = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(d) = jsep {
            m["jsep"] = json!({"type": d.sdp_type.to_string(), "sdp": d.sdp, "trickle": false});
        }
        self.request(m).await
    }
}

/// One participant on Janus: a session, and a publisher and a subscriber handle
/// as it needs them.
pub(crate) struct Participant {
    session: Session,
    feed: Option<u64>,
    peers: Vec<Arc<RTCPeerConnection>>,
}

impl Participant {
    /// Closes the peer connections and destroys the session.
    pub(crate) async fn close(&self) {
        for pc in &self.peers {
            let _ = pc.close().await;
        }
        let _ = self.session.out.send(json!({"janus": "destroy", "session_id": self.session.id, "transaction": "bye"}));
    }

    /// Joins `room` as a publisher and publishes a video (VP8 or H.264) and an
    /// Opus track (as the clips allow) in one offer; each track then sends the
    /// clip on its own task.
    async fn publish(
        &mut self,
        room: u64,
        display: &str,
        engine: &Engine,
        clips: &Arc<Clips>,
        shared: &Arc<Shared>,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let handle = self.session.attach().await?;
        let joined = self
            .session
            .message(handle, json!({"request": "join", "ptype": "publisher", "room": room, "display": display}), None)
            .await?;
        let feed = joined["plugindata"]["data"]["id"].as_u64().context("join: no publisher id")?;
        let pc = engine.peer_connection().await?;
        let mut sending = Vec::new();
        for (codec, kind) in clips.tracks() {
            let cid = format!("{}-{feed}", kind.as_str_name().to_lowercase());
            let track = Arc::new(TrackLocalStaticRTP::new(codec, cid.clone(), "loadtest".into()));
            pc.add_track(Arc::clone(&track) as _).await?;
            sending.push((cid, kind, track));
        }
        let offer = pc.create_offer(None).await?;
        let local = gathered(&pc, offer).await?;
        let answer = self.session.message(handle, json!({"request": "publish"}), Some(&local)).await?;
        let sdp = answer["jsep"]["sdp"].as_str().context("publish: no answer SDP")?;
        if std::env::var_os("LOADTEST_DEBUG").is_some() {
            eprintln!("publisher offer:\n{}\nJanus answer:\n{sdp}", local.sdp);
        }
        pc.set_remote_description(RTCSessionDescription::answer(sdp.to_owned())?).await?;
        // Janus offers a feed to subscribers only once its PeerConnection is up.
        let connected = async {
            while pc.connection_state() != RTCPeerConnectionState::Connected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(ANSWER_WAIT, connected).await.context("publisher not connected within 20 s")?;
        // Send logs are keyed as subscribers will know them: feed and kind.
        let published: Published = Arc::default();
        for (cid, kind, track) in sending {
            lock(&published).insert(cid.clone(), source_key(feed, &kind.as_str_name().to_lowercase()));
            let (clips, published, shared, stop) =
                (Arc::clone(clips), Arc::clone(&published), Arc::clone(shared), stop.clone());
            tokio::spawn(async move { send_media(cid, kind, track, clips, (published, shared), stop).await });
        }
        self.feed = Some(feed);
        self.peers.push(pc);
        Ok(())
    }

    /// Subscribes to every feed in `feeds` but this participant's own, on one
    /// multistream handle: Janus offers, the participant answers.
    async fn subscribe(
        &mut self,
        room: u64,
        feeds: &[u64],
        engine: &Engine,
        shared: &Arc<Shared>,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let streams: Vec<Value> = feeds.iter().filter(|f| Some(**f) != self.feed).map(|f| json!({"feed": f})).collect();
        if streams.is_empty() {
            return Ok(());
        }
        let handle = self.session.attach().await?;
        let attached = self
            .session
            .message(handle, json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}), None)
            .await?;
        // mid -> source key of the publisher's track behind it.
        let mut sources = HashMap::new();
        for s in attached["plugindata"]["data"]["streams"].as_array().into_iter().flatten() {
            if let (Some(mid), Some(feed), Some(kind)) = (s["mid"].as_str(), s["feed_id"].as_u64(), s["type"].as_str())
            {
                sources.insert(mid.to_owned(), source_key(feed, kind));
            }
        }
        let sdp = attached["jsep"]["sdp"].as_str().context("subscriber join: no offer SDP")?;
        let pc = engine.peer_connection().await?;
        let (reading, stop_reading) = (Arc::clone(shared), stop.clone());
        pc.on_track(Box::new(move |track: Arc<TrackRemote>, _, transceiver| {
            let source = transceiver.mid().and_then(|m| sources.get(m.as_str()).cloned()).unwrap_or_default();
            tokio::spawn(read_track(track, source, Arc::clone(&reading), stop_reading.clone()));
            Box::pin(async {})
        }));
        pc.set_remote_description(RTCSessionDescription::offer(sdp.to_owned())?).await?;
        let answer = pc.create_answer(None).await?;
        let local = gathered(&pc, answer).await?;
        self.session.message(handle, json!({"request": "start"}), Some(&local)).await?;
        self.peers.push(pc);
        Ok(())
    }
}

fn source_key(feed: u64, kind: &str) -> String {
    format!("janus:{feed}:{kind}")
}

/// Creates each room (ids random, so runs never meet), joins its publishers (who
/// publish) and subscribers, then subscribes everyone to every other feed.
///
/// Errors: a Janus error or timeout, with the participant that met it.
pub(crate) async fn join_rooms(
    cfg: &Config,
    clips: &Arc<Clips>,
    engine: &Arc<Engine>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<Participant>> {
    let mut everyone = Vec::new();
    for r in 0..cfg.rooms {
        let room = u64::from(rand::random::<u32>()) + 1;
        let mut members = Vec::new();
        for i in 0..cfg.publishers + cfg.subscribers {
            let publisher = i < cfg.publishers;
            let display = format!("{}-{r}-{i}", if publisher { "pub" } else { "sub" });
            let session = Session::connect(&cfg.url).await.with_context(|| format!("{display} connecting"))?;
            let mut p = Participant { session, feed: None, peers: Vec::new() };
            if i == 0 {
                let handle = p.session.attach().await?;
                let create = json!({
                    "request": "create", "room": room, "publishers": cfg.publishers.max(1), "bitrate": 0,
                    "videocodec": clips.video_codec.name(), "audiocodec": "opus",
                    "notify_joining": false,
                });
                p.session.message(handle, create, None).await.with_context(|| format!("creating room {room}"))?;
            }
            if publisher {
                p.publish(room, &display, engine, clips, shared, stop)
                    .await
                    .with_context(|| format!("{display} publishing"))?;
            }
            members.push(p);
        }
        let feeds: Vec<u64> = members.iter().filter_map(|p| p.feed).collect();
        for (i, p) in members.iter_mut().enumerate() {
            p.subscribe(room, &feeds, engine, shared, stop)
                .await
                .with_context(|| format!("participant {r}-{i} subscribing"))?;
        }
        everyone.extend(members);
    }
    Ok(everyone)
}
