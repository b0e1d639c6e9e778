//! Our own HTTPS API beside LiveKit's, under `/v1` (API auth: HTTP Basic with
//! key and secret, or a server-API `Bearer` JWT). [`ROUTES`] is the route table;
//! `GET /v1/openapi.json` describes the same routes (OpenAPI 3.0), and a test
//! holds the two together.
//!
//! - `POST /v1/tokens` mints a join token ([`crate::api`]);
//! - `GET /v1/tokens?room=&identity=` lists the tokens minted here (never the
//!   JWT itself), oldest first, at most [`MAX_LISTED`];
//! - `DELETE /v1/tokens/{id}` revokes one: it is refused at `/rtc` and
//!   `/rtc/validate` from then on, with the reason;
//! - `GET /v1/route?ip=&room=` explains a routing decision ([`crate::api`]);
//! - `POST /v1/rooms` creates a room, optionally pinned to a region;
//! - `GET /v1/rooms`, `GET /v1/rooms/{name}`: rooms as the store knows them;
//! - `DELETE /v1/rooms/{name}`: disconnects everyone in it (`ROOM_DELETED`, on
//!   the room's node) and forgets it.
//!
//! Errors are `{"error": reason}` JSON: 401 for credentials, 400 naming the
//! field, 404 for a token or room that does not exist, 503 when the store (or
//! the room's node) cannot be reached.

use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use meridian_auth::ServerGrant;
use meridian_ids::{ParticipantIdentity, RoomName};
use meridian_schema::{RoomRecord, TokenRecord};

use crate::http_util::{json, json_error, query, Body};
use crate::{api, Gateway};

/// Every `/v1` route, as (method, path template): what [`route`] serves and
/// `openapi.json` documents.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/tokens"),
    ("GET", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{id}"),
    ("GET", "/v1/route"),
    ("POST", "/v1/rooms"),
    ("GET", "/v1/rooms"),
    ("GET", "/v1/rooms/{name}"),
    ("DELETE", "/v1/rooms/{name}"),
    ("GET", "/v1/openapi.json"),
];

/// Most tokens one `GET /v1/tokens` lists.
pub const MAX_LISTED: usize = 1000;

/// The OpenAPI document of [`ROUTES`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// Serves a `/v1` request, or `None` when no route matches (the caller's 404).
pub(crate) async fn route(gw: &Gateway, req: Request<Incoming>) -> Option<Response<Body>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let tail = |prefix: &str| path.strip_prefix(prefix).filter(|t| !t.is_empty() && !t.contains('/')).map(decode);
    Some(match (&method, path.as_str()) {
        (&Method::POST, "/v1/tokens") => api::mint_token(gw, req, false).await,
        (&Method::GET, "/v1/tokens") => guarded(gw, &req, list_tokens(gw, &req)).await,
        (&Method::GET, "/v1/route") => api::explain_route(gw, &req).await,
        (&Method::POST, "/v1/rooms") => api::create_room(gw, req).await,
        (&Method::GET, "/v1/rooms") => guarded(gw, &req, list_rooms(gw)).await,
        (&Method::GET, "/v1/openapi.json") => {
            let mut r = crate::http_util::text(200, OPENAPI);
            r.headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            r
        }
        (&Method::DELETE, p) if p.starts_with("/v1/tokens/") => {
            let id = tail("/v1/tokens/")?;
            guarded(gw, &req, revoke_token(gw, &id)).await
        }
        (&Method::GET, p) if p.starts_with("/v1/rooms/") => {
            let name = tail("/v1/rooms/")?;
            guarded(gw, &req, get_room(gw, &name)).await
        }
        (&Method::DELETE, p) if p.starts_with("/v1/rooms/") => {
            let name = tail("/v1/rooms/")?;
            guarded(gw, &req, delete_room(gw, &name)).await
        }
        _ => return None,
    })
}

