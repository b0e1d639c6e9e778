//! LiveKit's RoomService (Twirp, `livekit_room.proto`) for the rooms on this
//! node: the node's end of the gateway's `/twirp/livekit.RoomService/*`.
//!
//! The gateway finds a room's node in the store and forwards the request as it
//! came, `Authorization` included; the node checks the server-API token again
//! and the grant each method needs (LiveKit's `pkg/service/roomservice.go`), so
//! nothing reaches a room without the API secret. The admin channel is the
//! node's signal port, which only gateways reach: a connection whose first bytes
//! are `POST ` is served here over HTTP/1.1, any other is a signal session.
//!
//! What each method does is LiveKit's: `RemoveParticipant` and `DeleteRoom`
//! disconnect with `PARTICIPANT_REMOVED` / `ROOM_DELETED`; `MutePublishedTrack`
//! mutes (remote unmute is refused, as LiveKit's default
//! `room.enable_remote_unmute: false`); `UpdateParticipant` with a permission
//! that no longer allows a track's source unpublishes it (`TrackUnpublished` to
//! its publisher); `UpdateRoomMetadata` sends `RoomUpdate` to everyone.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use livekit_protocol as proto;
use livekit_protocol::participant_info::State;
use livekit_protocol::signal_response::Message as Out;
use meridian_auth::ServerGrant;
use meridian_twirp::{answer, refusal, Call, Code, Encoding, TwirpError};
use tokio::net::TcpStream;

use crate::participant::{DataKind, Participant, MAX_ATTRIBUTES_BYTES, MAX_METADATA_BYTES, MAX_NAME_BYTES};
use crate::room::Room;
use crate::Sfu;

/// The Twirp service served here.
pub const SERVICE: &str = "livekit.RoomService";
/// Largest request body: 1 MiB (`SendData` carries the biggest, LiveKit's
/// reliable data limit is 15 KiB; metadata may be 512 KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

type Body = Full<Bytes>;

