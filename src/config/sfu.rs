//! `[sfu]` and an SFU node's resolved configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use meridian_ids::{NodeId, RegionId};
use serde::Deserialize;

use super::{default_addr, ConfigError};

/// `[sfu]`: one SFU node of a region.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct SfuSection {
    /// Region id, e.g. `eu-west`. Required.
    #[arg(long = "sfu-region", env = "MERIDIAN_SFU_REGION")]
    pub region: Option<String>,
    /// Region latitude in degrees, for nearest-region routing (default none).
    #[arg(long = "sfu-latitude", env = "MERIDIAN_SFU_LATITUDE", allow_hyphen_values = true)]
    pub latitude: Option<f64>,
    /// Region longitude in degrees (default none).
    #[arg(long = "sfu-longitude", env = "MERIDIAN_SFU_LONGITUDE", allow_hyphen_values = true)]
    pub longitude: Option<f64>,
    /// Node id, unique across regions (default `<region>-<hostname>`).
    #[arg(long = "sfu-node-id", env = "MERIDIAN_SFU_NODE_ID")]
    pub node_id: Option<String>,
    /// Signal listen address (default `0.0.0.0:7881`).
    #[arg(long = "sfu-listen", env = "MERIDIAN_SFU_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address gateways connect to (default `listen`; required when `listen` is a wildcard).
    #[arg(long = "sfu-advertise", env = "MERIDIAN_SFU_ADVERTISE")]
    pub advertise: Option<String>,
    /// Participants before the node counts as full (default 500).
    #[arg(long = "sfu-capacity", env = "MERIDIAN_SFU_CAPACITY")]
    pub capacity: Option<u32>,
    /// TURN URLs handed to clients, e.g. `turn:turn.eu.example.com:3478?transport=udp` (default none).
    #[arg(long = "sfu-turn-url", env = "MERIDIAN_SFU_TURN_URLS", value_delimiter = ',')]
    #[serde(default)]
    pub turn_urls: Vec<String>,
    /// TURN REST API secret shared with the region's relay. Required with `turn_urls`.
    #[arg(long = "sfu-turn-secret", env = "MERIDIAN_SFU_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// The relay's UDP `host:port` to probe with a STUN Binding request each
    /// heartbeat; unanswered three times in a row, the node leaves the registry
    /// until it answers. `off` disables it (default: the first `turn:` UDP URL).
    #[arg(long = "sfu-turn-probe", env = "MERIDIAN_SFU_TURN_PROBE")]
    pub turn_probe: Option<String>,
    /// Offer loopback ICE candidates (tests and single-host setups; default false).
    #[arg(long = "sfu-include-loopback", env = "MERIDIAN_SFU_INCLUDE_LOOPBACK")]
    pub include_loopback: Option<bool>,
    /// Retired: publisher PCs bound a port of this range each while they ran
    /// on webrtc-rs; every PC shares `udp_port` (and `tcp_port`) now. Set, it
    /// is refused with that reason, so a firewall opened for the range is
    /// not left open while the node listens elsewhere.
    #[arg(skip)]
    pub ice_port_range_start: Option<u16>,
    /// Retired with `ice_port_range_start`.
    #[arg(skip)]
    pub ice_port_range_end: Option<u16>,
    /// The one UDP port every peer connection of the node shares, publisher
    /// and subscriber (LiveKit's `rtc.udp_port`; default none: an ephemeral
    /// port, which the candidates name). A firewall opens it and `tcp_port`.
    #[arg(long = "sfu-udp-port", env = "MERIDIAN_SFU_UDP_PORT")]
    pub udp_port: Option<u16>,
    /// The node's one TCP port for ICE over TCP (RFC 6544; LiveKit's
    /// `rtc.tcp_port`), for clients whose network lets no UDP through; bound
    /// on the same address as `udp_port` (default none: an ephemeral port,
    /// which the candidates name).
    #[arg(long = "sfu-tcp-port", env = "MERIDIAN_SFU_TCP_PORT")]
    pub tcp_port: Option<u16>,
    /// The node's public IP behind a 1:1 NAT (a cloud's elastic IP), put in its
    /// ICE host candidates in place of the host's own (LiveKit's `rtc.node_ip`;
    /// default none: the host's addresses).
    #[arg(long = "sfu-node-ip", env = "MERIDIAN_SFU_NODE_IP")]
    pub node_ip: Option<std::net::IpAddr>,
    /// Seconds a draining node (SIGTERM) waits for its rooms to empty before it stops (default 30).
    #[arg(long = "sfu-drain-grace", env = "MERIDIAN_SFU_DRAIN_GRACE")]
    pub drain_grace: Option<u64>,
    /// Where to serve Prometheus `/metrics` (default none).
    #[arg(long = "sfu-metrics-listen", env = "MERIDIAN_SFU_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl SfuSection {
    /// `self` (flags) over `file`.
    pub fn over(&self, file: &Self) -> Self {
        overlay!(
            self,
            file,
            [
                region,
                latitude,
                longitude,
                node_id,
                listen,
                advertise,
                capacity,
                turn_secret,
                turn_probe,
                include_loopback,
                ice_port_range_start,
                ice_port_range_end,
                udp_port,
                tcp_port,
                node_ip,
                drain_grace,
                metrics_listen
            ],
            [turn_urls]
        )
    }
}

