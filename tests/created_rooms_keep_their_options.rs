//! A room made with RoomService `CreateRoom` keeps what it was made with, as
//! LiveKit's does: `max_participants` refuses the join past it (LiveKit's
//! "room has exceeded its max participants"), while the same identity may still
//! replace its own session; `metadata` is the room's from the first join; and
//! `departure_timeout` keeps the emptied room open that long, so one who comes
//! back finds the same room, before it closes; `empty_timeout` deletes a room
//! nobody joined.

mod common;

use common::*;
use livekit_protocol::signal_request::Message as In;

async fn twirp(stack: &meridian::DevStack, method: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let claims = serde_json::json!({
        "iss": KEY, "nbf": now() - 60, "exp": now() + 600,
        "video": { "roomCreate": true, "roomList": true },
    });
    let auth = format!("Bearer {}", jwt(claims, SECRET));
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    let path = format!("/twirp/livekit.RoomService/{method}");
    let (status, answer) = http(stack.gateway_addr, "POST", &path, &headers, &body.to_string()).await;
    (status, serde_json::from_str(&answer).unwrap_or_else(|_| panic!("JSON: {answer}")))
}

async fn live_rooms(stack: &meridian::DevStack) -> Vec<String> {
    let (status, listed) = twirp(stack, "ListRooms", serde_json::json!({})).await;
    assert_eq!(status, 200, "{listed}");
    let rooms = listed["rooms"].as_array().cloned().unwrap_or_default();
    rooms.iter().map(|r| r["name"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn a_created_room_keeps_its_limit_metadata_and_departure_timeout() {
    let stack = stack().await;
    let (status, room) = twirp(
        &stack,
        "CreateRoom",
        serde_json::json!({ "name": "small", "maxParticipants": 1, "departureTimeout": 2, "metadata": "created with" }),
    )
    .await;
    assert_eq!(status, 200, "{room}");
    assert_eq!((room["maxParticipants"].as_u64(), room["departureTimeout"].as_u64()), (Some(1), Some(2)), "{room}");

    let mut alice = connect(&stack, &api_token(&stack, "small", "alice").await).await.unwrap();
    let joined = join(&mut alice).await.room.expect("room");
    assert_eq!((joined.metadata.as_str(), joined.max_participants), ("created with", 1));
    let sid = joined.sid.clone();

    match connect(&stack, &api_token(&stack, "small", "bob").await).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
            assert_eq!((r.status().as_u16(), body.as_str()), (403, "room has exceeded its max participants"));
        }
        other => panic!("a second participant is refused: {other:?}"),
    }
    // Alice's own second session replaces the first, full or not.
    let mut again = connect(&stack, &api_token(&stack, "small", "alice").await).await.unwrap();
    assert_eq!(join(&mut again).await.room.expect("room").sid, sid);
    drop(alice);

    // Emptied, the room waits its departure timeout: a return finds it.
    send(&mut again, In::Leave(livekit_protocol::LeaveRequest::default())).await;
    drop(again);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(live_rooms(&stack).await.contains(&"small".to_owned()), "still open within the departure timeout");
    let mut back = connect(&stack, &api_token(&stack, "small", "alice").await).await.unwrap();
    let rejoined = join(&mut back).await.room.expect("room");
    assert_eq!(rejoined.sid, sid, "the same room");
    send(&mut back, In::Leave(livekit_protocol::LeaveRequest::default())).await;
    drop(back);
    eventually("the emptied room closes after its departure timeout", || async {
        !live_rooms(&stack).await.contains(&"small".to_owned())
    })
    .await;

    // A room nobody joins goes after its empty timeout.
    let (status, _) = twirp(&stack, "CreateRoom", serde_json::json!({ "name": "unjoined", "emptyTimeout": 1 })).await;
    assert_eq!(status, 200);
    assert!(live_rooms(&stack).await.contains(&"unjoined".to_owned()), "listed at first");
    eventually("the unjoined room is deleted after its empty timeout", || async {
        !live_rooms(&stack).await.contains(&"unjoined".to_owned())
    })
    .await;
    stack.shutdown().await;
}
