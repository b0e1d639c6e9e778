//! `[turn]` and a TURN relay's resolved configuration.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::{default_addr, ConfigError};

/// `[turn]`: the region's TURN relay.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct TurnSection {
    /// UDP listen address (default `0.0.0.0:3478`).
    #[arg(long = "turn-listen", env = "MERIDIAN_TURN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address put in XOR-RELAYED-ADDRESS, reachable by clients (default: the listen IP; required when that is a wildcard).
    #[arg(long = "turn-relay-ip", env = "MERIDIAN_TURN_RELAY_IP")]
    pub relay_ip: Option<IpAddr>,
    /// Realm of the long-term credential mechanism (default `meridian`).
    #[arg(long = "turn-realm", env = "MERIDIAN_TURN_REALM")]
    pub realm: Option<String>,
    /// TURN REST API secret (the SFU mints credentials with the same one). Required.
    #[arg(long = "turn-secret", env = "MERIDIAN_TURN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// UDP receive buffer in bytes (default 4194304).
    #[arg(long = "turn-recv-buffer", env = "MERIDIAN_TURN_RECV_BUFFER")]
    pub recv_buffer_bytes: Option<usize>,
    /// Where to serve Prometheus `/metrics` (default none).
    #[arg(long = "turn-metrics-listen", env = "MERIDIAN_TURN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Peer ranges (CIDR) relayed to despite the default block list, e.g. the
    /// region's SFU nodes (default none).
    #[arg(long = "turn-allow-peer", env = "MERIDIAN_TURN_ALLOW_PEERS", value_delimiter = ',')]
    #[serde(default)]
    pub allow_peers: Vec<ipnet::IpNet>,
    /// Peer ranges (CIDR) never relayed to, even if allowed (default none).
    #[arg(long = "turn-deny-peer", env = "MERIDIAN_TURN_DENY_PEERS", value_delimiter = ',')]
    #[serde(default)]
    pub deny_peers: Vec<ipnet::IpNet>,
    /// TCP listen address for `turn:HOST:PORT?transport=tcp` (default: the UDP `listen` address).
    #[arg(long = "turn-tcp-listen", env = "MERIDIAN_TURN_TCP_LISTEN")]
    pub tcp_listen: Option<SocketAddr>,
    /// TLS listen address for `turns:` (default `0.0.0.0:5349` when `tls_cert` is set).
    #[arg(long = "turn-tls-listen", env = "MERIDIAN_TURN_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TURN over TLS (default none: no TLS listener). Reloaded on SIGHUP.
    #[arg(long = "turn-tls-cert", env = "MERIDIAN_TURN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[arg(long = "turn-tls-key", env = "MERIDIAN_TURN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Allocations per REST username, i.e. per participant (default 32); more get 486.
    #[arg(long = "turn-user-quota", env = "MERIDIAN_TURN_USER_QUOTA")]
    pub user_quota: Option<usize>,
    /// Allocations on this relay (default 20000); more get 486.
    #[arg(long = "turn-total-quota", env = "MERIDIAN_TURN_TOTAL_QUOTA")]
    pub total_quota: Option<usize>,
    /// Bits per second per allocation and direction before packets are dropped, 0 for no cap (default 20000000).
    #[arg(long = "turn-bandwidth-cap", env = "MERIDIAN_TURN_BANDWIDTH_CAP")]
    pub bandwidth_cap: Option<u64>,
}

/// A resolved `[turn]` section: the relay's configuration, minus the TLS acceptor
/// that the role builds from `tls` (so that it can reload it).
#[derive(Debug)]
pub struct TurnRole {
    /// The relay configuration, with `tls` unset.
    pub relay: meridian_turn::TurnConfig,
    /// TLS listen address, certificate and key.
    pub tls: Option<(SocketAddr, PathBuf, PathBuf)>,
    /// Prometheus listener.
    pub metrics_listen: Option<SocketAddr>,
}

impl TurnSection {
    /// `self` (flags) over `file`.
    pub fn over(&self, file: &Self) -> Self {
        overlay!(
            self,
            file,
            [
                listen,
                relay_ip,
                realm,
                secret,
                recv_buffer_bytes,
                metrics_listen,
                tcp_listen,
                tls_listen,
                tls_cert,
                tls_key,
                user_quota,
                total_quota,
                bandwidth_cap
            ],
            [allow_peers, deny_peers]
        )
    }
}

/// Default TURN listen address.
pub const DEFAULT_TURN_LISTEN: &str = "0.0.0.0:3478";
/// Default TURN-over-TLS listen address.
pub const DEFAULT_TURN_TLS_LISTEN: &str = "0.0.0.0:5349";

impl TurnSection {
    /// Checks and fills defaults.
    pub fn resolve(&self) -> Result<TurnRole, ConfigError> {
        let listen = self.listen.unwrap_or_else(|| default_addr(DEFAULT_TURN_LISTEN));
        let relay_ip = match self.relay_ip {
            Some(ip) => ip,
            None if listen.ip().is_unspecified() => {
                return Err(ConfigError::Missing {
                    key: "turn.relay_ip",
                    why: "turn.listen is a wildcard address; say which address clients relay through",
                })
            }
            None => listen.ip(),
        };
        let secret = self.secret.clone().ok_or(ConfigError::Missing {
            key: "turn.secret",
            why: "the TURN REST API secret (the SFU mints credentials with it)",
        })?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((
                self.tls_listen.unwrap_or_else(|| default_addr(DEFAULT_TURN_TLS_LISTEN)),
                cert.clone(),
                key.clone(),
            )),
            (Some(_), None) => {
                return Err(ConfigError::Missing { key: "turn.tls_key", why: "the key for turn.tls_cert" })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing { key: "turn.tls_cert", why: "the certificate for turn.tls_key" })
            }
            (None, None) if self.tls_listen.is_some() => {
                return Err(ConfigError::Missing { key: "turn.tls_cert", why: "turn.tls_listen serves TLS" })
            }
            (None, None) => None,
        };
        Ok(TurnRole {
            relay: meridian_turn::TurnConfig {
                listen,
                relay_ip,
                realm: self.realm.clone().unwrap_or_else(|| meridian_turn::DEFAULT_REALM.into()),
                secret: secret.into_bytes(),
                recv_buffer_bytes: self.recv_buffer_bytes.unwrap_or(meridian_turn::DEFAULT_RECV_BUFFER_BYTES),
                peer_policy: meridian_turn::policy::PeerPolicy::new(self.allow_peers.clone(), self.deny_peers.clone()),
                tcp_listen: Some(self.tcp_listen.unwrap_or(listen)),
                tls: None,
                max_stream_connections: meridian_turn::stream::DEFAULT_MAX_STREAM_CONNECTIONS,
                user_quota: self.user_quota.unwrap_or(meridian_turn::gate::DEFAULT_USER_QUOTA),
                total_quota: self.total_quota.unwrap_or(meridian_turn::gate::DEFAULT_TOTAL_QUOTA),
                // The file's (and the flag's) 0 means no cap.
                bandwidth_cap: match self.bandwidth_cap {
                    Some(bits_per_second) => std::num::NonZeroU64::new(bits_per_second),
                    None => Some(meridian_turn::DEFAULT_BANDWIDTH_CAP),
                },
            },
            tls,
            metrics_listen: self.metrics_listen,
        })
    }
}
