//! LiveKit's RoomService over Twirp at `/twirp/livekit.RoomService/<Method>`,
//! for rooms anywhere in the cluster.
//!
//! The gateway checks the server-API token and the grant the method needs
//! (`roomCreate`, `roomList`, `roomAdmin` for the request's room; LiveKit's
//! `pkg/service/roomservice.go`), then:
//!
//! - `CreateRoom`: records the room in the store, unplaced, with its
//!   `max_participants`, `departure_timeout` and `metadata`, which the node
//!   honours; the first join places it, as any other room; nodes delete it if
//!   nobody joins within its `empty_timeout` (5 minutes by default);
//! - `ListRooms`: the store's rooms, with the live state of those on a node
//!   asked of that node;
//! - `DeleteRoom`: on the room's node, which disconnects everyone
//!   (`ROOM_DELETED`), and from the store;
//! - every other method: forwarded as it came, `Authorization` included, to the
//!   node hosting the room (`sfu::admin`), which checks the token again; the
//!   node's answer goes back unchanged.
//!
//! A room the store does not know, or knows on no node, is Twirp `not_found`
//! ("requested room does not exist"); a node that cannot be reached within
//! [`NODE_CALL_TIMEOUT`] is `unavailable`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use livekit_protocol as proto;
use meridian_auth::ServerGrant;
use meridian_ids::{NodeId, RoomName, RoomSid};
use meridian_schema::{RoomOptions, RoomRecord};
use meridian_twirp::{answer, refusal, Call, Code, Encoding, TwirpError};

use crate::http_util::Body;
use crate::Gateway;

/// The Twirp service.
pub const SERVICE: &str = "livekit.RoomService";
/// Largest request body: 1 MiB, as the node takes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest room metadata: 512 KiB, LiveKit's `limit.max_metadata_size`.
pub const MAX_METADATA_BYTES: usize = 512 * 1024;
/// Longest a call to a room's node may take, connection included.
pub const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn denied() -> TwirpError {
    TwirpError::new(Code::Unauthenticated, "permissions denied")
}

fn no_room() -> TwirpError {
    TwirpError::new(Code::NotFound, "requested room does not exist")
}

fn store_down(e: meridian_schema::StoreError) -> TwirpError {
    tracing::warn!(error = %e, "RoomService: store unavailable");
    TwirpError::new(Code::Unavailable, "store unavailable")
}

/// Handles `POST /twirp/livekit.RoomService/<Method>`.
pub(crate) async fn handle(gw: &Gateway, req: Request<Incoming>) -> Response<Body> {
    let call = match Call::read(req, SERVICE, MAX_BODY_BYTES).await {
        Ok(call) => call,
        Err(e) => return refusal(&e),
    };
    match dispatch(gw, &call).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(method = %call.method, error = %e, "RoomService call refused");
            refusal(&e)
        }
    }
}

async fn dispatch(gw: &Gateway, call: &Call) -> Result<Response<Body>, TwirpError> {
    let grant = gw
        .authority
        .verify_server_token(call.authorization.as_deref())
        .map_err(|e| TwirpError::new(Code::Unauthenticated, e.to_string()))?;
    let e = call.encoding;
    let ok = |bytes: Vec<u8>| answer(200, e.content_type(), bytes.into());
    match call.method.as_str() {
        "CreateRoom" => {
            let req: proto::CreateRoomRequest = e.decode(&call.body)?;
            if !grant.room_create {
                return Err(denied());
            }
            if req.name.is_empty() {
                return Err(TwirpError::new(Code::InvalidArgument, "room name is required"));
            }
            if req.metadata.len() > MAX_METADATA_BYTES {
                return Err(TwirpError::new(Code::InvalidArgument, "metadata size exceeds limits"));
            }
            let record = RoomRecord {
                name: req.name.as_str().into(),
                sid: RoomSid::random(),
                region: None,
                node: None,
                created_at: SystemTime::now(),
                pinned: false,
                options: RoomOptions {
                    max_participants: req.max_participants,
                    departure_timeout: req.departure_timeout,
                    metadata: req.metadata,
                    empty_timeout: req.empty_timeout,
                },
            };
            let record = gw.store.get_or_create_room(&record).await.map_err(store_down)?;
            Ok(ok(e.encode(&room_of_record(&record))))
        }
        "ListRooms" => {
            let req: proto::ListRoomsRequest = e.decode(&call.body)?;
            if !grant.room_list {
                return Err(denied());
            }
            let records = gw.store.rooms().await.map_err(store_down)?;
            let records: Vec<RoomRecord> = records
                .into_iter()
                .filter(|r| req.names.is_empty() || req.names.iter().any(|n| n == r.name.as_str()))
                .collect();
            let mut rooms = Vec::with_capacity(records.len());
            let mut nodes: Vec<NodeId> = records.iter().filter_map(|r| r.node.clone()).collect();
            nodes.sort();
            nodes.dedup();
            let mut live: Vec<proto::Room> = Vec::new();
            for node in nodes {
                let names = records.iter().filter(|r| r.node.as_ref() == Some(&node)).map(|r| r.name.to_string());
                let ask = proto::ListRoomsRequest { names: names.collect() };
                match call_node(gw, &node, "ListRooms", e, call.authorization.as_deref(), e.encode(&ask)).await {
                    Ok((200, body)) => match e.decode::<proto::ListRoomsResponse>(&body) {
                        Ok(r) => live.extend(r.rooms),
                        Err(err) => tracing::warn!(%node, error = %err, "ListRooms: node's answer does not decode"),
                    },
                    Ok((status, _)) => tracing::warn!(%node, status, "ListRooms: node refused"),
                    Err(err) => tracing::warn!(%node, error = %err, "ListRooms: node unreachable"),
                }
            }
            for record in &records {
                match live.iter().position(|r| r.name == record.name.as_str()) {
                    Some(at) => rooms.push(live.swap_remove(at)),
                    None => rooms.push(room_of_record(record)),
                }
            }
            Ok(ok(e.encode(&proto::ListRoomsResponse { rooms })))
        }
        "DeleteRoom" => {
            let req: proto::DeleteRoomRequest = e.decode(&call.body)?;
            if !grant.room_create {
                return Err(denied());
            }
            let room = RoomName::from(req.room.as_str());
            let record = gw.store.room(&room).await.map_err(store_down)?.ok_or_else(no_room)?;
            if let Some(node) = &record.node {
                let (status, body) =
                    call_node(gw, node, "DeleteRoom", e, call.authorization.as_deref(), call.body.to_vec())
                        .await
                        .map_err(|why| TwirpError::new(Code::Unavailable, why))?;
                // The node answers not_found when the room closed meanwhile; the
                // record goes either way.
                if status != 200 && status != 404 {
                    return Ok(answer(status, "application/json", body));
                }
            }
            gw.store.delete_room(&room).await.map_err(store_down)?;
            Ok(ok(e.encode(&proto::DeleteRoomResponse {})))
        }
        method => {
            let room = room_named(method, e, &call.body)?;
            if !administers(&grant, &room) {
                return Err(denied());
            }
            let record =
                gw.store.room(&RoomName::from(room.as_str())).await.map_err(store_down)?.ok_or_else(no_room)?;
            let node = record.node.ok_or_else(no_room)?;
            let (status, body) = call_node(gw, &node, method, e, call.authorization.as_deref(), call.body.to_vec())
                .await
                .map_err(|why| TwirpError::new(Code::Unavailable, why))?;
            let content_type = if status == 200 { e.content_type() } else { "application/json" };
            Ok(answer(status, content_type, body))
        }
    }
}