fn decode(segment: &str) -> String {
    form_urlencoded::parse(format!("x={segment}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// `answer` if the request's API credentials hold, else the 401.
async fn guarded(
    gw: &Gateway,
    req: &Request<Incoming>,
    answer: impl std::future::Future<Output = Response<Body>>,
) -> Response<Body> {
    match api::unauthorized(gw, req) {
        Some(refusal) => refusal,
        None => answer.await,
    }
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn store_down(e: meridian_schema::StoreError) -> Response<Body> {
    json_error(503, &format!("store unavailable: {e}"))
}

fn token_json(t: &TokenRecord) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "room": t.room,
        "identity": t.identity,
        "grants": {
            "canPublish": t.grants.can_publish,
            "canSubscribe": t.grants.can_subscribe,
            "canPublishData": t.grants.can_publish_data,
            "hidden": t.grants.hidden,
            "roomAdmin": t.grants.room_admin,
        },
        "issued_at": time(t.issued_at),
        "expires_at": time(t.expires_at),
        "revoked_at": t.revoked_at.map(time),
    })
}

fn room_json(r: &RoomRecord) -> serde_json::Value {
    serde_json::json!({
        "name": r.name,
        "sid": r.sid,
        "region": r.region,
        "node": r.node,
        "pinned": r.pinned,
        "created_at": time(r.created_at),
    })
}

async fn list_tokens(gw: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let q = query(req.uri());
    let room = q.get("room").filter(|r| !r.is_empty()).map(|r| RoomName::from(r.as_str()));
    let identity = q.get("identity").filter(|i| !i.is_empty()).map(|i| ParticipantIdentity::from(i.as_str()));
    match gw.store.tokens(room.as_ref(), identity.as_ref(), MAX_LISTED).await {
        Ok(tokens) => json(200, &serde_json::json!({ "tokens": tokens.iter().map(token_json).collect::<Vec<_>>() })),
        Err(e) => store_down(e),
    }
}

async fn revoke_token(gw: &Gateway, id: &str) -> Response<Body> {
    match gw.store.revoke_token(id, SystemTime::now()).await {
        Ok(false) => json_error(404, &format!("no token {id:?}")),
        Ok(true) => match gw.store.token(id).await {
            Ok(Some(t)) => {
                tracing::info!(token = %id, room = %t.room, identity = %t.identity, "token revoked");
                json(200, &token_json(&t))
            }
            Ok(None) => json_error(404, &format!("no token {id:?}")),
            Err(e) => store_down(e),
        },
        Err(e) => store_down(e),
    }
}

async fn list_rooms(gw: &Gateway) -> Response<Body> {
    match gw.store.rooms().await {
        Ok(rooms) => json(200, &serde_json::json!({ "rooms": rooms.iter().map(room_json).collect::<Vec<_>>() })),
        Err(e) => store_down(e),
    }
}

async fn get_room(gw: &Gateway, name: &str) -> Response<Body> {
    match gw.store.room(&RoomName::from(name)).await {
        Ok(Some(r)) => json(200, &room_json(&r)),
        Ok(None) => json_error(404, &format!("no room {name:?}")),
        Err(e) => store_down(e),
    }
}

/// Disconnects everyone on the room's node (RoomService `DeleteRoom`, with a
/// server token the gateway mints for it), then deletes the record.
async fn delete_room(gw: &Gateway, name: &str) -> Response<Body> {
    let room = RoomName::from(name);
    let record = match gw.store.room(&room).await {
        Ok(Some(r)) => r,
        Ok(None) => return json_error(404, &format!("no room {name:?}")),
        Err(e) => return store_down(e),
    };
    if let Some(node) = &record.node {
        let grant = ServerGrant { room_create: true, room_list: false, room_admin: false, room: room.clone() };
        let token = match gw.authority.server_token(&grant, Duration::from_secs(60)) {
            Ok(t) => t,
            Err(e) => return json_error(500, &format!("cannot sign the node call: {e}")),
        };
        let body = serde_json::json!({ "room": name }).to_string().into_bytes();
        let auth = format!("Bearer {token}");
        let called =
            crate::room_service::call_node(gw, node, "DeleteRoom", meridian_twirp::Encoding::Json, Some(&auth), body);
        match called.await {
            // 404: the room closed on its node meanwhile.
            Ok((200, _)) | Ok((404, _)) => {}
            Ok((status, answer)) => {
                let why = String::from_utf8_lossy(&answer);
                return json_error(502, &format!("the room's node refused ({status}): {why}"));
            }
            Err(why) => return json_error(503, &why),
        }
    }
    match gw.store.delete_room(&room).await {
        Ok(_) => json(200, &room_json(&record)),
        Err(e) => store_down(e),
    }
}
