//! The store: rooms, tokens and the node registry, in memory (`meridian dev`,
//! one process only) or in Postgres (any number of gateways and nodes).
//!
//! Both back ends implement [`Store`] and pass the same contract suite
//! ([`contract::run`]). Postgres migrations live in `schema/migrations` and are
//! embedded in the binary ([`postgres::migrate`]).

pub mod contract;
pub mod memory;
pub mod postgres;

use std::time::{Duration, SystemTime};

use meridian_ids::{NodeId, ParticipantIdentity, RegionId, RoomName, RoomSid};
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use postgres::PgStore;

/// A room as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Room name as it appears in the token's `video.room` grant.
    pub name: RoomName,
    /// LiveKit room sid (`RM_` + 12 characters), fixed at creation.
    pub sid: RoomSid,
    /// Region hosting the room, once placed.
    pub region: Option<RegionId>,
    /// Node hosting the room, once placed.
    pub node: Option<NodeId>,
    /// Creation time (second precision is kept by Postgres down to microseconds).
    pub created_at: SystemTime,
    /// Created through the API with a region: the record outlives the room's
    /// sessions, and joins go to that region.
    pub pinned: bool,
    /// What RoomService `CreateRoom` asked for; the defaults for a room a
    /// join created.
    pub options: RoomOptions,
}

/// How long a room nobody joins is kept when `empty_timeout` is 0: LiveKit's
/// default, 5 minutes.
pub const DEFAULT_EMPTY_TIMEOUT: Duration = Duration::from_secs(300);

/// A room's settings from LiveKit's `CreateRoomRequest`. Zero (or empty) is
/// unset: no limit, close at once when the last one leaves, no metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomOptions {
    /// Participants the room takes (`max_participants`); a join past it is refused.
    pub max_participants: u32,
    /// Seconds an emptied room stays open for someone to come back
    /// (`departure_timeout`).
    pub departure_timeout: u32,
    /// Seconds a room nobody has joined is kept (`empty_timeout`; 0:
    /// [`DEFAULT_EMPTY_TIMEOUT`]). See [`Store::sweep_unjoined_rooms`].
    pub empty_timeout: u32,
    /// The room's metadata at creation (`metadata`).
    pub metadata: String,
}

/// The grants recorded with a minted token (a subset of LiveKit's `VideoGrant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenGrants {
    /// May publish tracks.
    pub can_publish: bool,
    /// May subscribe to others' tracks.
    pub can_subscribe: bool,
    /// May send data messages.
    pub can_publish_data: bool,
    /// Invisible to other participants.
    pub hidden: bool,
    /// May administer the room.
    pub room_admin: bool,
}

/// A token minted through the HTTPS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Opaque id (`TK_` + 12 characters).
    pub id: String,
    /// API key that signed it (the JWT `iss`).
    pub api_key: String,
    /// Room of the `video.room` grant.
    pub room: RoomName,
    /// Participant identity (the JWT `sub`).
    pub identity: ParticipantIdentity,
    /// Grants given.
    pub grants: TokenGrants,
    /// When it was minted.
    pub issued_at: SystemTime,
    /// The JWT `exp`.
    pub expires_at: SystemTime,
    /// Set once revoked.
    pub revoked_at: Option<SystemTime>,
}

/// One webhook delivery in the outbox: an event for one URL, recorded by the
/// node where it happened and delivered by any node, in order per URL and room.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    /// Delivery id, unique: the event's id (`WebhookEvent.id`) and the URL's
    /// place in the config.
    pub id: String,
    /// Where it goes.
    pub url: String,
    /// The room it is about: one URL gets a room's events in the order they
    /// were enqueued.
    pub room: RoomName,
    /// The body to deliver: LiveKit's `WebhookEvent` as protobuf JSON.
    pub body: String,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// Delivery attempts claimed so far (this one included, once claimed).
    pub attempts: u32,
}

/// What a node reports of its load with each heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Participants connected to the node.
    pub participants: u32,
    /// Tracks published on the node.
    pub tracks: u32,
    /// RTP forwarded to subscribers over the last interval, in bytes per second.
    pub forwarded_bytes_per_sec: u64,
    /// Process CPU use over the last interval, in cores (1.0 = one core busy).
    pub cpu_cores: f32,
}

