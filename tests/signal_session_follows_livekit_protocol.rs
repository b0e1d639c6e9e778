//! The signal session through the gateway, driven by a test client speaking
//! LiveKit's protobuf protocol: the JoinResponse, ping, participant updates on
//! join and leave, and a malformed frame closing only its own connection.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use futures_util::SinkExt;
use livekit_protocol as proto;
use livekit_protocol::participant_info::State;
use livekit_protocol::signal_request::Message as In;
use livekit_protocol::signal_response::Message as Out;
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message as Frame;

#[tokio::test]
async fn join_response_names_room_region_node_and_turn_credentials() {
    let stack = stack().await;
    let mut ws = connect(&stack, &api_token(&stack, "demo", "alice").await).await.expect("admitted");
    let j = join(&mut ws).await;
    let room = j.room.expect("room");
    assert_eq!(room.name, "demo");
    assert!(room.sid.starts_with("RM_"), "{}", room.sid);
    let me = j.participant.expect("participant");
    assert_eq!(me.identity, "alice");
    assert!(me.sid.starts_with("PA_"));
    assert!(me.permission.expect("permission").can_publish, "livekit-client needs canPublish to publish");
    let info = j.server_info.expect("server_info");
    assert_eq!((info.region.as_str(), info.node_id.as_str()), ("local", "local-1"));
    assert!(!info.version.is_empty(), "livekit-client refuses a server without a version");
    assert!(j.ping_interval > 0 && j.ping_timeout > j.ping_interval);
    assert!(!j.subscriber_primary);

    let turn = j.ice_servers.first().expect("an ICE server");
    let region = &stack.regions[0];
    assert_eq!(
        turn.urls,
        vec![
            format!("turn:{}?transport=udp", region.turn_addr),
            format!("turn:{}?transport=tcp", region.turn_tcp_addr),
            format!("turns:{}?transport=tcp", region.turn_tls_addr),
        ],
        "the relay over UDP, TCP and TLS"
    );
    let (expiry, identity) = turn.username.split_once(':').expect("<expiry>:<identity>");
    assert_eq!(identity, "alice");
    let expiry = std::time::UNIX_EPOCH + Duration::from_secs(expiry.parse().unwrap());
    assert!(expiry > SystemTime::now() + Duration::from_secs(3600), "credential valid for hours");
    assert!(!turn.credential.is_empty());

    let record = stack.store.room(&"demo".into()).await.unwrap().expect("room recorded");
    assert_eq!(
        (record.sid.into_string(), record.region, record.node),
        (room.sid, Some("local".into()), Some("local-1".into()))
    );

    send(&mut ws, In::PingReq(proto::Ping { timestamp: 1234, rtt: 0 })).await;
    let pong = recv_until(&mut ws, |m| if let Out::PongResp(p) = m { Some(p) } else { None }).await;
    assert_eq!(pong.last_ping_timestamp, 1234);
    send(&mut ws, In::Ping(99)).await;
    assert_eq!(recv_until(&mut ws, |m| if let Out::Pong(p) = m { Some(p) } else { None }).await, 99);
    stack.shutdown().await;
}

