//! One signal session: the WebSocket of one participant.
//!
//! The upgrade request is checked before the handshake completes: path `/rtc`,
//! a join token that verifies (401/403 with the reason otherwise). Then the
//! participant joins its room, gets `JoinResponse` as the first message, and the
//! session moves messages until the socket closes, the client sends `leave`, or
//! the room ends the participant. A frame that is not a decodable
//! `SignalRequest` closes this session only.
//!
//! Resume: a session that drops without `leave` (a signal blip) keeps its
//! participant in the room for [`RESUME_WINDOW`], its PCs and down-tracks
//! untouched and its outgoing messages queued. `reconnect=1&sid=PA_…` with a
//! token for the same identity takes it back: `ReconnectResponse` (fresh TURN
//! credentials), then what was queued meanwhile, then a subscriber offer with
//! an ICE restart; the client restarts the publisher's ICE with its own offer.
//! The others see nothing. A resume that finds nobody (the window passed, or
//! the node is not the one the participant was on) gets
//! `LeaveRequest{action: RECONNECT}`, and livekit-client rejoins in full.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use livekit_protocol::participant_info::State;
use livekit_protocol::signal_request::Message as In;
use livekit_protocol::signal_response::Message as Out;
use meridian_auth::VerifiedGrant;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::participant::{Participant, ParticipantError, SIGNAL_QUEUE};
use crate::room::Room;
use crate::{Sfu, LIVEKIT_COMPAT_VERSION, PING_INTERVAL, PING_TIMEOUT, PROTOCOL_VERSION};

/// Largest accepted signal frame: 1 MiB (an SDP with many tracks is ~100 KiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// How long a participant whose signal session dropped stays for a resume.
pub const RESUME_WINDOW: Duration = Duration::from_secs(20);
/// A resume that arrives before the old session has seen its socket close
/// waits for that, polling this often, at most [`RESUME_HANDOVER_POLLS`] times.
const RESUME_HANDOVER_POLL: Duration = Duration::from_millis(100);
const RESUME_HANDOVER_POLLS: usize = 30;
/// Longest a connection may take over its WebSocket upgrade (request line,
/// headers, token check); a connection that sends nothing held a slot for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<TcpStream>;

struct Admission {
    grant: VerifiedGrant,
    reconnect: bool,
    /// The URL's `sid`: the participant a resume is for.
    sid: Option<String>,
    /// The URL's `auto_subscribe`: absent or `1`/`true` is on, anything else off
    /// (LiveKit's `rtcservice.go` and `boolValue`).
    auto_subscribe: bool,
    /// Trace context from the gateway's `traceparent` header.
    parent: opentelemetry::Context,
}

fn refuse(status: u16, reason: String) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(reason));
    *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
        .unwrap_or(tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED);
    r
}

