//! The `/v1` API: `GET /v1/openapi.json` documents exactly the routes the
//! gateway serves, and every status a route answers is in the document; tokens
//! are listed (never the JWT) and revoked, and a revoked token is refused at
//! `/rtc/validate` and `/rtc` with the reason; rooms are listed, read and
//! deleted, which disconnects everyone in them with `ROOM_DELETED`.

mod common;

use std::collections::BTreeSet;

use common::*;
use livekit_protocol as proto;
use livekit_protocol::signal_response::Message as Out;

async fn call(stack: &meridian::DevStack, method: &str, path: &str, auth: bool, body: &str) -> (u16, String) {
    let basic = basic_auth(KEY, SECRET);
    let mut headers = vec![("content-type", "application/json")];
    if auth {
        headers.push(("authorization", basic.as_str()));
    }
    http(stack.gateway_addr, method, path, &headers, body).await
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON ({e}): {body}"))
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let stack = stack().await;
    let (status, body) = call(&stack, "GET", "/v1/openapi.json", false, "").await;
    assert_eq!(status, 200, "served without credentials");
    let doc = json(&body);
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| ops.as_object().expect("operations").keys().map(|m| (m.to_uppercase(), path.clone())))
        .collect();
    let served: BTreeSet<(String, String)> =
        meridian_gateway::v1::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, served, "the document and the route table name the same routes");

    for (method, template) in &served {
        let path = template.replace("{id}", "TK_nobody").replace("{name}", "no-such-room");
        let op = &doc["paths"][template][method.to_lowercase()];
        let documented = |status: u16| op["responses"].get(status.to_string()).is_some();
        let body = if method == "POST" { "{}" } else { "" };
        let (status, answer) = call(&stack, method, &path, true, body).await;
        assert!(!(status == 404 && answer == "not found"), "{method} {path} is routed");
        assert!(documented(status), "{method} {path} answered {status}, which the document does not list: {answer}");
        let secured = op.get("security").is_none_or(|s| s.as_array().is_none_or(|a| !a.is_empty()));
        if secured {
            let (status, _) = call(&stack, method, &path, false, body).await;
            assert_eq!(status, 401, "{method} {path} needs credentials");
            assert!(documented(401));
        }
    }
    let (status, answer) = call(&stack, "GET", "/v1/nothing-here", true, "").await;
    assert_eq!((status, answer.as_str()), (404, "not found"), "an undocumented path is not routed");
    stack.shutdown().await;
}

async fn mint(stack: &meridian::DevStack, room: &str, identity: &str) -> (String, String) {
    let body = serde_json::json!({ "room": room, "identity": identity }).to_string();
    let (status, answer) = call(stack, "POST", "/v1/tokens", true, &body).await;
    assert_eq!(status, 200, "{answer}");
    let v = json(&answer);
    (v["id"].as_str().expect("id").to_owned(), v["token"].as_str().expect("token").to_owned())
}

#[tokio::test]
async fn tokens_are_listed_without_the_jwt_and_a_revoked_one_is_refused_at_join() {
    let stack = stack().await;
    let (alice_id, alice) = mint(&stack, "revoking", "alice").await;
    let (bob_id, bob) = mint(&stack, "revoking", "bob").await;
    mint(&stack, "elsewhere", "alice").await;

    let (status, body) = call(&stack, "GET", "/v1/tokens?room=revoking", true, "").await;
    assert_eq!(status, 200);
    let listed = json(&body);
    let ids: Vec<&str> = listed["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(BTreeSet::from_iter(ids), BTreeSet::from([alice_id.as_str(), bob_id.as_str()]));
    assert!(!body.contains(&alice) && !body.contains("\"token\""), "never the JWT: {body}");
    let (_, body) = call(&stack, "GET", "/v1/tokens?identity=alice", true, "").await;
    assert_eq!(json(&body)["tokens"].as_array().unwrap().len(), 2, "alice's, in both rooms");

    let (status, body) = call(&stack, "DELETE", &format!("/v1/tokens/{alice_id}"), true, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["revoked_at"].is_string(), "{body}");
    let (status, reason) =
        http(stack.gateway_addr, "GET", &format!("/rtc/validate?access_token={alice}"), &[], "").await;
    assert_eq!((status, reason.as_str()), (401, "invalid token: revoked"));
    match connect(&stack, &alice).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("a revoked token is refused at /rtc: {other:?}"),
    }
    let (status, _) = http(stack.gateway_addr, "GET", &format!("/rtc/validate?access_token={bob}"), &[], "").await;
    assert_eq!(status, 200, "the others still work");
    let (status, _) = call(&stack, "DELETE", "/v1/tokens/TK_nobody", true, "").await;
    assert_eq!(status, 404);
    stack.shutdown().await;
}

#[tokio::test]
async fn rooms_are_listed_and_deleting_one_disconnects_everyone_in_it() {
    let stack = stack().await;
    let (_, token) = mint(&stack, "doomed", "carol").await;
    let mut carol = connect(&stack, &token).await.unwrap();
    join(&mut carol).await;

    let (status, body) = call(&stack, "GET", "/v1/rooms", true, "").await;
    assert_eq!(status, 200);
    let rooms = json(&body);
    let doomed = rooms["rooms"].as_array().unwrap().iter().find(|r| r["name"] == "doomed").expect("listed").clone();
    assert!(doomed["node"].is_string() && doomed["sid"].as_str().unwrap().starts_with("RM_"), "{doomed}");
    let (status, body) = call(&stack, "GET", "/v1/rooms/doomed", true, "").await;
    assert_eq!((status, json(&body)["sid"].clone()), (200, doomed["sid"].clone()));

    let (status, body) = call(&stack, "DELETE", "/v1/rooms/doomed", true, "").await;
    assert_eq!(status, 200, "{body}");
    let leave = recv_until(&mut carol, |m| if let Out::Leave(l) = m { Some(l) } else { None }).await;
    assert_eq!(leave.reason(), proto::DisconnectReason::RoomDeleted);
    assert!(!leave.can_reconnect);
    let (status, _) = call(&stack, "GET", "/v1/rooms/doomed", true, "").await;
    assert_eq!(status, 404, "and it is gone");
    stack.shutdown().await;
}
