//! The gate in front of the `turn` crate's server: a [`Conn`] wrapper on each
//! listener that answers, rewrites or drops requests before the server sees them,
//! and watches the server's answers on the way out.
//!
//! What it does, in order, for each STUN request from a client:
//! 1. **Rate limit** per source IP (token bucket, default 100 requests/s with a
//!    burst of 200); requests over the limit are dropped unanswered. The table of
//!    sources is capped; when it is full of active sources, new ones go untracked
//!    (everything below is stateless for them, so they cost CPU, not memory).
//! 2. **Challenge** (RFC 8489 §9.2): Allocate, Refresh, CreatePermission and
//!    ChannelBind without MESSAGE-INTEGRITY get 401 with the realm and a nonce
//!    that the gate signs and does not store (`<expiry hex>` + HMAC over expiry
//!    and client IP). The server's own nonce table grew by one entry per
//!    unauthenticated request; now the server sees only authenticated requests.
//! 3. **Credentials**: a nonce the gate did not sign, or one that expired, gets 438;
//!    credentials that do not verify (expired REST username, wrong password, other
//!    realm) get 401 (the crate answers 400).
//! 4. **Peers**: CreatePermission and ChannelBind naming a refused peer
//!    ([`PeerPolicy`]) get 403 (RFC 8656 §9.1, §11.2).
//! 5. **Quotas**: an Allocate over the per-username or total allocation quota gets
//!    486 Allocation Quota Reached (RFC 8656 §7.2).
//! 6. **Rewrite and re-sign** with the same long-term key: the NONCE becomes the
//!    server's current nonce (fetched by the gate with an unauthenticated request
//!    of its own, once per listener per 50 minutes); DONT-FRAGMENT is removed
//!    (Linux already sends relayed UDP with DF set, so it is honoured; the crate
//!    would answer 420); a LIFETIME over the maximum is capped to it (the crate
//!    would reset it to the 10-minute default); a CreatePermission naming several
//!    peers is split into one request per peer (the crate would install the first
//!    peer once per address) and only the last success answer reaches the client.
//!
//! Stream listeners report closed connections; the gate then deletes the
//! connection's allocation with a signed Refresh of lifetime 0 (RFC 8656 §3.1:
//! the allocation lives as long as its TCP connection).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun::agent::TransactionId;
use stun::attributes::{
    AttrType, ATTR_DONT_FRAGMENT, ATTR_FINGERPRINT, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY,
    ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use stun::error_code::{
    ErrorCode, ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_STALE_NONCE,
    CODE_UNAUTHORIZED,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;
use tokio::sync::mpsc;
use webrtc_util::conn::Conn;

use crate::policy::PeerPolicy;

/// STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: u32 = 0x2112_A442;
/// How long a gate nonce is good for.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// The server's nonces live an hour (`turn` crate); the gate fetches a new one sooner.
const SERVER_NONCE_REFRESH: Duration = Duration::from_secs(50 * 60);
/// Longest allocation lifetime granted. The crate's maximum is 3600 s, exclusive:
/// a request for 3600 s or more would get its 600 s default.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3599);
/// Default allocations per REST username (one participant): two peer connections
/// times three transports, with room for ICE restarts.
pub const DEFAULT_USER_QUOTA: usize = 32;
/// Default allocations per relay.
pub const DEFAULT_TOTAL_QUOTA: usize = 20_000;
/// Default request rate per source IP (requests per second).
pub const DEFAULT_REQUEST_RATE: f64 = 100.0;
/// Default request burst per source IP.
pub const DEFAULT_REQUEST_BURST: f64 = 200.0;
/// Default cap on source IPs tracked by the rate limiter.
pub const DEFAULT_MAX_SOURCES: usize = 65_536;
/// Split CreatePermission requests awaiting answers, at most.
const MAX_SPLIT_IN_FLIGHT: usize = 10_000;
/// Where the gate's own nonce-fetching request comes from: no client can have it.
const FETCH_SRC: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

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
}

#[derive(Default)]
struct Counters {
    challenged: AtomicU64,
    refused: AtomicU64,
    rate_limited: AtomicU64,
    server_challenges: AtomicU64,
}

/// A client of one listener: (listener's local address, client address).
type Client = (SocketAddr, SocketAddr);

#[derive(Default)]
struct Allocations {
    owner: HashMap<Client, String>,
    per_user: HashMap<String, usize>,
    /// Allocate requests passed to the server, by client and transaction.
    in_flight: HashMap<(Client, [u8; 12]), String>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The gate's state, shared by the listeners of one relay.
pub struct Gate {
    config: GateConfig,
    nonce_key: [u8; 32],
    allocations: Mutex<Allocations>,
    sources: Mutex<HashMap<IpAddr, Bucket>>,
    counters: Counters,
    /// Refusals are counted in [`GateStats`], every one; logged a few per source.
    refusal_log: meridian_runtime::log_limit::LogLimit<IpAddr>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold counts a panicking holder cannot leave half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// A gate enforcing `config`.
    pub fn new(config: GateConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            nonce_key: rand::random(),
            allocations: Mutex::default(),
            sources: Mutex::default(),
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
            sources: lock(&self.sources).len() as u64,
            allocations: lock(&self.allocations).owner.len() as u64,
        }
    }

    /// Forgets the allocation of `client` on `listener` (the server closed it).
    pub fn release(&self, listener: SocketAddr, client: SocketAddr) {
        let mut a = lock(&self.allocations);
        if let Some(user) = a.owner.remove(&(listener, client)) {
            if let Some(n) = a.per_user.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    a.per_user.remove(&user);
                }
            }
        }
    }

    /// Takes a token for a request from `ip` at `now`; `false` when over the rate.
    fn admit_source(&self, ip: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.config.request_rate, self.config.request_burst);
        let mut sources = lock(&self.sources);
        if !sources.contains_key(&ip) && sources.len() >= self.config.max_sources {
            // A source idle long enough to have refilled is as good as absent.
            let refill = Duration::from_secs_f64(burst / rate.max(f64::MIN_POSITIVE));
            sources.retain(|_, b| now.duration_since(b.last) < refill);
            if sources.len() >= self.config.max_sources {
                return true; // untracked: everything after this is stateless
            }
        }
        let b = sources.entry(ip).or_insert(Bucket { tokens: burst, last: now });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// A nonce for `ip` valid until `now + NONCE_LIFETIME`.
    fn nonce(&self, ip: IpAddr, now: SystemTime) -> String {
        let expiry = now.checked_add(NONCE_LIFETIME).unwrap_or(now);
        let expiry = expiry.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        format!("{expiry:016x}{}", self.nonce_mac(expiry, ip))
    }

    fn nonce_mac(&self, expiry: u64, ip: IpAddr) -> String {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.nonce_key).expect("HMAC takes any key length");
        mac.update(&expiry.to_be_bytes());
        mac.update(ip.to_string().as_bytes());
        mac.finalize().into_bytes()[..10].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `nonce` is one of ours for `ip`, unexpired at `now`.
    fn nonce_ok(&self, nonce: &str, ip: IpAddr, now: SystemTime) -> bool {
        let Some((expiry, mac)) = nonce.get(..16).zip(nonce.get(16..)) else { return false };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else { return false };
        // Checked: the expiry is the client's to choose, and `UNIX_EPOCH + Duration`
        // panics past `i64::MAX` seconds (one datagram stopped the listener).
        meridian_auth::unix_time(expiry).is_some_and(|at| at >= now) && self.nonce_mac(expiry, ip) == mac
    }
}