/// Runs the session of one accepted TCP connection to the node's signal port.
pub async fn run_session(sfu: Arc<Sfu>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // The gateway's RoomService calls come to this port too (see `admin`); a
    // request line goes out in one segment, so the first read holds the method.
    let mut head = [0u8; 5];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut head)).await {
        Ok(Ok(n)) if head[..n] == *b"POST " => return crate::admin::serve_connection(sfu, stream, peer).await,
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return,
        Err(_) => {
            sfu.metrics.refused_handshakes.inc();
            sfu.refusal_log.log(peer.ip(), || tracing::info!(%peer, "signal handshake timed out"));
            return;
        }
    }
    let mut admission: Option<Admission> = None;
    // Whom to rate-limit log lines by: the client the gateway names in
    // `X-Forwarded-For` (it sets the header to the client's address; the signal
    // port is for gateways), else the TCP peer. Keyed on the peer alone, one
    // abusive client muted the lines of everyone behind the same gateway.
    let mut source = peer.ip();
    // The callback's signature is tungstenite's; its error is the HTTP refusal.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(ip) = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()?.trim().parse().ok()) {
            source = ip;
        }
        if req.uri().path() != "/rtc" {
            return Err(refuse(404, "not found".into()));
        }
        let q: HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
        // A header that is not text is no `Bearer` header either.
        let authorization = req.headers().get("authorization").map(|v| v.to_str().unwrap_or(""));
        let verified =
            meridian_auth::TokenAuthority::join_token(authorization, q.get("access_token").map(String::as_str))
                .and_then(|token| sfu.authority.verify_join(token, q.get("room").map(String::as_str)));
        match verified {
            Ok(grant) if sfu.is_draining() && !sfu.rooms.has_room(grant.room()) => {
                Err(refuse(503, "node draining: it takes no new rooms".into()))
            }
            Ok(grant) if sfu.rooms.room(grant.room().as_str()).is_some_and(|r| r.is_full_for(grant.identity())) => {
                Err(refuse(403, crate::room::JoinError::Full.to_string()))
            }
            Ok(grant) => {
                let parent = opentelemetry::global::get_text_map_propagator(|p| {
                    p.extract(&opentelemetry_http::HeaderExtractor(req.headers()))
                });
                let flag = |name: &str| q.get(name).map(|v| v == "1" || v == "true");
                let reconnect = flag("reconnect").unwrap_or(false);
                let auto_subscribe = flag("auto_subscribe").unwrap_or(true);
                let sid = q.get("sid").cloned();
                admission = Some(Admission { grant, reconnect, sid, auto_subscribe, parent });
                Ok(resp)
            }
            Err(e) => Err(refuse(e.http_status(), e.to_string())),
        }
    };
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_FRAME_BYTES);
    config.max_frame_size = Some(MAX_FRAME_BYTES);
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            sfu.metrics.refused_handshakes.inc();
            sfu.refusal_log
                .log(source, || tracing::info!(%peer, %source, error = %e, "signal handshake refused or failed"));
            return;
        }
        Err(_) => {
            sfu.metrics.refused_handshakes.inc();
            sfu.refusal_log.log(source, || tracing::info!(%peer, %source, "signal handshake timed out"));
            return;
        }
    };
    let Some(Admission { grant, reconnect, sid, auto_subscribe, parent }) = admission else { return };
    let (room, who, region, node) = (grant.room(), grant.identity(), &sfu.config.region, &sfu.config.node_id);
    let span = tracing::info_span!("sfu.session", room = %room, participant = %who, region = %region, node = %node);
    let join = tracing::info_span!("sfu.join", room = %room, participant = %who, region = %region, node = %node);
    for s in [&span, &join] {
        // Without an exporter there is no OTel context to attach; that is fine.
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(s, parent.clone());
    }
    if reconnect {
        drop(join);
        resume(&sfu, ws, &grant, sid.as_deref(), (peer, source)).instrument(span).await;
        return;
    }
    run_admitted(&sfu, ws, (grant, auto_subscribe), (peer, source), join).instrument(span).await;
}

async fn send(ws: &mut Socket, message: Out) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let bytes = proto::SignalResponse { message: Some(message) }.encode_to_vec();
    ws.send(Frame::Binary(bytes.into())).await
}

/// `join` is the `sfu.join` span: it closes once the JoinResponse is out, and the
/// participant's later milestones (ICE connected, first RTP forwarded) are its
/// children.
async fn run_admitted(
    sfu: &Arc<Sfu>,
    mut ws: Socket,
    (grant, auto_subscribe): (VerifiedGrant, bool),
    (peer, source): (SocketAddr, std::net::IpAddr),
    join: tracing::Span,
) {
    let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
    let (room, me) = match sfu.rooms.join(&grant, auto_subscribe, tx, join.clone()).instrument(join.clone()).await {
        Ok(joined) => joined,
        Err(e) => {
            // A full room will not take the client on a retry; anything else might.
            let full = matches!(e, crate::room::JoinError::Full);
            tracing::error!(%peer, error = %e, "join failed");
            let action =
                if full { proto::leave_request::Action::Disconnect } else { proto::leave_request::Action::Reconnect };
            let _ = send(
                &mut ws,
                Out::Leave(proto::LeaveRequest {
                    can_reconnect: !full,
                    reason: proto::DisconnectReason::JoinFailure as i32,
                    action: action as i32,
                    ..Default::default()
                }),
            )
            .await;
            // A close frame, so the gateway does not take this for a node that died.
            let _ = ws.close(None).await;
            return;
        }
    };
    tracing::info!(%peer, room = %room.name, participant = %me.sid, identity = %me.identity, "participant joined");
    let sent = send(&mut ws, Out::Join(join_response(sfu, &room, &me))).instrument(join.clone()).await;
    drop(join);
    if sent.is_err() {
        sfu.rooms.leave(&room, &me).await;
        return;
    }
    sfu.rooms.announce_join(&room, &me).await;
    run_until_end((sfu, source), ws, room, me, rx).await;
}

