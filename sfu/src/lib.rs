//! Meridian's SFU node: speaks LiveKit's signal protocol and forwards media.
//!
//! Signal: protobuf `SignalRequest`/`SignalResponse` (the `livekit-protocol` crate)
//! in binary WebSocket frames at `/rtc`, the dual peer-connection ("v0") path:
//! the client's publisher PC offers to us, and we offer the subscriber PC to it
//! (<https://github.com/livekit/protocol/blob/main/protobufs/livekit_rtc.proto>).
//!
//! Run loop: [`serve`] accepts TCP connections on the node's signal address; each
//! becomes a [`signal`] session that checks the join token, joins a [`room`], and
//! then moves signal messages between the socket and the participant. Media
//! arrives on the publisher PC, and [`forward`] writes each published track's RTP
//! to a down-track of its own on every subscriber PC that subscribes to it.
//!
//! The WebRTC engine (str0m, driven on the node's one UDP and one TCP port by
//! [`rtc`]) is confined to [`rtc`], [`engine`], [`publisher`], [`subscriber`],
//! [`forward`] and [`participant`]; signaling code speaks in the SFU's own types.

pub mod admin;
pub mod engine;
pub mod forward;
// Harnesses for the fuzz targets in fuzz/; only built with `--cfg fuzzing`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod participant;
pub mod publisher;
pub mod registry;
pub mod room;
pub mod rtc;
pub mod sdp;
pub mod signal;
pub mod subscriber;
pub mod subscription;
pub mod turn_probe;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use meridian_auth::TokenAuthority;
use meridian_ids::{NodeId, RegionId};
use meridian_schema::Store;
use tokio::net::TcpListener;

pub use room::RoomManager;

/// Version reported in `ServerInfo.version`. livekit-client refuses a server that
/// reports none, and gates features on it, so we report the LiveKit server release
/// whose protocol we follow.
pub const LIVEKIT_COMPAT_VERSION: &str = "1.9.0";
/// Signal protocol version reported in `ServerInfo.protocol` (livekit-client 2.x sends 17).
pub const PROTOCOL_VERSION: i32 = 16;
/// Interval between client pings, sent in `JoinResponse.ping_interval` (LiveKit's 5 s default).
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Silence after which the client drops the signal socket (`JoinResponse.ping_timeout`, 15 s).
pub const PING_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound on concurrent signal connections per node.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;

/// The TURN relay this node advertises to its clients.
#[derive(Debug, Clone)]
pub struct TurnAdvert {
    /// URLs put in `ICEServer.urls`, e.g. `turn:127.0.0.1:3478?transport=udp`.
    pub urls: Vec<String>,
    /// The region's TURN REST API secret (the relay checks with the same one).
    pub secret: Vec<u8>,
    /// Lifetime of minted credentials.
    pub ttl: Duration,
    /// The relay's UDP `host:port` the node probes each heartbeat
    /// ([`turn_probe`]), usually [`turn_probe::probe_target`] of `urls`; `None`
    /// probes nothing.
    pub probe: Option<String>,
}

/// SFU node configuration.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Region this node belongs to (`ServerInfo.region`).
    pub region: RegionId,
    /// This node's id (`ServerInfo.node_id`).
    pub node_id: NodeId,
    /// TURN relay handed to clients in `JoinResponse.ice_servers`, if any.
    pub turn: Option<TurnAdvert>,
    /// ICE candidate gathering.
    pub ice: engine::IceConfig,
    /// Bound on concurrent signal connections (default [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// The region's position (latitude, longitude in degrees), for routing.
    pub position: Option<(f64, f64)>,
    /// Where gateways reach this node's signal listener (`host:port`).
    pub advertise_signal: String,
    /// Participants this node takes before the gateway counts it as full
    /// (default [`DEFAULT_CAPACITY`]).
    pub capacity: u32,
    /// Where webhooks go ([`webhook`]); empty: none.
    pub webhook_urls: Vec<String>,
}