/// A request to hand to the server once the server's nonce is known: the
/// client's attributes, re-signed with the client's long-term key.
struct Signed {
    typ: MessageType,
    transaction_id: TransactionId,
    attributes: Vec<(AttrType, Vec<u8>)>,
    key: Vec<u8>,
    fingerprint: bool,
    src: SocketAddr,
}

impl Signed {
    fn encode(&self, nonce: &str) -> Option<Vec<u8>> {
        let mut m = Message::new();
        m.typ = self.typ;
        m.transaction_id = self.transaction_id;
        m.write_header();
        for (t, v) in &self.attributes {
            m.add(*t, if *t == ATTR_NONCE { nonce.as_bytes() } else { v });
        }
        MessageIntegrity(self.key.clone()).add_to(&mut m).ok()?;
        if self.fingerprint {
            FINGERPRINT.add_to(&mut m).ok()?;
        }
        Some(m.raw)
    }
}

/// What to do with a packet from a client.
enum Verdict {
    Pass,
    Drop,
    Answer(Vec<u8>),
    Queue(Vec<Signed>),
}

/// One listener, gated.
pub struct GateConn {
    inner: Arc<dyn Conn + Send + Sync>,
    gate: Arc<Gate>,
    local: SocketAddr,
    /// `inner`'s bound address, read once: the crate asks for it on every
    /// ChannelData message, and each ask was a `getsockname` system call.
    bound: Option<SocketAddr>,
    queue: Mutex<VecDeque<Signed>>,
    server_nonce: Mutex<Option<(String, Instant)>>,
    /// A nonce fetch is out and unanswered.
    fetching: std::sync::atomic::AtomicBool,
    /// CreatePermission success answers to swallow, by client and transaction.
    swallow: Mutex<HashMap<(SocketAddr, [u8; 12]), usize>>,
    closed: Option<tokio::sync::Mutex<mpsc::Receiver<SocketAddr>>>,
    /// The channel data path, on the UDP listener (see [`GateConn::with_channels`]).
    channels: Option<Arc<crate::fastpath::Channels>>,
    /// Who to tell when this listener stops serving (see [`GateConn::watched`]).
    watch: Option<ListenerWatch>,
    /// Test hook: the next read panics, uncontained.
    #[cfg(any(test, feature = "test-hooks"))]
    fault: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// A listener's name and the health its end is reported to.
#[derive(Clone)]
pub struct ListenerWatch {
    /// e.g. `turn udp listener 0.0.0.0:3478`.
    pub name: String,
    /// The process's health.
    pub health: meridian_runtime::Health,
    /// Set when the relay closes: an end after that is expected.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
}

/// Reports a panic that unwinds out of a listener's read: the `turn` crate's read
/// loop (which nobody awaits) ends with it.
struct UnwindWatch<'a>(&'a ListenerWatch);

