//! Join auth as LiveKit's server does it (`pkg/service/auth.go`, `utils.go`):
//! the token from `Authorization: Bearer` (LiveKit's Rust-based SDKs) or
//! `access_token` (livekit-client), on `/rtc/validate` and the `/rtc` WebSocket,
//! through the gateway and on to the node. Invalid, expired and wrong-key tokens
//! and tokens without `roomJoin` get 401 with the reason; an empty identity, or no
//! room in the token or the URL, 400 (never 404). The token's room wins over
//! the URL's; a token without one joins the URL's.

mod common;

use common::*;

fn claims(exp: i64, video: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "iss": KEY, "sub": "alice", "nbf": now() - 3600, "exp": exp, "video": video })
}

/// `/rtc/validate` with `token` in the query (`bearer` false) or the header.
async fn validate(stack: &meridian::DevStack, token: &str, bearer: bool, extra: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    // No token at all is no header at all ("Bearer " alone arrives as "Bearer",
    // which is a header of another scheme).
    if bearer && !token.is_empty() {
        http(stack.gateway_addr, "GET", &format!("/rtc/validate?{extra}"), &[("authorization", &auth)], "").await
    } else {
        http(stack.gateway_addr, "GET", &format!("/rtc/validate?access_token={token}&{extra}"), &[], "").await
    }
}

/// Opens `/rtc` with the token in the `Authorization` header only, as LiveKit's
/// Rust SDK does, and `extra` query parameters.
async fn connect_bearer(
    stack: &meridian::DevStack,
    token: &str,
    extra: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/rtc?auto_subscribe=1&sdk=rust&protocol=16&{extra}", stack.gateway_addr);
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header value"));
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

fn refused_with(result: Result<Ws, tokio_tungstenite::tungstenite::Error>, status: u16, what: &str) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), status, "{what}"),
        other => panic!("{what}: the WebSocket must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn validate_gives_the_reason_and_the_socket_is_refused() {
    let stack = stack().await;
    let good_video = serde_json::json!({ "roomJoin": true, "room": "demo" });
    let nameless = serde_json::json!({ "iss": KEY, "sub": "", "exp": now() + 600, "video": good_video.clone() });
    let cases = [
        ("garbage", "not-a-jwt".to_string(), 401, "malformed"),
        ("expired", jwt(claims(now() - 300, good_video.clone()), SECRET), 401, "expired"),
        ("wrong secret", jwt(claims(now() + 600, good_video.clone()), "another-secret"), 401, "signature"),
        ("no roomJoin", jwt(claims(now() + 600, serde_json::json!({ "room": "demo" })), SECRET), 401, "roomJoin"),
        (
            "no room anywhere",
            jwt(claims(now() + 600, serde_json::json!({ "roomJoin": true })), SECRET),
            400,
            "no room name",
        ),
        ("empty identity", jwt(nameless, SECRET), 400, "identity cannot be empty"),
        ("no token", String::new(), 401, "no access token"),
    ];
    for (what, token, status, reason) in cases {
        for bearer in [false, true] {
            let what = format!("{what} ({})", if bearer { "Bearer header" } else { "access_token" });
            let (got, body) = validate(&stack, &token, bearer, "").await;
            assert_eq!(got, status, "{what}: {body}");
            assert!(body.contains(reason), "{what}: reason `{reason}` in {body:?}");
            let joined = if bearer { connect_bearer(&stack, &token, "").await } else { connect(&stack, &token).await };
            refused_with(joined, status, &what);
        }
    }

    let token = api_token(&stack, "demo", "alice").await;
    for bearer in [false, true] {
        assert_eq!(validate(&stack, &token, bearer, "").await, (200, "success".into()), "bearer {bearer}");
    }
    let (got, body) =
        http(stack.gateway_addr, "GET", "/rtc/validate", &[("authorization", &format!("Basic {token}"))], "").await;
    assert_eq!(got, 401, "{body}");
    assert!(body.contains("Must start with Bearer"), "{body}");
    refused_with(connect_bearer(&stack, "", "").await, 401, "an empty Bearer token");

    // livekit-client falls back from /rtc/v1 only when /rtc/v1/validate says 404.
    let (got, _) = http(stack.gateway_addr, "GET", &format!("/rtc/v1/validate?access_token={token}"), &[], "").await;
    assert_eq!(got, 404);
    stack.shutdown().await;
}

/// A Bearer token joins through the gateway (which forwards the header) and the
/// node; the token's room wins over the URL's, and a token without a room joins
/// the URL's.
#[tokio::test]
async fn a_bearer_token_joins_and_the_room_comes_from_the_token_else_the_url() {
    let stack = stack().await;
    let token = api_token(&stack, "demo", "alice").await;
    let mut ws = connect_bearer(&stack, &token, "room=lobby").await.expect("a Bearer token joins");
    assert_eq!(join(&mut ws).await.room.unwrap().name, "demo", "the token's room, not the URL's");
    assert_eq!(validate(&stack, &token, true, "room=lobby").await.0, 200);

    let roomless = jwt(claims(now() + 600, serde_json::json!({ "roomJoin": true })), SECRET);
    let mut ws = connect_bearer(&stack, &roomless, "room=lobby").await.expect("a token without a room joins the URL's");
    assert_eq!(join(&mut ws).await.room.unwrap().name, "lobby");
    let (status, body) = validate(&stack, &roomless, false, "room=lobby").await;
    assert_eq!((status, body.as_str()), (200, "success"));
    stack.shutdown().await;
}