#[tokio::test]
async fn others_hear_of_joins_and_leaves() {
    let stack = stack().await;
    let mut alice = connect(&stack, &api_token(&stack, "demo", "alice").await).await.unwrap();
    let a = join(&mut alice).await;
    let mut bob = connect(&stack, &api_token(&stack, "demo", "bob").await).await.unwrap();
    let b = join(&mut bob).await;
    assert_eq!(b.room.unwrap().sid, a.room.unwrap().sid, "same room, same sid");
    let others: Vec<_> = b.other_participants.iter().map(|p| p.identity.as_str()).collect();
    assert_eq!(others, ["alice"]);

    let joined = recv_until(&mut alice, |m| if let Out::Update(u) = m { Some(u) } else { None }).await;
    assert_eq!(joined.participants[0].identity, "bob");
    let bob_sid = joined.participants[0].sid.clone();
    let first_version = joined.participants[0].version;

    send(&mut bob, In::Leave(proto::LeaveRequest::default())).await;
    let left = recv_until(&mut alice, |m| match m {
        Out::Update(u) if u.participants[0].state == State::Disconnected as i32 => Some(u),
        _ => None,
    })
    .await;
    assert_eq!(left.participants[0].sid, bob_sid);
    assert!(left.participants[0].version > first_version, "versions grow, or livekit-client ignores the update");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let stack = stack().await;
    let mut bystander = connect(&stack, &api_token(&stack, "other", "carol").await).await.unwrap();
    join(&mut bystander).await;
    let mut peer_in_room = connect(&stack, &api_token(&stack, "demo", "dave").await).await.unwrap();
    join(&mut peer_in_room).await;

    let mut bad = connect(&stack, &api_token(&stack, "demo", "mallory").await).await.unwrap();
    join(&mut bad).await;
    bad.send(Frame::Binary(vec![0xff, 0xff, 0xff, 0x07, 0x01].into())).await.unwrap();
    let closed = async {
        while let Some(m) = recv(&mut bad).await {
            drop(m);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed).await.expect("the malformed connection is closed");

    // Text frames (JSON signalling) are refused the same way.
    let mut texty = connect(&stack, &api_token(&stack, "demo", "trent").await).await.unwrap();
    join(&mut texty).await;
    texty.send(Frame::Text("{\"offer\":{}}".into())).await.unwrap();
    let closed = async { while recv(&mut texty).await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(10), closed).await.expect("the text-frame connection is closed");

    for ws in [&mut bystander, &mut peer_in_room] {
        send(ws, In::PingReq(proto::Ping { timestamp: 7, rtt: 0 })).await;
        let pong = recv_until(ws, |m| if let Out::PongResp(p) = m { Some(p) } else { None }).await;
        assert_eq!(pong.last_ping_timestamp, 7, "other connections carry on");
    }
    stack.shutdown().await;
}

/// Signal messages that would grow a participant's state without bound (a flood
/// of trickled candidates, tracks announced and never sent, oversized fields)
/// close that participant's connection; the room carries on.
#[tokio::test]
async fn floods_of_candidates_or_track_announcements_close_only_their_own_connection() {
    let stack = stack().await;
    let mut peer_in_room = connect(&stack, &api_token(&stack, "demo", "dave").await).await.unwrap();
    join(&mut peer_in_room).await;
    let candidate =
        r#"{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
    let trickle = |init: String| {
        In::Trickle(proto::TrickleRequest {
            candidate_init: init,
            target: proto::SignalTarget::Publisher as i32,
            ..Default::default()
        })
    };
    let add_track = |i: usize, name: String| {
        In::AddTrack(proto::AddTrackRequest {
            cid: format!("cid-{i}"),
            name,
            r#type: proto::TrackType::Audio as i32,
            ..Default::default()
        })
    };
    let floods: [(&str, Vec<In>); 4] = [
        ("a flood of candidates", (0..=256).map(|_| trickle(candidate.to_owned())).collect()),
        ("an oversized candidate", vec![trickle(format!("{candidate:<5000}"))]),
        ("tracks announced, never sent", (0..=64).map(|i| add_track(i, "mic".into())).collect()),
        ("an oversized track name", vec![add_track(0, "x".repeat(5000))]),
    ];
    for (what, flood) in floods {
        let mut bad = connect(&stack, &api_token(&stack, "demo", "mallory").await).await.unwrap();
        join(&mut bad).await;
        for m in flood {
            if bad.send(Frame::Binary(proto::SignalRequest { message: Some(m) }.encode_to_vec().into())).await.is_err()
            {
                break; // closed under us: what we wanted
            }
        }
        let closed = async { while recv(&mut bad).await.is_some() {} };
        tokio::time::timeout(Duration::from_secs(10), closed).await.unwrap_or_else(|_| panic!("{what}: closed"));
        send(&mut peer_in_room, In::PingReq(proto::Ping { timestamp: 7, rtt: 0 })).await;
        let pong = recv_until(&mut peer_in_room, |m| if let Out::PongResp(p) = m { Some(p) } else { None }).await;
        assert_eq!(pong.last_ping_timestamp, 7, "{what}: the room carries on");
    }
    stack.shutdown().await;
}
