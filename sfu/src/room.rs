//! Rooms on this node: who is in them, who publishes what, and who hears of it.
//!
//! A room is created on its first join and removed when its last participant
//! leaves. Who gets a down-track of what is [`crate::subscription`]'s rule,
//! applied by [`Room::reconcile`] whenever a track, a choice or a permission
//! changes. `ParticipantUpdate`s always carry the full track list, and go out
//! before the subscriber offer that carries the media, since livekit-client drops
//! media of a track it has not heard of.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use livekit_protocol::participant_info::State;
use livekit_protocol::signal_response::Message as Out;
use meridian_auth::VerifiedGrant;
use meridian_ids::{NodeId, ParticipantSid, RegionId, RoomName, RoomSid, TrackSid};
use meridian_schema::{RoomRecord, Store};

use crate::engine::{Engine, EngineError};
use crate::forward::PublishedTrack;
use crate::metrics::NodeMetrics;
use crate::participant::{DataKind, Participant, ParticipantError, SignalTx};
use crate::webhook::Webhooks;
use prometheus_client::metrics::counter::Counter;

/// How long a subscription to a track that is not published waits for it before
/// the subscriber is told `SubscriptionResponse{SE_TRACK_NOTFOUND}` (LiveKit's
/// `notFoundTimeout`).
pub const TRACK_NOT_FOUND_WAIT: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are single map operations; a poisoned lock is consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A room hosted on this node.
pub struct Room {
    /// Room name (the token's `video.room`).
    pub name: RoomName,
    /// Room sid (`RM_…`).
    pub sid: RoomSid,
    created_at: SystemTime,
    /// Room metadata (RoomService `CreateRoom`, then `UpdateRoomMetadata`).
    metadata: Mutex<String>,
    /// Participants it takes; 0: no limit (`CreateRoom.max_participants`).
    max_participants: u32,
    /// How long it stays open once empty (`CreateRoom.departure_timeout`);
    /// zero: it closes at once.
    departure_timeout: Duration,
    engine: Arc<Engine>,
    participants: Mutex<HashMap<ParticipantSid, Arc<Participant>>>,
    metrics: NodeMetrics,
    webhooks: Webhooks,
    /// The speakers each participant was last told of (`SpeakersChanged`).
    speakers: Mutex<HashMap<ParticipantSid, meridian_forward::speakers::Speakers>>,
    /// The connection qualities last announced (`ConnectionQualityUpdate`).
    qualities: Mutex<HashMap<ParticipantSid, meridian_forward::quality::Quality>>,
}

impl Room {
    /// Closes every participant's connection quality window and, when a
    /// participant is new or its quality changed, sends `ConnectionQualityUpdate`
    /// to each participant about itself and those it subscribes to (LiveKit's
    /// `connectionQualityWorker`, every 5 s).
    pub async fn update_connection_quality(&self) {
        let participants = self.participants();
        let mut now = HashMap::with_capacity(participants.len());
        for p in &participants {
            now.insert(p.sid.clone(), p.close_quality_windows().await);
        }
        let changed = {
            let mut last = lock(&self.qualities);
            let changed = now.iter().any(|(sid, q)| last.get(sid) != Some(q));
            *last = now.clone();
            changed
        };
        if !changed {
            return;
        }
        let info = |sid: &ParticipantSid| {
            now.get(sid).map(|q| proto::ConnectionQualityInfo {
                participant_sid: sid.to_string(),
                quality: *q as i32,
                score: q.mos(),
            })
        };
        for p in participants {
            let mut updates: Vec<proto::ConnectionQualityInfo> = info(&p.sid).into_iter().collect();
            updates.extend(p.subscribed_publishers().await.iter().filter_map(info));
            if !updates.is_empty() {
                p.send(Out::ConnectionQuality(proto::ConnectionQualityUpdate { updates }));
            }
        }
    }