impl Drop for UnwindWatch<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.health.task_ended(&self.0.name, "a panic unwound through its read; the read loop is gone");
        }
    }
}

impl GateConn {
    /// Gates `inner`. `closed` reports stream connections that ended (TCP, TLS).
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        gate: Arc<Gate>,
        closed: Option<mpsc::Receiver<SocketAddr>>,
    ) -> Self {
        let bound = inner.local_addr().ok();
        Self {
            inner,
            gate,
            local: bound.unwrap_or(FETCH_SRC),
            bound,
            queue: Mutex::default(),
            server_nonce: Mutex::default(),
            fetching: Default::default(),
            swallow: Mutex::default(),
            closed: closed.map(tokio::sync::Mutex::new),
            channels: None,
            watch: None,
            #[cfg(any(test, feature = "test-hooks"))]
            fault: None,
        }
    }

    /// Reports this listener's end to `watch.health`: a failed read (the crate's
    /// read loop stops on the first) or a panic out of a read, unless the relay is
    /// closing. Panics in the verdict on one datagram are contained to it.
    pub fn watched(mut self, watch: ListenerWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// The address this gate's listener is bound to.
    pub fn listener_addr(&self) -> SocketAddr {
        self.local
    }

    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn with_fault(mut self, fault: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The verdict on one datagram; a panic in it drops that datagram only.
    fn judge_contained(&self, packet: &[u8], src: SocketAddr) -> Verdict {
        match &self.watch {
            Some(w) => meridian_runtime::panic::contain(&w.health, &w.name, || self.judge(packet, src))
                .unwrap_or(Verdict::Drop),
            None => self.judge(packet, src),
        }
    }

    /// Serves bound channels' data on this listener through `channels` instead
    /// of the crate (UDP listeners only: stream clients need padded framing).
    pub fn with_channels(mut self, channels: Arc<crate::fastpath::Channels>) -> Self {
        self.channels = Some(channels);
        self
    }

    fn judge(&self, packet: &[u8], src: SocketAddr) -> Verdict {
        // STUN requests only: first byte 0x00/0x01 and class bits 00 (RFC 8489 §5).
        // ChannelData, indications and responses pass at the cost of two comparisons.
        if packet.len() < 20 || packet[0] > 0x3f || (packet[0] & 0x01) != 0 || (packet[1] & 0x10) != 0 {
            return Verdict::Pass;
        }
        if !self.gate.admit_source(src.ip(), Instant::now()) {
            self.gate.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        let mut m = Message::new();
        m.raw = packet.to_vec();
        if m.decode().is_err() {
            return Verdict::Pass; // the server drops what it cannot decode
        }
        let method = m.typ.method;
        if m.typ.class != CLASS_REQUEST
            || ![METHOD_ALLOCATE, METHOD_REFRESH, METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND].contains(&method)
        {
            return Verdict::Pass;
        }
        match self.judge_request(&m, src, SystemTime::now()) {
            Ok(signed) => Verdict::Queue(signed),
            Err(Some(answer)) => Verdict::Answer(answer),
            Err(None) => Verdict::Drop,
        }
    }

    /// Checks an authenticated-method request; `Ok` holds what to pass to the
    /// server, `Err` the answer to send instead (or nothing).
    fn judge_request(&self, m: &Message, src: SocketAddr, now: SystemTime) -> Result<Vec<Signed>, Option<Vec<u8>>> {
        let gate = &self.gate;
        let refuse = |code: ErrorCode, reason: &str, with_nonce: bool| {
            let counter = if code == CODE_UNAUTHORIZED && !m.contains(ATTR_MESSAGE_INTEGRITY) {
                &gate.counters.challenged
            } else {
                &gate.counters.refused
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut extra: Vec<Box<dyn Setter>> = Vec::new();
            if with_nonce {
                extra.push(Box::new(TextAttribute::new(ATTR_REALM, gate.config.realm.clone())));
                extra.push(Box::new(TextAttribute::new(ATTR_NONCE, gate.nonce(src.ip(), now))));
            }
            error_response(m, code, reason, extra)
        };
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            TextAttribute::get_from_as(m, ATTR_USERNAME),
            TextAttribute::get_from_as(m, ATTR_REALM),
            TextAttribute::get_from_as(m, ATTR_NONCE),
        ) else {
            return Err(refuse(CODE_BAD_REQUEST, "Bad Request: USERNAME, REALM and NONCE are required", false));
        };
        if !gate.nonce_ok(&nonce.text, src.ip(), now) {
            return Err(refuse(CODE_STALE_NONCE, "Stale Nonce", true));
        }
        let password = match meridian_auth::turn_rest::verify(&gate.config.secret, &username.text, now) {
            Ok(p) if realm.text == gate.config.realm => p,
            Ok(_) => {
                gate.refusal_log.log(src.ip(), || {
                    tracing::info!(%src, username = %username.text, realm = %realm.text, "TURN request for another realm refused")
                });
                return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
            }
            Err(e) => {
                gate.refusal_log.log(
                    src.ip(),
                    || tracing::info!(%src, username = %username.text, why = %e, "TURN credentials refused"),
                );
                return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
            }
        };
        let key = turn::auth::generate_auth_key(&username.text, &realm.text, &password);
        if MessageIntegrity(key.clone()).check(&mut m.clone()).is_err() {
            gate.refusal_log.log(
                src.ip(),
                || tracing::info!(%src, username = %username.text, "TURN credentials refused: wrong password"),
            );
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
        }

        let peers: Vec<_> = m.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS).collect();
        // A peer address the gate cannot read is refused, not skipped: the crate
        // reads short values as zero-padded (a 5-byte value is 0.0.0.0, which Linux
        // delivers to the relay host itself), so skipping one bypassed the policy.
        let Some(peer_ips) =
            peers.iter().map(|a| xor_peer_ip(&a.value, &m.transaction_id.0)).collect::<Option<Vec<_>>>()
        else {
            return Err(refuse(CODE_BAD_REQUEST, "Bad Request: malformed XOR-PEER-ADDRESS", false));
        };
        if let Some(refused) = peer_ips.into_iter().find(|ip| !gate.config.policy.allows(*ip)) {
            gate.refusal_log.log(
                src.ip(),
                || tracing::info!(%src, peer = %refused, method = %m.typ.method, "TURN peer refused by policy"),
            );
            return Err(refuse(CODE_FORBIDDEN, "Forbidden: peer address not allowed", false));
        }

        let client = (self.local, src);
        if let (METHOD_CHANNEL_BIND, Some(channels)) = (m.typ.method, &self.channels) {
            channels.bind_requested(client, m);
        }
        if m.typ.method == METHOD_ALLOCATE {
            let mut a = lock(&gate.allocations);
            if !a.owner.contains_key(&client) {
                let mine = a.per_user.get(&username.text).copied().unwrap_or(0);
                if mine >= gate.config.user_quota || a.owner.len() >= gate.config.total_quota {
                    drop(a);
                    gate.refusal_log.log(
                        src.ip(),
                        || tracing::info!(%src, username = %username.text, mine, "TURN allocation quota reached"),
                    );
                    return Err(refuse(CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached", false));
                }
                if a.in_flight.len() >= gate.config.total_quota {
                    a.in_flight.clear(); // answers lost; forget them rather than grow
                }
                a.in_flight.insert((client, m.transaction_id.0), username.text.clone());
            }
        }

        // Rewrite: drop integrity, fingerprint and DONT-FRAGMENT, cap LIFETIME.
        let max = u32::try_from(MAX_LIFETIME.as_secs()).unwrap_or(u32::MAX);
        let attributes: Vec<(AttrType, Vec<u8>)> = m
            .attributes
            .0
            .iter()
            .filter(|a| {
                ![ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_FINGERPRINT, ATTR_DONT_FRAGMENT]
                    .contains(&a.typ)
            })
            .map(|a| {
                let value = match (a.typ, <[u8; 4]>::try_from(a.value.as_slice())) {
                    (t, Ok(secs)) if t == ATTR_LIFETIME && u32::from_be_bytes(secs) > max => max.to_be_bytes().to_vec(),
                    _ => a.value.clone(),
                };
                (a.typ, value)
            })
            .collect();
        let signed = |attributes: Vec<(AttrType, Vec<u8>)>| Signed {
            typ: m.typ,
            transaction_id: m.transaction_id,
            attributes,
            key: key.clone(),
            fingerprint: m.contains(ATTR_FINGERPRINT),
            src,
        };
        if m.typ.method != METHOD_CREATE_PERMISSION || peers.len() < 2 {
            return Ok(vec![signed(attributes)]);
        }
        // One request per peer; the server answers each, the client hears the last.
        {
            let mut swallow = lock(&self.swallow);
            if swallow.len() >= MAX_SPLIT_IN_FLIGHT {
                swallow.clear(); // answers lost; forget them rather than grow
            }
            swallow.insert((src, m.transaction_id.0), peers.len() - 1);
        }
        Ok((0..peers.len())
            .map(|i| {
                let mut k = 0;
                let one = attributes
                    .iter()
                    .filter(|(t, _)| {
                        if *t != ATTR_XOR_PEER_ADDRESS {
                            return true;
                        }
                        k += 1;
                        k - 1 == i
                    })
                    .cloned()
                    .collect();
                signed(one)
            })
            .collect())
    }

    /// A signed Refresh with lifetime 0 for `client`'s allocation, if it has one.
    fn release_request(&self, client: SocketAddr) -> Option<Signed> {
        let username = lock(&self.gate.allocations).owner.get(&(self.local, client)).cloned()?;
        let password = meridian_auth::turn_rest::password_for(&self.gate.config.secret, &username);
        let realm = self.gate.config.realm.clone();
        Some(Signed {
            typ: MessageType::new(METHOD_REFRESH, CLASS_REQUEST),
            transaction_id: TransactionId::new(),
            attributes: vec![
                (ATTR_LIFETIME, 0u32.to_be_bytes().to_vec()),
                (ATTR_USERNAME, username.clone().into_bytes()),
                (ATTR_REALM, realm.clone().into_bytes()),
                (ATTR_NONCE, Vec::new()),
            ],
            key: turn::auth::generate_auth_key(&username, &realm, &password),
            fingerprint: false,
            src: client,
        })
    }

    /// The next queued packet for the server, fetching the server's nonce first
    /// when it is missing or old.
    fn next_queued(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let mut queue = lock(&self.queue);
        loop {
            let signed = queue.pop_front()?;
            let nonce = lock(&self.server_nonce)
                .as_ref()
                .filter(|(_, at)| at.elapsed() < SERVER_NONCE_REFRESH)
                .map(|(n, _)| n.clone());
            match nonce {
                Some(nonce) => match signed.encode(&nonce) {
                    Some(packet) => return Some((packet, signed.src)),
                    None => continue,
                },
                None if self.fetching.swap(false, Ordering::Relaxed) => {
                    // The server did not answer our fetch; do not loop on it.
                    tracing::warn!(src = %signed.src, "TURN server gave no nonce; request dropped");
                }
                None => {
                    // Ask the server for a nonce, then come back to this one.
                    self.fetching.store(true, Ordering::Relaxed);
                    queue.push_front(signed);
                    self.gate.counters.server_challenges.fetch_add(1, Ordering::Relaxed);
                    return Some((nonce_request()?, FETCH_SRC));
                }
            }
        }
    }

    /// Watches the server's answer to `target`: learns the server's nonce, counts
    /// allocations, swallows split CreatePermission answers. `false` to drop it.
    fn on_answer(&self, packet: &[u8], target: SocketAddr) -> bool {
        if target == FETCH_SRC {
            let mut m = Message::new();
            m.raw = packet.to_vec();
            if m.decode().is_ok() {
                if let Ok(nonce) = TextAttribute::get_from_as(&m, ATTR_NONCE) {
                    *lock(&self.server_nonce) = Some((nonce.text, Instant::now()));
                    self.fetching.store(false, Ordering::Relaxed);
                }
            }
            return false;
        }
        // Responses only: class bit C1 (the low bit of the first byte) set; C0
        // (0x10 of the second) tells error from success. TURN methods fit in the
        // second byte's low nibble.
        if packet.len() < 20 || packet[0] != 0x01 {
            return true;
        }
        let success = packet[1] & 0x10 == 0;
        let method = packet[1] & 0x0f;
        let Ok(txid) = <[u8; 12]>::try_from(&packet[8..20]) else { return true };
        if let Some(channels) = &self.channels {
            channels.answered(&self.inner, (self.local, target), (method, success, txid), packet);
        }
        match method {
            0x03 => {
                let mut a = lock(&self.gate.allocations);
                if let Some(user) = a.in_flight.remove(&((self.local, target), txid)) {
                    if success && a.owner.insert((self.local, target), user.clone()).is_none() {
                        *a.per_user.entry(user).or_default() += 1;
                    }
                }
                true
            }
            0x08 => {
                let mut swallow = lock(&self.swallow);
                let Some(left) = swallow.get_mut(&(target, txid)) else { return true };
                if success && *left > 0 {
                    *left -= 1;
                    return false;
                }
                swallow.remove(&(target, txid));
                true
            }
            _ => true,
        }
    }
}

/// An unauthenticated Allocate, which the server answers with 401 and its nonce.
fn nonce_request() -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.build(&[Box::new(TransactionId::new()), Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST))]).ok()?;
    Some(m.raw)
}

