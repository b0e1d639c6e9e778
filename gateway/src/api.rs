//! The HTTPS API for app backends: minting (`POST /v1/tokens`), room creation
//! and route explanations; [`crate::v1`] routes these and the rest of `/v1`.
//!
//! Request (JSON): `{"room": str, "identity": str, "name"?: str, "metadata"?: str,
//! "ttl"?: seconds (default 21600, LiveKit's 6 h), "grants"?: {"canPublish",
//! "canSubscribe", "canPublishData", "hidden", "roomAdmin"}}`; grants default to
//! publish, subscribe and data.
//!
//! Answer 200: `{"token": JWT, "url": "ws://…", "expires_at": RFC 3339, "id": "TK_…"}`.
//! Errors: 401 `{"error"}` for missing or wrong API credentials, 400 naming the
//! field for a missing or malformed one, 413 for a body over
//! [`MAX_BODY_BYTES`], 503 when the store is down.

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use meridian_auth::{Grants, MintRequest, PublishSources, TokenError, DEFAULT_TOKEN_TTL};
use meridian_ids::{RegionId, RoomName, RoomSid};
use meridian_schema::{RoomRecord, TokenGrants, TokenRecord};
use serde::Deserialize;

use crate::http_util::{json, json_error, Body};
use crate::Gateway;

/// Largest accepted request body: 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    room: String,
    identity: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    metadata: String,
    ttl: Option<u64>,
    grants: Option<GrantsRequest>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GrantsRequest {
    can_publish: Option<bool>,
    can_subscribe: Option<bool>,
    can_publish_data: Option<bool>,
    hidden: Option<bool>,
    room_admin: Option<bool>,
    /// LiveKit's source names (`camera`, `microphone`, `screen_share`,
    /// `screen_share_audio`); absent or empty: every source.
    can_publish_sources: Option<Vec<String>>,
    can_update_own_metadata: Option<bool>,
}

impl GrantsRequest {
    /// The grants asked for, or the 400 message for a source LiveKit does not name.
    fn resolve(self) -> Result<Grants, String> {
        let d = Grants::default();
        let sources = self.can_publish_sources.unwrap_or_default();
        if let Some(bad) = sources.iter().find(|s| !PublishSources::NAMES[1..].contains(&s.as_str())) {
            return Err(format!(
                "invalid request: field `grants.canPublishSources`: unknown source {bad:?} (one of {})",
                PublishSources::NAMES[1..].join(", ")
            ));
        }
        Ok(Grants {
            can_publish: self.can_publish.unwrap_or(d.can_publish),
            can_subscribe: self.can_subscribe.unwrap_or(d.can_subscribe),
            can_publish_data: self.can_publish_data.unwrap_or(d.can_publish_data),
            hidden: self.hidden.unwrap_or(d.hidden),
            room_admin: self.room_admin.unwrap_or(d.room_admin),
            can_publish_sources: PublishSources::from_names(&sources),
            can_update_own_metadata: self.can_update_own_metadata.unwrap_or(d.can_update_own_metadata),
        })
    }
}

/// Checks the server-API credentials of `req`: `None` when they hold, else the
/// 401 JSON refusal to send.
pub(crate) fn unauthorized<B>(gw: &Gateway, req: &Request<B>) -> Option<Response<Body>> {
    let auth = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    gw.authority.check_api_auth(auth).err().map(|e| {
        let mut r = json_error(401, &e.to_string());
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"meridian\""),
        );
        r
    })
}

