//! `/metrics` on the gateway renders the process's registry: routing decisions and
//! join latency by region, HTTP answers by surface, the SFU node's rooms,
//! participants and tracks, and the TURN relay's series.

mod common;

use common::*;
use livekit_protocol::signal_request::Message as In;

async fn metrics(stack: &meridian::DevStack) -> String {
    let (status, body) = http(stack.gateway_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    body
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn joins_show_up_in_gateway_and_node_metrics() {
    let stack = stack().await;
    let mut alice = connect(&stack, &api_token(&stack, "m", "alice").await).await.unwrap();
    join(&mut alice).await;
    let mut bob = connect(&stack, &api_token(&stack, "m", "bob").await).await.unwrap();
    join(&mut bob).await;

    let m = metrics(&stack).await;
    let first = r#"meridian_gateway_routing_decisions_total{region="local",reason="default_unlocated"}"#;
    assert_eq!(value(&m, first), Some(1.0), "alice opens the room where unlocated clients go: {m}");
    let second = r#"meridian_gateway_routing_decisions_total{region="local",reason="room_affinity"}"#;
    assert_eq!(value(&m, second), Some(1.0), "bob follows the room: {m}");
    assert_eq!(value(&m, r#"meridian_gateway_join_duration_seconds_count{region="local"}"#), Some(2.0), "{m}");
    assert_eq!(value(&m, r#"meridian_sfu_participants{node="local-1"}"#), Some(2.0), "{m}");
    assert_eq!(value(&m, r#"meridian_sfu_rooms{node="local-1"}"#), Some(1.0), "{m}");
    assert!(m.contains("meridian_turn_allocations"), "{m}");
    assert!(m.contains("meridian_turn_gate_requests_total{") && m.contains("outcome=\"rate_limited\""), "{m}");

    let (status, _) = http(stack.gateway_addr, "GET", "/rtc/validate?access_token=nope", &[], "").await;
    assert_eq!(status, 401);
    let _ = connect(&stack, "nope").await;
    let m = metrics(&stack).await;
    assert_eq!(value(&m, r#"meridian_gateway_join_refusals_total{status="401"}"#), Some(1.0));
    // Every answer by surface and class: two upgrades, two refusals, the mints.
    assert_eq!(value(&m, r#"meridian_gateway_http_responses_total{api="rtc",class="1xx"}"#), Some(2.0), "{m}");
    assert_eq!(value(&m, r#"meridian_gateway_http_responses_total{api="rtc",class="4xx"}"#), Some(1.0), "{m}");
    assert_eq!(value(&m, r#"meridian_gateway_http_responses_total{api="rtc_validate",class="4xx"}"#), Some(1.0), "{m}");
    assert_eq!(value(&m, r#"meridian_gateway_http_responses_total{api="v1",class="2xx"}"#), Some(2.0), "{m}");
    assert!(m.contains(r#"meridian_turn_allocate_errors_total{relay="#) && m.contains(r#"code="508""#), "{m}");

    for ws in [&mut alice, &mut bob] {
        send(ws, In::Leave(Default::default())).await;
        while recv(ws).await.is_some() {}
    }
    eventually("participants and rooms return to 0 after both leave", || async {
        let m = metrics(&stack).await;
        value(&m, r#"meridian_sfu_participants{node="local-1"}"#) == Some(0.0)
            && value(&m, r#"meridian_sfu_rooms{node="local-1"}"#) == Some(0.0)
    })
    .await;
    stack.shutdown().await;
}
