//! The gate in front of the `turn` crate's server: a [`Conn`](webrtc_util::conn::Conn)
//! wrapper on each listener ([`GateConn`]) that answers, rewrites or drops
//! requests before the server sees them, and watches the server's answers on the
//! way out. [`Gate`] is the state the listeners of one relay share.
//!
//! What it does, in order, for each STUN request from a client (the order is
//! `GateConn::judge` in `verdict.rs`):
//! 1. **Rate limit** per source IP (`rate.rs`: token bucket, default 100
//!    requests/s with a burst of 200); requests over the limit are dropped
//!    unanswered. The table of sources is capped; when it is full of active
//!    sources, new ones go untracked (everything below is stateless for them, so
//!    they cost CPU, not memory).
//! 2. **Challenge** (RFC 8489 §9.2): Allocate, Refresh, CreatePermission and
//!    ChannelBind without MESSAGE-INTEGRITY get 401 with the realm and a nonce
//!    that the gate signs and does not store (`nonce.rs`: `<expiry hex>` + HMAC
//!    over expiry and client IP). The server's own nonce table grew by one entry
//!    per unauthenticated request; now the server sees only authenticated requests.
//! 3. **Credentials**: a nonce the gate did not sign, or one that expired, gets 438;
//!    credentials that do not verify (expired REST username, wrong password, other
//!    realm) get 401 (the crate answers 400).
//! 4. **Peers**: CreatePermission and ChannelBind naming a refused peer
//!    ([`PeerPolicy`]) get 403 (RFC 8656 §9.1, §11.2); an XOR-PEER-ADDRESS the
//!    gate cannot read gets 400.
//! 5. **Quotas** (`quota.rs`): an Allocate over the per-username or total
//!    allocation quota gets 486 Allocation Quota Reached (RFC 8656 §7.2).
//! 6. **Rewrite and re-sign** (`resign.rs`) with the same long-term key: the NONCE
//!    becomes the server's current nonce (fetched by the gate with an
//!    unauthenticated request of its own, once per listener per 50 minutes);
//!    DONT-FRAGMENT is removed (Linux already sends relayed UDP with DF set, so it
//!    is honoured; the crate would answer 420); a LIFETIME over the maximum is
//!    capped to it (the crate would reset it to the 10-minute default); a
//!    CreatePermission naming several peers is split into one request per peer
//!    (the crate would install the first peer once per address) and only the last
//!    success answer reaches the client.
//!
//! Stream listeners report closed connections; the gate then deletes the
//! connection's allocation with a signed Refresh of lifetime 0 (RFC 8656 §3.1:
//! the allocation lives as long as its TCP connection).
//!
//! Files: `conn.rs` (the listener wrapper, its read and write paths, the
//! listener's health watch), `verdict.rs` (the checks above, in order), and one
//! file per piece of state: `rate.rs`, `nonce.rs`, `quota.rs`, `resign.rs`.

mod conn;
mod nonce;
mod quota;
mod rate;
mod resign;
#[cfg(test)]
mod testing;
mod verdict;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::policy::PeerPolicy;
use crate::route::ClientRoute;

pub use conn::{GateConn, ListenerWatch};
pub use nonce::NONCE_LIFETIME;
pub use quota::{DEFAULT_TOTAL_QUOTA, DEFAULT_USER_QUOTA};
pub use rate::{DEFAULT_MAX_SOURCES, DEFAULT_REQUEST_BURST, DEFAULT_REQUEST_RATE};
pub use resign::MAX_LIFETIME;

/// What the gate enforces. One per relay, shared by its listeners.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Peer policy for CreatePermission and ChannelBind.
    pub policy: PeerPolicy,
    /// The TURN REST API secret.
    pub secret: Vec<u8>,
    /// The realm clients must use (401 challenges carry it).
    pub realm: String,
    /// Allocations per REST username (default [`DEFAULT_USER_QUOTA`]).
    pub user_quota: usize,
    /// Allocations per relay (default [`DEFAULT_TOTAL_QUOTA`]).
    pub total_quota: usize,
    /// Requests per second per source IP (default [`DEFAULT_REQUEST_RATE`]).
    pub request_rate: f64,
    /// Burst of requests per source IP (default [`DEFAULT_REQUEST_BURST`]).
    pub request_burst: f64,
    /// Source IPs the rate limiter tracks at most (default [`DEFAULT_MAX_SOURCES`]).
    pub max_sources: usize,
}