    /// Announces who started or stopped speaking, or speaks at another level
    /// (LiveKit's `audioUpdateWorker`): a participant speaks while one of its
    /// microphone tracks does, at the loudest one's level. Each participant
    /// hears `SpeakersChanged` about itself and those it subscribes to, with
    /// what changed since it was last told, so one who joins or subscribes
    /// later hears of those already speaking.
    pub async fn update_speakers(&self, now: std::time::Instant) {
        let participants = self.participants();
        let speaking: Vec<(String, f64)> = participants
            .iter()
            .filter_map(|p| {
                let level = p
                    .published()
                    .iter()
                    .filter_map(|t| t.audio_level(now).filter(|(_, active)| *active).map(|(level, _)| level))
                    .reduce(f64::max)?;
                Some((p.sid.to_string(), level))
            })
            .collect();
        // Nobody speaks and nobody was told of a speaker: nothing can change,
        // so the 400 ms tick costs no per-participant work in a quiet room.
        if speaking.is_empty() && lock(&self.speakers).values().all(|s| s.is_silent()) {
            return;
        }
        let mut told = Vec::with_capacity(participants.len());
        for p in &participants {
            let subscribed = p.subscribed_publishers().await;
            let heard: Vec<(String, f64)> = speaking
                .iter()
                .filter(|(sid, _)| *sid == p.sid.as_str() || subscribed.contains(&ParticipantSid::new(sid.as_str())))
                .cloned()
                .collect();
            told.push((p, heard));
        }
        let mut last = lock(&self.speakers);
        last.retain(|sid, _| participants.iter().any(|p| p.sid == *sid));
        for (p, heard) in told {
            let changes = last.entry(p.sid.clone()).or_default().changes(heard);
            if changes.is_empty() {
                continue;
            }
            let speakers = changes
                .into_iter()
                .map(|c| proto::SpeakerInfo { sid: c.sid, level: c.level, active: c.active })
                .collect();
            p.send(Out::SpeakersChanged(proto::SpeakersChanged { speakers }));
        }
    }

    /// Emits webhook `event` about this room (and `who`, and `track`).
    pub(crate) fn webhook(&self, event: &str, who: Option<proto::ParticipantInfo>, track: Option<proto::TrackInfo>) {
        self.webhooks.emit(event, self.info(), who, track);
    }

    /// The node-wide counter of RTP bytes written to down-tracks.
    pub(crate) fn forwarded_bytes(&self) -> &Counter {
        &self.metrics.forwarded_bytes
    }

