//! What a participant may do to itself, as LiveKit's server decides it
//! (`pkg/rtc/participant.go`): `UpdateParticipantMetadata` needs
//! `canUpdateOwnMetadata`, is answered with `RequestResponse` (LiveKit's Rust SDK
//! waits for it) and reaches everyone, itself included, as `ParticipantUpdate`;
//! token attributes are published from the join on; `AddTrackRequest` for a
//! source outside `canPublishSources` is refused with `NOT_ALLOWED`; versions
//! only grow; the same identity joining again evicts the old session.

mod common;

use std::collections::HashMap;

use common::*;
use livekit_protocol as proto;
use livekit_protocol::participant_info::State;
use livekit_protocol::request_response::{Reason, Request};
use livekit_protocol::signal_request::Message as In;
use livekit_protocol::signal_response::Message as Out;
use serde_json::json;

/// The next `ParticipantUpdate` entry about `identity`.
async fn update_about(ws: &mut Ws, identity: &str) -> proto::ParticipantInfo {
    recv_until(ws, |m| match m {
        Out::Update(u) => u.participants.into_iter().find(|p| p.identity == identity),
        _ => None,
    })
    .await
}

/// The next `RequestResponse`.
async fn response(ws: &mut Ws) -> proto::RequestResponse {
    recv_until(ws, |m| if let Out::RequestResponse(r) = m { Some(r) } else { None }).await
}

fn update(request_id: u32, name: &str, metadata: &str, attributes: &[(&str, &str)]) -> In {
    In::UpdateMetadata(proto::UpdateParticipantMetadata {
        name: name.into(),
        metadata: metadata.into(),
        attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        request_id,
    })
}

