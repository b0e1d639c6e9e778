//! Invalid, expired, wrong-key and wrong-room tokens: `/rtc/validate` gives the
//! reason (401/403, never 404), and the `/rtc` WebSocket is refused.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// An HS256 JWT over `claims`, signed by hand so tests can make tokens the
/// minting API refuses to make (expired, no roomJoin).
fn jwt(claims: serde_json::Value, secret: &str) -> String {
    let header = BASE64_URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = BASE64_URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", BASE64_URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(exp: i64, video: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "iss": KEY, "sub": "alice", "nbf": now() - 3600, "exp": exp, "video": video })
}

#[tokio::test]
async fn validate_gives_the_reason_and_the_socket_is_refused() {
    let stack = stack().await;
    let good_video = serde_json::json!({ "roomJoin": true, "room": "demo" });
    let cases = [
        ("garbage", "not-a-jwt".to_string(), 401, "malformed"),
        ("expired", jwt(claims(now() - 300, good_video.clone()), SECRET), 401, "expired"),
        ("wrong secret", jwt(claims(now() + 600, good_video.clone()), "another-secret"), 401, "signature"),
        ("no roomJoin", jwt(claims(now() + 600, serde_json::json!({ "room": "demo" })), SECRET), 403, "roomJoin"),
        ("no room", jwt(claims(now() + 600, serde_json::json!({ "roomJoin": true })), SECRET), 403, "room"),
        ("no token", String::new(), 401, "no access token"),
    ];
    for (what, token, status, reason) in cases {
        let (got, body) =
            http(stack.gateway_addr, "GET", &format!("/rtc/validate?access_token={token}"), &[], "").await;
        assert_eq!(got, status, "{what}: {body}");
        assert!(body.contains(reason), "{what}: reason `{reason}` in {body:?}");
        match connect(&stack, &token).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{what}")
            }
            other => panic!("{what}: the WebSocket must be refused, got {other:?}"),
        }
    }

    let token = api_token(&stack, "demo", "alice").await;
    let (got, body) = http(stack.gateway_addr, "GET", &format!("/rtc/validate?access_token={token}"), &[], "").await;
    assert_eq!((got, body.as_str()), (200, "success"));
    let (got, body) =
        http(stack.gateway_addr, "GET", &format!("/rtc/validate?access_token={token}&room=lobby"), &[], "").await;
    assert_eq!(got, 403, "a token for another room is refused: {body}");

    // livekit-client falls back from /rtc/v1 only when /rtc/v1/validate says 404.
    let (got, _) = http(stack.gateway_addr, "GET", &format!("/rtc/v1/validate?access_token={token}"), &[], "").await;
    assert_eq!(got, 404);
    stack.shutdown().await;
}