fn error_response(request: &Message, code: ErrorCode, reason: &str, extra: Vec<Box<dyn Setter>>) -> Option<Vec<u8>> {
    let mut reply = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.clone()),
        Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute { code, reason: reason.as_bytes().to_vec() }),
    ];
    setters.extend(extra);
    reply.build(&setters).ok()?;
    Some(reply.raw)
}

/// The IP of an XOR-PEER-ADDRESS value (RFC 8489 §14.2), or `None` unless the
/// value is exactly 8 (IPv4) or 20 (IPv6) bytes of a known family.
fn xor_peer_ip(value: &[u8], transaction_id: &[u8; 12]) -> Option<IpAddr> {
    let family = *value.get(1)?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (family, value.len()) {
        (0x01, 8) => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let ip: Vec<u8> = raw.iter().zip(cookie).map(|(b, c)| b ^ c).collect();
            Some(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])))
        }
        (0x02, 20) => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let key: Vec<u8> = cookie.iter().chain(transaction_id.iter()).copied().collect();
            let mut ip = [0u8; 16];
            for (i, b) in raw.iter().enumerate() {
                ip[i] = b ^ key[i];
            }
            Some(IpAddr::V6(Ipv6Addr::from(ip)))
        }
        _ => None,
    }
}

impl GateConn {
    /// The listener's next packet for the server, after the gate and the channel
    /// data path have taken theirs.
    async fn gated_recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            if let Some((packet, src)) = self.next_queued() {
                if packet.len() <= buf.len() {
                    buf[..packet.len()].copy_from_slice(&packet);
                    return Ok((packet.len(), src));
                }
                continue;
            }
            let received = match &self.closed {
                None => self.inner.recv_from(buf).await,
                Some(closed) => {
                    let mut closed = closed.lock().await;
                    tokio::select! {
                        r = self.inner.recv_from(buf) => r,
                        Some(client) = closed.recv() => {
                            if let Some(release) = self.release_request(client) {
                                lock(&self.queue).push_back(release);
                            }
                            continue;
                        }
                    }
                }
            };
            let (n, src) = received?;
            if let Some(channels) = &self.channels {
                if channels.client_data(self.local, src, &buf[..n]).await {
                    continue;
                }
            }
            #[cfg(any(test, feature = "test-hooks"))]
            if self.fault.as_ref().is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
                panic!("test hook: the listener's read loop breaks");
            }
            match self.judge_contained(&buf[..n], src) {
                Verdict::Pass => return Ok((n, src)),
                Verdict::Drop => {}
                Verdict::Answer(answer) => {
                    if let Err(e) = self.inner.send_to(&answer, src).await {
                        tracing::debug!(%src, error = %e, "TURN refusal not sent");
                    }
                }
                Verdict::Queue(signed) => lock(&self.queue).extend(signed),
            }
        }
    }
}

