//! `POST /v1/tokens`: minting with Basic and Bearer API auth, the answer's shape,
//! the record in the store, and the refusals (401 JSON, 400 naming the field).

mod common;

use common::*;
use meridian_auth::{MintRequest, TokenAuthority};

async fn post(stack: &meridian::DevStack, auth: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let (status, body) = http(stack.gateway_addr, "POST", "/v1/tokens", &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body: {body}")))
}

#[tokio::test]
async fn a_token_minted_with_basic_auth_verifies_and_is_recorded() {
    let stack = stack().await;
    let auth = basic_auth(KEY, SECRET);
    let (status, v) = post(
        &stack,
        Some(&auth),
        r#"{"room":"demo","identity":"alice","name":"Alice","ttl":600,
        "grants":{"canPublish":false,"roomAdmin":true,"canPublishSources":["microphone"],"canUpdateOwnMetadata":true}}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["url"], format!("ws://{}", stack.gateway_addr));
    let expires = humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).expect("RFC 3339 expires_at");
    let ttl = expires.duration_since(std::time::SystemTime::now()).unwrap().as_secs();
    assert!((590..=600).contains(&ttl), "expires_at is about 600 s away, got {ttl}");

    let grant = TokenAuthority::new(KEY, SECRET).verify_join(v["token"].as_str().unwrap(), None).expect("verifies");
    assert_eq!((grant.identity().as_str(), grant.room().as_str(), grant.name()), ("alice", "demo", "Alice"));
    assert!(!grant.grants().can_publish && grant.grants().room_admin && grant.grants().can_subscribe);
    assert!(grant.grants().can_update_own_metadata);
    assert_eq!(grant.grants().can_publish_sources, meridian_auth::PublishSources::from_names(&["microphone"]));

    let record = stack.store.token(v["id"].as_str().unwrap()).await.unwrap().expect("token recorded");
    assert_eq!((record.room.as_str(), record.identity.as_str()), ("demo", "alice"));
    assert!(!record.grants.can_publish && record.grants.room_admin);
    stack.shutdown().await;
}

#[tokio::test]
async fn bearer_jwt_auth_is_accepted_like_livekits_server_api() {
    let stack = stack().await;
    let jwt = TokenAuthority::new(KEY, SECRET)
        .mint(&MintRequest {
            room: "admin".into(),
            identity: "backend".into(),
            name: String::new(),
            metadata: String::new(),
            ttl: std::time::Duration::from_secs(60),
            grants: Default::default(),
        })
        .unwrap()
        .jwt;
    let (status, v) = post(&stack, Some(&format!("Bearer {jwt}")), r#"{"room":"demo","identity":"bob"}"#).await;
    assert_eq!(status, 200, "{v}");
    stack.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_get_401_and_bad_fields_get_400_naming_them() {
    let stack = stack().await;
    let (status, v) = post(&stack, Some(&basic_auth(KEY, "wrong")), r#"{"room":"demo","identity":"a"}"#).await;
    assert_eq!(status, 401);
    assert!(v["error"].as_str().unwrap().contains("credentials"), "{v}");
    let (status, _) = post(&stack, None, r#"{"room":"demo","identity":"a"}"#).await;
    assert_eq!(status, 401);

    let auth = basic_auth(KEY, SECRET);
    for (body, field) in [
        (r#"{"identity":"a"}"#, "room"),
        (r#"{"room":"demo"}"#, "identity"),
        (r#"{"room":"demo","identity":""}"#, "identity"),
        (r#"{"room":"demo","identity":"a","ttl":-5}"#, "ttl"),
        (r#"{"room":"demo","identity":"a","ttl":0}"#, "ttl"),
        (r#"{"room":"demo","identity":"a","grants":{"canPublish":"yes"}}"#, "canPublish"),
        (r#"{"room":"demo","identity":"a","colour":"red"}"#, "colour"),
        (r#"{"room":"demo","identity":"a","grants":{"canPublishSources":["webcam"]}}"#, "canPublishSources"),
    ] {
        let (status, v) = post(&stack, Some(&auth), body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert!(v["error"].as_str().unwrap().contains(field), "error for {body} names `{field}`: {v}");
    }
    let (status, _) = post(&stack, Some(&auth), "not json").await;
    assert_eq!(status, 400);
    stack.shutdown().await;
}