/// How often a node deletes rooms nobody joined in time.
pub const ROOM_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How often rooms announce active speakers (LiveKit's default, 400 ms).
pub const SPEAKER_UPDATE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(400);

/// Default node capacity in participants (a 2-core node forwarding small rooms).
pub const DEFAULT_CAPACITY: u32 = 500;

/// A running SFU node: its config, token authority and rooms.
pub struct Sfu {
    config: SfuConfig,
    authority: TokenAuthority,
    rooms: Arc<RoomManager>,
    store: Arc<dyn Store>,
    draining: std::sync::atomic::AtomicBool,
    metrics: metrics::NodeMetrics,
    /// Refused and malformed signal connections, logged a few per source IP.
    refusal_log: meridian_runtime::log_limit::LogLimit<std::net::IpAddr>,
    /// Events on their way to the webhook outbox, until [`Sfu::run_webhooks`] takes them.
    webhook_events: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<livekit_protocol::WebhookEvent>>>,
}

impl Sfu {
    /// A node with no rooms yet.
    ///
    /// Errors: [`engine::EngineError`] when the WebRTC engine cannot be configured.
    pub fn new(
        config: SfuConfig,
        authority: TokenAuthority,
        store: Arc<dyn Store>,
        metrics: &metrics::SfuMetrics,
    ) -> Result<Arc<Self>, engine::EngineError> {
        let engine = Arc::new(engine::Engine::new(&config.ice)?);
        let node_metrics = metrics;
        let mut metrics = metrics.node(&config.node_id);
        metrics.capacity.set(i64::from(config.capacity));
        if config.turn.as_ref().is_some_and(|t| t.probe.is_some()) {
            metrics.turn_relay_up = Some(node_metrics.turn_relay_up(&config.node_id));
        }
        let (webhooks, webhook_events) = webhook::Webhooks::new(config.webhook_urls.clone(), &metrics.webhooks);
        let rooms = Arc::new(RoomManager::new(
            engine,
            Arc::clone(&store),
            config.region.clone(),
            config.node_id.clone(),
            metrics.clone(),
            webhooks,
        ));
        Ok(Arc::new(Self {
            config,
            authority,
            rooms,
            store,
            draining: Default::default(),
            metrics,
            refusal_log: meridian_runtime::log_limit::LogLimit::new("refused or malformed signal connections"),
            webhook_events: std::sync::Mutex::new(Some(webhook_events)),
        }))
    }

    /// Deletes the rooms nobody joined within their `empty_timeout`
    /// ([`Store::sweep_unjoined_rooms`]) every [`ROOM_SWEEP_INTERVAL`], until
    /// `shutdown`. Every node sweeps; a delete is idempotent.
    pub async fn run_room_sweeper(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let sweep = async {
            let mut tick = tokio::time::interval(ROOM_SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                match self.store.sweep_unjoined_rooms(std::time::SystemTime::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rooms = n, "rooms nobody joined within their empty_timeout deleted"),
                    Err(e) => tracing::debug!(error = %e, "room sweep skipped"),
                }
            }
        };
        tokio::select! {
            _ = sweep => {}
            _ = shutdown => {}
        }
    }

    /// Announces active speakers in every room of the node every
    /// [`SPEAKER_UPDATE_INTERVAL`] (LiveKit's `audio.update_interval`,
    /// [`room::Room::update_speakers`]) and connection quality every
    /// [`meridian_forward::quality::UPDATE_INTERVAL`]
    /// ([`room::Room::update_connection_quality`]), until `shutdown`.
    pub async fn run_room_updates(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let updates = async {
            let mut speakers = tokio::time::interval(SPEAKER_UPDATE_INTERVAL);
            speakers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut quality = tokio::time::interval(meridian_forward::quality::UPDATE_INTERVAL);
            quality.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = speakers.tick() => {
                        let now = std::time::Instant::now();
                        for room in self.rooms.live_rooms() {
                            room.update_speakers(now).await;
                        }
                    }
                    _ = quality.tick() => {
                        for room in self.rooms.live_rooms() {
                            room.update_connection_quality().await;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = updates => {}
            _ = shutdown => {}
        }
    }

    /// Stores this node's webhook events in the outbox and delivers the outbox
    /// ([`webhook::run`]) until `shutdown`. Once per node; later calls return.
    pub async fn run_webhooks(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let events = self.webhook_events.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(events) = events else { return };
        let urls = self.config.webhook_urls.clone();
        let metrics = self.metrics.webhooks.clone();
        webhook::run(Arc::clone(&self.store), self.authority.clone(), urls, events, metrics, shutdown).await;
    }

    /// The rooms on this node.
    pub fn rooms(&self) -> &Arc<RoomManager> {
        &self.rooms
    }
}

/// Serves signal connections on `listener` until `shutdown` resolves.
pub async fn serve(sfu: Arc<Sfu>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let max = sfu.config.max_connections;
    meridian_runtime::accept::serve_bounded("sfu signal", listener, max, shutdown, move |stream, peer| {
        signal::run_session(Arc::clone(&sfu), stream, peer)
    })
    .await;
}

/// `identity` joined to `room` on `sfu` (with `auto_subscribe`), with its
/// signal queue: what the client would be sent.
#[cfg(test)]
pub(crate) async fn test_join(
    sfu: &Sfu,
    room: &str,
    identity: &str,
    auto_subscribe: bool,
) -> (
    Arc<room::Room>,
    Arc<participant::Participant>,
    tokio::sync::mpsc::Receiver<livekit_protocol::signal_response::Message>,
) {
    let authority = meridian_auth::TokenAuthority::new("devkey", "secret");
    let token = authority
        .mint(&meridian_auth::MintRequest {
            room: room.into(),
            identity: identity.into(),
            name: String::new(),
            metadata: String::new(),
            ttl: std::time::Duration::from_secs(600),
            grants: Default::default(),
        })
        .expect("mints");
    let grant = authority.verify_join(&token.jwt, None).expect("verifies");
    let (tx, rx) = tokio::sync::mpsc::channel(participant::SIGNAL_QUEUE);
    let (room, me) = sfu.rooms().join(&grant, auto_subscribe, tx, tracing::Span::none()).await.expect("joins");
    (room, me, rx)
}

/// A node on the memory store with no relay, for unit tests.
#[cfg(test)]
pub(crate) fn test_node() -> Arc<Sfu> {
    test_node_with(None, &metrics::SfuMetrics::default())
}

/// A node on the memory store advertising `turn`, with its metrics in `metrics`.
#[cfg(test)]
pub(crate) fn test_node_with(turn: Option<TurnAdvert>, metrics: &metrics::SfuMetrics) -> Arc<Sfu> {
    Sfu::new(
        SfuConfig {
            region: "test".into(),
            node_id: "test-1".into(),
            turn,
            ice: engine::IceConfig::loopback(),
            max_connections: 16,
            position: None,
            advertise_signal: "127.0.0.1:9".into(),
            capacity: 10,
            webhook_urls: Vec::new(),
        },
        TokenAuthority::new("devkey", "secret"),
        Arc::new(meridian_schema::MemoryStore::new()),
        metrics,
    )
    .expect("the WebRTC engine")
}