/// Default SFU signal listen address.
pub const DEFAULT_SFU_LISTEN: &str = "0.0.0.0:7881";
/// Default drain grace period of an SFU node.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);

/// A resolved SFU configuration.
#[derive(Debug, Clone)]
pub struct SfuRole {
    /// Region id.
    pub region: RegionId,
    /// Region position.
    pub position: Option<(f64, f64)>,
    /// Node id.
    pub node_id: NodeId,
    /// Signal listen address.
    pub listen: SocketAddr,
    /// Address gateways connect to.
    pub advertise: String,
    /// Capacity in participants.
    pub capacity: u32,
    /// TURN URLs and secret.
    pub turn: Option<(Vec<String>, String)>,
    /// The TURN relay's UDP `host:port` probed each heartbeat (`None`: off).
    pub turn_probe: Option<String>,
    /// Offer loopback candidates.
    pub include_loopback: bool,
    /// The peer connections' one UDP port (`None`: ephemeral).
    pub udp_port: Option<u16>,
    /// The ICE/TCP port (`None`: ephemeral).
    pub tcp_port: Option<u16>,
    /// The public IP put in ICE host candidates, behind a 1:1 NAT.
    pub node_ip: Option<std::net::IpAddr>,
    /// Drain grace period.
    pub drain_grace: Duration,
    /// Where `/metrics` is served.
    pub metrics_listen: Option<SocketAddr>,
    /// Webhook URLs (from `[webhook]`; empty: none).
    pub webhook_urls: Vec<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".into())
}

impl SfuSection {
    /// Checks and fills defaults.
    pub fn resolve(&self) -> Result<SfuRole, ConfigError> {
        let region = self
            .region
            .clone()
            .map(RegionId::new)
            .ok_or(ConfigError::Missing { key: "sfu.region", why: "the region this node serves" })?;
        let position = match (self.latitude, self.longitude) {
            (Some(la), Some(lo)) if (-90.0..=90.0).contains(&la) && (-180.0..=180.0).contains(&lo) => Some((la, lo)),
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "sfu.latitude",
                    why: "latitude -90..90, longitude -180..180".into(),
                })
            }
            (None, None) => None,
            _ => return Err(ConfigError::Missing { key: "sfu.longitude", why: "latitude and longitude go together" }),
        };
        let listen = self.listen.unwrap_or_else(|| default_addr(DEFAULT_SFU_LISTEN));
        let advertise = match &self.advertise {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => {
                return Err(ConfigError::Missing {
                    key: "sfu.advertise",
                    why: "sfu.listen is a wildcard address; say where gateways reach this node (host:port)",
                })
            }
            None => listen.to_string(),
        };
        let turn = match (self.turn_urls.is_empty(), &self.turn_secret) {
            (true, _) => None,
            (false, Some(secret)) => Some((self.turn_urls.clone(), secret.clone())),
            (false, None) => {
                return Err(ConfigError::Missing { key: "sfu.turn_secret", why: "credentials for sfu.turn_urls" })
            }
        };
        if self.ice_port_range_start.is_some() || self.ice_port_range_end.is_some() {
            return Err(ConfigError::Invalid {
                key: "sfu.ice_port_range_start",
                why: "no longer used: every peer connection shares sfu.udp_port, and ICE over TCP \
                      sfu.tcp_port; open those in the firewall instead of a range"
                    .into(),
            });
        }
        Ok(SfuRole {
            node_id: NodeId::new(self.node_id.clone().unwrap_or_else(|| format!("{region}-{}", hostname()))),
            region,
            position,
            listen,
            advertise,
            capacity: self.capacity.unwrap_or(meridian_sfu::DEFAULT_CAPACITY),
            turn_probe: match self.turn_probe.as_deref() {
                Some("off") => None,
                Some(target) => Some(target.to_owned()),
                None => meridian_sfu::turn_probe::probe_target(&self.turn_urls),
            },
            turn,
            include_loopback: self.include_loopback.unwrap_or(false),
            udp_port: self.udp_port.filter(|p| *p != 0),
            tcp_port: self.tcp_port.filter(|p| *p != 0),
            node_ip: self.node_ip,
            drain_grace: self.drain_grace.map(Duration::from_secs).unwrap_or(DEFAULT_DRAIN_GRACE),
            metrics_listen: self.metrics_listen,
            webhook_urls: Vec::new(),
        })
    }
}
