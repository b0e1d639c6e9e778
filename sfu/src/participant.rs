//! One participant: its two peer connections (LiveKit's dual-PC model), the tracks
//! it publishes, its down-tracks, and the subscriber PC's offer/answer state.
//!
//! Both PCs are str0m peers on the node's one UDP port ([`crate::rtc`]).
//! Publisher PC ([`crate::publisher`]): the client offers, we answer (echoing
//! `SessionDescription.id`, which livekit-client waits for); a track is
//! published when the first packet of its media section arrives, and every
//! packet goes from the PC's events to its [`PublishedTrack`].
//! Subscriber PC ([`crate::subscriber`]): we offer whenever down-tracks
//! change; one offer is outstanding at a time, and changes made meanwhile are
//! offered once its answer arrives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use livekit_protocol::request_response::Reason;
use livekit_protocol::signal_response::Message as Out;
use meridian_auth::{Grants, VerifiedGrant};
use meridian_ids::{ParticipantIdentity, ParticipantSid, TrackSid};
use str0m::bwe::Bitrate;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::rtp::{RtpPacket, Ssrc};
use tokio::sync::{mpsc, Notify};

use crate::forward::{self, PublishedTrack};
use crate::publisher::{OfferError, PublisherPc};
use crate::room::Room;
use crate::sdp;
use crate::subscriber::{NewMedia, OfferRequest, SubscriberPc};
use crate::subscription::{Choices, PermissionError, Permissions};

/// Outgoing signal messages of one participant, drained by its socket writer.
pub type SignalTx = mpsc::Sender<Out>;
/// Capacity of a participant's outgoing signal queue. A client this far behind
/// is disconnected rather than buffered without bound.
pub const SIGNAL_QUEUE: usize = 512;

/// The part of a trickled `RTCIceCandidateInit` JSON the PCs use.
#[derive(serde::Deserialize)]
struct CandidateInit {
    candidate: String,
}

/// Which of the participant's PCs a message is about (LiveKit `SignalTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The PC the client publishes on (client offers).
    Publisher,
    /// The PC the client subscribes on (we offer).
    Subscriber,
}

/// Media sections an offer may carry. Chromium puts one per transceiver; a
/// meeting client has a handful, and each costs a receiver.
pub const MAX_MEDIA_SECTIONS: usize = 256;
/// Bytes of one trickled `candidate_init` JSON (a candidate line is ~200 bytes).
pub const MAX_CANDIDATE_BYTES: usize = 4096;
/// Candidates a client may trickle to one PC over its life. ICE-lite needs
/// none (the client's checks find the node), clients trickle a handful per
/// ICE restart, and each one is kept by the PC's ICE agent.
pub const MAX_TRICKLED_CANDIDATES: usize = 256;
/// Publisher streams (SSRCs) one participant's packets are routed by; a
/// client that sends more is not published past them.
pub const MAX_PUBLISHER_STREAMS: usize = 256;
/// Tracks announced by `AddTrackRequest` whose media has not arrived yet.
pub const MAX_PENDING_TRACKS: usize = 64;
/// Down-tracks one subscriber PC may be offered over its life, those since
/// unsubscribed included (each costs a media section, see [`Participant::subscribe`]).
pub const MAX_SUBSCRIBER_TRANSCEIVERS: usize = 512;
/// Bytes of an `AddTrackRequest`'s cid, name and stream together.
pub const MAX_TRACK_TEXT_BYTES: usize = 4096;
/// Longest participant name a participant may set: 256 bytes (LiveKit's
/// `limit.max_participant_name_length` default).
pub const MAX_NAME_BYTES: usize = 256;
/// Largest participant metadata: 512 KiB (LiveKit's `limit.max_metadata_size`).
pub const MAX_METADATA_BYTES: usize = 512 * 1024;
/// Largest attributes, keys and values summed: 64 KiB (LiveKit's
/// `limit.max_attributes_size`). LiveKit checks each update; we check the
/// merged result too, so repeated updates with new keys cannot grow it without bound.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// Errors while handling a participant's signal message. A client's error closes
/// that participant's connection only.
#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    /// The client sent something that does not fit the protocol (bad SDP, bad
    /// candidate JSON, unknown track). The client's fault.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A PC is gone (closed, failed, or the node's driver ended).
    #[error(transparent)]
    Closed(#[from] crate::rtc::Closed),
}

/// Where a publisher stream's packets go: its media section and simulcast
/// RID, as str0m mapped its SSRC.
#[derive(Debug, Clone, Copy)]
struct Route {
    mid: Mid,
    rid: Option<Rid>,
    /// Whether its packets were dropped for want of a track, and said so.
    warned: bool,
}

/// A track announced by `AddTrackRequest` whose media has not arrived yet.
struct PendingTrack {
    /// The client's id for it: the MediaStreamTrack id, which is the SDP msid track id.
    cid: String,
    /// What `TrackPublishedResponse` announced.
    info: proto::TrackInfo,
    /// MIME type of the codec asked for (`simulcast_codecs[0].codec`), if any.
    codec: Option<String>,
}

/// What a participant says of itself and may do. It changes under one lock
/// together with the version, so of two `ParticipantInfo`s the one with the
/// higher version is never the older (livekit-client drops an update whose
/// version is lower than the last it applied).
struct Profile {
    name: String,
    metadata: String,
    attributes: HashMap<String, String>,
    grants: Grants,
    version: u32,
}

fn attributes_bytes(attributes: &HashMap<String, String>) -> usize {
    attributes.iter().fold(0usize, |sum, (k, v)| sum.saturating_add(k.len()).saturating_add(v.len()))
}

/// One down-track: a media section of the subscriber PC carrying a published track.
struct DownTrack {
    track: Arc<PublishedTrack>,
    /// What the forwarder sends this subscriber of the track (`PublishedTrack::new_sink`).
    sink: Arc<forward::Sink>,
    /// The subscriber offer that first carried it, once one has.
    offered_in: Option<u32>,
    /// Whether an answer to such an offer has been applied (its sink writes then).
    bound: bool,
}

/// How often congestion control runs with the last estimate when no new one
/// comes (tracks come and go, layers' bitrates change).
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(500);

/// How long after the subscriber PC connects str0m's first TWCC estimate may
/// take before the subscriber counts as giving no TWCC feedback (str0m
/// reports one as soon as SRTP is up on a PC that negotiated it).
pub const TWCC_WAIT: Duration = Duration::from_secs(2);

/// The estimate a subscriber without TWCC feedback is given, in bits per
/// second: str0m paces at 1.1 times it, so nothing waits.
pub const UNPACED_BPS: u64 = 10_000_000_000;

/// How long a subscriber's first estimates are only watched, its down-tracks
/// unlimited: LiveKit's stream allocator starts every subscriber at a
/// capacity of 100 Mbit/s and commits to the estimate after 2 s, so media
/// starts at once and gives the estimator something to measure. A low
/// estimate does not commit sooner: in the first second, a subscriber busy
/// setting up (the load tester's 80, DTLS and all, on one core) sends late
/// feedback, which reads as queueing; committing to it at once paused
/// videos that then never started.
pub const ESTIMATE_COMMIT: Duration = Duration::from_secs(2);

