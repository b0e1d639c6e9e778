//! The SFU node's Prometheus metrics, labelled by `node` (a dev process runs
//! several nodes). Kept live as rooms and tracks come and go.
//!
//! - `meridian_sfu_rooms{node}`, `meridian_sfu_participants{node}`,
//!   `meridian_sfu_tracks{node}`: what the node hosts now (gauges).
//! - `meridian_sfu_forwarded_bytes_total{node}`: RTP bytes written to down-tracks.
//! - `meridian_sfu_heartbeat_failures_total{node}`: registry writes that failed
//!   (the store could not be reached); the node is up but gateways will soon
//!   count it stale.
//! - `meridian_sfu_signal_refusals_total{node,reason}`: signal connections refused
//!   or closed for the client's fault: `handshake` (bad path or token, draining,
//!   a failed or timed-out upgrade) and `malformed` (a frame or request that does
//!   not fit the protocol, or over a limit).
//! - `meridian_sfu_turn_relay_up{node}`: 1 while the node's TURN relay answers
//!   its probe ([`crate::turn_probe`]), 0 before the first answer and once it has
//!   not answered for a while (gauge; absent for a node without a probed relay).
//! - `meridian_sfu_webhook_queue{node}` (deliveries waiting in the outbox),
//!   `meridian_sfu_webhook_delivered_total`, `_failures_total` (attempts that
//!   failed and are retried) and `_dropped_total` (events given up)
//!   ([`crate::webhook`]).
//! - `meridian_sfu_capacity{node}`: participants before the node counts as full
//!   (`sfu.capacity`, gauge), so that `participants / capacity` is its load.
//! - `meridian_sfu_subscriber_loss_ratio{node}`,
//!   `meridian_sfu_subscriber_jitter_seconds{node}`,
//!   `meridian_sfu_subscriber_rtt_seconds{node}`: what subscribers' RTCP
//!   reception reports say about the node's down-tracks (histograms, one
//!   observation per report block): the fraction lost since the previous report,
//!   the interarrival jitter, and the round trip from the report's LSR and DLSR
//!   (RFC 3550 §6.4.1; only once the subscriber has had a sender report).
//! - `meridian_sfu_publisher_loss_ratio{node}`: the fraction of a published
//!   track's packets lost on the way to the node (sequence gaps of its busiest
//!   layer), one observation per track per 5 s window that had packets.
//!   Arithmetic in [`crate::forward::reception`].

use meridian_ids::NodeId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    node: String,
    reason: &'static str,
}

type HistogramFamily = Family<NodeLabel, Histogram, fn() -> Histogram>;

/// Buckets of `subscriber_loss_ratio`: none lost, then 0.5 % to all.
const LOSS_BUCKETS: [f64; 9] = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

fn loss_histogram() -> Histogram {
    Histogram::new(LOSS_BUCKETS)
}

fn jitter_histogram() -> Histogram {
    // 1 ms .. ~1 s
    Histogram::new(exponential_buckets(0.001, 2.0, 11))
}

fn rtt_histogram() -> Histogram {
    // 5 ms .. ~5 s
    Histogram::new(exponential_buckets(0.005, 2.0, 11))
}

/// The metric families, registered once per process.
#[derive(Clone, Debug)]
pub struct SfuMetrics {
    rooms: Family<NodeLabel, Gauge>,
    participants: Family<NodeLabel, Gauge>,
    tracks: Family<NodeLabel, Gauge>,
    capacity: Family<NodeLabel, Gauge>,
    forwarded_bytes: Family<NodeLabel, Counter>,
    heartbeat_failures: Family<NodeLabel, Counter>,
    signal_refusals: Family<RefusalLabel, Counter>,
    turn_relay_up: Family<NodeLabel, Gauge>,
    webhook_queue: Family<NodeLabel, Gauge>,
    webhook_delivered: Family<NodeLabel, Counter>,
    webhook_failures: Family<NodeLabel, Counter>,
    webhook_dropped: Family<NodeLabel, Counter>,
    subscriber_loss: HistogramFamily,
    publisher_loss: HistogramFamily,
    subscriber_jitter: HistogramFamily,
    subscriber_rtt: HistogramFamily,
}