fn attributes(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every message up to the `Pong` for `ts`: what the server sent before it
/// answered a ping sent after the request under test.
async fn until_pong(ws: &mut Ws, ts: i64) -> Vec<Out> {
    send(ws, In::Ping(ts)).await;
    let mut before = Vec::new();
    loop {
        match recv(ws).await.expect("socket open") {
            Out::Pong(t) if t == ts => return before,
            m => before.push(m),
        }
    }
}

#[tokio::test]
async fn metadata_updates_reach_everyone_when_the_grant_allows_them() {
    let stack = stack().await;
    let alice_token = join_token(
        "state",
        "alice",
        json!({ "canUpdateOwnMetadata": true }),
        json!({ "attributes": { "role": "host" } }),
    );
    let mut alice = connect(&stack, &alice_token).await.unwrap();
    let a = join(&mut alice).await;
    let me = a.participant.unwrap();
    assert_eq!(me.attributes, attributes(&[("role", "host")]), "token attributes are the participant's");
    assert!(me.permission.unwrap().can_update_metadata, "the grant is published in the permission");

    let mut bob = connect(&stack, &join_token("state", "bob", json!({}), json!({}))).await.unwrap();
    let b = join(&mut bob).await;
    let seen = &b.other_participants[0];
    assert_eq!((seen.identity.as_str(), &seen.attributes), ("alice", &attributes(&[("role", "host")])));
    assert!(!b.participant.unwrap().permission.unwrap().can_update_metadata, "not granted by default");
    let mut last_version = seen.version;

    // Allowed: applied, told to alice herself, then answered; bob hears of it.
    send(&mut alice, update(7, "Alice A", "m1", &[("mood", "happy")])).await;
    let own = update_about(&mut alice, "alice").await;
    assert_eq!((own.name.as_str(), own.metadata.as_str()), ("Alice A", "m1"));
    let answer = response(&mut alice).await;
    assert_eq!((answer.request_id, answer.reason()), (7, Reason::Ok), "{answer:?}");
    assert!(matches!(answer.request, Some(Request::UpdateMetadata(ref u)) if u.metadata == "m1"), "echoed");
    let heard = update_about(&mut bob, "alice").await;
    assert_eq!((heard.name.as_str(), heard.metadata.as_str()), ("Alice A", "m1"));
    assert_eq!(heard.attributes, attributes(&[("role", "host"), ("mood", "happy")]), "attributes merge");
    assert!(heard.version > last_version, "versions grow: {} after {last_version}", heard.version);
    last_version = heard.version;

    // An empty value deletes its key; empty name and metadata leave them alone.
    send(&mut alice, update(8, "", "", &[("role", "")])).await;
    assert_eq!(response(&mut alice).await.reason(), Reason::Ok);
    let heard = update_about(&mut bob, "alice").await;
    assert_eq!(heard.attributes, attributes(&[("mood", "happy")]));
    assert_eq!((heard.name.as_str(), heard.metadata.as_str()), ("Alice A", "m1"));
    assert!(heard.version > last_version);

    // Over LiveKit's limits: refused, nothing changes.
    let long_name = "n".repeat(meridian_sfu::participant::MAX_NAME_BYTES + 1);
    send(&mut alice, update(9, &long_name, "", &[])).await;
    let refused = response(&mut alice).await;
    assert_eq!((refused.request_id, refused.reason()), (9, Reason::LimitExceeded), "{}", refused.message);

    // Not granted: NOT_ALLOWED with the reason, and nobody hears of a change.
    send(&mut bob, update(3, "", "sneaky", &[("role", "admin")])).await;
    let refused = response(&mut bob).await;
    assert_eq!((refused.request_id, refused.reason()), (3, Reason::NotAllowed));
    assert!(refused.message.contains("permission"), "{}", refused.message);
    let to_alice = until_pong(&mut alice, 42).await;
    assert!(
        !to_alice.iter().any(|m| matches!(m, Out::Update(u) if u.participants.iter().any(|p| p.identity == "bob"))),
        "no update about bob reached alice: {to_alice:?}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_source_outside_can_publish_sources_is_refused_at_add_track() {
    let stack = stack().await;
    let token = join_token("sources", "carol", json!({ "canPublishSources": ["microphone"] }), json!({}));
    let mut carol = connect(&stack, &token).await.unwrap();
    let permission = join(&mut carol).await.participant.unwrap().permission.unwrap();
    assert_eq!(permission.can_publish_sources, vec![proto::TrackSource::Microphone as i32]);

    let add = |cid: &str, kind: proto::TrackType, source: proto::TrackSource| {
        In::AddTrack(proto::AddTrackRequest {
            cid: cid.into(),
            r#type: kind as i32,
            source: source as i32,
            ..Default::default()
        })
    };
    send(&mut carol, add("cam", proto::TrackType::Video, proto::TrackSource::Camera)).await;
    let refused = response(&mut carol).await;
    assert_eq!(refused.reason(), Reason::NotAllowed);
    assert!(matches!(refused.request, Some(Request::AddTrack(ref t)) if t.cid == "cam"), "{refused:?}");
    send(&mut carol, add("mic", proto::TrackType::Audio, proto::TrackSource::Microphone)).await;
    let published = recv_until(&mut carol, |m| if let Out::TrackPublished(t) = m { Some(t) } else { None }).await;
    assert_eq!(published.cid, "mic", "a listed source is published");

    let token = join_token("sources", "dave", json!({ "canPublish": false }), json!({}));
    let mut dave = connect(&stack, &token).await.unwrap();
    join(&mut dave).await;
    send(&mut dave, add("mic", proto::TrackType::Audio, proto::TrackSource::Microphone)).await;
    assert_eq!(response(&mut dave).await.reason(), Reason::NotAllowed, "no canPublish, no source");
    stack.shutdown().await;
}

#[tokio::test]
async fn the_same_identity_joining_again_evicts_the_old_session() {
    let stack = stack().await;
    let mut first = connect(&stack, &join_token("dup", "alice", json!({}), json!({}))).await.unwrap();
    let old_sid = join(&mut first).await.participant.unwrap().sid;
    let mut bob = connect(&stack, &join_token("dup", "bob", json!({}), json!({}))).await.unwrap();
    join(&mut bob).await;

    let mut second = connect(&stack, &join_token("dup", "alice", json!({}), json!({}))).await.unwrap();
    let new = join(&mut second).await;
    let new_sid = new.participant.unwrap().sid;
    assert_ne!(new_sid, old_sid);
    assert_eq!(new.other_participants.iter().map(|p| p.identity.as_str()).collect::<Vec<_>>(), ["bob"]);

    let leave = recv_until(&mut first, |m| if let Out::Leave(l) = m { Some(l) } else { None }).await;
    assert_eq!(leave.reason(), proto::DisconnectReason::DuplicateIdentity);
    assert_eq!(leave.action(), proto::leave_request::Action::Disconnect);
    assert!(!leave.can_reconnect);
    // Then the old session's socket closes (`recv` panics if it stays open 10 s).
    while recv(&mut first).await.is_some() {}
    let gone = update_about(&mut bob, "alice").await;
    assert_eq!((gone.sid.as_str(), gone.state()), (old_sid.as_str(), State::Disconnected), "the old one leaves");
    let back = update_about(&mut bob, "alice").await;
    assert_eq!(back.sid, new_sid, "then the new one joins");
    stack.shutdown().await;
}
