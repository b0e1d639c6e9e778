//! Meridian's TURN relay (RFC 8656), run beside each SFU node.
//!
//! The protocol engine is the `turn` crate's server; this crate owns what is
//! Meridian's: checking TURN REST API credentials ([`meridian_auth::turn_rest`]), the
//! gate in front of every listener ([`gate`]: rate limits, nonces, quotas,
//! re-signing) with the peer policy ([`policy`]), the UDP listener with a large
//! receive buffer, the TCP and TLS listeners ([`stream`]), the channel data path
//! ([`channel_data`]), the relayed sockets ([`relayed`]) with their bandwidth caps
//! ([`bandwidth`]), and the relay's configuration.
//!
//! Run loop: [`TurnRelay::start`] binds the listeners and hands each to the
//! `turn` server, which reads requests on one task per listener until
//! [`TurnRelay::close`].
//!
//! Modules and who uses whom (no cycles): `gate` -> `channel_data` ->
//! `bandwidth`; `relayed` -> `channel_data`, `bandwidth`; all of them key their
//! state by the address pairs of [`route`]; `bandwidth` and `gate`'s rate limit
//! share `token_bucket`.
//!
//! Those read loops are the crate's and nobody awaits them, so the gate reports
//! on their behalf to the process's [`Health`]: a read that fails (which ends the
//! loop) or a panic unwinding through the gate marks the process failed with the
//! listener's name. A panic in the gate's verdict on one datagram is contained
//! to that datagram ([`meridian_runtime::panic::contain`]).

pub mod bandwidth;
pub mod channel_data;
// Harnesses for the fuzz targets in fuzz/; only built with `--cfg fuzzing`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod metrics;
pub mod policy;
pub mod relayed;
pub mod route;
pub mod stream;
mod token_bucket;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_runtime::Health;
use turn::auth::{generate_auth_key, AuthHandler};
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::conn::Conn;

use meridian_auth::turn_rest as credentials;

/// Default TURN listening port (RFC 8656 §18, `turn:` over UDP).
pub const DEFAULT_TURN_PORT: u16 = 3478;
/// Default UDP receive buffer: 4 MiB. The kernel default (208 KiB) drops 26-29 % of
/// packets at ~25k packets/s (measured, see `shared/TESTING.md`).
pub const DEFAULT_RECV_BUFFER_BYTES: usize = 4 << 20;
/// Default realm sent in 401 challenges.
pub const DEFAULT_REALM: &str = "meridian";
/// How often [`TurnRelay::report`] counts allocations.
pub const ALLOCATION_POLL: Duration = Duration::from_secs(2);
/// How long a channel binding lives without refresh (RFC 8656 §12: 10 minutes).
pub const CHANNEL_BIND_LIFETIME: Duration = Duration::from_secs(600);

/// Relay configuration.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// UDP address the relay listens on (default `0.0.0.0:3478`).
    pub listen: SocketAddr,
    /// IP address advertised in XOR-RELAYED-ADDRESS; relayed sockets bind to it too.
    pub relay_ip: IpAddr,
    /// Realm of the long-term credential mechanism (default [`DEFAULT_REALM`]).
    pub realm: String,
    /// Shared secret of the TURN REST API scheme; the SFU mints with the same one.
    pub secret: Vec<u8>,
    /// SO_RCVBUF of the listener in bytes (default [`DEFAULT_RECV_BUFFER_BYTES`]).
    pub recv_buffer_bytes: usize,
    /// Which peers may be relayed to (default: the block list of [`policy`]).
    pub peer_policy: policy::PeerPolicy,
    /// TCP address for `turn:HOST:PORT?transport=tcp` (usually the UDP port; default none).
    pub tcp_listen: Option<SocketAddr>,
    /// TLS listener for `turns:HOST:PORT?transport=tcp` (usually 5349 or 443; default none).
    pub tls: Option<TlsListen>,
    /// Cap on open TCP and TLS connections, each (default
    /// [`stream::DEFAULT_MAX_STREAM_CONNECTIONS`]).
    pub max_stream_connections: usize,
    /// Allocations per REST username; more get 486 (default [`gate::DEFAULT_USER_QUOTA`]).
    pub user_quota: usize,
    /// Allocations per relay; more get 486 (default [`gate::DEFAULT_TOTAL_QUOTA`]).
    pub total_quota: usize,
    /// Cap per allocation and direction in bits per second, `None` for no cap
    /// (default [`DEFAULT_BANDWIDTH_CAP`]); traffic over it is dropped
    /// ([`bandwidth::Cap`]).
    pub bandwidth_cap: Option<NonZeroU64>,
}