impl Default for SfuMetrics {
    fn default() -> Self {
        Self {
            rooms: Family::default(),
            participants: Family::default(),
            tracks: Family::default(),
            capacity: Family::default(),
            forwarded_bytes: Family::default(),
            heartbeat_failures: Family::default(),
            signal_refusals: Family::default(),
            turn_relay_up: Family::default(),
            webhook_queue: Family::default(),
            webhook_delivered: Family::default(),
            webhook_failures: Family::default(),
            webhook_dropped: Family::default(),
            subscriber_loss: Family::new_with_constructor(loss_histogram as fn() -> Histogram),
            publisher_loss: Family::new_with_constructor(loss_histogram as fn() -> Histogram),
            subscriber_jitter: Family::new_with_constructor(jitter_histogram as fn() -> Histogram),
            subscriber_rtt: Family::new_with_constructor(rtt_histogram as fn() -> Histogram),
        }
    }
}

/// One node's histograms of its subscribers' reception reports.
#[derive(Clone, Debug)]
pub struct SubscriberReports {
    /// Fraction of packets lost, 0..1, per report block.
    pub loss_ratio: Histogram,
    /// Interarrival jitter, in seconds, per report block.
    pub jitter_seconds: Histogram,
    /// Round-trip time, in seconds, per report block that has one.
    pub rtt_seconds: Histogram,
    /// Fraction of a published track's packets lost on the way to the node,
    /// from sequence gaps, per track per connection quality window (5 s).
    pub publisher_loss_ratio: Histogram,
}

/// One node's handles into [`SfuMetrics`].
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    /// Rooms hosted.
    pub rooms: Gauge,
    /// Participants connected.
    pub participants: Gauge,
    /// Tracks published.
    pub tracks: Gauge,
    /// Participants before the node counts as full (set once, from the config).
    pub capacity: Gauge,
    /// RTP bytes written to down-tracks.
    pub forwarded_bytes: Counter,
    /// Heartbeats the store did not take.
    pub heartbeat_failures: Counter,
    /// Signal upgrades refused or failed (`reason="handshake"`).
    pub refused_handshakes: Counter,
    /// Sessions closed for a malformed frame or request (`reason="malformed"`).
    pub malformed_sessions: Counter,
    /// 1 while the TURN relay answers its probe, 0 when it counts as down;
    /// `None` (no series) for a node that probes no relay.
    pub turn_relay_up: Option<Gauge>,
    /// What the node's subscribers report about its down-tracks.
    pub subscriber_reports: SubscriberReports,
    /// The webhook outbox's delivery figures, as this node sees them.
    pub webhooks: WebhookMetrics,
}

/// One node's webhook figures (`meridian_sfu_webhook_*`).
#[derive(Clone, Debug, Default)]
pub struct WebhookMetrics {
    /// Deliveries waiting in the outbox (the whole cluster's, read from the store).
    pub queue: Gauge,
    /// Deliveries a receiver accepted (2xx).
    pub delivered: Counter,
    /// Attempts that failed (no answer, or not 2xx); each is retried.
    pub failures: Counter,
    /// Events given up: retried past the retry window, or not enqueued because
    /// the node's queue to the store was full.
    pub dropped: Counter,
}

