//! Webhooks from the dev stack to a receiver in this test: a participant whose
//! signal session ends before any PC connects is LiveKit's
//! `participant_connection_aborted`, between `room_started` and
//! `room_finished`, in that order; every delivery is signed over its body.

mod common;

use std::time::Duration;

use base64::prelude::{Engine, BASE64_STANDARD};
use common::*;
use livekit_protocol as proto;
use livekit_protocol::signal_request::Message as In;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One webhook request as received: its `Authorization` and body.
struct Delivery {
    authorization: String,
    body: String,
}

/// Reads one HTTP/1.1 request off `stream` (Content-Length bodies only).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Delivery> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    Some(Delivery { authorization: header("authorization").unwrap_or_default(), body })
}

/// The claims of a JWT, unverified (the signature is checked apart).
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::prelude::BASE64_URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

#[tokio::test]
async fn a_session_that_never_connects_is_reported_aborted_between_start_and_finish() {
    let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", receiver.local_addr().unwrap());
    init_logs();
    let stack = meridian::start_dev(meridian::DevOptions { webhook_urls: vec![url], ..options() }).await.unwrap();

    let mut ws = connect(&stack, &api_token(&stack, "hooked", "dora").await).await.unwrap();
    join(&mut ws).await;
    send(&mut ws, In::Leave(proto::LeaveRequest::default())).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events.len() < 3 {
        let (mut stream, _) = tokio::time::timeout_at(deadline, receiver.accept()).await.expect("deliveries").unwrap();
        let Some(d) = read_request(&mut stream).await else { continue };
        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.unwrap();
        let c = claims(&d.authorization);
        assert_eq!(c["iss"], KEY, "signed with the API key");
        assert_eq!(c["sha256"], BASE64_STANDARD.encode(Sha256::digest(d.body.as_bytes())), "over the body");
        // The signature itself: the verifier LiveKit's SDKs use would take it.
        meridian_auth::TokenAuthority::new(KEY, SECRET)
            .verify_server_token(Some(&format!("Bearer {}", d.authorization)))
            .expect("the JWT verifies with the API secret");
        let event: proto::WebhookEvent = serde_json::from_str(&d.body).expect("a WebhookEvent in protobuf JSON");
        events.push(event);
    }
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["room_started", "participant_connection_aborted", "room_finished"]);
    assert_eq!(events[1].participant.as_ref().map(|p| p.identity.as_str()), Some("dora"));
    assert!(events.iter().all(|e| e.room.as_ref().is_some_and(|r| r.name == "hooked")));
    stack.shutdown().await;
}
