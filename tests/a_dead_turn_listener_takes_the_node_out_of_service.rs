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
    stack.relay(&"local".into()).expect("the region's relay").break_udp_listener();
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

/// A UDP hop between a node's probe and the relay that the test can cut, as a
/// relay process that hangs or a dropped route would.
struct Cuttable {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Cuttable {
    async fn to(relay: std::net::SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let open = std::sync::Arc::new(AtomicBool::new(true));
        let is_open = std::sync::Arc::clone(&open);
        tokio::spawn(async move {
            // One prober at a time (the node's); remember whom to answer.
            let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let (mut asked, mut to_relay, mut to_prober) = (None, [0u8; 1500], [0u8; 1500]);
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut to_relay) => if is_open.load(Ordering::SeqCst) {
                        asked = Some(from);
                        let _ = back.send_to(&to_relay[..n], relay).await;
                    },
                    Ok((n, _)) = back.recv_from(&mut to_prober) => if let Some(prober) = asked {
                        let _ = front.send_to(&to_prober[..n], prober).await;
                    },
                }
            }
        });
        Self { addr, open }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The relay as its own process (`meridian turn`): the node cannot see the
/// relay's health, so it probes the relay with STUN Binding requests and leaves
/// the registry while they go unanswered, then comes back.
#[tokio::test]
async fn a_node_whose_relay_stops_answering_leaves_the_registry_until_it_answers() {
    use meridian_sfu::{Sfu, SfuConfig, TurnAdvert};
    let stack = stack().await;
    let relay = stack.regions[0].turn_addr;
    let hop = Cuttable::to(relay).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = meridian_sfu::metrics::SfuMetrics::register(&mut registry);
    let node = Sfu::new(
        SfuConfig {
            region: "probed".into(),
            node_id: "probed-1".into(),
            turn: Some(TurnAdvert {
                urls: vec![format!("turn:{relay}?transport=udp")],
                secret: b"unused here".to_vec(),
                ttl: Duration::from_secs(600),
                probe: Some(hop.addr.to_string()),
            }),
            ice: meridian_sfu::engine::IceConfig::loopback(),
            max_connections: 16,
            position: None,
            advertise_signal: "127.0.0.1:9".into(),
            capacity: 10,
            webhook_urls: Vec::new(),
        },
        meridian_auth::TokenAuthority::new(meridian::DEV_API_KEY, meridian::DEV_API_SECRET),
        std::sync::Arc::clone(&stack.store),
        &metrics,
    )
    .unwrap();
    // The node's own process health: the relay's failures are not its own.
    let node_health = meridian_runtime::Health::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let heartbeats = tokio::spawn(meridian_sfu::registry::run_heartbeats(
        std::sync::Arc::clone(&node),
        node_health.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let store = std::sync::Arc::clone(&stack.store);
    let listed = |present: bool| {
        let store = std::sync::Arc::clone(&store);
        move || {
            let store = std::sync::Arc::clone(&store);
            async move { store.nodes().await.unwrap().iter().any(|n| n.id == "probed-1") == present }
        }
    };
    let relay_up = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines().find(|l| l.starts_with("meridian_sfu_turn_relay_up{")).map(str::to_owned)
    };
    eventually("the probed node joins the registry", listed(true)).await;
    assert_eq!(relay_up().as_deref(), Some("meridian_sfu_turn_relay_up{node=\"probed-1\"} 1"));

    hop.set_open(false);
    eventually("the node leaves while its relay is silent", listed(false)).await;
    assert_eq!(relay_up().as_deref(), Some("meridian_sfu_turn_relay_up{node=\"probed-1\"} 0"));
    assert!(node_health.failures().is_empty(), "a silent relay is no failure of the node's own process");

    hop.set_open(true);
    eventually("the node rejoins when its relay answers", listed(true)).await;
    assert_eq!(relay_up().as_deref(), Some("meridian_sfu_turn_relay_up{node=\"probed-1\"} 1"));

    // Now the relay's listener really dies (in the relay's process, here the stack's).
    stack.relay(&"local".into()).expect("the region's relay").break_udp_listener();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&[0u8; 24], relay).await.unwrap();
    tokio::time::timeout(GUARD, stack.health().failed()).await.expect("the dead listener is reported");
    eventually("the node leaves once its relay's listener is dead", listed(false)).await;

    let _ = stop.send(());
    heartbeats.await.unwrap();
    stack.shutdown().await;
}
