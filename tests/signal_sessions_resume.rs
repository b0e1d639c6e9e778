//! Resume on the same node (`reconnect=1&sid=…`): a session that drops without
//! `leave` keeps its participant; the resumed session gets `ReconnectResponse`
//! with fresh TURN credentials, then what was sent to it meanwhile, then a
//! subscriber offer restarting ICE; the others hear of no leave. A resume
//! that finds nobody is asked for a full rejoin (LiveKit's
//! `LeaveRequest{action: RECONNECT}`).

mod common;

use common::*;
use livekit_protocol as proto;
use livekit_protocol::signal_request::Message as In;
use livekit_protocol::signal_response::Message as Out;

async fn resume(stack: &meridian::DevStack, token: &str, sid: &str) -> Ws {
    let url = format!(
        "ws://{}/rtc?access_token={token}&reconnect=1&sid={sid}&auto_subscribe=1&protocol=16",
        stack.gateway_addr
    );
    tokio_tungstenite::connect_async(url).await.expect("upgrade").0
}

#[tokio::test]
async fn a_dropped_session_resumes_with_what_it_missed_and_nobody_hears_of_it() {
    let stack = stack().await;
    let alice_token =
        join_token("resume", "alice", serde_json::json!({ "canUpdateOwnMetadata": true }), serde_json::json!({}));
    let bob_token = join_token("resume", "bob", serde_json::json!({}), serde_json::json!({}));
    let mut alice = connect(&stack, &alice_token).await.unwrap();
    join(&mut alice).await;
    let mut bob = connect(&stack, &bob_token).await.unwrap();
    let bob_sid = join(&mut bob).await.participant.unwrap().sid;

    drop(bob); // no leave: a blip
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    send(
        &mut alice,
        In::UpdateMetadata(proto::UpdateParticipantMetadata {
            metadata: "while you were away".into(),
            request_id: 1,
            ..Default::default()
        }),
    )
    .await;
    let answered = recv_until(&mut alice, |m| if let Out::RequestResponse(r) = m { Some(r) } else { None }).await;
    assert_eq!(answered.request_id, 1);

    let mut bob = resume(&stack, &bob_token, &bob_sid).await;
    match recv(&mut bob).await {
        Some(Out::Reconnect(r)) => assert!(!r.ice_servers.is_empty(), "fresh TURN credentials: {r:?}"),
        other => panic!("the first message is ReconnectResponse, got {other:?}"),
    }
    let missed = recv_until(&mut bob, |m| match m {
        Out::Update(u) => {
            u.participants.into_iter().find(|p| p.identity == "alice" && p.metadata == "while you were away")
        }
        _ => None,
    })
    .await;
    assert_eq!(missed.metadata, "while you were away", "what was sent meanwhile arrives");
    let offer = recv_until(&mut bob, |m| if let Out::Offer(o) = m { Some(o) } else { None }).await;
    assert!(offer.sdp.contains("a=ice-ufrag:"), "a subscriber offer follows");

    // Alice heard of no leave (and no new join) of bob's.
    send(&mut alice, In::Ping(7)).await;
    let heard = loop {
        match recv(&mut alice).await.expect("open") {
            Out::Pong(7) => break None,
            Out::Update(u) if u.participants.iter().any(|p| p.identity == "bob") => break Some(u),
            _ => continue,
        }
    };
    assert_eq!(heard, None, "alice heard nothing of bob's blip");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_resume_that_finds_nobody_is_asked_for_a_full_rejoin() {
    let stack = stack().await;
    let token = join_token("resume-nobody", "carol", serde_json::json!({}), serde_json::json!({}));
    let mut carol = resume(&stack, &token, "PA_nobodyhere0").await;
    match recv(&mut carol).await {
        Some(Out::Leave(l)) => {
            assert_eq!(l.action(), proto::leave_request::Action::Reconnect);
            assert!(l.can_reconnect);
        }
        other => panic!("a Leave asking for a full rejoin, got {other:?}"),
    }
    stack.shutdown().await;
}
