//! The signal path: `/rtc/validate` and the `/rtc` WebSocket proxy.
//!
//! `/rtc` is checked here first (token, room), then routed ([`crate::route`]), then
//! the upgrade request is replayed to the chosen SFU node. When the node answers
//! `101 Switching Protocols`, the client gets the node's 101 and the two upgraded
//! byte streams are spliced ([`crate::splice`]); the gateway never decodes a
//! signal message, and adds one only when the node dies under the client. The
//! node checks the token again, so a gateway bug cannot admit anyone.
//!
//! Headers added upstream: `X-Forwarded-For` (the client address as the gateway saw
//! it), `X-Meridian-Region` (the chosen region).

use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use meridian_auth::{TokenAuthority, TokenError, VerifiedGrant};
use meridian_ids::{NodeId, RegionId};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::http_util::{query, text, Body};
use crate::Gateway;

/// Bytes buffered per direction while splicing a signal socket. Signal messages
/// are mostly under 1 KiB (an SDP is a few); tokio's default of 8 KiB per
/// direction was most of the gateway's ~18 KiB per held connection
/// (`bench/gateway_ws.sh`).
const SPLICE_BUFFER: usize = 2048;

/// Request headers copied to the node on the upgrade.
const FORWARDED_HEADERS: [HeaderName; 7] = [
    // The join token of LiveKit's Rust-based SDKs; the node checks it again.
    header::AUTHORIZATION,
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::USER_AGENT,
];
/// Response headers copied back to the client on 101.
const RETURNED_HEADERS: [HeaderName; 4] =
    [header::UPGRADE, header::CONNECTION, header::SEC_WEBSOCKET_ACCEPT, header::SEC_WEBSOCKET_PROTOCOL];

/// Nodes one join tries before the gateway gives up with 502.
pub const MAX_NODE_ATTEMPTS: usize = 3;
/// Longest the gateway waits for a node to connect and answer the upgrade (the
/// node's own handshake limit is 10 s); a node that accepts and then hangs is
/// then skipped like one that refuses, instead of holding the join.
pub const UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Header naming the region the gateway chose, sent to the node.
pub const REGION_HEADER: &str = "x-meridian-region";

/// The request's join token (the `Authorization: Bearer` header, else
/// `access_token`), verified for the URL's `room`, and not revoked: a token
/// minted through `/v1/tokens` and revoked since is refused
/// ([`TokenError::Revoked`]). While the store cannot be read, revocations are
/// not checked (the join goes on, with a warning): joins keep working on the
/// registry cache, and refusing them all would make a store outage an outage.
async fn check_token(gw: &Gateway, req: &Request<Incoming>) -> Result<VerifiedGrant, TokenError> {
    let q = query(req.uri());
    // A header that is not text is no `Bearer` header either.
    let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    let token = TokenAuthority::join_token(authorization, q.get("access_token").map(String::as_str))?;
    let grant = gw.authority.verify_join(token, q.get("room").map(String::as_str))?;
    match gw.store.token(&meridian_auth::token_id(token)).await {
        Ok(Some(record)) if record.revoked_at.is_some() => Err(TokenError::Revoked),
        Ok(_) => Ok(grant),
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable: token revocation not checked");
            Ok(grant)
        }
    }
}

fn refusal(e: &TokenError) -> Response<Body> {
    text(e.http_status(), &e.to_string())
}

/// `GET /rtc/validate` (token in `Authorization: Bearer` or `access_token`): 200
/// `success` when the token would be admitted, else 401 or 400 with the reason
/// as text (LiveKit's `rtcservice` answers).
/// Never 404: livekit-client reads 404 as "try another signalling path".
pub(crate) async fn validate(gw: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    match check_token(gw, req).await {
        Ok(_) => text(200, "success"),
        Err(e) => refusal(&e),
    }
}

/// `GET /rtc` with a WebSocket upgrade: verify, route, proxy, all in one
/// `gateway.join` span (the root of the join's trace) with children
/// `gateway.token_check`, `gateway.geo_lookup`, `gateway.route_selection` and
/// `gateway.proxy_connect`; the node's spans continue the trace from the
/// `traceparent` header of the proxied upgrade.
pub(crate) async fn rtc(gw: &Gateway, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let span = tracing::info_span!(
        "gateway.join",
        room = tracing::field::Empty,
        participant = tracing::field::Empty,
        region = tracing::field::Empty,
        node = tracing::field::Empty,
    );
    async move {
        let checked = check_token(gw, &req).instrument(tracing::info_span!("gateway.token_check")).await;
        let grant = match checked {
            Ok(g) => g,
            Err(e) => {
                gw.refusal_log.log(peer.ip(), || tracing::info!(%peer, reason = %e, "join refused"));
                gw.observe.metrics.refused(e.http_status());
                return refusal(&e);
            }
        };
        let current = tracing::Span::current();
        current.record("room", grant.room().as_str());
        current.record("participant", grant.identity().as_str());
        let client = gw.client_ip(peer, &req);
        rtc_routed(gw, client, req, grant).await
    }
    .instrument(span)
    .await
}