/// An SFU node in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Node id (`ServerInfo.node_id`), unique across regions.
    pub id: NodeId,
    /// Region the node serves.
    pub region: RegionId,
    /// The region's position (latitude, longitude in degrees), if it has one.
    pub position: Option<(f64, f64)>,
    /// Where gateways reach the node's signal listener (`host:port`).
    pub signal_addr: String,
    /// TURN URLs of the node's relay.
    pub turn_urls: Vec<String>,
    /// Participants the node takes before it counts as overloaded.
    pub capacity: u32,
    /// Load at the last heartbeat.
    pub load: NodeLoad,
    /// Draining nodes take no new rooms.
    pub draining: bool,
    /// The node's clock at its last heartbeat.
    pub last_seen: SystemTime,
}

/// Store errors, classified by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed (upstream; a retry may help).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A migration failed (ours or the operator's: the schema is not what we expect).
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored row could not be decoded (ours: a bug or a foreign write).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The store contract shared by the memory and Postgres back ends.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a minted token. Recording the same id twice is a no-op.
    async fn record_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// The token with this id, if recorded.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// The tokens recorded for `room` and `identity` (each `None`: any), oldest
    /// first, at most `limit`.
    async fn tokens(
        &self,
        room: Option<&RoomName>,
        identity: Option<&ParticipantIdentity>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError>;
    /// Marks a token revoked at `at`; returns false when no such token exists.
    async fn revoke_token(&self, id: &str, at: SystemTime) -> Result<bool, StoreError>;
    /// Returns the room named `room.name`, creating it from `room` when absent.
    /// An existing room keeps its sid, placement and creation time.
    async fn get_or_create_room(&self, room: &RoomRecord) -> Result<RoomRecord, StoreError>;
    /// The room with this name, if any.
    async fn room(&self, name: &RoomName) -> Result<Option<RoomRecord>, StoreError>;
    /// Every room, by name.
    async fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError>;
    /// Deletes the rooms nobody joined in time: not pinned, on no node, and
    /// created more than their `empty_timeout` ([`DEFAULT_EMPTY_TIMEOUT`] for 0)
    /// before `now`. Returns how many.
    async fn sweep_unjoined_rooms(&self, now: SystemTime) -> Result<u64, StoreError>;
    /// Adds `event` to the webhook outbox, behind the earlier events of its URL
    /// and room.
    /// Recording an id twice is a no-op.
    async fn enqueue_webhook(&self, event: &WebhookRecord) -> Result<(), StoreError>;
    /// Claims the next event to deliver at `now`, for `lease`: the oldest event
    /// at the head of its line (no earlier event of its URL and room is still
    /// waiting) that is due (not waiting for a retry) and not claimed by
    /// another worker. Counts the attempt.
    async fn claim_webhook(&self, now: SystemTime, lease: Duration) -> Result<Option<WebhookRecord>, StoreError>;
    /// The claimed event `id` was delivered (or given up): it leaves the outbox.
    async fn webhook_done(&self, id: &str) -> Result<(), StoreError>;
    /// The claimed event `id` failed; the next attempt is not before `retry_at`.
    async fn webhook_retry(&self, id: &str, retry_at: SystemTime) -> Result<(), StoreError>;
    /// Events in the outbox.
    async fn webhook_depth(&self) -> Result<u64, StoreError>;
    /// Deletes a room; returns false when it did not exist.
    async fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError>;
    /// A room's last participant left: a pinned room forgets its node (and keeps
    /// its region), any other room is deleted. Returns false when absent.
    async fn release_room(&self, name: &RoomName) -> Result<bool, StoreError>;
    /// Moves a room to `node` in `region` (a node taking over a room whose node
    /// died); returns false when no such room exists.
    async fn place_room(&self, name: &RoomName, region: &RegionId, node: &NodeId) -> Result<bool, StoreError>;

    /// Inserts or replaces a node's registry entry (its heartbeat).
    async fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Every registered node, ordered by id.
    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Removes a node's entry (clean shutdown); returns false when absent.
    async fn remove_node(&self, id: &NodeId) -> Result<bool, StoreError>;
    /// Whether other processes see this store's writes. The memory store does not,
    /// so a multi-process deployment (roles `gateway` and `sfu`) refuses it.
    fn is_shared(&self) -> bool;
}