/// Serves one admin connection (HTTP/1.1) until the gateway closes it. The
/// request head must arrive within [`crate::signal::HANDSHAKE_TIMEOUT`].
pub async fn serve_connection(sfu: Arc<Sfu>, stream: TcpStream, peer: SocketAddr) {
    let service = hyper::service::service_fn(move |req| {
        let sfu = Arc::clone(&sfu);
        async move { Ok::<_, Infallible>(handle_http(&sfu, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(crate::signal::HANDSHAKE_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "admin connection ended");
    }
}

async fn handle_http(sfu: &Sfu, req: Request<Incoming>) -> Response<Body> {
    let call = match Call::read(req, SERVICE, MAX_BODY_BYTES).await {
        Ok(call) => call,
        Err(e) => return refusal(&e),
    };
    match self::call(sfu, &call.method, call.encoding, &call.body, call.authorization.as_deref()).await {
        Ok(bytes) => answer(200, call.encoding.content_type(), bytes.into()),
        Err(e) => {
            tracing::info!(method = %call.method, error = %e, "RoomService call refused");
            refusal(&e)
        }
    }
}

fn not_found(what: &str) -> TwirpError {
    TwirpError::new(Code::NotFound, what)
}

/// LiveKit's answer to a grant that does not cover the call.
fn denied() -> TwirpError {
    TwirpError::new(Code::Unauthenticated, "permissions denied")
}

fn require(allowed: bool) -> Result<(), TwirpError> {
    allowed.then_some(()).ok_or_else(denied)
}

fn room_of(sfu: &Sfu, grant: &ServerGrant, room: &str) -> Result<Arc<Room>, TwirpError> {
    require(grant.administers(room))?;
    sfu.rooms().room(room).ok_or_else(|| not_found("requested room does not exist"))
}

fn participant_of(room: &Room, identity: &str) -> Result<Arc<Participant>, TwirpError> {
    room.participant(identity).ok_or_else(|| not_found("participant does not exist"))
}

/// Runs RoomService `method` on a request body in `encoding`, authorised by the
/// `authorization` header's server-API token; returns the encoded answer.
///
/// Errors are Twirp's: `unauthenticated` for a bad token or a grant that does
/// not cover the call, `malformed` for a body that does not decode,
/// `not_found` for a room, participant or track not on this node,
/// `invalid_argument` over LiveKit's limits, `bad_route` for another method.
pub async fn call(
    sfu: &Sfu,
    method: &str,
    encoding: Encoding,
    body: &[u8],
    authorization: Option<&str>,
) -> Result<Vec<u8>, TwirpError> {
    let grant = sfu
        .authority
        .verify_server_token(authorization)
        .map_err(|e| TwirpError::new(Code::Unauthenticated, e.to_string()))?;
    let e = encoding;
    match method {
        "ListRooms" => {
            let req: proto::ListRoomsRequest = e.decode(body)?;
            require(grant.room_list)?;
            let rooms = sfu.rooms().live_rooms();
            let rooms = rooms.iter().filter(|r| req.names.is_empty() || req.names.iter().any(|n| n == r.name.as_str()));
            Ok(e.encode(&proto::ListRoomsResponse { rooms: rooms.map(|r| r.info()).collect() }))
        }
        "DeleteRoom" => {
            let req: proto::DeleteRoomRequest = e.decode(body)?;
            require(grant.room_create)?;
            let room = sfu.rooms().room(&req.room).ok_or_else(|| not_found("requested room does not exist"))?;
            for p in room.participants() {
                remove(sfu, &room, &p, proto::DisconnectReason::RoomDeleted).await;
            }
            Ok(e.encode(&proto::DeleteRoomResponse {}))
        }
        "ListParticipants" => {
            let req: proto::ListParticipantsRequest = e.decode(body)?;
            let room = room_of(sfu, &grant, &req.room)?;
            let participants = room.participants().iter().map(|p| p.info(State::Active)).collect();
            Ok(e.encode(&proto::ListParticipantsResponse { participants }))
        }
        "GetParticipant" => {
            let req: proto::RoomParticipantIdentity = e.decode(body)?;
            let room = room_of(sfu, &grant, &req.room)?;
            Ok(e.encode(&participant_of(&room, &req.identity)?.info(State::Active)))
        }
        "RemoveParticipant" => {
            let req: proto::RoomParticipantIdentity = e.decode(body)?;
            let room = room_of(sfu, &grant, &req.room)?;
            let p = participant_of(&room, &req.identity)?;
            remove(sfu, &room, &p, proto::DisconnectReason::ParticipantRemoved).await;
            Ok(e.encode(&proto::RemoveParticipantResponse {}))
        }
        "MutePublishedTrack" => {
            let req: proto::MuteRoomTrackRequest = e.decode(body)?;
            let room = room_of(sfu, &grant, &req.room)?;
            let p = participant_of(&room, &req.identity)?;
            let track = p
                .published()
                .into_iter()
                .find(|t| t.sid.as_str() == req.track_sid)
                .ok_or_else(|| not_found("track is not found"))?;
            if !req.muted {
                return Err(TwirpError::new(Code::FailedPrecondition, "remote unmute not enabled"));
            }
            p.send(Out::Mute(proto::MuteTrackRequest { sid: req.track_sid.clone(), muted: true }));
            if track.set_muted(true) {
                room.broadcast_state(&p);
            }
            Ok(e.encode(&proto::MuteRoomTrackResponse { track: Some(track.info()) }))
        }
        "UpdateParticipant" => {
            let req: proto::UpdateParticipantRequest = e.decode(body)?;
            let attributes = req.attributes.iter().fold(0usize, |n, (k, v)| n.saturating_add(k.len() + v.len()));
            if req.name.len() > MAX_NAME_BYTES
                || req.metadata.len() > MAX_METADATA_BYTES
                || attributes > MAX_ATTRIBUTES_BYTES
            {
                return Err(TwirpError::new(Code::InvalidArgument, "name, metadata or attributes exceed the limits"));
            }
            let room = room_of(sfu, &grant, &req.room)?;
            let p = participant_of(&room, &req.identity)?;
            let mut changed = false;
            if let Some(permission) = &req.permission {
                if p.set_permission(permission) {
                    changed = true;
                    apply_permission(&room, &p).await;
                }
            }
            let update = proto::UpdateParticipantMetadata {
                name: req.name.clone(),
                metadata: req.metadata.clone(),
                attributes: req.attributes.clone(),
                request_id: 0,
            };
            changed |=
                p.update_metadata(&update, true).map_err(|(_, why)| TwirpError::new(Code::InvalidArgument, why))?;
            if changed {
                room.broadcast_state(&p);
            }
            Ok(e.encode(&p.info(State::Active)))
        }
        "UpdateSubscriptions" => {
            let req: proto::UpdateSubscriptionsRequest = e.decode(body)?;
            let room = room_of(sfu, &grant, &req.room)?;
            let p = participant_of(&room, &req.identity)?;
            let update = proto::UpdateSubscription {
                track_sids: req.track_sids,
                subscribe: req.subscribe,
                participant_tracks: req.participant_tracks,
            };
            room.update_subscription(&p, &update)
                .await
                .map_err(|e| TwirpError::new(Code::InvalidArgument, e.to_string()))?;
            Ok(e.encode(&proto::UpdateSubscriptionsResponse {}))
        }
        "SendData" => {
            let req: proto::SendDataRequest = e.decode(body)?;
            let room = room_of(sfu, &grant, &req.room)?;
            if !req.nonce.is_empty() && req.nonce.len() != 16 {
                return Err(TwirpError::new(
                    Code::InvalidArgument,
                    format!("nonce should be 16-bytes or not present, got: {} bytes", req.nonce.len()),
                ));
            }
            send_data(&room, req).await;
            Ok(e.encode(&proto::SendDataResponse {}))
        }
        "UpdateRoomMetadata" => {
            let req: proto::UpdateRoomMetadataRequest = e.decode(body)?;
            if req.metadata.len() > MAX_METADATA_BYTES {
                return Err(TwirpError::new(Code::InvalidArgument, "metadata size exceeds limits"));
            }
            let room = room_of(sfu, &grant, &req.room)?;
            Ok(e.encode(&room.set_metadata(req.metadata)))
        }
        other => Err(TwirpError::new(Code::BadRoute, format!("no method {other} on this node"))),
    }
}

/// RoomService `SendData`: a user packet from the server to the participants it
/// names (by identity, or by the deprecated sids), or to everyone.
// `destination_sids` is deprecated, but LiveKit's older server SDKs still send it.
#[allow(deprecated)]
async fn send_data(room: &Room, req: proto::SendDataRequest) {
    let mut to: Vec<String> = req.destination_identities.clone();
    for sid in &req.destination_sids {
        if let Some(p) = room.participants().into_iter().find(|p| p.sid.as_str() == sid) {
            to.push(p.identity().to_string());
        }
    }
    if to.is_empty() && !(req.destination_identities.is_empty() && req.destination_sids.is_empty()) {
        return; // it names only participants who are not here
    }
    let kind = if req.kind == proto::data_packet::Kind::Lossy as i32 { DataKind::Lossy } else { DataKind::Reliable };
    let packet = proto::DataPacket {
        kind: req.kind,
        destination_identities: to.clone(),
        value: Some(proto::data_packet::Value::User(proto::UserPacket {
            payload: req.data,
            destination_identities: to,
            topic: req.topic,
            nonce: req.nonce,
            ..Default::default()
        })),
        ..Default::default()
    };
    room.send_data(None, kind, &packet).await;
}

/// Disconnects `p` from `room` with `reason`, as LiveKit's server does: a
/// `Leave` that says why and asks the client not to reconnect, then the leave.
async fn remove(sfu: &Sfu, room: &Arc<Room>, p: &Arc<Participant>, reason: proto::DisconnectReason) {
    p.send(Out::Leave(proto::LeaveRequest {
        can_reconnect: false,
        reason: reason as i32,
        action: proto::leave_request::Action::Disconnect as i32,
        ..Default::default()
    }));
    sfu.rooms().leave(room, p).await;
    p.close_signal();
}

/// After `p`'s permission changed: unpublishes the tracks it may no longer
/// publish (telling it `TrackUnpublished`, as LiveKit's `removePublishedTrack`)
/// and brings its subscriptions in line (all gone without `canSubscribe`).
async fn apply_permission(room: &Arc<Room>, p: &Arc<Participant>) {
    let grants = p.grants();
    for track in p.published() {
        if !grants.can_publish_source(track.info().source) {
            room.unpublish(p, &track.sid).await;
            p.send(Out::TrackUnpublished(proto::TrackUnpublishedResponse { track_sid: track.sid.to_string() }));
        }
    }
    for other in room.others(&p.sid) {
        for track in other.published() {
            room.reconcile(&other, &track, p).await;
        }
    }
}