    /// The node's histograms of what subscribers report about down-tracks.
    pub(crate) fn subscriber_reports(&self) -> &crate::metrics::SubscriberReports {
        &self.metrics.subscriber_reports
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// LiveKit's `Room` message for this room.
    pub fn info(&self) -> proto::Room {
        let created = self.created_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let participants = lock(&self.participants);
        proto::Room {
            sid: self.sid.to_string(),
            name: self.name.to_string(),
            creation_time: created.as_secs() as i64,
            creation_time_ms: created.as_millis() as i64,
            num_participants: participants.len() as u32,
            num_publishers: participants.values().filter(|p| !p.published().is_empty()).count() as u32,
            metadata: lock(&self.metadata).clone(),
            max_participants: self.max_participants,
            departure_timeout: self.departure_timeout.as_secs() as u32,
            ..Default::default()
        }
    }

    /// Everyone in the room.
    pub fn participants(&self) -> Vec<Arc<Participant>> {
        lock(&self.participants).values().cloned().collect()
    }

    /// Everyone in the room but `except`.
    pub fn others(&self, except: &ParticipantSid) -> Vec<Arc<Participant>> {
        lock(&self.participants).values().filter(|p| p.sid != *except).cloned().collect()
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        lock(&self.participants).len()
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `info` of `about` to everyone else (nobody, if `about` is hidden).
    fn announce(&self, about: &Participant, info: proto::ParticipantInfo) {
        if about.grants().hidden {
            return;
        }
        for p in self.others(&about.sid) {
            p.send(Out::Update(proto::ParticipantUpdate { participants: vec![info.clone()] }));
        }
    }

    /// Tells the room that `publisher` now publishes `track`, and subscribes
    /// everyone who wants it and may have it.
    pub(crate) async fn published(&self, publisher: &Arc<Participant>, track: Arc<PublishedTrack>) {
        self.metrics.tracks.inc();
        self.webhook("track_published", Some(publisher.info(State::Active)), Some(track.info()));
        self.broadcast_state(publisher);
        for p in self.others(&publisher.sid) {
            self.reconcile(publisher, &track, &p).await;
        }
    }

    /// Gives `subscriber` a down-track of `publisher`'s `track` when it wants the
    /// track, its token lets it subscribe and `publisher` allows it; removes the
    /// down-track otherwise. A subscriber that wants the track hears whether it
    /// is allowed (`SubscriptionPermissionUpdate`, on the first answer and on
    /// each change). Idempotent.
    pub(crate) async fn reconcile(
        &self,
        publisher: &Participant,
        track: &Arc<PublishedTrack>,
        subscriber: &Participant,
    ) {
        let wanted = subscriber.wants(&track.sid) && subscriber.grants().can_subscribe;
        let allowed = publisher.allows(subscriber.identity(), &track.sid);
        if wanted {
            subscriber.tell_permission(&publisher.sid, &track.sid, allowed);
        }
        let result = if wanted && allowed {
            subscriber.subscribe(track).await
        } else {
            subscriber.unsubscribe(&track.sid).await
        };
        if let Err(e) = result {
            tracing::warn!(room = %self.name, participant = %subscriber.sid, track = %track.sid, error = %e, "subscription not updated");
        }
    }

    /// The participant publishing `track`, and the track.
    fn find_track(&self, track: &TrackSid) -> Option<(Arc<Participant>, Arc<PublishedTrack>)> {
        self.participants().into_iter().find_map(|p| {
            let t = p.published().into_iter().find(|t| t.sid == *track)?;
            Some((p, t))
        })
    }

    /// Handles `UpdateSubscription` from `subscriber`: records its choice for
    /// every sid in `track_sids` and `participant_tracks` (clients put the same
    /// sid in both), then reconciles the tracks that are published. A sid not
    /// published within [`TRACK_NOT_FOUND_WAIT`] gets `SubscriptionResponse`
    /// with `SE_TRACK_NOTFOUND`, as LiveKit answers; success is the offer.
    pub(crate) async fn update_subscription(
        self: &Arc<Self>,
        subscriber: &Arc<Participant>,
        req: &proto::UpdateSubscription,
    ) -> Result<(), ParticipantError> {
        let sids: HashSet<TrackSid> = req
            .track_sids
            .iter()
            .chain(req.participant_tracks.iter().flat_map(|p| &p.track_sids))
            .map(|s| TrackSid::new(s.as_str()))
            .collect();
        subscriber.choose(&sids, req.subscribe)?;
        for sid in sids {
            match self.find_track(&sid) {
                Some((publisher, track)) => self.reconcile(&publisher, &track, subscriber).await,
                None if req.subscribe => self.await_track(subscriber, sid),
                None => {}
            }
        }
        Ok(())
    }

    /// Tells `subscriber` that `sid` was not found if it is still not published,
    /// and still wanted, [`TRACK_NOT_FOUND_WAIT`] from now.
    fn await_track(self: &Arc<Self>, subscriber: &Arc<Participant>, sid: TrackSid) {
        let (room, subscriber) = (Arc::downgrade(self), Arc::downgrade(subscriber));
        tokio::spawn(async move {
            tokio::time::sleep(TRACK_NOT_FOUND_WAIT).await;
            let (Some(room), Some(subscriber)) = (room.upgrade(), subscriber.upgrade()) else { return };
            if room.find_track(&sid).is_some() || !subscriber.wants(&sid) {
                return;
            }
            subscriber.forget_track(&sid);
            subscriber.send(Out::SubscriptionResponse(proto::SubscriptionResponse {
                track_sid: sid.to_string(),
                err: proto::SubscriptionError::SeTrackNotfound as i32,
            }));
        });
    }

    /// Handles `SubscriptionPermission` from `publisher`: replaces who may
    /// subscribe to its tracks, and reconciles everyone's down-tracks of them
    /// (those who lost permission lose the down-track and keep the wish).
    pub(crate) async fn update_permissions(
        &self,
        publisher: &Arc<Participant>,
        req: &proto::SubscriptionPermission,
    ) -> Result<(), ParticipantError> {
        let identity_of =
            |sid: &str| lock(&self.participants).values().find(|p| p.sid.as_str() == sid).map(|p| p.identity().clone());
        if !publisher.set_permissions(req, identity_of)? {
            return Ok(());
        }
        for subscriber in self.others(&publisher.sid) {
            for track in publisher.published() {
                self.reconcile(publisher, &track, &subscriber).await;
            }
        }
        Ok(())
    }

    /// After `subscriber`'s answer bound down-tracks of `tracks`: each track's
    /// publisher hears `TrackSubscribed` once, for its first subscriber that is
    /// not hidden (LiveKit's `OnTrackEverSubscribed`).
    pub(crate) fn bound(&self, subscriber: &Participant, tracks: Vec<Arc<PublishedTrack>>) {
        if subscriber.grants().hidden {
            return;
        }
        for track in tracks {
            if !track.first_subscription() {
                continue;
            }
            if let Some(publisher) = lock(&self.participants).get(&track.publisher_sid) {
                publisher.send(Out::TrackSubscribed(proto::TrackSubscribed { track_sid: track.sid.to_string() }));
            }
        }
    }

    /// Removes `publisher`'s track `track_sid` from the room. Idempotent.
    pub(crate) async fn unpublish(&self, publisher: &Arc<Participant>, track_sid: &TrackSid) {
        let Some(track) = publisher.remove_published(track_sid) else { return };
        self.metrics.tracks.dec();
        self.webhook("track_unpublished", Some(publisher.info(State::Active)), Some(track.info()));
        tracing::info!(room = %self.name, participant = %publisher.sid, track = %track_sid, "track unpublished");
        for p in self.others(&publisher.sid) {
            if let Err(e) = p.unsubscribe(track_sid).await {
                tracing::debug!(participant = %p.sid, error = %e, "unsubscribe failed");
            }
            p.forget_track(track_sid);
        }
        if lock(&self.participants).contains_key(&publisher.sid) {
            self.announce(publisher, publisher.info(State::Active));
        }
    }

    /// Relays `packet` from `from` to everyone else on `kind`'s channel, or only to
    /// its `destination_identities` when it names any.
    pub(crate) async fn relay_data(&self, from: &Participant, kind: DataKind, packet: &proto::DataPacket) {
        self.send_data(Some(&from.sid), kind, packet).await;
    }

    /// Sends `packet` on `kind`'s channel to everyone but `from` (none: the
    /// server sends it, RoomService `SendData`), or only to its
    /// `destination_identities` when it names any.
    pub(crate) async fn send_data(&self, from: Option<&ParticipantSid>, kind: DataKind, packet: &proto::DataPacket) {
        let bytes = bytes::Bytes::from(prost::Message::encode_to_vec(packet));
        for p in self.participants().into_iter().filter(|p| Some(&p.sid) != from) {
            if packet.destination_identities.is_empty()
                || packet.destination_identities.iter().any(|d| p.identity() == d.as_str())
            {
                p.send_data(kind, &bytes).await;
            }
        }
    }

    /// Replaces the room's metadata and tells everyone (`RoomUpdate`); returns
    /// the room's new `Room`.
    pub(crate) fn set_metadata(&self, metadata: String) -> proto::Room {
        *lock(&self.metadata) = metadata;
        let info = self.info();
        for p in self.participants() {
            p.send(Out::RoomUpdate(proto::RoomUpdate { room: Some(info.clone()) }));
        }
        info
    }

    /// Whether `identity` would be refused for the room's `max_participants`
    /// (one replacing its own earlier session is not).
    pub fn is_full_for(&self, identity: &meridian_ids::ParticipantIdentity) -> bool {
        let participants = lock(&self.participants);
        let others = participants.values().filter(|p| p.identity() != identity).count();
        self.max_participants > 0 && others >= self.max_participants as usize
    }

    /// The participant of `identity`.
    pub(crate) fn participant(&self, identity: &str) -> Option<Arc<Participant>> {
        lock(&self.participants).values().find(|p| p.identity().as_str() == identity).cloned()
    }

    /// Sends `about`'s current info to `about` itself and, unless it is hidden,
    /// to everyone else (LiveKit's `broadcastParticipantState`).
    pub(crate) fn broadcast_state(&self, about: &Participant) {
        let info = about.info(State::Active);
        about.send(Out::Update(proto::ParticipantUpdate { participants: vec![info.clone()] }));
        self.announce(about, info);
    }

    /// Handles `UpdateParticipantMetadata` from `who` itself: applies it (see
    /// [`Participant::update_metadata`]), tells the room when something changed,
    /// then answers `RequestResponse` with the request's id, `OK` or the refusal,
    /// as LiveKit does; LiveKit's Rust SDK waits for that answer.
    pub(crate) fn update_own_metadata(&self, who: &Participant, req: proto::UpdateParticipantMetadata) {
        let (reason, message) = match who.update_metadata(&req, false) {
            Ok(changed) => {
                if changed {
                    self.broadcast_state(who);
                }
                (proto::request_response::Reason::Ok, "")
            }
            Err(refusal) => {
                tracing::info!(participant = %who.sid, reason = refusal.1, "metadata update refused");
                refusal
            }
        };
        who.send(Out::RequestResponse(proto::RequestResponse {
            request_id: req.request_id,
            reason: reason as i32,
            message: message.into(),
            request: Some(proto::request_response::Request::UpdateMetadata(req)),
        }));
    }

    /// Handles a mute change from `who`.
    pub(crate) fn muted(&self, who: &Participant, req: &proto::MuteTrackRequest) {
        if who.handle_mute(req) {
            self.announce(who, who.info(State::Active));
        }
    }

    /// Removes `who`: closes its PCs, removes its down-tracks from everyone, and
    /// tells the others it left. Idempotent.
    pub(crate) async fn leave(&self, who: &Arc<Participant>) {
        let removed = lock(&self.participants).remove(&who.sid);
        if removed.is_none() {
            return;
        }
        self.metrics.participants.dec();
        who.close().await;
        for track in who.published() {
            if who.remove_published(&track.sid).is_some() {
                self.metrics.tracks.dec();
                self.webhook("track_unpublished", Some(who.info(State::Active)), Some(track.info()));
            }
            for p in self.others(&who.sid) {
                if let Err(e) = p.unsubscribe(&track.sid).await {
                    tracing::debug!(participant = %p.sid, error = %e, "unsubscribe failed");
                }
                p.forget_track(&track.sid);
            }
        }
        let gone = who.info(State::Disconnected);
        // LiveKit's name for one that never got a PC connected.
        let event = if who.was_connected() { "participant_left" } else { "participant_connection_aborted" };
        self.webhook(event, Some(gone.clone()), None);
        self.announce(who, gone);
        tracing::info!(room = %self.name, participant = %who.sid, identity = %who.identity, "participant left");
    }
}

/// Errors joining a room. Store errors are upstream (a retry may help); engine
/// errors are ours.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The store could not record the room.
    #[error("store: {0}")]
    Store(#[from] meridian_schema::StoreError),
    /// A peer connection could not be created.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The room has `max_participants` already (LiveKit's
    /// `ErrMaxParticipantsExceeded`, word for word).
    #[error("room has exceeded its max participants")]
    Full,
}

/// All rooms on this node.
pub struct RoomManager {
    engine: Arc<Engine>,
    metrics: NodeMetrics,
    webhooks: Webhooks,
    store: Arc<dyn Store>,
    region: RegionId,
    node: NodeId,
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
}

impl RoomManager {
    /// No rooms yet. Rooms are recorded in `store` with `region` and `node`.
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn Store>,
        region: RegionId,
        node: NodeId,
        metrics: NodeMetrics,
        webhooks: Webhooks,
    ) -> Self {
        Self { engine, metrics, webhooks, store, region, node, rooms: Mutex::new(HashMap::new()) }
    }

    /// Participants and published tracks on this node.
    pub fn load(&self) -> (u32, u32) {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        let participants: Vec<Arc<Participant>> = rooms.iter().flat_map(|r| r.participants()).collect();
        let tracks = participants.iter().map(|p| p.published().len()).sum::<usize>();
        (participants.len() as u32, tracks as u32)
    }

    /// RTP bytes written to down-tracks since the node started.
    pub fn forwarded_bytes(&self) -> u64 {
        self.metrics.forwarded_bytes.get()
    }

    /// Whether a room of this name is live on this node.
    pub fn has_room(&self, name: &RoomName) -> bool {
        lock(&self.rooms).contains_key(name)
    }

    /// The live room `name`.
    pub fn room(&self, name: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(&RoomName::from(name)).cloned()
    }

    /// Every live room.
    pub fn live_rooms(&self) -> Vec<Arc<Room>> {
        lock(&self.rooms).values().cloned().collect()
    }

    /// Number of live rooms.
    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Admits `grant`'s holder into its room: creates the room if needed, replaces
    /// a participant with the same identity (LiveKit's `DUPLICATE_IDENTITY`), and
    /// returns the room and the new participant (not yet announced; see
    /// [`RoomManager::announce_join`]). `auto_subscribe` is the `/rtc` URL's: off,
    /// the participant subscribes to nothing until it sends `UpdateSubscription`.
    /// `trace` is the join's span; the participant's milestones become its children.
    pub async fn join(
        &self,
        grant: &VerifiedGrant,
        auto_subscribe: bool,
        signal: SignalTx,
        trace: tracing::Span,
    ) -> Result<(Arc<Room>, Arc<Participant>), JoinError> {
        let existing = lock(&self.rooms).get(grant.room()).cloned();
        let room = match existing {
            Some(r) => r,
            None => {
                let record = self
                    .store
                    .get_or_create_room(&RoomRecord {
                        name: grant.room().clone(),
                        sid: RoomSid::random(),
                        region: Some(self.region.clone()),
                        node: Some(self.node.clone()),
                        created_at: SystemTime::now(),
                        pinned: false,
                        options: Default::default(),
                    })
                    .await?;
                if record.node.as_ref() != Some(&self.node) {
                    // The room's node is gone (the gateway only sends joins here
                    // when it is): take the room over.
                    let from = record.node.as_ref().map(NodeId::as_str);
                    tracing::info!(room = %record.name, ?from, "taking over room");
                    self.store.place_room(&record.name, &self.region, &self.node).await?;
                }
                let mut created = false;
                let mut rooms = lock(&self.rooms);
                let room = Arc::clone(rooms.entry(record.name.clone()).or_insert_with(|| {
                    tracing::info!(room = %record.name, sid = %record.sid, "room created");
                    created = true;
                    self.metrics.rooms.inc();
                    Arc::new(Room {
                        name: record.name.clone(),
                        sid: record.sid.clone(),
                        created_at: record.created_at,
                        metadata: Mutex::new(record.options.metadata.clone()),
                        max_participants: record.options.max_participants,
                        departure_timeout: Duration::from_secs(u64::from(record.options.departure_timeout)),
                        engine: Arc::clone(&self.engine),
                        participants: Mutex::new(HashMap::new()),
                        metrics: self.metrics.clone(),
                        webhooks: self.webhooks.clone(),
                        speakers: Mutex::new(HashMap::new()),
                        qualities: Mutex::new(HashMap::new()),
                    })
                }));
                drop(rooms);
                if created {
                    room.webhook("room_started", None, None);
                }
                room
            }
        };
        if room.is_full_for(grant.identity()) {
            return Err(JoinError::Full);
        }
        let duplicate = lock(&room.participants).values().find(|p| p.identity == *grant.identity()).cloned();
        if let Some(old) = duplicate {
            old.send(Out::Leave(proto::LeaveRequest {
                can_reconnect: false,
                reason: proto::DisconnectReason::DuplicateIdentity as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                ..Default::default()
            }));
            room.leave(&old).await;
            old.close_signal();
        }
        let participant = Participant::new(grant, auto_subscribe, signal, &room, trace).await?;
        lock(&room.participants).insert(participant.sid.clone(), Arc::clone(&participant));
        self.metrics.participants.inc();
        Ok((room, participant))
    }

    /// After the JoinResponse went out: tells the others about `who`, and
    /// subscribes `who` to what they publish.
    pub async fn announce_join(&self, room: &Arc<Room>, who: &Arc<Participant>) {
        room.announce(who, who.info(State::Joined));
        if let Err(e) = who.open_subscriber().await {
            tracing::warn!(participant = %who.sid, error = %e, "subscriber PC not offered");
        }
        for other in room.others(&who.sid) {
            for track in other.published() {
                room.reconcile(&other, &track, who).await;
            }
        }
    }

    /// Removes `who` from `room`, and the room from the node (and store) once
    /// empty: at once, or after the room's `departure_timeout` if nobody came
    /// back meanwhile.
    pub async fn leave(self: &Arc<Self>, room: &Arc<Room>, who: &Arc<Participant>) {
        room.leave(who).await;
        if room.is_empty() && !room.departure_timeout.is_zero() {
            let (rooms, room) = (Arc::clone(self), Arc::clone(room));
            tokio::spawn(async move {
                tokio::time::sleep(room.departure_timeout).await;
                rooms.close_if_empty(&room).await;
            });
            return;
        }
        self.close_if_empty(room).await;
    }

    /// Removes `room` from the node (and store) if it is empty and still the
    /// node's room of that name.
    async fn close_if_empty(&self, room: &Arc<Room>) {
        let emptied = {
            let mut rooms = lock(&self.rooms);
            let empty = room.is_empty() && rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room));
            if empty {
                rooms.remove(&room.name);
                self.metrics.rooms.dec();
            }
            empty
        };
        if emptied {
            tracing::info!(room = %room.name, "room closed (empty)");
            room.webhook("room_finished", None, None);
            if let Err(e) = self.store.release_room(&room.name).await {
                tracing::warn!(room = %room.name, error = %e, "room not removed from store");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscription to a sid nobody publishes is answered `SE_TRACK_NOTFOUND`
    /// after [`TRACK_NOT_FOUND_WAIT`], as LiveKit's `notFoundTimeout`; not before,
    /// and not at all for a track that shows up or a wish withdrawn meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_subscription_to_a_track_nobody_publishes_is_answered_not_found_after_the_wait() {
        let sfu = crate::test_node();
        let (room, viewer, mut signal) = crate::test_join(&sfu, "lobby", "viewer", false).await;
        let ask = |sid: &str, subscribe: bool| proto::UpdateSubscription {
            track_sids: vec![sid.into()],
            subscribe,
            participant_tracks: vec![proto::ParticipantTracks {
                participant_sid: "PA_x".into(),
                track_sids: vec![sid.into()],
            }],
        };
        let start = tokio::time::Instant::now();
        room.update_subscription(&viewer, &ask("TR_nobody", true)).await.unwrap();
        room.update_subscription(&viewer, &ask("TR_withdrawn", true)).await.unwrap();
        room.update_subscription(&viewer, &ask("TR_withdrawn", false)).await.unwrap();
        let answer = loop {
            match tokio::time::timeout(TRACK_NOT_FOUND_WAIT * 2, signal.recv()).await.expect("an answer").expect("open")
            {
                Out::SubscriptionResponse(r) => break r,
                _ => continue, // the subscriber offer and its candidates
            }
        };
        assert!(start.elapsed() >= TRACK_NOT_FOUND_WAIT, "not before the wait: {:?}", start.elapsed());
        assert_eq!((answer.track_sid.as_str(), answer.err()), ("TR_nobody", proto::SubscriptionError::SeTrackNotfound));
        assert!(!viewer.wants(&TrackSid::new("TR_nobody")), "the wish is dropped with the answer");
        tokio::time::sleep(TRACK_NOT_FOUND_WAIT).await;
        while let Ok(m) = signal.try_recv() {
            assert!(!matches!(m, Out::SubscriptionResponse(_)), "nothing for the withdrawn wish: {m:?}");
        }
    }
}