/// Runs the session loop; then parks `me` for a resume when the socket only
/// dropped, else takes it out of the room and closes the socket.
async fn run_until_end(
    (sfu, source): (&Arc<Sfu>, std::net::IpAddr),
    mut ws: Socket,
    room: Arc<Room>,
    me: Arc<Participant>,
    mut rx: mpsc::Receiver<Out>,
) {
    let end = session_loop((sfu, source), &mut ws, &room, &me, &mut rx).await;
    if matches!(end, End::Closed) {
        park(sfu, room, me, rx);
        return;
    }
    sfu.rooms.leave(&room, &me).await;
    let _ = ws.close(None).await;
}

/// Keeps `me` in `room` for [`RESUME_WINDOW`] with its queue `rx`; it leaves
/// then, or at once if it is removed meanwhile, unless a resume took it.
fn park(sfu: &Arc<Sfu>, room: Arc<Room>, me: Arc<Participant>, rx: mpsc::Receiver<Out>) {
    tracing::info!(participant = %me.sid, "signal dropped; kept for a resume");
    me.park(rx);
    let sfu = Arc::clone(sfu);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(RESUME_WINDOW) => {}
            _ = me.closed.notified() => {}
        }
        if me.unpark().is_some() {
            tracing::info!(participant = %me.sid, "not resumed; leaving");
            sfu.rooms.leave(&room, &me).await;
        }
    });
}

/// A `reconnect=1` session: takes back the participant `sid` of the token's
/// identity if it is parked here, else asks for a full rejoin.
async fn resume(
    sfu: &Arc<Sfu>,
    mut ws: Socket,
    grant: &VerifiedGrant,
    sid: Option<&str>,
    (peer, source): (SocketAddr, std::net::IpAddr),
) {
    let participant = sfu.rooms.room(grant.room().as_str()).and_then(|room| {
        let me = room
            .participants()
            .into_iter()
            .find(|p| Some(p.sid.as_str()) == sid && p.identity() == grant.identity())?;
        Some((room, me))
    });
    let mut found = None;
    if let Some((room, me)) = participant {
        // The old socket's close may still be on its way: wait for it a little.
        for _ in 0..RESUME_HANDOVER_POLLS {
            if let Some(rx) = me.unpark() {
                found = Some((room, me, rx));
                break;
            }
            tokio::time::sleep(RESUME_HANDOVER_POLL).await;
        }
    }
    let Some((room, me, rx)) = found else {
        tracing::info!(%peer, ?sid, "nothing to resume; asking for a full rejoin");
        let _ = send(
            &mut ws,
            Out::Leave(proto::LeaveRequest {
                can_reconnect: true,
                reason: proto::DisconnectReason::StateMismatch as i32,
                action: proto::leave_request::Action::Reconnect as i32,
                ..Default::default()
            }),
        )
        .await;
        let _ = ws.close(None).await;
        return;
    };
    tracing::info!(%peer, participant = %me.sid, "signal resumed");
    let reconnect = proto::ReconnectResponse {
        ice_servers: ice_servers(sfu, &me),
        server_info: Some(server_info(sfu)),
        last_message_seq: me.last_reliable_seq(),
        ..Default::default()
    };
    if send(&mut ws, Out::Reconnect(reconnect)).await.is_err() {
        park(sfu, room, me, rx);
        return;
    }
    if let Err(e) = me.restart_subscriber_ice().await {
        tracing::warn!(participant = %me.sid, error = %e, "subscriber ICE restart not offered");
    }
    run_until_end((sfu, source), ws, room, me, rx).await;
}