/// Default bandwidth cap per allocation and direction, in bits per second:
/// 20 Mbit/s, several times what one participant's 1080p simulcast sends.
pub const DEFAULT_BANDWIDTH_CAP: NonZeroU64 = match NonZeroU64::new(20_000_000) {
    Some(cap) => cap,
    None => panic!("20 Mbit/s is not zero"),
};

/// Default TURN-over-TLS port (RFC 8656 §18, `turns:`).
pub const DEFAULT_TURNS_PORT: u16 = 5349;

/// Where the TLS listener binds and which certificate it presents.
#[derive(Clone)]
pub struct TlsListen {
    /// Address to bind.
    pub listen: SocketAddr,
    /// The acceptor for each new connection (so a reloaded certificate applies).
    pub acceptor: stream::AcceptorSource,
}

impl std::fmt::Debug for TlsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListen").field("listen", &self.listen).finish_non_exhaustive()
    }
}

/// Errors of the relay. All are ours or the host's (a port in use), none a client's.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The listening socket could not be created or bound.
    #[error("TURN listener on {addr}: {source}")]
    Bind {
        /// Address we tried to bind.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The `turn` crate refused the configuration or failed to start.
    #[error("TURN server: {0}")]
    Server(#[from] turn::Error),
}

/// A running relay. Dropping it leaves the server task running; call [`close`](Self::close).
pub struct TurnRelay {
    server: Arc<Server>,
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    streams: Vec<Arc<stream::StreamConn>>,
    gate: Arc<gate::Gate>,
    channels: Arc<channel_data::Channels>,
    /// Set by [`TurnRelay::close`]: listeners ending after it are expected.
    closing: Arc<std::sync::atomic::AtomicBool>,
    #[cfg(any(test, feature = "test-hooks"))]
    udp_fault: Arc<std::sync::atomic::AtomicBool>,
}

impl TurnRelay {
    /// Binds the listener and starts serving allocations.
    ///
    /// A listener that stops serving before [`close`](Self::close) marks `health`
    /// failed.
    ///
    /// Errors: [`TurnError::Bind`] when the port is taken, [`TurnError::Server`] when
    /// the `turn` crate rejects the setup.
    pub async fn start(config: TurnConfig, health: Health) -> Result<Self, TurnError> {
        let socket = bind_udp(config.listen, config.recv_buffer_bytes)
            .map_err(|source| TurnError::Bind { addr: config.listen, source })?;
        let local_addr = socket.local_addr().map_err(|source| TurnError::Bind { addr: config.listen, source })?;
        let mut listeners: Vec<Arc<dyn Conn + Send + Sync>> = vec![Arc::new(socket)];
        let mut streams = Vec::new();
        let mut tcp_addr = None;
        if let Some(addr) = config.tcp_listen {
            let conn = Arc::new(bind_stream(addr, None, config.max_stream_connections).await?);
            tcp_addr = Some(conn.local);
            streams.push(conn);
        }
        let mut tls_addr = None;
        if let Some(tls) = &config.tls {
            let conn = Arc::new(
                bind_stream(tls.listen, Some(Arc::clone(&tls.acceptor)), config.max_stream_connections).await?,
            );
            tls_addr = Some(conn.local);
            streams.push(conn);
        }
        listeners.extend(streams.iter().map(|s| Arc::clone(s) as Arc<dyn Conn + Send + Sync>));
        let gate = gate::Gate::new(gate::GateConfig {
            user_quota: config.user_quota,
            total_quota: config.total_quota,
            ..gate::GateConfig::new(config.peer_policy.clone(), config.secret.clone(), config.realm.clone())
        });
        let channels = channel_data::Channels::new(CHANNEL_BIND_LIFETIME);
        let mut ended: Vec<Option<tokio::sync::mpsc::Receiver<SocketAddr>>> = vec![None];
        ended.extend(streams.iter().map(|s| s.ended_connections()));
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = |name: String| gate::ListenerWatch { name, health: health.clone(), closing: Arc::clone(&closing) };
        #[cfg(any(test, feature = "test-hooks"))]
        let udp_fault = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conn_configs = listeners
            .into_iter()
            .zip(ended)
            .map(|(listener, ended)| ConnConfig {
                conn: Arc::new(match ended {
                    // The UDP listener (the only one without stream endings).
                    None => {
                        let conn = gate::GateConn::new(listener, Arc::clone(&gate), None)
                            .with_channels(Arc::clone(&channels))
                            .watched(watch(format!("turn udp listener {local_addr}")));
                        #[cfg(any(test, feature = "test-hooks"))]
                        let conn = conn.with_fault(Arc::clone(&udp_fault));
                        conn
                    }
                    ended => {
                        let conn = gate::GateConn::new(listener, Arc::clone(&gate), ended);
                        let name = format!("turn stream listener {}", conn.listener_addr());
                        conn.watched(watch(name))
                    }
                }),
                relay_addr_generator: Box::new(relayed::CappedRelays {
                    channels: Arc::clone(&channels),
                    inner: RelayAddressGeneratorStatic {
                        relay_address: config.relay_ip,
                        address: config.relay_ip.to_string(),
                        net: Arc::new(webrtc_util::vnet::net::Net::new(None)),
                    },
                    bandwidth_cap: config.bandwidth_cap,
                }),
            })
            .collect();
        // The server reports every allocation it closes (expiry, Refresh 0, a
        // closed connection); the gate's quota counts follow.
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<turn::allocation::AllocationInfo>(1024);
        tokio::spawn({
            let (gate, channels) = (Arc::clone(&gate), Arc::clone(&channels));
            async move {
                while let Some(info) = closed_rx.recv().await {
                    let client = route::ClientRoute::of(&info.five_tuple);
                    gate.release(client);
                    channels.forget(client);
                }
            }
        });
        let server = Server::new(ServerConfig {
            conn_configs,
            realm: config.realm.clone(),
            auth_handler: Arc::new(RestAuth { secret: config.secret.clone() }),
            channel_bind_timeout: CHANNEL_BIND_LIFETIME,
            alloc_close_notify: Some(closed_tx),
        })
        .await?;
        tracing::info!(udp = %local_addr, tcp = ?tcp_addr, tls = ?tls_addr, relay_ip = %config.relay_ip, "TURN relay listening");
        Ok(Self {
            server: Arc::new(server),
            local_addr,
            tcp_addr,
            tls_addr,
            streams,
            gate,
            channels,
            closing,
            #[cfg(any(test, feature = "test-hooks"))]
            udp_fault,
        })
    }

    /// The bound UDP address (useful when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the gate in front of the server has done (challenges, refusals,
    /// rate-limited requests, tracked sources, counted allocations).
    pub fn gate_stats(&self) -> gate::GateStats {
        self.gate.stats()
    }

    /// What the channel data path has carried (UDP clients' bound channels).
    pub fn channel_stats(&self) -> channel_data::ChannelStats {
        self.channels.stats()
    }

    /// The bound TCP address, if TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The bound TLS address, if TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Keeps `metrics` for this relay (labelled with its UDP address) current:
    /// live allocations and the gate's counts, polled every [`ALLOCATION_POLL`],
    /// until the relay closes.
    pub fn report(&self, metrics: &metrics::TurnMetrics) {
        let label = self.local_addr.to_string();
        let gauge = metrics.allocations(&label);
        let metrics = metrics.clone();
        // Every series exists from the start, at zero.
        metrics.record_gate(&label, &gate::GateStats::default(), &gate::GateStats::default());
        let server = Arc::downgrade(&self.server);
        let gate = Arc::downgrade(&self.gate);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ALLOCATION_POLL);
            let mut before = gate::GateStats::default();
            loop {
                tick.tick().await;
                let (Some(server), Some(gate)) = (server.upgrade(), gate.upgrade()) else { break };
                match server.get_allocations_info(None).await {
                    Ok(allocations) => {
                        gauge.set(i64::try_from(allocations.len()).unwrap_or(i64::MAX));
                    }
                    Err(_) => break, // closed
                }
                let now = gate.stats();
                metrics.record_gate(&label, &before, &now);
                before = now;
            }
        });
    }

    /// Makes the UDP listener's next read panic outside the gate's containment, as
    /// a bug in the `turn` crate's read loop would: for tests of what a dead
    /// listener does to the node (it must leave service loudly).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn break_udp_listener(&self) {
        self.udp_fault.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the server and closes every allocation.
    pub async fn close(&self) -> Result<(), TurnError> {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.server.close().await?;
        for stream in &self.streams {
            stream.shutdown();
        }
        Ok(())
    }
}