/// A subscriber's bandwidth estimate, and the probing targets last given to
/// str0m for it.
struct Estimate {
    /// Bits per second.
    bps: u64,
    /// Whether a TWCC estimate has come (REMB counts only until one does).
    twcc: bool,
    /// When the first estimate came.
    first: Instant,
    /// Whether congestion control goes by it yet ([`ESTIMATE_COMMIT`]).
    committed: bool,
    /// `(minimum, desired)` bits per second, as last set.
    probing: Option<(u64, u64)>,
}

impl Estimate {
    fn new(now: Instant) -> Self {
        Self { bps: 0, twcc: false, first: now, committed: false, probing: None }
    }

    /// A new estimate of `bps` (`twcc`: str0m's own, else the subscriber's REMB) at `now`.
    fn update(&mut self, bps: u64, twcc: bool, now: Instant) {
        self.bps = bps;
        self.twcc |= twcc;
        self.committed |= now.saturating_duration_since(self.first) >= ESTIMATE_COMMIT;
    }

    /// The estimate congestion control goes by: `None` before it is committed.
    fn committed(&self) -> Option<u64> {
        self.committed.then_some(self.bps)
    }
}

#[derive(Default)]
struct Negotiation {
    offer_id: u32,
    awaiting_answer: bool,
    pending: bool,
}

/// A participant in a room on this node.
pub struct Participant {
    /// Participant sid (`PA_…`).
    pub sid: ParticipantSid,
    /// Identity from the token.
    pub identity: ParticipantIdentity,
    profile: Mutex<Profile>,
    joined_at: SystemTime,
    signal: SignalTx,
    /// The queue of a signal session that dropped without `leave`, kept for
    /// [`crate::signal::RESUME_WINDOW`] so a resumed session (`reconnect=1`)
    /// takes it, with what was sent meanwhile.
    parked: Mutex<Option<mpsc::Receiver<Out>>>,
    /// Woken to end the participant's signal session (kicked, room closed).
    pub closed: Notify,
    /// Whether one of its PCs has connected (then it counts as joined, for webhooks).
    connected: AtomicBool,
    is_closed: AtomicBool,
    /// Highest `DataPacket.sequence` relayed from this participant's reliable
    /// channel; a resume reports it as `ReconnectResponse.last_message_seq`, so
    /// the client re-sends only what came after.
    last_reliable_seq: AtomicU32,
    /// Candidates trickled so far to the publisher and the subscriber PC.
    trickled: [std::sync::atomic::AtomicUsize; 2],
    publisher: PublisherPc,
    /// Media id → client track id (msid) of each section the client's last
    /// offer sends on: which pending track a section's first packet publishes.
    publisher_sections: Mutex<HashMap<Mid, String>>,
    /// Keyed by the msid track id of each down-track's section.
    subscriber: SubscriberPc<String>,
    /// Media sections of removed down-tracks, stopped in the next offer.
    to_stop: Mutex<Vec<str0m::media::Mid>>,
    /// Down-tracks bound so far; with those waiting, what [`MAX_SUBSCRIBER_TRANSCEIVERS`] counts.
    offered: std::sync::atomic::AtomicUsize,
    negotiation: tokio::sync::Mutex<Negotiation>,
    /// AddTrackRequests answered but whose media has not arrived.
    pending_tracks: Mutex<Vec<PendingTrack>>,
    published: Arc<Mutex<Vec<Arc<PublishedTrack>>>>,
    /// Down-tracks by track sid. An async lock, held across adding or removing
    /// the sender, so that two concurrent subscriptions to one track (the room
    /// announcing a new track while this participant's join subscribes to what is
    /// published) add one down-track, not two.
    down_tracks: tokio::sync::Mutex<HashMap<TrackSid, DownTrack>>,
    /// What this participant, as a subscriber, asked for.
    choices: Mutex<Choices>,
    /// Who may subscribe to this participant's tracks.
    permissions: Mutex<Permissions>,
    /// The `sfu.join` span; milestones (`sfu.ice_connected`, `sfu.first_rtp_forwarded`) are its children.
    trace: tracing::Span,
}

/// LiveKit's data channel kinds: `_reliable` (ordered, retransmitted) and `_lossy`
/// (unordered, no retransmission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// `_reliable`.
    Reliable = 0,
    /// `_lossy`.
    Lossy = 1,
}

impl DataKind {
    /// The channel label livekit-client uses.
    pub fn label(self) -> &'static str {
        match self {
            DataKind::Reliable => "_reliable",
            DataKind::Lossy => "_lossy",
        }
    }

    /// The kind whose label is `label` (`_reliable`, `_lossy`), if any.
    pub fn from_label(label: &str) -> Option<Self> {
        [DataKind::Reliable, DataKind::Lossy].into_iter().find(|k| k.label() == label)
    }
}