/// The node's TURN relay with fresh REST credentials for `me`.
fn ice_servers(sfu: &Sfu, me: &Participant) -> Vec<proto::IceServer> {
    sfu.config
        .turn
        .iter()
        .map(|turn| {
            let c = meridian_auth::turn_rest::mint(&turn.secret, me.identity.as_str(), turn.ttl, SystemTime::now());
            proto::IceServer { urls: turn.urls.clone(), username: c.username, credential: c.password }
        })
        .collect()
}

fn server_info(sfu: &Sfu) -> proto::ServerInfo {
    proto::ServerInfo {
        edition: proto::server_info::Edition::Standard as i32,
        version: LIVEKIT_COMPAT_VERSION.into(),
        protocol: PROTOCOL_VERSION,
        region: sfu.config.region.to_string(),
        node_id: sfu.config.node_id.to_string(),
        ..Default::default()
    }
}

fn join_response(sfu: &Sfu, room: &Room, me: &Participant) -> proto::JoinResponse {
    let ice_servers = ice_servers(sfu, me);
    let others =
        room.others(&me.sid).into_iter().filter(|p| !p.grants().hidden).map(|p| p.info(State::Active)).collect();
    proto::JoinResponse {
        room: Some(room.info()),
        participant: Some(me.info(State::Joined)),
        other_participants: others,
        server_version: LIVEKIT_COMPAT_VERSION.into(),
        ice_servers,
        subscriber_primary: false,
        server_region: sfu.config.region.to_string(),
        ping_timeout: PING_TIMEOUT.as_secs() as i32,
        ping_interval: PING_INTERVAL.as_secs() as i32,
        server_info: Some(server_info(sfu)),
        ..Default::default()
    }
}

/// Whether `e` says the connection went away rather than that the client broke
/// the protocol.
fn dropped(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
    matches!(
        e,
        Error::ConnectionClosed
            | Error::AlreadyClosed
            | Error::Io(_)
            | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
    )
}

/// Why the session loop ended.
enum End {
    Closed,
    Left,
    Kicked,
    Malformed(String),
}

async fn session_loop(
    (sfu, source): (&Sfu, std::net::IpAddr),
    ws: &mut Socket,
    room: &Arc<Room>,
    me: &Arc<Participant>,
    rx: &mut mpsc::Receiver<Out>,
) -> End {
    let end = loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Frame::Binary(bytes))) => match proto::SignalRequest::decode(bytes.as_ref()) {
                    Ok(req) => match handle(ws, room, me, req).await {
                        Ok(true) => continue,
                        Ok(false) => break End::Left,
                        Err(ParticipantError::BadRequest(why)) => break End::Malformed(why),
                        Err(e) => tracing::warn!(participant = %me.sid, error = %e, "request failed"),
                    },
                    Err(e) => break End::Malformed(format!("not a SignalRequest: {e}")),
                },
                Some(Ok(Frame::Text(_))) => break End::Malformed("text frame (JSON signalling is not supported)".into()),
                Some(Ok(Frame::Close(_))) | None => break End::Closed,
                Some(Ok(_)) => continue,
                // A socket that went away (reset, no close frame) is a blip to
                // resume from; a frame that breaks the protocol is the client's fault.
                Some(Err(e)) if dropped(&e) => break End::Closed,
                Some(Err(e)) => break End::Malformed(e.to_string()),
            },
            out = rx.recv() => match out {
                Some(message) => if send(ws, message).await.is_err() { break End::Closed },
                None => break End::Closed,
            },
            _ = me.closed.notified() => break End::Kicked,
        }
    };
    // Flush what is queued (e.g. a Leave telling the client why), best effort;
    // a dropped socket keeps it for a resume.
    if !matches!(end, End::Closed) {
        while let Ok(message) = rx.try_recv() {
            if send(ws, message).await.is_err() {
                break;
            }
        }
    }
    match &end {
        End::Malformed(why) => {
            sfu.metrics.malformed_sessions.inc();
            sfu.refusal_log.log(source, || {
                tracing::warn!(%source, participant = %me.sid, %why, "malformed signal message; closing this connection")
            })
        }
        End::Closed => tracing::info!(participant = %me.sid, "signal socket closed"),
        End::Left => tracing::info!(participant = %me.sid, "client left"),
        End::Kicked => tracing::info!(participant = %me.sid, "participant removed by the server"),
    }
    end
}