async fn bind_stream(
    addr: SocketAddr,
    tls: Option<stream::AcceptorSource>,
    max_connections: usize,
) -> Result<stream::StreamConn, TurnError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| TurnError::Bind { addr, source })?;
    stream::StreamConn::listen(listener, tls, max_connections).map_err(|source| TurnError::Bind { addr, source })
}

/// Binds a UDP socket with the given receive buffer.
fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<tokio::net::UdpSocket> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // The kernel may clamp the size to net.core.rmem_max; that is not an error.
    socket.set_recv_buffer_size(recv_buffer)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// The `turn` crate's auth hook, answering with the long-term key derived from the
/// REST-API password.
struct RestAuth {
    secret: Vec<u8>,
}

impl AuthHandler for RestAuth {
    fn auth_handle(&self, username: &str, realm: &str, src_addr: SocketAddr) -> Result<Vec<u8>, turn::Error> {
        match credentials::verify(&self.secret, username, SystemTime::now()) {
            Ok(password) => Ok(generate_auth_key(username, realm, &password)),
            Err(e) => {
                tracing::debug!(%src_addr, username, error = %e, "TURN auth refused");
                Err(turn::Error::Other(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TurnConfig {
        TurnConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay_ip: "127.0.0.1".parse().unwrap(),
            realm: DEFAULT_REALM.into(),
            secret: b"s".to_vec(),
            recv_buffer_bytes: 1 << 16,
            peer_policy: policy::PeerPolicy::default(),
            tcp_listen: None,
            tls: None,
            max_stream_connections: 4,
            user_quota: gate::DEFAULT_USER_QUOTA,
            total_quota: gate::DEFAULT_TOTAL_QUOTA,
            bandwidth_cap: None,
        }
    }

    /// The listener's read loop is the crate's task; when it dies, the relay's
    /// health says so and names the listener.
    #[tokio::test]
    async fn a_listener_whose_read_loop_dies_fails_the_health_and_is_named() {
        let health = Health::new();
        let relay = TurnRelay::start(config(), health.clone()).await.unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&[0u8; 24], relay.local_addr()).await.unwrap();
        tokio::task::yield_now().await;
        assert!(health.is_healthy(), "garbage is dropped; the listener lives");

        relay.break_udp_listener();
        client.send_to(&[0u8; 24], relay.local_addr()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), health.failed()).await.expect("the death is reported");
        let failures = health.failures();
        let name = format!("turn udp listener {}", relay.local_addr());
        assert!(failures.iter().any(|f| f.task == name), "{failures:?}");
        relay.close().await.unwrap();
    }

    /// Closing the relay ends the read loops too; that is no failure.
    #[tokio::test]
    async fn closing_the_relay_is_not_a_failure() {
        let health = Health::new();
        let relay = TurnRelay::start(
            TurnConfig { tcp_listen: Some("127.0.0.1:0".parse().unwrap()), ..config() },
            health.clone(),
        )
        .await
        .unwrap();
        relay.close().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(health.is_healthy(), "{:?}", health.failures());
    }
}