impl SfuMetrics {
    /// Registers the families under `meridian_sfu_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("meridian_sfu");
        r.register("rooms", "Rooms hosted by the node", m.rooms.clone());
        r.register("participants", "Participants connected to the node", m.participants.clone());
        r.register("tracks", "Tracks published on the node", m.tracks.clone());
        r.register("capacity", "Participants before the node counts as full", m.capacity.clone());
        r.register("forwarded_bytes", "RTP bytes written to down-tracks", m.forwarded_bytes.clone());
        r.register("heartbeat_failures", "Registry heartbeats the store did not take", m.heartbeat_failures.clone());
        r.register(
            "signal_refusals",
            "Signal connections refused or closed for the client's fault, by reason",
            m.signal_refusals.clone(),
        );
        r.register("turn_relay_up", "1 while the node's TURN relay answers its probe", m.turn_relay_up.clone());
        r.register("webhook_queue", "Webhook deliveries waiting in the outbox", m.webhook_queue.clone());
        r.register("webhook_delivered", "Webhook deliveries a receiver accepted", m.webhook_delivered.clone());
        r.register(
            "webhook_failures",
            "Webhook delivery attempts that failed (each is retried)",
            m.webhook_failures.clone(),
        );
        r.register("webhook_dropped", "Webhook events given up or not enqueued", m.webhook_dropped.clone());
        r.register(
            "subscriber_loss_ratio",
            "Fraction of packets lost on down-tracks, per subscriber RTCP report block",
            m.subscriber_loss.clone(),
        );
        r.register(
            "publisher_loss_ratio",
            "Fraction of published packets lost on the way to the node, per track per 5 s window",
            m.publisher_loss.clone(),
        );
        r.register(
            "subscriber_jitter_seconds",
            "Interarrival jitter of down-tracks, per subscriber RTCP report block",
            m.subscriber_jitter.clone(),
        );
        r.register(
            "subscriber_rtt_seconds",
            "Round-trip time to subscribers, from RTCP report blocks' LSR and DLSR",
            m.subscriber_rtt.clone(),
        );
        m
    }

    /// The handles of node `node`.
    pub fn node(&self, node: &NodeId) -> NodeMetrics {
        let label = NodeLabel { node: node.to_string() };
        // One statement per `get_or_create`: each holds the family's read lock until
        // the end of its statement, and a second one in the same family would wait
        // for a write lock for ever.
        let refusals = |reason| RefusalLabel { node: node.to_string(), reason };
        let refused_handshakes = self.signal_refusals.get_or_create(&refusals("handshake")).clone();
        let malformed_sessions = self.signal_refusals.get_or_create(&refusals("malformed")).clone();
        let subscriber_reports = SubscriberReports {
            loss_ratio: self.subscriber_loss.get_or_create(&label).clone(),
            jitter_seconds: self.subscriber_jitter.get_or_create(&label).clone(),
            rtt_seconds: self.subscriber_rtt.get_or_create(&label).clone(),
            publisher_loss_ratio: self.publisher_loss.get_or_create(&label).clone(),
        };
        NodeMetrics {
            rooms: self.rooms.get_or_create(&label).clone(),
            participants: self.participants.get_or_create(&label).clone(),
            tracks: self.tracks.get_or_create(&label).clone(),
            capacity: self.capacity.get_or_create(&label).clone(),
            forwarded_bytes: self.forwarded_bytes.get_or_create(&label).clone(),
            heartbeat_failures: self.heartbeat_failures.get_or_create(&label).clone(),
            refused_handshakes,
            malformed_sessions,
            turn_relay_up: None,
            subscriber_reports,
            webhooks: WebhookMetrics {
                queue: self.webhook_queue.get_or_create(&label).clone(),
                delivered: self.webhook_delivered.get_or_create(&label).clone(),
                failures: self.webhook_failures.get_or_create(&label).clone(),
                dropped: self.webhook_dropped.get_or_create(&label).clone(),
            },
        }
    }

    /// The `turn_relay_up` gauge of node `node`: 0 until a probe is answered.
    pub fn turn_relay_up(&self, node: &NodeId) -> Gauge {
        self.turn_relay_up.get_or_create(&NodeLabel { node: node.to_string() }).clone()
    }
}
