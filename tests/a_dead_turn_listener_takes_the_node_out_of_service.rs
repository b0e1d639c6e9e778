//! A TURN listener whose read loop dies (here through the test-only hook, as a
//! bug in the `turn` crate would) does not leave a half-dead region: the node
//! leaves the registry, `/healthz` fails naming the listener, the failure is
//! counted, and joins are refused instead of landing on a node without its relay.

mod common;

use std::time::Duration;

use common::*;

/// Guards every wait; the waits themselves are for events.
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_dead_turn_listener_takes_the_node_out_of_the_registry_and_fails_healthz() {
    let stack = stack().await;
    // This binary's own process: the hook is the one `meridian dev` installs.
    meridian_runtime::panic::install_hook(stack.health().clone());
    let (status, body) = http(stack.gateway_addr, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let nodes = stack.store.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["local-1"]);

    let region = &stack.regions[0];
    stack.relay("local").expect("the region's relay").break_udp_listener();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&[0u8; 24], region.turn_addr).await.unwrap();
    tokio::time::timeout(GUARD, stack.health().failed()).await.expect("the dead listener is reported");

    let gone = async {
        while !stack.store.nodes().await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(GUARD, gone).await.expect("the node leaves the registry");

    let (status, body) = http(stack.gateway_addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&format!("turn udp listener {}", region.turn_addr)), "names the listener: {body}");
    assert!(body.contains("test hook"), "says why: {body}");
    let (_, metrics) = http(stack.gateway_addr, "GET", "/metrics", &[], "").await;
    assert!(metrics.contains("meridian_task_failures_total{kind=\"panic\"} 1"), "{metrics}");
    assert!(metrics.contains("meridian_task_failures_total{kind=\"ended\"} 1"), "{metrics}");

    let token = api_token(&stack, "demo", "alice").await;
    let refused = connect(&stack, &token).await.expect_err("no node to route to");
    assert!(refused.to_string().contains("503"), "{refused}");
    stack.shutdown().await;
}
