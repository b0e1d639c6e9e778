//! Webhooks from the dev stack to a receiver in this test: a participant whose
//! signal session ends before any PC connects is LiveKit's
//! `participant_connection_aborted`, between `room_started` and
//! `room_finished`, in that order; every delivery is signed over its body; and
//! with Postgres stopped and started again while events happen, and a receiver
//! failing its first requests, every event arrives once, in order per room.

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

/// A receiver on `listener` that answers 503 to the first `fail_first`
/// requests and 200 to the rest; the events it accepted go to `accepted`.
fn receive(
    listener: TcpListener,
    fail_first: usize,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<proto::WebhookEvent>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(d) = read_request(&mut stream).await else { continue };
            seen += 1;
            let status = if seen <= fail_first { "503 Service Unavailable" } else { "200 OK" };
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if stream.write_all(answer.as_bytes()).await.is_ok() && seen > fail_first {
                if let Ok(event) = serde_json::from_str(&d.body) {
                    accepted.lock().unwrap().push(event);
                }
            }
        }
    })
}

/// Joins `room` as `identity` on the signal socket only and leaves: LiveKit's
/// room_started, participant_connection_aborted, room_finished.
async fn visit(stack: &meridian::DevStack, token: &str) -> Ws {
    let mut ws = connect(stack, token).await.unwrap();
    join(&mut ws).await;
    ws
}

async fn until_accepted(accepted: &std::sync::Mutex<Vec<proto::WebhookEvent>>, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while accepted.lock().unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} events accepted within 60 s: {}",
            accepted.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Events made while Postgres is down wait on the node; events in the outbox
/// wait out a receiver that fails; all arrive once, in order per room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_through_a_postgres_restart() {
    let pg = PrivatePostgres::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let _receiver = receive(listener, 2, std::sync::Arc::clone(&accepted));
    init_logs();
    let opts = meridian::DevOptions { database_url: Some(pg.url()), webhook_urls: vec![url], ..options() };
    let stack = meridian::start_dev(opts).await.unwrap();

    // Before: two rooms come and go; two more stay open.
    for room in ["before-1", "before-2"] {
        let ws = visit(&stack, &api_token(&stack, room, "early").await).await;
        drop(ws);
    }
    let mut open = Vec::new();
    for room in ["during-1", "during-2"] {
        open.push(visit(&stack, &api_token(&stack, room, "late").await).await);
    }
    until_accepted(&accepted, 8).await; // 3 + 3 + 2 room_started
                                        // During: with nothing in flight, the database goes away and the open rooms end.
    pg.ctl("stop");
    for mut ws in open {
        send(&mut ws, In::Leave(proto::LeaveRequest::default())).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.ctl("start");
    until_accepted(&accepted, 12).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // and nothing more comes

    let events = accepted.lock().unwrap().clone();
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "each event once");
    assert_eq!(events.len(), 12, "every event");
    for room in ["before-1", "before-2", "during-1", "during-2"] {
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e.room.as_ref().is_some_and(|r| r.name == room))
            .map(|e| e.event.as_str())
            .collect();
        assert_eq!(names, ["room_started", "participant_connection_aborted", "room_finished"], "in order for {room}");
    }
    stack.shutdown().await;
}
