//! Entry point for the `signal_frame` fuzz target in `fuzz/` (`docs/decisions.md §18`);
//! compiled only with `--cfg fuzzing`, which no normal build sets.
//!
//! [`SignalHarness::frame`] takes one binary WebSocket frame as the session loop
//! does: `SignalRequest::decode`, then the dispatch of `signal::handle`
//! against a real [`Participant`] in a real [`Room`] (two str0m peer
//! connections on the node's driver that never connect). `handle` itself takes
//! the session's WebSocket, so [`dispatch`] restates its match (keep the two in
//! step); each arm calls what `handle` calls, the offer's whole answer by str0m
//! included (sans-IO: it binds nothing), except:
//! - `Answer`: [`Participant::handle_answer`] returns at once (no subscriber offer
//!   is outstanding); str0m's parse of the answer (`SdpAnswer`) runs beside it.
//! - `Ping`/`PingReq`: the pong is not sent.
//!
//! The participant lives across frames, as in a session, until a frame ends the
//! session (`leave`, or a [`ParticipantError::BadRequest`]); the next frame then
//! joins a fresh one. Its caps (`participant::MAX_*`) are what bound its state over
//! a long run: without them the run would end in libFuzzer's out-of-memory report.

use std::sync::Arc;

use livekit_protocol as proto;
use livekit_protocol::signal_request::Message as In;
use livekit_protocol::signal_response::Message as Out;
use meridian_auth::{MintRequest, TokenAuthority, VerifiedGrant};
use prost::Message as _;
use tokio::sync::mpsc;

use crate::engine::{Engine, IceConfig};
use crate::participant::{Participant, ParticipantError, SIGNAL_QUEUE};
use crate::room::{Room, RoomManager};

/// What one frame led to.
#[derive(Debug)]
pub enum Handled {
    /// Not a `SignalRequest`: the session closes (`End::Malformed`).
    NotARequest,
    /// Handled; the session goes on.
    Continue,
    /// `leave`: the session ends.
    Left,
    /// [`ParticipantError::BadRequest`]: the session closes.
    BadRequest(String),
    /// Another [`ParticipantError`]: logged, the session goes on.
    Failed(String),
}

struct Session {
    room: Arc<Room>,
    me: Arc<Participant>,
    signal: mpsc::Receiver<Out>,
}

/// One participant's signal session without its WebSocket.
pub struct SignalHarness {
    runtime: tokio::runtime::Runtime,
    rooms: Arc<RoomManager>,
    grant: VerifiedGrant,
    session: Option<Session>,
}

impl SignalHarness {
    /// A node with one room and one joined participant (publish, subscribe, data).
    ///
    /// Panics when the engine, the token or the join fail: the harness cannot run.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fuzz harness: a current-thread runtime");
        let engine = Engine::new(&IceConfig::loopback()).expect("fuzz harness: the WebRTC engine");
        let metrics = crate::metrics::SfuMetrics::default().node(&"fuzz-node".into());
        // No URLs: events are not queued.
        let (webhooks, _events) = crate::webhook::Webhooks::new(Vec::new(), &metrics.webhooks);
        let rooms = Arc::new(RoomManager::new(
            Arc::new(engine),
            Arc::new(meridian_schema::MemoryStore::new()),
            "fuzz".into(),
            "fuzz-node".into(),
            metrics,
            webhooks,
        ));
        let authority = TokenAuthority::new("devkey", "secret");
        let token = authority
            .mint(&MintRequest {
                room: "fuzz".into(),
                identity: "fuzzer".into(),
                name: String::new(),
                metadata: String::new(),
                ttl: meridian_auth::MAX_TOKEN_TTL,
                grants: Default::default(),
            })
            .expect("fuzz harness: a token");
        let grant = authority.verify_join(&token.jwt, None).expect("fuzz harness: the token verifies");
        Self { runtime, rooms, grant, session: None }
    }

    /// Handles one binary signal frame as the session loop does.
    pub fn frame(&mut self, bytes: &[u8]) -> Handled {
        let Ok(request) = proto::SignalRequest::decode(bytes) else { return Handled::NotARequest };
        let mut session = match self.session.take() {
            Some(s) => s,
            None => {
                let (tx, signal) = mpsc::channel(SIGNAL_QUEUE);
                let (room, me) = self
                    .runtime
                    .block_on(self.rooms.join(&self.grant, true, tx, tracing::Span::none()))
                    .expect("fuzz harness: the join");
                Session { room, me, signal }
            }
        };
        let result = self.runtime.block_on(dispatch(&session.room, &session.me, request));
        // What the participant queued for the client (TrackPublished, …).
        while session.signal.try_recv().is_ok() {}
        if matches!(result, Ok(false) | Err(ParticipantError::BadRequest(_))) {
            // The session ends (`End::Left`, `End::Malformed`); so does the participant.
            self.runtime.block_on(self.rooms.leave(&session.room, &session.me));
        } else {
            self.session = Some(session);
        }
        match result {
            Ok(true) => Handled::Continue,
            Ok(false) => Handled::Left,
            Err(ParticipantError::BadRequest(why)) => Handled::BadRequest(why),
            Err(e) => Handled::Failed(e.to_string()),
        }
    }
}

impl Default for SignalHarness {
    fn default() -> Self {
        Self::new()
    }
}

/// `signal::handle`'s match, with the exceptions in the module docs.
pub async fn dispatch(
    room: &Arc<Room>,
    me: &Arc<Participant>,
    request: proto::SignalRequest,
) -> Result<bool, ParticipantError> {
    let Some(message) = request.message else { return Ok(true) };
    match message {
        In::Offer(sd) => {
            for track in me.handle_offer(sd).await? {
                room.unpublish(me, &track).await;
            }
        }
        In::Answer(sd) => {
            let parsed = str0m::change::SdpAnswer::from_sdp_string(&sd.sdp);
            let bound = me.handle_answer(sd).await?;
            room.bound(me, bound);
            parsed.map_err(|e| ParticipantError::BadRequest(e.to_string()))?;
        }
        In::Trickle(t) => me.handle_trickle(t).await?,
        In::AddTrack(t) => me.handle_add_track(t)?,
        In::Mute(m) => room.muted(me, &m),
        In::UpdateMetadata(u) => room.update_own_metadata(me, u),
        In::Subscription(s) => room.update_subscription(me, &s).await?,
        In::TrackSetting(s) => me.handle_track_settings(&s).await?,
        In::SubscriptionPermission(p) => room.update_permissions(me, &p).await?,
        In::Leave(_) => return Ok(false),
        In::Ping(_) | In::PingReq(_) => {}
        _ => {}
    }
    Ok(true)
}