impl GateConfig {
    /// The defaults, with `policy`, `secret` and `realm`.
    pub fn new(policy: PeerPolicy, secret: Vec<u8>, realm: String) -> Self {
        Self {
            policy,
            secret,
            realm,
            user_quota: DEFAULT_USER_QUOTA,
            total_quota: DEFAULT_TOTAL_QUOTA,
            request_rate: DEFAULT_REQUEST_RATE,
            request_burst: DEFAULT_REQUEST_BURST,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// Counters of what the gate did, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GateStats {
    /// Requests answered 401 for lack of credentials (challenges).
    pub challenged: u64,
    /// Requests refused: bad or stale nonce, bad credentials, refused peer, quota.
    pub refused: u64,
    /// Requests dropped by the rate limiter.
    pub rate_limited: u64,
    /// Unauthenticated requests the server saw (the gate's own nonce fetches).
    pub server_challenges: u64,
    /// Source IPs the rate limiter tracks now.
    pub sources: u64,
    /// Live allocations the gate counts.
    pub allocations: u64,
    /// Allocate requests the server answered with an error, by
    /// [`ALLOCATE_ERROR_CODES`] (same order).
    pub allocate_errors: [u64; 4],
}

/// The error codes Allocate failures are counted by (RFC 8656 §7.2, §19):
/// `437` Allocation Mismatch (mostly a client's retransmitted Allocate),
/// `486` Allocation Quota Reached, `508` Insufficient Capacity (no relay port
/// free), and `other`.
pub const ALLOCATE_ERROR_CODES: [&str; 4] = ["437", "486", "508", "other"];

/// The place of STUN error `code` in [`ALLOCATE_ERROR_CODES`].
fn allocate_error_index(code: u16) -> usize {
    match code {
        437 => 0,
        486 => 1,
        508 => 2,
        _ => 3,
    }
}

#[derive(Default)]
struct Counters {
    challenged: AtomicU64,
    refused: AtomicU64,
    rate_limited: AtomicU64,
    server_challenges: AtomicU64,
    allocate_errors: [AtomicU64; 4],
}

/// The gate's state, shared by the listeners of one relay.
pub struct Gate {
    config: GateConfig,
    nonces: nonce::Nonces,
    quotas: quota::Quotas,
    sources: rate::Sources,
    counters: Counters,
    /// Refusals are counted in [`GateStats`], every one; logged a few per source.
    refusal_log: meridian_runtime::log_limit::LogLimit<IpAddr>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold counts a panicking holder cannot leave half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// A gate enforcing `config`, with a fresh random key for its nonces.
    pub fn new(config: GateConfig) -> Arc<Self> {
        Arc::new(Self {
            nonces: nonce::Nonces::new(rand::random()),
            quotas: quota::Quotas::new(config.user_quota, config.total_quota),
            sources: rate::Sources::new(config.request_rate, config.request_burst, config.max_sources),
            config,
            counters: Counters::default(),
            refusal_log: meridian_runtime::log_limit::LogLimit::new("refused TURN requests"),
        })
    }

    /// What the gate has done so far.
    pub fn stats(&self) -> GateStats {
        GateStats {
            challenged: self.counters.challenged.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
            server_challenges: self.counters.server_challenges.load(Ordering::Relaxed),
            sources: u64::try_from(self.sources.len()).unwrap_or(u64::MAX),
            allocations: u64::try_from(self.quotas.len()).unwrap_or(u64::MAX),
            allocate_errors: std::array::from_fn(|i| self.counters.allocate_errors[i].load(Ordering::Relaxed)),
        }
    }

    /// Counts an Allocate error answer of the server, `packet` (a STUN error
    /// response; its ERROR-CODE names the failure, `other` when it has none).
    pub(crate) fn allocate_failed(&self, packet: &[u8]) {
        use stun::message::Getter;
        let mut message = stun::message::Message::new();
        message.raw = packet.to_vec();
        let mut error = stun::error_code::ErrorCodeAttribute::default();
        let code = match message.decode().and_then(|()| error.get_from(&message)) {
            Ok(()) => error.code.0,
            Err(_) => 0,
        };
        self.counters.allocate_errors[allocate_error_index(code)].fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets the allocation of `client` (the server closed it), freeing its
    /// place in the quotas.
    pub fn release(&self, client: ClientRoute) {
        self.quotas.release(client);
    }
}