#[async_trait]
impl Conn for GateConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let _unwind = self.watch.as_ref().map(UnwindWatch);
        let received = self.gated_recv_from(buf).await;
        if let (Err(e), Some(w)) = (&received, &self.watch) {
            if !w.closing.load(Ordering::SeqCst) {
                w.health.task_ended(&w.name, &format!("read failed, which ends the server's read loop: {e}"));
            }
        }
        received
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.on_answer(buf, target) {
            return Ok(buf.len());
        }
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        match self.bound {
            Some(addr) => Ok(addr),
            None => self.inner.local_addr(),
        }
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::message::Getter;
    use turn::proto::peeraddr::PeerAddress;

    const SECRET: &[u8] = b"s";

    fn gate() -> Arc<Gate> {
        Gate::new(GateConfig::new(PeerPolicy::default(), SECRET.to_vec(), "meridian".into()))
    }

    /// A gated socket; call inside a runtime.
    fn conn(gate: Arc<Gate>) -> GateConn {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        GateConn::new(Arc::new(tokio::net::UdpSocket::from_std(socket).unwrap()), gate, None)
    }

    /// A request for `method` naming `peers`, signed for a fresh REST username
    /// with `nonce` (unsigned when `nonce` is `None`).
    fn request(
        method: stun::message::Method,
        peers: &[&str],
        nonce: Option<&str>,
        extra: &[(AttrType, Vec<u8>)],
    ) -> Message {
        let creds = meridian_auth::turn_rest::mint(SECRET, "alice", Duration::from_secs(60), SystemTime::now());
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> =
            vec![Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))];
        for p in peers {
            let sa: SocketAddr = p.parse().unwrap();
            setters.push(Box::new(PeerAddress { ip: sa.ip(), port: sa.port() }));
        }
        if let Some(nonce) = nonce {
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, creds.username.clone())));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, "meridian".into())));
            setters.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce.into())));
        }
        m.build(&setters).unwrap();
        for (t, v) in extra {
            m.add(*t, v);
        }
        if nonce.is_some() {
            MessageIntegrity::new_long_term_integrity(creds.username, "meridian".into(), creds.password)
                .add_to(&mut m)
                .unwrap();
        }
        m
    }

    fn code_of(reply: &[u8]) -> u16 {
        let mut m = Message::new();
        m.raw = reply.to_vec();
        m.decode().unwrap();
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m).unwrap();
        code.code.0
    }

    fn answer(v: Verdict) -> Vec<u8> {
        match v {
            Verdict::Answer(a) => a,
            _ => panic!("expected an answer"),
        }
    }

    const SRC: &str = "203.0.113.9:40000";

    #[tokio::test]
    async fn unauthenticated_requests_get_a_stateless_challenge() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let reply = answer(c.judge(&request(METHOD_ALLOCATE, &[], None, &[]).raw, SRC.parse().unwrap()));
        assert_eq!(code_of(&reply), 401);
        assert_eq!((g.stats().challenged, g.stats().allocations), (1, 0));
        let mut m = Message::new();
        m.raw = reply;
        m.decode().unwrap();
        let nonce = TextAttribute::get_from_as(&m, ATTR_NONCE).unwrap().text;
        let src: SocketAddr = SRC.parse().unwrap();
        assert!(g.nonce_ok(&nonce, src.ip(), SystemTime::now()));
        assert!(!g.nonce_ok(&nonce, "203.0.113.10".parse().unwrap(), SystemTime::now()), "bound to the client IP");
        assert!(!g.nonce_ok(&nonce, src.ip(), SystemTime::now() + 2 * NONCE_LIFETIME), "expires");
        assert!(!g.nonce_ok("0000000000000000ffff", src.ip(), SystemTime::now()), "forged");
    }

    /// The datagram that stopped a region's relay: an Allocate with some
    /// MESSAGE-INTEGRITY and a NONCE whose expiry is past the end of `SystemTime`
    /// (and, with a valid gate nonce, the same in the USERNAME). Both are refused.
    #[tokio::test]
    async fn a_nonce_or_username_expiry_past_the_end_of_time_is_refused_not_a_panic() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let src: SocketAddr = SRC.parse().unwrap();
        for nonce in ["ffffffffffffffff", "ffffffffffffffff0123456789abcdef0123", "8000000000000000"] {
            assert!(!g.nonce_ok(nonce, src.ip(), SystemTime::now()), "{nonce}");
            let m = request(METHOD_ALLOCATE, &[], Some(nonce), &[]);
            assert_eq!(code_of(&answer(c.judge(&m.raw, src))), 438, "{nonce}");
        }
        let nonce = g.nonce(src.ip(), SystemTime::now());
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(TextAttribute::new(ATTR_USERNAME, "18446744073709551615:x".into())),
            Box::new(TextAttribute::new(ATTR_REALM, "meridian".into())),
            Box::new(TextAttribute::new(ATTR_NONCE, nonce)),
        ])
        .unwrap();
        MessageIntegrity::new_long_term_integrity("18446744073709551615:x".into(), "meridian".into(), "pw".into())
            .add_to(&mut m)
            .unwrap();
        assert_eq!(code_of(&answer(c.judge(&m.raw, src))), 401);
    }

    #[tokio::test]
    async fn a_foreign_nonce_is_stale_and_a_permission_to_any_refused_peer_is_403() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let src: SocketAddr = SRC.parse().unwrap();
        let stale = request(METHOD_ALLOCATE, &[], Some("not-ours"), &[]);
        assert_eq!(code_of(&answer(c.judge(&stale.raw, src))), 438);
        let nonce = g.nonce(src.ip(), SystemTime::now());
        let m = request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000", "10.0.0.1:5000"], Some(&nonce), &[]);
        assert_eq!(code_of(&answer(c.judge(&m.raw, src))), 403, "one refused peer refuses the request");
        for peer in ["127.0.0.1:9", "[::1]:9", "169.254.169.254:80"] {
            let m = request(METHOD_CHANNEL_BIND, &[peer], Some(&nonce), &[]);
            assert_eq!(code_of(&answer(c.judge(&m.raw, src))), 403, "{peer}");
        }
    }

    /// An XOR-PEER-ADDRESS shorter than its family's length was skipped by the
    /// policy check while the crate read it zero-padded: `00 01 pp pp 21` is
    /// 0.0.0.0, the relay host itself. Any unreadable peer address is now a 400.
    #[tokio::test]
    async fn a_short_or_odd_peer_address_is_a_bad_request_not_a_way_past_the_policy() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let src: SocketAddr = SRC.parse().unwrap();
        let nonce = g.nonce(src.ip(), SystemTime::now());
        let bad: [&[u8]; 5] = [
            &[0x00, 0x01, 0x13, 0x88, 0x21],
            &[0x00, 0x01, 0x13, 0x88, 0x21, 0x12, 0xa4],
            &[0x00, 0x02, 0, 1, 2],
            &[],
            &[0x00, 0x03, 0x13, 0x88, 1, 2, 3, 4],
        ];
        for method in [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND] {
            for value in bad {
                let m = request(method, &[], Some(&nonce), &[(ATTR_XOR_PEER_ADDRESS, value.to_vec())]);
                assert_eq!(code_of(&answer(c.judge(&m.raw, src))), 400, "{method} {value:02x?}");
            }
            let m = request(method, &["203.0.113.7:5000"], Some(&nonce), &[(ATTR_XOR_PEER_ADDRESS, bad[0].to_vec())]);
            assert_eq!(code_of(&answer(c.judge(&m.raw, src))), 400, "a good peer does not carry a bad one");
        }
        let ok = request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000"], Some(&nonce), &[]);
        assert!(matches!(c.judge(&ok.raw, src), Verdict::Queue(_)), "a well-formed public peer still passes");
    }

    #[tokio::test]
    async fn several_peers_are_split_and_lifetime_and_dont_fragment_rewritten() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let src: SocketAddr = SRC.parse().unwrap();
        let nonce = g.nonce(src.ip(), SystemTime::now());
        let m = request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000", "203.0.113.8:5000"], Some(&nonce), &[]);
        let Verdict::Queue(pieces) = c.judge(&m.raw, src) else { panic!("queued") };
        assert_eq!(pieces.len(), 2);
        for (piece, want) in pieces.iter().zip(["203.0.113.7", "203.0.113.8"]) {
            let mut out = Message::new();
            out.raw = piece.encode("server-nonce").unwrap();
            out.decode().unwrap();
            let mut peer = PeerAddress::default();
            peer.get_from(&out).unwrap();
            assert_eq!(peer.ip.to_string(), want);
            assert_eq!(out.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS).count(), 1);
            assert_eq!(TextAttribute::get_from_as(&out, ATTR_NONCE).unwrap().text, "server-nonce");
            MessageIntegrity(piece.key.clone()).check(&mut out).expect("re-signed with the client's key");
        }

        let extra = [(ATTR_LIFETIME, 86_400u32.to_be_bytes().to_vec()), (ATTR_DONT_FRAGMENT, Vec::new())];
        let m = request(METHOD_ALLOCATE, &[], Some(&nonce), &extra);
        let Verdict::Queue(pieces) = c.judge(&m.raw, src) else { panic!("queued") };
        let mut out = Message::new();
        out.raw = pieces[0].encode("n").unwrap();
        out.decode().unwrap();
        assert!(!out.contains(ATTR_DONT_FRAGMENT));
        assert_eq!(out.get(ATTR_LIFETIME).unwrap(), 3599u32.to_be_bytes().to_vec(), "capped, not reset");
    }

    #[tokio::test]
    async fn allocations_over_the_user_quota_get_486_and_released_ones_free_the_slot() {
        let g = Gate::new(GateConfig {
            user_quota: 1,
            ..GateConfig::new(PeerPolicy::default(), SECRET.to_vec(), "meridian".into())
        });
        let c = conn(Arc::clone(&g));
        let (a, b): (SocketAddr, SocketAddr) = (SRC.parse().unwrap(), "203.0.113.9:40001".parse().unwrap());
        let nonce = g.nonce(a.ip(), SystemTime::now());
        let first = request(METHOD_ALLOCATE, &[], Some(&nonce), &[]);
        assert!(matches!(c.judge(&first.raw, a), Verdict::Queue(_)));
        // The server's success answer makes it count.
        let mut ok = Message::new();
        ok.build(&[
            Box::new(first.clone()),
            Box::new(MessageType::new(METHOD_ALLOCATE, stun::message::CLASS_SUCCESS_RESPONSE)),
        ])
        .unwrap();
        assert!(c.on_answer(&ok.raw, a), "the answer goes out");
        assert_eq!(g.stats().allocations, 1);
        let second = request(METHOD_ALLOCATE, &[], Some(&nonce), &[]);
        assert_eq!(code_of(&answer(c.judge(&second.raw, b))), 486);
        g.release(c.local, a);
        assert_eq!(g.stats().allocations, 0);
        assert!(matches!(c.judge(&second.raw, b), Verdict::Queue(_)), "the slot is free again");
    }

    /// A writer into a shared buffer, to read what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Refused requests are counted, every one, but one source gets only a few
    /// log lines per interval: one INFO line per crafted packet filled disks.
    #[tokio::test]
    async fn refusals_are_all_counted_but_logged_a_few_per_source() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let src: SocketAddr = SRC.parse().unwrap();
        let nonce = g.nonce(src.ip(), SystemTime::now());
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt().with_writer({
            let captured = captured.clone();
            move || captured.clone()
        });
        let _guard = tracing::subscriber::set_default(subscriber.finish());
        // Under the rate limit's burst (200), so each one reaches the check.
        let username =
            meridian_auth::turn_rest::mint(SECRET, "alice", Duration::from_secs(60), SystemTime::now()).username;
        for _ in 0..150 {
            let mut m = Message::new();
            m.build(&[
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
                Box::new(TextAttribute::new(ATTR_USERNAME, username.clone())),
                Box::new(TextAttribute::new(ATTR_REALM, "meridian".into())),
                Box::new(TextAttribute::new(ATTR_NONCE, nonce.clone())),
            ])
            .unwrap();
            MessageIntegrity::new_long_term_integrity(username.clone(), "meridian".into(), "wrong".into())
                .add_to(&mut m)
                .unwrap();
            assert_eq!(code_of(&answer(c.judge(&m.raw, src))), 401);
        }
        assert_eq!(g.stats().refused, 150, "every refusal counted");
        let text = String::from_utf8(lock(&captured.0).clone()).unwrap();
        let lines = text.lines().filter(|l| l.contains("TURN credentials refused")).count();
        assert_eq!(lines, meridian_runtime::log_limit::DEFAULT_LINES_PER_SOURCE as usize, "{text}");
    }

    #[test]
    fn sources_over_the_rate_are_dropped_and_the_table_stays_bounded() {
        let g = Gate::new(GateConfig {
            request_rate: 1.0,
            request_burst: 2.0,
            max_sources: 100,
            ..GateConfig::new(PeerPolicy::default(), SECRET.to_vec(), "meridian".into())
        });
        let now = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(g.admit_source(ip, now) && g.admit_source(ip, now));
        assert!(!g.admit_source(ip, now), "burst spent");
        assert!(g.admit_source(ip, now + Duration::from_secs(1)), "refilled");
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert!(g.admit_source(ip, now), "a new source is let through");
        }
        assert!(g.stats().sources <= 100, "{}", g.stats().sources);
    }

    #[tokio::test]
    async fn data_and_garbage_pass_untouched() {
        let c = conn(gate());
        let src: SocketAddr = SRC.parse().unwrap();
        assert!(matches!(c.judge(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], src), Verdict::Pass), "ChannelData");
        assert!(matches!(c.judge(&[0u8; 3], src), Verdict::Pass), "runts");
        let garbage = [0x00, 0x08, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(c.judge(&garbage, src), Verdict::Pass), "undecodable: the server drops it");
    }
}