/// Handles one request; `Ok(false)` ends the session (the client left).
async fn handle(
    ws: &mut Socket,
    room: &Arc<Room>,
    me: &Arc<Participant>,
    req: proto::SignalRequest,
) -> Result<bool, ParticipantError> {
    let Some(message) = req.message else { return Ok(true) };
    match message {
        In::Offer(sd) => {
            for track in me.handle_offer(sd).await? {
                room.unpublish(me, &track).await;
            }
        }
        In::Answer(sd) => {
            let bound = me.handle_answer(sd).await?;
            room.bound(me, bound);
        }
        In::Trickle(t) => me.handle_trickle(t).await?,
        In::AddTrack(t) => me.handle_add_track(t)?,
        In::Mute(m) => room.muted(me, &m),
        In::UpdateMetadata(u) => room.update_own_metadata(me, u),
        In::Subscription(s) => room.update_subscription(me, &s).await?,
        In::TrackSetting(s) => me.handle_track_settings(&s).await?,
        In::SubscriptionPermission(p) => room.update_permissions(me, &p).await?,
        In::SyncState(sync) => sync_state(room, me, sync).await?,
        In::Leave(_) => return Ok(false),
        In::Ping(ts) => {
            let _ = send(ws, Out::Pong(ts)).await;
        }
        In::PingReq(p) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
            let _ = send(ws, Out::PongResp(proto::Pong { last_ping_timestamp: p.timestamp, timestamp: now })).await;
        }
        other => {
            tracing::debug!(participant = %me.sid, message = ?std::mem::discriminant(&other), "signal message not handled yet")
        }
    }
    Ok(true)
}

/// `SyncState`, sent by the client after a resume: what it believes it
/// subscribes to and which of those tracks it disabled. The participant is the
/// same one, so this mostly restates the state; it is applied anyway, so that a
/// change the client made while the signal was down is not lost. The SDPs and
/// data channel states in it are not used: the PCs and channels lived on.
async fn sync_state(room: &Arc<Room>, me: &Arc<Participant>, sync: proto::SyncState) -> Result<(), ParticipantError> {
    if let Some(subscription) =
        sync.subscription.filter(|s| !s.track_sids.is_empty() || !s.participant_tracks.is_empty())
    {
        room.update_subscription(me, &subscription).await?;
    }
    if !sync.track_sids_disabled.is_empty() {
        let settings =
            proto::UpdateTrackSettings { track_sids: sync.track_sids_disabled, disabled: true, ..Default::default() };
        me.handle_track_settings(&settings).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client that opens the TCP connection and never finishes the upgrade held
    /// a connection slot for ever; now it is closed after [`HANDSHAKE_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn an_upgrade_that_never_finishes_is_closed_after_the_handshake_timeout() {
        let sfu = crate::test_node();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let start = tokio::time::Instant::now();
        let session = tokio::spawn(run_session(Arc::clone(&sfu), stream, peer));
        client.write_all(b"GET /rtc?access_token=x HTTP/1.1\r\nHost: node\r\n").await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(HANDSHAKE_TIMEOUT * 3, client.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0))), "closed without an answer: {closed:?}, {rest:?}");
        session.await.unwrap();
        assert!(start.elapsed() >= HANDSHAKE_TIMEOUT, "not before the timeout: {:?}", start.elapsed());
        assert_eq!(sfu.metrics.refused_handshakes.get(), 1, "counted as a refused handshake");
    }
}