/// Routes and connects to a node. A node that refuses the TCP connection (it
/// died before the registry noticed) is left out and the join routed again, up
/// to [`MAX_NODE_ATTEMPTS`] nodes, so clients fail over at once.
async fn rtc_routed(
    gw: &Gateway,
    client: std::net::IpAddr,
    mut req: Request<Incoming>,
    grant: VerifiedGrant,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let mut unreachable: Vec<NodeId> = Vec::new();
    let (route, upstream) = loop {
        let plan = match gw.route(client, Some(grant.room()), &unreachable, crate::route::Explain::No).await {
            Ok(plan) => plan,
            Err(e) => {
                tracing::error!(error = %e, "cannot route");
                gw.observe.metrics.refused(503);
                return text(503, &format!("{e}; retry"));
            }
        };
        let Some(route) = plan.route else {
            gw.observe.metrics.refused(503);
            return text(503, "no region has a node available");
        };
        let connect = tracing::info_span!("gateway.proxy_connect", node = %route.node.id, region = %route.region);
        let upstream = connect_upstream(&route.node.signal_addr, client, &route.region, &req).instrument(connect);
        let upstream = match tokio::time::timeout(UPSTREAM_TIMEOUT, upstream).await {
            Ok(connected) => connected,
            Err(_) => Err(format!("no answer to the upgrade within {UPSTREAM_TIMEOUT:?}").into()),
        };
        match upstream {
            Ok(upstream) => break (route, upstream),
            Err(e) => {
                tracing::warn!(node = %route.node.id, addr = %route.node.signal_addr, error = %e, "node unreachable");
                unreachable.push(route.node.id.clone());
                if unreachable.len() >= MAX_NODE_ATTEMPTS {
                    gw.observe.metrics.refused(502);
                    return text(502, &format!("region {} node {} unreachable", route.region, route.node.id));
                }
            }
        }
    };
    let span = tracing::Span::current();
    span.record("region", route.region.as_str());
    span.record("node", route.node.id.as_str());
    if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The node refused (a full room, a token it checks differently); pass its
        // status and reason on.
        let status = upstream.status().as_u16();
        gw.observe.metrics.refused(status);
        let body = http_body_util::Limited::new(upstream.into_body(), 4096).collect();
        let reason = match tokio::time::timeout(std::time::Duration::from_secs(2), body).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
            _ => String::new(),
        };
        let reason = if reason.is_empty() { format!("node refused the join with status {status}") } else { reason };
        return text(status, &reason);
    }
    let mut reply = Response::new(Body::default());
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in RETURNED_HEADERS {
        if let Some(v) = upstream.headers().get(&name) {
            reply.headers_mut().insert(name, v.clone());
        }
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let node_upgrade = hyper::upgrade::on(upstream);
    let reason =
        serde_json::to_value(route.reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    gw.observe.metrics.routed(&route.region, &reason, started.elapsed().as_secs_f64());
    tracing::info!(%client, reason = ?route.reason, "join routed");
    let node_id = route.node.id.clone();
    tokio::spawn(async move {
        let (client, node) = match tokio::try_join!(client_upgrade, node_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        match crate::splice::splice(TokioIo::new(client), TokioIo::new(node), SPLICE_BUFFER).await {
            crate::splice::SpliceEnd::NodeDied => {
                tracing::info!(node = %node_id, "node's signal socket ended without a close; told the client to rejoin")
            }
            end => tracing::debug!(node = %node_id, ?end, "signal socket closed"),
        }
    });
    reply
}

async fn connect_upstream(
    node: &str,
    client: std::net::IpAddr,
    region: &RegionId,
    req: &Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(node).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/rtc");
    let mut up = Request::builder().method("GET").uri(path).body(Empty::<Bytes>::new())?;
    let headers = up.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_str(node)?);
    for name in FORWARDED_HEADERS {
        if let Some(v) = req.headers().get(&name) {
            headers.insert(name, v.clone());
        }
    }
    headers.insert("x-forwarded-for", HeaderValue::from_str(&client.to_string())?);
    headers.insert(REGION_HEADER, HeaderValue::from_str(region.as_str())?);
    // W3C trace context of the current span (gateway.proxy_connect), so the node's
    // spans join this trace.
    let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current());
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers))
    });
    Ok(sender.send_request(up).await?)
}