fn administers(grant: &ServerGrant, room: &str) -> bool {
    grant.administers(room)
}

/// The `room` of a room-scoped method's request; `bad_route` for a method
/// RoomService does not have here.
fn room_named(method: &str, e: Encoding, body: &[u8]) -> Result<String, TwirpError> {
    Ok(match method {
        "ListParticipants" => e.decode::<proto::ListParticipantsRequest>(body)?.room,
        "GetParticipant" | "RemoveParticipant" => e.decode::<proto::RoomParticipantIdentity>(body)?.room,
        "MutePublishedTrack" => e.decode::<proto::MuteRoomTrackRequest>(body)?.room,
        "UpdateParticipant" => e.decode::<proto::UpdateParticipantRequest>(body)?.room,
        "UpdateSubscriptions" => e.decode::<proto::UpdateSubscriptionsRequest>(body)?.room,
        "SendData" => e.decode::<proto::SendDataRequest>(body)?.room,
        "UpdateRoomMetadata" => e.decode::<proto::UpdateRoomMetadataRequest>(body)?.room,
        other => return Err(TwirpError::new(Code::BadRoute, format!("no method {other} on {SERVICE}"))),
    })
}

/// LiveKit's `Room` for a room only the store knows.
fn room_of_record(record: &RoomRecord) -> proto::Room {
    let created = record.created_at.duration_since(UNIX_EPOCH).unwrap_or_default();
    proto::Room {
        sid: record.sid.to_string(),
        name: record.name.to_string(),
        creation_time: created.as_secs() as i64,
        creation_time_ms: created.as_millis() as i64,
        max_participants: record.options.max_participants,
        departure_timeout: record.options.departure_timeout,
        empty_timeout: match record.options.empty_timeout {
            0 => meridian_schema::DEFAULT_EMPTY_TIMEOUT.as_secs() as u32,
            s => s,
        },
        metadata: record.options.metadata.clone(),
        ..Default::default()
    }
}

/// POSTs `body` as RoomService `method` to `node`'s admin channel (its signal
/// port) with the caller's `authorization`; returns the node's status and body.
/// Errors say why the node could not be asked (unknown, unreachable, too slow).
pub(crate) async fn call_node(
    gw: &Gateway,
    node: &NodeId,
    method: &str,
    e: Encoding,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let nodes = gw.store.nodes().await.map_err(|err| format!("store unavailable: {err}"))?;
    let addr = nodes
        .iter()
        .find(|n| n.id == *node)
        .map(|n| n.signal_addr.clone())
        .ok_or_else(|| format!("the room's node {node} is not in the registry"))?;
    let ask = async {
        let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|err| format!("connect {addr}: {err}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| format!("handshake {addr}: {err}"))?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "node admin connection ended");
            }
        });
        let mut req = Request::post(format!("/twirp/{SERVICE}/{method}"))
            .header(hyper::header::HOST, addr.as_str())
            .header(hyper::header::CONTENT_TYPE, e.content_type());
        if let Some(a) = authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|err| err.to_string())?;
        let resp = sender.send_request(req).await.map_err(|err| format!("{addr}: {err}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|err| format!("{addr}: answer: {err}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(NODE_CALL_TIMEOUT, ask).await.map_err(|_| format!("node {node} did not answer in time"))?
}