/// Handles `GET /v1/route?ip=A.B.C.D[&room=R]` (API auth): where a client at that
/// address would land, and why. Answer: `{"ip", "located": {"latitude",
/// "longitude", "accuracy_radius_km", "country"} | null, "region", "node",
/// "reason", "candidates": [{"region", "node", "distance_km", "chosen", "why"}],
/// "registry": {"source": "store"} | {"source": "cache", "age_seconds"}}` (the
/// cache answers while the store is down). 400 without a valid `ip`, 503 when no
/// region has a node, or the store is down with nothing cached for the answer.
pub(crate) async fn explain_route(gw: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    if let Some(refusal) = unauthorized(gw, req) {
        return refusal;
    }
    let q = crate::http_util::query(req.uri());
    let Some(ip) = q.get("ip").and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) else {
        return json_error(400, "invalid request: query parameter `ip` must be an IP address");
    };
    let room = q.get("room").map(|r| RoomName::new(r.as_str()));
    let plan = match gw.route(ip, room.as_ref(), &[], crate::route::Explain::Yes).await {
        Ok(plan) => plan,
        Err(e) => return json_error(503, &format!("store unavailable: {e}")),
    };
    let Some(route) = plan.route else { return json_error(503, "no region has a node available") };
    let located = plan.located.map(|l| {
        serde_json::json!({
            "latitude": l.position.latitude,
            "longitude": l.position.longitude,
            "accuracy_radius_km": l.accuracy_radius_km,
            "country": l.country,
        })
    });
    let registry = match plan.registry_age {
        None => serde_json::json!({ "source": "store" }),
        Some(age) => serde_json::json!({ "source": "cache", "age_seconds": age.as_secs_f64() }),
    };
    json(
        200,
        &serde_json::json!({
            "ip": ip.to_string(),
            "located": located,
            "region": route.region,
            "node": route.node.id,
            "reason": route.reason,
            "candidates": route.candidates,
            "registry": registry,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomRequest {
    name: RoomName,
    region: Option<RegionId>,
}

/// Handles `POST /v1/rooms` (API auth): `{"name": str, "region"?: str}` creates a
/// room, pinned to `region` when given (its joins go there while the region has a
/// healthy node, and the record outlives its sessions). An existing room is
/// returned as it is. Answer: `{"name", "sid", "region", "pinned"}`; 400 naming
/// the field for bad input or an unknown region, 503 when the store is down.
pub(crate) async fn create_room(gw: &Gateway, req: Request<Incoming>) -> Response<Body> {
    if let Some(refusal) = unauthorized(gw, &req) {
        return refusal;
    }
    let parsed: RoomRequest = match read_json(req).await {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    if parsed.name.as_str().trim().is_empty() {
        return json_error(400, "invalid request: field `name` must not be empty");
    }
    if let Some(region) = &parsed.region {
        match gw.store.nodes().await {
            Ok(nodes) if nodes.iter().any(|n| &n.region == region) => {}
            Ok(_) => {
                let region = region.as_str();
                return json_error(400, &format!("invalid request: field `region`: no node serves region {region:?}"));
            }
            Err(e) => return json_error(503, &format!("store unavailable: {e}")),
        }
    }
    let record = RoomRecord {
        name: parsed.name,
        sid: RoomSid::random(),
        pinned: parsed.region.is_some(),
        options: Default::default(),
        region: parsed.region,
        node: None,
        created_at: std::time::SystemTime::now(),
    };
    match gw.store.get_or_create_room(&record).await {
        Ok(room) => json(
            200,
            &serde_json::json!({ "name": room.name, "sid": room.sid, "region": room.region, "pinned": room.pinned }),
        ),
        Err(e) => json_error(503, &format!("store unavailable: {e}")),
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`]; the refusal names the field.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Box<Response<Body>>> {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Box::new(json_error(413, &format!("body over {MAX_BODY_BYTES} bytes"))))
        }
        Err(e) => return Err(Box::new(json_error(400, &format!("cannot read body: {e}")))),
    };
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let message = if e.path().to_string() == "." {
            format!("invalid request: {}", e.inner())
        } else {
            format!("invalid request: field `{}`: {}", e.path(), e.inner())
        };
        Box::new(json_error(400, &message))
    })
}

/// Handles `POST /v1/tokens` (and `POST /dev/token` with `skip_auth`).
pub(crate) async fn mint_token(gw: &Gateway, req: Request<Incoming>, skip_auth: bool) -> Response<Body> {
    if !skip_auth {
        if let Some(refusal) = unauthorized(gw, &req) {
            return refusal;
        }
    }
    let parsed: TokenRequest = match read_json(req).await {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    for (field, value) in [("room", &parsed.room), ("identity", &parsed.identity)] {
        if value.trim().is_empty() {
            return json_error(400, &format!("invalid request: field `{field}` must not be empty"));
        }
    }
    let ttl = parsed.ttl.map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_TTL);
    let grants = match parsed.grants.unwrap_or_default().resolve() {
        Ok(g) => g,
        Err(why) => return json_error(400, &why),
    };
    let mint = MintRequest {
        room: parsed.room.into(),
        identity: parsed.identity.into(),
        name: parsed.name,
        metadata: parsed.metadata,
        ttl,
        grants,
    };
    let minted = match gw.authority.mint(&mint) {
        Ok(m) => m,
        Err(TokenError::Malformed(reason)) => {
            return json_error(400, &format!("invalid request: field `ttl`: {reason}"))
        }
        Err(e) => return json_error(400, &format!("invalid request: {e}")),
    };
    let record = TokenRecord {
        id: minted.id.clone(),
        api_key: gw.authority.api_key().to_owned(),
        room: mint.room.clone(),
        identity: mint.identity.clone(),
        grants: TokenGrants {
            can_publish: mint.grants.can_publish,
            can_subscribe: mint.grants.can_subscribe,
            can_publish_data: mint.grants.can_publish_data,
            hidden: mint.grants.hidden,
            room_admin: mint.grants.room_admin,
        },
        issued_at: minted.issued_at,
        expires_at: minted.expires_at,
        revoked_at: None,
    };
    if let Err(e) = gw.store.record_token(&record).await {
        tracing::error!(error = %e, "cannot record minted token");
        return json_error(503, "store unavailable; token not minted");
    }
    tracing::info!(room = %mint.room, participant = %mint.identity, id = %minted.id, "minted token");
    json(
        200,
        &serde_json::json!({
            "token": minted.jwt,
            "url": gw.config.public_url,
            "expires_at": humantime::format_rfc3339_seconds(minted.expires_at).to_string(),
            "id": minted.id,
        }),
    )
}