/// Largest data packet relayed (LiveKit's reliable limit is 15 KiB per message).
pub const MAX_DATA_PACKET_BYTES: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single push, take or lookup, so a poisoned lock
    // still guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix(t: SystemTime) -> std::time::Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Participant {
    /// A participant for `grant`, with fresh publisher and subscriber PCs. The PCs'
    /// callbacks hold weak references, so dropping the room and participant frees
    /// them.
    pub(crate) async fn new(
        grant: &VerifiedGrant,
        auto_subscribe: bool,
        signal: SignalTx,
        room: &Arc<Room>,
        trace: tracing::Span,
    ) -> Result<Arc<Self>, crate::engine::EngineError> {
        let (publisher, publisher_events) = PublisherPc::new(room.engine().driver()?).await?;
        let (subscriber, subscriber_events) = SubscriberPc::new(room.engine().driver()?).await?;
        let me = Arc::new(Self {
            sid: ParticipantSid::random(),
            identity: grant.identity().clone(),
            profile: Mutex::new(Profile {
                name: grant.name().to_owned(),
                metadata: grant.metadata().to_owned(),
                attributes: grant.attributes().clone(),
                grants: grant.grants(),
                version: 0,
            }),
            joined_at: SystemTime::now(),
            signal,
            parked: Mutex::new(None),
            closed: Notify::new(),
            connected: AtomicBool::new(false),
            is_closed: AtomicBool::new(false),
            last_reliable_seq: AtomicU32::new(0),
            trickled: Default::default(),
            publisher,
            publisher_sections: Mutex::new(HashMap::new()),
            subscriber,
            to_stop: Mutex::new(Vec::new()),
            offered: std::sync::atomic::AtomicUsize::new(0),
            negotiation: tokio::sync::Mutex::new(Negotiation::default()),
            pending_tracks: Mutex::new(Vec::new()),
            published: Arc::new(Mutex::new(Vec::new())),
            down_tracks: tokio::sync::Mutex::new(HashMap::new()),
            choices: Mutex::new(Choices::new(auto_subscribe)),
            permissions: Mutex::new(Permissions::everyone()),
            trace,
        });
        tokio::spawn(Self::read_publisher_events(Arc::downgrade(&me), Arc::downgrade(room), publisher_events));
        tokio::spawn(Self::read_subscriber_events(Arc::downgrade(&me), Arc::downgrade(room), subscriber_events));
        Ok(me)
    }

    /// Reads the publisher PC's events until it is gone: its connection (the
    /// `sfu.ice_connected` milestone and, first of the PCs, `participant_joined`),
    /// the client's data channels, and its RTP, each packet to its track
    /// ([`Participant::on_rtp`]).
    async fn read_publisher_events(me: Weak<Self>, room: Weak<Room>, mut peer: crate::rtc::Peer) {
        use str0m::Event;
        let mut routes: HashMap<Ssrc, Route> = HashMap::new();
        while let Some(event) = peer.next_event().await {
            let (Some(me), Some(room)) = (me.upgrade(), room.upgrade()) else { return };
            match event {
                Event::RtpPacket(packet) => me.on_rtp(&room, &mut routes, packet).await,
                Event::Connected => {
                    tracing::info!(participant = %me.sid, target = ?Target::Publisher, state = "connected", "peer connection state");
                    me.on_connected(&room, Target::Publisher);
                }
                Event::IceConnectionStateChange(state) => {
                    tracing::info!(participant = %me.sid, target = ?Target::Publisher, ?state, "ICE connection state");
                }
                Event::ChannelOpen(id, label) => {
                    let kind = me.publisher.channel_opened(id, &label);
                    tracing::debug!(participant = %me.sid, %label, ?kind, "publisher data channel open");
                }
                Event::ChannelData(data) => {
                    if let Some(kind) = me.publisher.channel_kind(data.id) {
                        me.on_data(&room, kind, &data.data).await;
                    }
                }
                _ => {}
            }
        }
        tracing::debug!("publisher PC gone");
    }

    /// One RTP packet from the publisher PC: to the track of its media section
    /// (published by this packet if it is the section's first and the client
    /// announced the section's track). `routes` caches each stream's section
    /// and RID by SSRC; packets of a section with no track are dropped, with
    /// a warning once per stream.
    async fn on_rtp(self: &Arc<Self>, room: &Arc<Room>, routes: &mut HashMap<Ssrc, Route>, packet: RtpPacket) {
        let ssrc = packet.header.ssrc;
        let route = match routes.get(&ssrc) {
            Some(route) => *route,
            None => {
                let Ok(Some((mid, rid))) = self.publisher.layer_of(ssrc).await else { return };
                let route = Route { mid, rid, warned: false };
                if routes.len() < MAX_PUBLISHER_STREAMS {
                    routes.insert(ssrc, route);
                }
                route
            }
        };
        let now = Instant::now();
        let track = lock(&self.published).iter().find(|t| t.publisher_mid() == route.mid).cloned();
        let track = match track {
            Some(track) => track,
            None => match self.publish(room, route.mid, route.rid).await {
                Some(track) => track,
                None => {
                    if let Some(r) = routes.get_mut(&ssrc).filter(|r| !r.warned) {
                        r.warned = true;
                        tracing::warn!(participant = %self.sid, mid = %route.mid, rid = ?route.rid, %ssrc,
                            "media without AddTrackRequest; dropped");
                    }
                    return;
                }
            },
        };
        let bytes = track.receive(route.rid, &packet, now);
        if bytes > 0 {
            room.forwarded_bytes().inc_by(bytes as u64);
        }
    }

    /// The first packet of media section `mid` arrived (its layer `rid`):
    /// publishes the track the client announced for it, if any.
    async fn publish(self: &Arc<Self>, room: &Arc<Room>, mid: Mid, rid: Option<Rid>) -> Option<Arc<PublishedTrack>> {
        if lock(&self.pending_tracks).is_empty() {
            return None;
        }
        let negotiated = match self.publisher.negotiated(mid).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                // Warned once per stream by the caller, as media without a track.
                tracing::debug!(participant = %self.sid, %mid, "media of a section with no codec we forward");
                return None;
            }
            Err(_) => return None,
        };
        let cid = lock(&self.publisher_sections).get(&mid).cloned().unwrap_or_default();
        let info = self.take_pending(&cid, negotiated.kind)?;
        let first_rtp = tracing::info_span!(parent: &self.trace, "sfu.first_rtp_forwarded", track = %info.sid);
        let track = Arc::new(PublishedTrack::new(
            info,
            (mid, &negotiated),
            (self.publisher.handle(), Arc::downgrade(self), &self.sid),
            room.subscriber_reports().clone(),
            Some(first_rtp),
        ));
        lock(&self.published).push(Arc::clone(&track));
        tracing::info!(participant = %self.sid, track = %track.sid, mime = %negotiated.mime_type, %mid, ?rid,
            "track published");
        room.published(self, Arc::clone(&track)).await;
        Some(track)
    }

    /// Reads the subscriber PC's events until it is gone: its connection (the
    /// `sfu.ice_connected` milestone and, first of the PCs, `participant_joined`),
    /// the subscriber's keyframe requests and receiver reports per down-track,
    /// and its bandwidth estimate, which congestion control shares among its
    /// down-tracks ([`Participant::allocate`]) at each estimate and every
    /// [`ALLOCATION_INTERVAL`] (tracks come and go, layers' bitrates change).
    async fn read_subscriber_events(me: Weak<Self>, room: Weak<Room>, mut peer: crate::rtc::Peer) {
        use str0m::bwe::BweKind;
        use str0m::Event;
        let mut estimate: Option<Estimate> = None;
        // When the PC connected: a TWCC estimate is due within TWCC_WAIT of it.
        let mut connected_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(ALLOCATION_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                event = peer.next_event() => event,
                _ = tick.tick() => {
                    let Some(me) = me.upgrade() else { return };
                    let twcc = estimate.as_ref().is_some_and(|e| e.twcc);
                    if connected_at.is_some_and(|t| t.elapsed() >= TWCC_WAIT) && !twcc {
                        connected_at = None;
                        me.unpace();
                    }
                    if let Some(e) = &mut estimate {
                        e.update(e.bps, false, Instant::now());
                        me.allocate(e).await;
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            let Some(me) = me.upgrade() else { return };
            match event {
                Event::Connected => {
                    tracing::info!(participant = %me.sid, target = ?Target::Subscriber, state = "connected", "peer connection state");
                    connected_at = Some(Instant::now());
                    if let Some(room) = room.upgrade() {
                        me.on_connected(&room, Target::Subscriber);
                    }
                }
                Event::IceConnectionStateChange(state) => {
                    tracing::info!(participant = %me.sid, target = ?Target::Subscriber, ?state, "ICE connection state");
                }
                Event::KeyframeRequest(req) => {
                    if let Some((track, sink)) = me.down_track_at(req.mid).await {
                        forward::on_keyframe_request(&track, &sink);
                    }
                }
                Event::MediaEgressStats(stats) => {
                    if let Some((track, sink)) = me.down_track_at(stats.mid).await {
                        forward::on_egress_stats(&track, &sink, &stats);
                    }
                }
                Event::EgressBitrateEstimate(kind) => {
                    tracing::trace!(participant = %me.sid, ?kind, "subscriber BWE event");
                    // TWCC is str0m's own estimate (usable while it can probe);
                    // REMB (the subscriber's) counts only while no TWCC one has come.
                    let (bps, twcc) = match kind {
                        BweKind::Twcc { estimate, can_probe: true } => (estimate.as_u64(), true),
                        BweKind::Remb { estimate, .. } => (estimate.as_u64(), false),
                        _ => continue,
                    };
                    if !twcc && estimate.as_ref().is_some_and(|e| e.twcc) {
                        continue;
                    }
                    tracing::trace!(participant = %me.sid, bps, twcc, "subscriber bandwidth estimate");
                    let e = estimate.get_or_insert_with(|| Estimate::new(Instant::now()));
                    e.update(bps, twcc, Instant::now());
                    me.allocate(e).await;
                }
                Event::ChannelOpen(_, label) => {
                    tracing::debug!(participant = %me.sid, %label, "subscriber data channel open");
                }
                _ => {}
            }
        }
        tracing::debug!("subscriber PC gone");
    }

    /// The subscriber gives no TWCC feedback (it did not negotiate it): str0m
    /// cannot estimate, and its pacer would hold every down-track to the
    /// starting estimate (300 kbit/s, queueing seconds of media), so the
    /// estimate is set out of reach ([`UNPACED_BPS`]). Down-tracks stay
    /// unlimited, or go by the subscriber's REMB if it sends one.
    fn unpace(&self) {
        tracing::info!(participant = %self.sid, "subscriber without TWCC feedback: not paced");
        let posted = self.subscriber.handle().post(|rtc| rtc.bwe().reset(Bitrate::bps(UNPACED_BPS)));
        if let Err(e) = posted {
            tracing::debug!(participant = %self.sid, error = %e, "pacer not reset");
        }
    }

    /// Congestion control's step for this subscriber ([`forward::allocate`]):
    /// its bound down-tracks get what `estimate` carries; the ones paused or
    /// resumed go to the client in a `StreamStateUpdate`, and str0m is told
    /// what to probe towards when it changed.
    async fn allocate(&self, estimate: &mut Estimate) {
        let down_tracks: Vec<(Arc<PublishedTrack>, Arc<forward::Sink>)> = {
            let down_tracks = self.down_tracks.lock().await;
            down_tracks.values().filter(|dt| dt.bound).map(|dt| (Arc::clone(&dt.track), Arc::clone(&dt.sink))).collect()
        };
        if down_tracks.is_empty() {
            return;
        }
        let allocated = forward::allocate(estimate.committed(), &down_tracks, Instant::now());
        if !allocated.stream_states.is_empty() {
            self.send(Out::StreamStateUpdate(proto::StreamStateUpdate { stream_states: allocated.stream_states }));
        }
        let probing = (allocated.minimum_bps, allocated.desired_bps);
        if estimate.probing != Some(probing) {
            estimate.probing = Some(probing);
            let (minimum, desired) = (Bitrate::bps(probing.0), Bitrate::bps(probing.1));
            if let Err(e) = self.subscriber.handle().post(move |rtc| rtc.bwe().set_bitrate(minimum, desired)) {
                tracing::debug!(participant = %self.sid, error = %e, "probing targets not set");
            }
        }
    }

    /// The track and sink of the down-track bound to media section `mid`.
    async fn down_track_at(&self, mid: str0m::media::Mid) -> Option<(Arc<PublishedTrack>, Arc<forward::Sink>)> {
        let down_tracks = self.down_tracks.lock().await;
        down_tracks
            .values()
            .find(|dt| dt.sink.mid() == Some(mid))
            .map(|dt| (Arc::clone(&dt.track), Arc::clone(&dt.sink)))
    }

    /// One of the PCs connected: a milestone in the join's trace and, the
    /// first time, the `participant_joined` webhook.
    fn on_connected(&self, room: &Room, target: Target) {
        // A milestone: an empty span, a child of the join in the trace.
        drop(tracing::info_span!(parent: &self.trace, "sfu.ice_connected", participant = %self.sid, ?target));
        if !self.connected.swap(true, Ordering::Relaxed) {
            room.webhook("participant_joined", Some(self.info(proto::participant_info::State::Active)), None);
        }
    }

    /// A data packet from this participant's publisher PC: stamped with its
    /// identity and sid (as LiveKit's server does) and relayed to the room.
    /// Packets from participants without `canPublishData`, over
    /// [`MAX_DATA_PACKET_BYTES`], or that do not decode are dropped, and so is a
    /// reliable packet whose `sequence` (when set) is not above the last relayed:
    /// after a resume the client re-sends what it is not sure arrived.
    async fn on_data(&self, room: &Arc<Room>, kind: DataKind, bytes: &[u8]) {
        if !self.grants().can_publish_data || bytes.len() > MAX_DATA_PACKET_BYTES {
            return;
        }
        let Ok(mut packet) = <proto::DataPacket as prost::Message>::decode(bytes) else {
            tracing::debug!(participant = %self.sid, "undecodable data packet dropped");
            return;
        };
        if kind == DataKind::Reliable && packet.sequence != 0 {
            let before = self.last_reliable_seq.fetch_max(packet.sequence, Ordering::Relaxed);
            if packet.sequence <= before {
                tracing::debug!(participant = %self.sid, sequence = packet.sequence, "re-sent reliable packet dropped");
                return;
            }
        }
        packet.participant_identity = self.identity.to_string();
        packet.participant_sid = self.sid.to_string();
        room.relay_data(self, kind, &packet).await;
    }

    /// Sends an encoded data packet to this participant on `kind`'s channel. A
    /// channel not open yet drops it (lossy) or fails quietly (reliable, logged).
    pub(crate) async fn send_data(&self, kind: DataKind, bytes: &bytes::Bytes) {
        self.subscriber.send_data(kind, bytes.clone());
    }

    /// Highest reliable `DataPacket.sequence` relayed from this participant (0
    /// before any): `ReconnectResponse.last_message_seq`.
    pub fn last_reliable_seq(&self) -> u32 {
        self.last_reliable_seq.load(Ordering::Relaxed)
    }

    /// Whether one of its PCs has connected.
    pub fn was_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Identity from the token.
    pub fn identity(&self) -> &ParticipantIdentity {
        &self.identity
    }

    /// Offers the subscriber PC now, so its data channels open even before there
    /// is media to subscribe to.
    pub async fn open_subscriber(&self) -> Result<(), ParticipantError> {
        self.negotiate().await
    }

    /// Grants from the participant's token.
    pub fn grants(&self) -> Grants {
        lock(&self.profile).grants
    }

    /// Replaces the grants a `ParticipantPermission` covers (RoomService
    /// `UpdateParticipant`; LiveKit's `SetPermission`); returns whether they
    /// changed. The caller removes what they no longer allow.
    pub fn set_permission(&self, p: &proto::ParticipantPermission) -> bool {
        let mut profile = lock(&self.profile);
        let new = Grants {
            can_publish: p.can_publish,
            can_subscribe: p.can_subscribe,
            can_publish_data: p.can_publish_data,
            hidden: p.hidden,
            can_publish_sources: meridian_auth::PublishSources::from_proto(&p.can_publish_sources),
            can_update_own_metadata: p.can_update_metadata,
            ..profile.grants
        };
        let changed = new != profile.grants;
        profile.grants = new;
        changed
    }

    /// Applies LiveKit's `UpdateParticipantMetadata` as `participant.go`
    /// `UpdateMetadata` does: a non-empty name or metadata replaces the old, and
    /// attributes merge in (an empty value deletes its key). From the participant
    /// itself (`from_admin` false) it needs `canUpdateOwnMetadata`.
    ///
    /// Returns whether anything changed, or the refusal: `NOT_ALLOWED` without the
    /// grant, `LIMIT_EXCEEDED` over [`MAX_NAME_BYTES`], [`MAX_METADATA_BYTES`] or
    /// [`MAX_ATTRIBUTES_BYTES`]. A refused update changes nothing.
    pub fn update_metadata(
        &self,
        req: &proto::UpdateParticipantMetadata,
        from_admin: bool,
    ) -> Result<bool, (Reason, &'static str)> {
        let mut profile = lock(&self.profile);
        if !from_admin && !profile.grants.can_update_own_metadata {
            return Err((Reason::NotAllowed, "does not have permission to update own metadata"));
        }
        if req.name.len() > MAX_NAME_BYTES {
            return Err((Reason::LimitExceeded, "exceeds name length limit"));
        }
        if req.metadata.len() > MAX_METADATA_BYTES {
            return Err((Reason::LimitExceeded, "exceeds metadata size limit"));
        }
        let mut attributes = profile.attributes.clone();
        for (k, v) in &req.attributes {
            if v.is_empty() {
                attributes.remove(k);
            } else {
                attributes.insert(k.clone(), v.clone());
            }
        }
        if attributes_bytes(&req.attributes) > MAX_ATTRIBUTES_BYTES
            || attributes_bytes(&attributes) > MAX_ATTRIBUTES_BYTES
        {
            return Err((Reason::LimitExceeded, "exceeds attributes size limit"));
        }
        let mut changed = attributes != profile.attributes;
        let profile = &mut *profile;
        profile.attributes = attributes;
        for (new, old) in [(&req.name, &mut profile.name), (&req.metadata, &mut profile.metadata)] {
            if !new.is_empty() && new != old {
                old.clone_from(new);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Queues a signal message for the client. A full queue means the client is
    /// not reading; it is disconnected.
    pub fn send(&self, message: Out) {
        if let Err(e) = self.signal.try_send(message) {
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!(participant = %self.sid, "signal queue full; disconnecting");
                self.close_signal();
            }
        }
    }

    /// Keeps the queue of a session that dropped, for a resume.
    pub(crate) fn park(&self, queue: mpsc::Receiver<Out>) {
        *lock(&self.parked) = Some(queue);
    }

    /// Takes the parked queue: `Some` for the one resume that may take it.
    pub(crate) fn unpark(&self) -> Option<mpsc::Receiver<Out>> {
        lock(&self.parked).take()
    }

    /// After a resume: offers the subscriber PC with an ICE restart, as
    /// livekit-client waits for (its `subscriber.restartingIce`). An offer still
    /// unanswered from before the drop is superseded.
    pub async fn restart_subscriber_ice(&self) -> Result<(), ParticipantError> {
        let mut neg = self.negotiation.lock().await;
        neg.pending = false;
        self.offer_with(&mut neg, true).await
    }

    /// Ends the participant's signal session.
    pub fn close_signal(&self) {
        self.closed.notify_one();
    }

    /// The participant as LiveKit's `ParticipantInfo`, with a fresh version: each
    /// call's is higher than the last's, and describes a state at least as new.
    pub fn info(&self, state: proto::participant_info::State) -> proto::ParticipantInfo {
        let mut profile = lock(&self.profile);
        let tracks: Vec<proto::TrackInfo> = lock(&self.published).iter().map(|t| t.info()).collect();
        // Wrapping: 2^32 updates away, not a panic.
        profile.version = profile.version.wrapping_add(1);
        let joined = unix(self.joined_at);
        let grants = profile.grants;
        proto::ParticipantInfo {
            sid: self.sid.to_string(),
            identity: self.identity.to_string(),
            name: profile.name.clone(),
            metadata: profile.metadata.clone(),
            attributes: profile.attributes.clone(),
            state: state as i32,
            is_publisher: !tracks.is_empty(),
            tracks,
            joined_at: joined.as_secs() as i64,
            joined_at_ms: joined.as_millis() as i64,
            version: profile.version,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: grants.can_subscribe,
                can_publish: grants.can_publish,
                can_publish_data: grants.can_publish_data,
                can_publish_sources: grants.can_publish_sources.to_proto(),
                can_update_metadata: grants.can_update_own_metadata,
                hidden: grants.hidden,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Tracks this participant publishes.
    pub fn published(&self) -> Vec<Arc<PublishedTrack>> {
        lock(&self.published).clone()
    }

    /// Handles the client's publisher offer: answer it, echoing its id. Returns the
    /// sids of published tracks whose media sections the offer no longer sends on
    /// (livekit-client unpublishes by renegotiating, with no message of its own).
    pub async fn handle_offer(
        self: &Arc<Self>,
        offer: proto::SessionDescription,
    ) -> Result<Vec<TrackSid>, ParticipantError> {
        let sections = sdp::media_sections(&offer.sdp);
        if sections.len() > MAX_MEDIA_SECTIONS {
            return Err(ParticipantError::BadRequest(format!(
                "offer with {} media sections (at most {MAX_MEDIA_SECTIONS})",
                sections.len()
            )));
        }
        tracing::info!(participant = %self.sid, id = offer.id, sections = sections.len(), "publisher offer");
        tracing::debug!(participant = %self.sid, id = offer.id, ?sections, "publisher offer's sections");
        let preferred = self.requested_codecs(&sections);
        let sdp = self.publisher.accept_offer(&offer.sdp, &preferred).await.map_err(|e| match e {
            OfferError::Refused(why) => ParticipantError::BadRequest(why),
            OfferError::Closed(c) => ParticipantError::Closed(c),
        })?;
        *lock(&self.publisher_sections) = sections
            .iter()
            .filter(|s| s.sending)
            .filter_map(|s| Some((Mid::from(s.mid.as_deref()?), s.track_id.clone()?)))
            .collect();
        self.send(Out::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp,
            id: offer.id,
            ..Default::default()
        }));
        let silent: Vec<&str> = sections.iter().filter(|s| !s.sending).filter_map(|s| s.mid.as_deref()).collect();
        let published = lock(&self.published);
        Ok(published.iter().filter(|t| silent.contains(&t.mid().as_str())).map(|t| t.sid.clone()).collect())
    }

    /// Media id → MIME type of the codec each pending track asked for in its
    /// AddTrackRequest (`simulcast_codecs[0].codec`, e.g. `h264`).
    fn requested_codecs(&self, sections: &[sdp::MediaSection]) -> HashMap<String, String> {
        let pending = lock(&self.pending_tracks);
        sections
            .iter()
            .filter_map(|s| {
                let (mid, cid) = (s.mid.clone()?, s.track_id.as_deref()?);
                let codec = pending.iter().find(|p| p.cid == cid)?.codec.clone()?;
                Some((mid, codec))
            })
            .collect()
    }

    /// Handles the client's answer to our subscriber offer. Returns the tracks
    /// whose down-tracks it bound (first carried by the offer it answers), for
    /// the room to tell their publishers (LiveKit's `TrackSubscribed`).
    pub async fn handle_answer(
        &self,
        answer: proto::SessionDescription,
    ) -> Result<Vec<Arc<PublishedTrack>>, ParticipantError> {
        let mut neg = self.negotiation.lock().await;
        if !neg.awaiting_answer || (answer.id != 0 && answer.id != neg.offer_id) {
            tracing::debug!(participant = %self.sid, id = answer.id, "stale subscriber answer ignored");
            return Ok(Vec::new());
        }
        tracing::trace!(participant = %self.sid, sdp = %answer.sdp, "subscriber answer");
        let added = self.subscriber.accept_answer(&answer.sdp).await.map_err(|e| match e {
            crate::subscriber::AnswerError::Closed(c) => ParticipantError::Closed(c),
            other => ParticipantError::BadRequest(other.to_string()),
        })?;
        neg.awaiting_answer = false;
        let bound = self.bind_down_tracks(added).await?;
        if std::mem::take(&mut neg.pending) || !lock(&self.to_stop).is_empty() {
            self.offer(&mut neg).await?;
        }
        Ok(bound)
    }

    /// After an answer: binds each down-track its offer `added` (msid track id,
    /// media section) to its section, with the payload type the subscriber
    /// accepted, and returns their tracks; a section whose down-track was
    /// removed meanwhile is stopped in the next offer. Settings made before a
    /// sink was bound apply now.
    async fn bind_down_tracks(
        &self,
        added: Vec<(String, str0m::media::Mid)>,
    ) -> Result<Vec<Arc<PublishedTrack>>, ParticipantError> {
        let mut down_tracks = self.down_tracks.lock().await;
        let mut bound = Vec::new();
        for (track_id, mid) in added {
            let Some(dt) = down_tracks.values_mut().find(|dt| !dt.bound && dt.sink.track_id() == track_id) else {
                lock(&self.to_stop).push(mid);
                continue;
            };
            let Some(pt) = self.subscriber.payload_type(mid, dt.track.mime_type()).await? else {
                tracing::warn!(participant = %self.sid, track = %dt.track.sid, mime = dt.track.mime_type(),
                    "the subscriber's answer accepts no payload type for the track's codec");
                continue;
            };
            dt.sink.bind(self.subscriber.handle(), mid, pt, dt.track.media_kind());
            dt.bound = true;
            self.offered.fetch_add(1, Ordering::Relaxed);
            bound.push(Arc::clone(&dt.track));
        }
        for dt in down_tracks.values_mut() {
            self.apply_settings(dt).await;
        }
        Ok(bound)
    }

    /// Gives `dt`'s sink this subscriber's settings for its track: the layer
    /// it asks for, and whether it disabled the track.
    async fn apply_settings(&self, dt: &mut DownTrack) {
        let (preference, disabled) = {
            let choices = lock(&self.choices);
            (choices.preference(&dt.track.sid), choices.is_disabled(&dt.track.sid))
        };
        dt.track.set_sink_settings(&dt.sink, preference, disabled);
    }

    /// Whether this participant, as a subscriber, wants `track` (its
    /// `UpdateSubscription` choice, else its `auto_subscribe`).
    pub fn wants(&self, track: &TrackSid) -> bool {
        lock(&self.choices).wants(track)
    }

    /// Records `UpdateSubscription{subscribe}` for `tracks`. A client naming over
    /// [`crate::subscription::MAX_TRACK_CHOICES`] tracks is refused.
    pub fn choose(
        &self,
        tracks: &std::collections::HashSet<TrackSid>,
        subscribe: bool,
    ) -> Result<(), ParticipantError> {
        lock(&self.choices).choose(tracks, subscribe).map_err(ParticipantError::BadRequest)
    }

    /// Records whether this subscriber may have `track` of `publisher`, and tells
    /// it with `SubscriptionPermissionUpdate` when that is news to it.
    pub(crate) fn tell_permission(&self, publisher: &ParticipantSid, track: &TrackSid, allowed: bool) {
        if lock(&self.choices).permission_changed(track, allowed) {
            self.send(Out::SubscriptionPermissionUpdate(proto::SubscriptionPermissionUpdate {
                participant_sid: publisher.to_string(),
                track_sid: track.to_string(),
                allowed,
            }));
        }
    }

    /// Forgets this subscriber's choices and settings for `track` (unpublished).
    pub(crate) fn forget_track(&self, track: &TrackSid) {
        lock(&self.choices).forget(track);
    }

    /// Handles `UpdateTrackSettings`: `disabled` stops forwarding those tracks to
    /// this subscriber, or resumes it (LiveKit's `DownTrack.Mute`); `width` and
    /// `height` (else `quality`) choose the simulcast layer it gets (fps is not
    /// used). Settings for a track not subscribed yet apply once it is.
    pub async fn handle_track_settings(&self, req: &proto::UpdateTrackSettings) -> Result<(), ParticipantError> {
        let mut changed = Vec::new();
        {
            let mut choices = lock(&self.choices);
            for sid in &req.track_sids {
                let sid = TrackSid::new(sid.as_str());
                let disabled = choices.set_disabled(&sid, req.disabled).map_err(ParticipantError::BadRequest)?;
                let preference = crate::subscription::Preference::of(req);
                let preferred = choices.set_preference(&sid, preference).map_err(ParticipantError::BadRequest)?;
                if disabled || preferred {
                    changed.push(sid);
                }
            }
        }
        let mut down_tracks = self.down_tracks.lock().await;
        for sid in changed {
            if let Some(dt) = down_tracks.get_mut(&sid) {
                self.apply_settings(dt).await;
            }
        }
        Ok(())
    }

    /// Whether the participant `who` may subscribe to this participant's `track`.
    pub fn allows(&self, who: &ParticipantIdentity, track: &TrackSid) -> bool {
        lock(&self.permissions).allows(who, track)
    }

    /// Replaces who may subscribe to this participant's tracks with
    /// `SubscriptionPermission` (see [`Permissions::from_proto`]; `identity_of`
    /// finds a sid's identity in the room). An entry naming nobody leaves the
    /// permissions as they were (`Ok(false)`); an oversized one is refused.
    pub fn set_permissions(
        &self,
        req: &proto::SubscriptionPermission,
        identity_of: impl Fn(&str) -> Option<ParticipantIdentity>,
    ) -> Result<bool, ParticipantError> {
        match Permissions::from_proto(req, identity_of) {
            Ok(p) => {
                *lock(&self.permissions) = p;
                Ok(true)
            }
            Err(PermissionError::NeedsId) => {
                tracing::info!(participant = %self.sid, "SubscriptionPermission naming no participant ignored");
                Ok(false)
            }
            Err(PermissionError::TooLarge(why)) => Err(ParticipantError::BadRequest(why)),
        }
    }

    /// Handles a trickled ICE candidate (`TrickleRequest.candidate_init`, the JSON of
    /// `RTCIceCandidate.toJSON()`).
    pub async fn handle_trickle(&self, trickle: proto::TrickleRequest) -> Result<(), ParticipantError> {
        if trickle.candidate_init.len() > MAX_CANDIDATE_BYTES {
            return Err(ParticipantError::BadRequest(format!(
                "candidateInit of {} bytes (at most {MAX_CANDIDATE_BYTES})",
                trickle.candidate_init.len()
            )));
        }
        let init: CandidateInit = serde_json::from_str(&trickle.candidate_init)
            .map_err(|e| ParticipantError::BadRequest(format!("candidateInit: {e}")))?;
        let subscriber = trickle.target == proto::SignalTarget::Subscriber as i32;
        if self.trickled[usize::from(subscriber)].fetch_add(1, Ordering::Relaxed) >= MAX_TRICKLED_CANDIDATES {
            return Err(ParticipantError::BadRequest(format!(
                "more than {MAX_TRICKLED_CANDIDATES} candidates trickled to one peer connection"
            )));
        }
        if subscriber {
            self.subscriber.add_remote_candidate(&init.candidate);
            return Ok(());
        }
        // ICE-lite PCs take candidates whenever they come, before a description too.
        self.publisher.add_remote_candidate(&init.candidate);
        Ok(())
    }

    /// Handles `AddTrackRequest`: records the pending track and answers
    /// `TrackPublishedResponse` with its new sid.
    // `simulcast` and `layers` are deprecated in the proto, but livekit-client 2.x
    // still reads them for remote video tracks.
    #[allow(deprecated)]
    pub fn handle_add_track(&self, req: proto::AddTrackRequest) -> Result<(), ParticipantError> {
        if !self.grants().can_publish_source(req.source) {
            // As LiveKit's `AddTrack`: refused with the request echoed, so the
            // client fails the publish at once instead of timing out.
            tracing::info!(participant = %self.sid, source = req.source, "AddTrackRequest without permission refused");
            self.send(Out::RequestResponse(proto::RequestResponse {
                reason: Reason::NotAllowed as i32,
                message: "does not have permission to publish this source".into(),
                request: Some(proto::request_response::Request::AddTrack(req)),
                ..Default::default()
            }));
            return Ok(());
        }
        if req.cid.is_empty() {
            return Err(ParticipantError::BadRequest("AddTrackRequest without cid".into()));
        }
        let text = req.cid.len().saturating_add(req.name.len()).saturating_add(req.stream.len());
        if text > MAX_TRACK_TEXT_BYTES {
            return Err(ParticipantError::BadRequest(format!(
                "AddTrackRequest cid, name and stream of {text} bytes (at most {MAX_TRACK_TEXT_BYTES})"
            )));
        }
        if lock(&self.pending_tracks).len() >= MAX_PENDING_TRACKS {
            return Err(ParticipantError::BadRequest(format!(
                "more than {MAX_PENDING_TRACKS} tracks announced and not yet received"
            )));
        }
        let info = proto::TrackInfo {
            sid: TrackSid::random().into_string(),
            r#type: req.r#type,
            name: req.name,
            muted: req.muted,
            width: req.width,
            height: req.height,
            simulcast: req.layers.len() > 1,
            source: req.source,
            layers: req.layers,
            disable_red: req.disable_red,
            stream: req.stream,
            ..Default::default()
        };
        let kind = if info.r#type == proto::TrackType::Audio as i32 { "audio" } else { "video" };
        let codec = req.simulcast_codecs.first().filter(|c| !c.codec.is_empty()).map(|c| format!("{kind}/{}", c.codec));
        tracing::info!(participant = %self.sid, cid = %req.cid, track = %info.sid, kind = info.r#type, ?codec, "AddTrackRequest");
        lock(&self.pending_tracks).push(PendingTrack { cid: req.cid.clone(), info: info.clone(), codec });
        self.send(Out::TrackPublished(proto::TrackPublishedResponse { cid: req.cid, track: Some(info) }));
        Ok(())
    }

    /// Takes the pending track for media with msid track id `cid`, or else the
    /// oldest pending track of the same kind.
    fn take_pending(&self, cid: &str, kind: MediaKind) -> Option<proto::TrackInfo> {
        let want = if kind == MediaKind::Audio { proto::TrackType::Audio } else { proto::TrackType::Video } as i32;
        let mut pending = lock(&self.pending_tracks);
        let at =
            pending.iter().position(|p| p.cid == cid).or_else(|| pending.iter().position(|p| p.info.r#type == want))?;
        Some(pending.remove(at).info)
    }

    /// Removes a published track; returns it if it was there.
    pub(crate) fn remove_published(&self, track_sid: &TrackSid) -> Option<Arc<PublishedTrack>> {
        let mut published = lock(&self.published);
        let at = published.iter().position(|t| t.sid == *track_sid)?;
        Some(published.remove(at))
    }

    /// Handles `MuteTrackRequest`; returns whether the track's state changed.
    pub fn handle_mute(&self, req: &proto::MuteTrackRequest) -> bool {
        lock(&self.published).iter().find(|t| t.sid == *req.sid).is_some_and(|t| t.set_muted(req.muted))
    }

    /// Adds a down-track for `track` to the subscriber PC and offers it.
    pub async fn subscribe(&self, track: &Arc<PublishedTrack>) -> Result<(), ParticipantError> {
        {
            let mut down_tracks = self.down_tracks.lock().await;
            if self.is_closed.load(Ordering::Relaxed) || down_tracks.contains_key(&track.sid) {
                return Ok(());
            }
            // Each down-track gets a media section of its own (a removed one's
            // is stopped, and str0m may recycle it), hence the cap on them all.
            let made =
                self.offered.load(Ordering::Relaxed).saturating_add(down_tracks.values().filter(|d| !d.bound).count());
            if made >= MAX_SUBSCRIBER_TRANSCEIVERS {
                return Err(ParticipantError::BadRequest(format!(
                    "more than {MAX_SUBSCRIBER_TRANSCEIVERS} subscriptions made on this connection"
                )));
            }
            let (generation, preference, disabled) = {
                let mut choices = lock(&self.choices);
                (choices.next_generation(&track.sid), choices.preference(&track.sid), choices.is_disabled(&track.sid))
            };
            let Some(sink) = track.new_sink(generation, preference, disabled) else {
                return Err(ParticipantError::BadRequest(format!(
                    "subscribed to {} again more than {} times",
                    track.sid,
                    forward::MAX_RESUBSCRIPTIONS
                )));
            };
            let dt = DownTrack { track: Arc::clone(track), sink, offered_in: None, bound: false };
            down_tracks.insert(track.sid.clone(), dt);
        }
        // The sink asks the publisher for a keyframe as it starts.
        self.negotiate().await
    }

    /// Closes the connection quality windows of this participant's tracks,
    /// published and subscribed; returns the worst (LiveKit's participant
    /// quality is its worst track's).
    pub async fn close_quality_windows(&self) -> meridian_forward::quality::Quality {
        let mut qualities: Vec<_> = self.published().iter().map(|t| t.close_quality_window()).collect();
        let down_tracks = self.down_tracks.lock().await;
        qualities.extend(down_tracks.values().map(|dt| dt.sink.close_quality_window(dt.track.info().muted)));
        meridian_forward::quality::worst(qualities)
    }

    /// The participants this one holds a down-track of (whose speaking it hears of).
    pub async fn subscribed_publishers(&self) -> std::collections::HashSet<ParticipantSid> {
        self.down_tracks.lock().await.values().map(|dt| dt.track.publisher_sid.clone()).collect()
    }

    /// Removes the down-track of `track_sid`, if any, and offers the change.
    pub async fn unsubscribe(&self, track_sid: &TrackSid) -> Result<(), ParticipantError> {
        {
            let mut down_tracks = self.down_tracks.lock().await;
            let Some(dt) = down_tracks.remove(track_sid) else { return Ok(()) };
            dt.track.remove_sink(&dt.sink);
            if self.is_closed.load(Ordering::Relaxed) {
                return Ok(());
            }
            // A section not answered yet is stopped once its answer binds it.
            if let Some(mid) = dt.sink.mid() {
                lock(&self.to_stop).push(mid);
            }
        }
        self.negotiate().await
    }

    async fn negotiate(&self) -> Result<(), ParticipantError> {
        let mut neg = self.negotiation.lock().await;
        if neg.awaiting_answer {
            neg.pending = true;
            return Ok(());
        }
        self.offer(&mut neg).await
    }

    async fn offer(&self, neg: &mut Negotiation) -> Result<(), ParticipantError> {
        self.offer_with(neg, false).await
    }

    /// Offers every down-track no answer has bound yet (str0m forgets the
    /// sections of an offer superseded unanswered, so they go again), stops
    /// the sections of removed ones, and restarts ICE if asked.
    async fn offer_with(&self, neg: &mut Negotiation, ice_restart: bool) -> Result<(), ParticipantError> {
        let add: Vec<NewMedia<String>> = self
            .down_tracks
            .lock()
            .await
            .values()
            .filter(|dt| !dt.bound)
            .map(|dt| NewMedia {
                key: dt.sink.track_id().to_owned(),
                kind: dt.track.media_kind(),
                stream_id: dt.track.stream_id().to_owned(),
                track_id: dt.sink.track_id().to_owned(),
            })
            .collect();
        let stop = std::mem::take(&mut *lock(&self.to_stop));
        let Some(offer) = self.subscriber.offer(OfferRequest { add, stop, ice_restart }).await? else {
            return Ok(());
        };
        tracing::trace!(participant = %self.sid, sdp = %offer.sdp, "subscriber offer");
        neg.offer_id += 1;
        {
            let mut down_tracks = self.down_tracks.lock().await;
            for (track_id, _) in &offer.added {
                if let Some(dt) = down_tracks.values_mut().find(|dt| dt.sink.track_id() == track_id) {
                    dt.offered_in = Some(neg.offer_id);
                }
            }
        }
        neg.awaiting_answer = true;
        self.send(Out::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.sdp,
            id: neg.offer_id,
            ..Default::default()
        }));
        Ok(())
    }

    /// Closes both PCs. Idempotent.
    pub async fn close(&self) {
        if self.is_closed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.publisher.close();
        self.subscriber.close();
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// An offer of `sections` audio sections that str0m would take.
    fn offer(sections: usize) -> proto::SessionDescription {
        let mut sdp = String::from(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             a=fingerprint:sha-256 00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00\r\n",
        );
        for mid in 0..sections {
            sdp.push_str(&format!(
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\na=mid:{mid}\r\na=sendonly\r\n\
                 a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
            ));
        }
        proto::SessionDescription { r#type: "offer".into(), sdp, id: 1, ..Default::default() }
    }

    /// A subscriber's estimate is only watched for its first 2 s (media starts
    /// unlimited, as in LiveKit), even when it falls; once committed it stays so.
    #[test]
    fn an_estimate_commits_after_two_seconds() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut e = Estimate::new(start);
        e.update(crate::subscriber::INITIAL_ESTIMATE_BPS, true, at(0));
        assert_eq!(e.committed(), None);
        e.update(900_000, true, at(1_500));
        assert_eq!(e.committed(), None, "rising, within 2 s");
        e.update(1_200_000, true, at(2_000));
        assert_eq!(e.committed(), Some(1_200_000));
        e.update(5_000_000, true, at(2_100));
        assert_eq!(e.committed(), Some(5_000_000), "stays committed");

        let mut short = Estimate::new(start);
        short.update(crate::subscriber::INITIAL_ESTIMATE_BPS, true, at(0));
        short.update(200_000, true, at(400));
        assert_eq!(short.committed(), None, "a falling estimate waits too");
        short.update(250_000, true, at(2_000));
        assert_eq!(short.committed(), Some(250_000));
    }

    /// Each media section costs a transceiver; an offer over the cap is refused
    /// before str0m sees it, and the session then closes.
    #[tokio::test]
    async fn an_offer_over_the_media_section_cap_is_refused_before_str0m_sees_it() {
        let sfu = crate::test_node();
        let (_room, me, _signal) = crate::test_join(&sfu, "caps", "mallory", true).await;
        match me.handle_offer(offer(MAX_MEDIA_SECTIONS + 1)).await {
            Err(ParticipantError::BadRequest(why)) => {
                assert!(why.contains(&format!("at most {MAX_MEDIA_SECTIONS}")), "{why}")
            }
            other => panic!("refused: {other:?}"),
        }
        assert_eq!(
            me.publisher.negotiated(Mid::from("0")).await.unwrap(),
            None,
            "nothing set up for the refused offer"
        );
    }
}
