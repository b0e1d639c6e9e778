//! One configuration format for every role: a TOML file (`--config FILE`) with
//! sections `[api]`, `[database]`, `[gateway]`, `[sfu]` and `[turn]`; every key can
//! also be given as a flag (`--gateway-listen`) or an environment variable
//! (`MERIDIAN_GATEWAY_LISTEN`). Precedence: flag or environment, then file, then
//! the default. `docs/meridian.example.toml` lists every key with its default,
//! unit and meaning; a test keeps it parseable.
//!
//! Each section parses into `Option`s ([`ConfigFile`]), and a role resolves the
//! sections it needs into a typed config, with [`ConfigError`] naming the key that
//! is wrong.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// A configuration key that is missing or wrong. The operator's fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this format.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A key is required and absent.
    #[error("missing {key}: {why}")]
    Missing {
        /// `section.key`.
        key: &'static str,
        /// What it is for.
        why: &'static str,
    },
    /// A key has a value this role cannot use.
    #[error("invalid {key}: {why}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// `[api]`: the API key pair that signs and checks join tokens.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// API key: the `iss` of join tokens. No default for gateway and sfu.
    #[arg(long = "api-key", env = "MERIDIAN_API_KEY")]
    pub key: Option<String>,
    /// API secret that signs join tokens (HS256). No default for gateway and sfu.
    #[arg(long = "api-secret", env = "MERIDIAN_API_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// `[database]`: the Postgres holding rooms, tokens and the node registry.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// Postgres URL, e.g. `postgres://meridian@db:5432/meridian`. Required by gateway and sfu.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub url: Option<String>,
}

/// `[gateway]`: the edge that mints tokens, routes joins and proxies `/rtc`.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Listen address (default `0.0.0.0:7880`).
    #[arg(long = "gateway-listen", env = "MERIDIAN_GATEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// URL handed out with tokens, e.g. `wss://rtc.example.com` (default derived from `listen`).
    #[arg(long = "gateway-public-url", env = "MERIDIAN_GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Region for clients that cannot be located. Required.
    #[arg(long = "gateway-default-region", env = "MERIDIAN_GATEWAY_DEFAULT_REGION")]
    pub default_region: Option<String>,
    /// Proxies (CIDRs) whose `Forwarded`/`X-Forwarded-For` are believed (default none).
    #[arg(long = "gateway-trusted-proxy", env = "MERIDIAN_GATEWAY_TRUSTED_PROXIES", value_delimiter = ',')]
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// MaxMind-format City database (default none: every client goes to the default region).
    #[arg(long = "gateway-geoip-db", env = "MERIDIAN_GATEWAY_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// PEM certificate chain for HTTPS/WSS; reloaded on SIGHUP.
    #[arg(long = "gateway-tls-cert", env = "MERIDIAN_GATEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[arg(long = "gateway-tls-key", env = "MERIDIAN_GATEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (only behind a TLS-terminating load balancer; default false).
    #[arg(long = "gateway-plain-http", env = "MERIDIAN_GATEWAY_PLAIN_HTTP")]
    pub plain_http: Option<bool>,
    /// Bound on concurrent connections (default 10000).
    #[arg(long = "gateway-max-connections", env = "MERIDIAN_GATEWAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// The livekit-client browser build for the demo page (default none).
    #[arg(long = "gateway-client-js", env = "MERIDIAN_GATEWAY_CLIENT_JS")]
    pub client_js: Option<PathBuf>,
}

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
    /// Seconds a draining node (SIGTERM) waits for its rooms to empty before it stops (default 30).
    #[arg(long = "sfu-drain-grace", env = "MERIDIAN_SFU_DRAIN_GRACE")]
    pub drain_grace: Option<u64>,
    /// Where to serve Prometheus `/metrics` (default none).
    #[arg(long = "sfu-metrics-listen", env = "MERIDIAN_SFU_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

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

/// The whole file; every section and key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[api]`.
    #[serde(default)]
    pub api: ApiSection,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseSection,
    /// `[gateway]`.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// `[sfu]`.
    #[serde(default)]
    pub sfu: SfuSection,
    /// `[turn]`.
    #[serde(default)]
    pub turn: TurnSection,
}

impl ConfigFile {
    /// Reads and parses `path`; `None` gives an empty file (all defaults).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Flag/environment values win over the file's.
macro_rules! overlay {
    ($cli:expr, $file:expr, [$($field:ident),*], [$($list:ident),*]) => {{
        let (cli, file) = ($cli, $file);
        let mut out = file.clone();
        $( if cli.$field.is_some() { out.$field = cli.$field.clone(); } )*
        $( if !cli.$list.is_empty() { out.$list = cli.$list.clone(); } )*
        out
    }};
}

impl ApiSection {
    /// `self` (flags) over `file`.
    pub fn over(&self, file: &Self) -> Self {
        overlay!(self, file, [key, secret], [])
    }

    /// The key pair; both are required outside `meridian dev`.
    pub fn required(&self) -> Result<(String, String), ConfigError> {
        let key =
            self.key.clone().ok_or(ConfigError::Missing { key: "api.key", why: "the API key join tokens carry" })?;
        let secret = self
            .secret
            .clone()
            .ok_or(ConfigError::Missing { key: "api.secret", why: "the secret that signs join tokens" })?;
        if secret.len() < 16 {
            return Err(ConfigError::Invalid { key: "api.secret", why: "must be at least 16 characters".into() });
        }
        Ok((key, secret))
    }
}

impl DatabaseSection {
    /// `self` (flags) over `file`.
    pub fn over(&self, file: &Self) -> Self {
        overlay!(self, file, [url], [])
    }

    /// The URL, required by roles that share state across processes.
    pub fn required(&self) -> Result<String, ConfigError> {
        self.url.clone().ok_or(ConfigError::Missing {
            key: "database.url",
            why: "gateways and SFU nodes share rooms and the node registry through Postgres; \
                  the memory store is private to one process (use `meridian dev` for that)",
        })
    }
}

impl GatewaySection {
    /// `self` (flags) over `file`.
    pub fn over(&self, file: &Self) -> Self {
        overlay!(
            self,
            file,
            [listen, public_url, default_region, geoip_db, tls_cert, tls_key, plain_http, max_connections, client_js],
            [trusted_proxies]
        )
    }
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
                drain_grace,
                metrics_listen
            ],
            [turn_urls]
        )
    }
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

/// Default gateway listen address.
pub const DEFAULT_GATEWAY_LISTEN: &str = "0.0.0.0:7880";
/// Default SFU signal listen address.
pub const DEFAULT_SFU_LISTEN: &str = "0.0.0.0:7881";
/// Default TURN listen address.
pub const DEFAULT_TURN_LISTEN: &str = "0.0.0.0:3478";
/// Default TURN-over-TLS listen address.
pub const DEFAULT_TURN_TLS_LISTEN: &str = "0.0.0.0:5349";
/// Default drain grace period of an SFU node.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);

fn default_addr(s: &str) -> SocketAddr {
    // The constants above are valid socket addresses.
    s.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// A resolved gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayRole {
    /// Listen address.
    pub listen: SocketAddr,
    /// URL handed out with tokens.
    pub public_url: String,
    /// Default region.
    pub default_region: String,
    /// Trusted proxies.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// City database.
    pub geoip_db: Option<PathBuf>,
    /// Certificate and key, when serving TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connection bound.
    pub max_connections: usize,
    /// Demo page client build.
    pub client_js: Option<PathBuf>,
    /// Whether `POST /dev/token` mints tokens without API credentials: never from
    /// a config file, only `meridian dev` sets it.
    pub dev_tokens: bool,
}

impl GatewaySection {
    /// Checks and fills defaults.
    pub fn resolve(&self) -> Result<GatewayRole, ConfigError> {
        let listen = self.listen.unwrap_or_else(|| default_addr(DEFAULT_GATEWAY_LISTEN));
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (Some(_), None) => {
                return Err(ConfigError::Missing { key: "gateway.tls_key", why: "the key for gateway.tls_cert" })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    key: "gateway.tls_cert",
                    why: "the certificate for gateway.tls_key",
                })
            }
            (None, None) => None,
        };
        if tls.is_none() && !self.plain_http.unwrap_or(false) {
            return Err(ConfigError::Missing {
                key: "gateway.tls_cert",
                why: "the gateway serves HTTPS/WSS; give tls_cert and tls_key, or set gateway.plain_http = true \
                      behind a TLS-terminating load balancer",
            });
        }
        let default_region = self.default_region.clone().ok_or(ConfigError::Missing {
            key: "gateway.default_region",
            why: "where clients that cannot be located go",
        })?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        Ok(GatewayRole {
            listen,
            public_url: self.public_url.clone().unwrap_or_else(|| format!("{scheme}://{listen}")),
            default_region,
            trusted_proxies: self.trusted_proxies.clone(),
            geoip_db: self.geoip_db.clone(),
            tls,
            max_connections: self.max_connections.unwrap_or(meridian_gateway::DEFAULT_MAX_CONNECTIONS),
            client_js: self.client_js.clone(),
            dev_tokens: false,
        })
    }
}

/// A resolved SFU configuration.
#[derive(Debug, Clone)]
pub struct SfuRole {
    /// Region id.
    pub region: String,
    /// Region position.
    pub position: Option<(f64, f64)>,
    /// Node id.
    pub node_id: String,
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
    /// Drain grace period.
    pub drain_grace: Duration,
    /// Where `/metrics` is served.
    pub metrics_listen: Option<SocketAddr>,
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
        Ok(SfuRole {
            node_id: self.node_id.clone().unwrap_or_else(|| format!("{region}-{}", hostname())),
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
            drain_grace: self.drain_grace.map(Duration::from_secs).unwrap_or(DEFAULT_DRAIN_GRACE),
            metrics_listen: self.metrics_listen,
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_resolves_for_every_role() {
        let example = include_str!("../docs/meridian.example.toml");
        let file = ConfigFile::parse(example).expect("docs/meridian.example.toml parses");
        file.api.required().expect("api");
        file.database.required().expect("database");
        let gw = file.gateway.resolve().expect("gateway");
        assert_eq!(gw.default_region, "eu-west");
        let sfu = file.sfu.resolve().expect("sfu");
        assert_eq!((sfu.region.as_str(), sfu.capacity), ("eu-west", 500));
        let turn = file.turn.resolve().expect("turn");
        assert_eq!(turn.relay.tcp_listen, Some(turn.relay.listen), "TCP on the UDP port by default");
        assert_eq!(turn.tls.map(|t| t.0.port()), Some(5349));
    }

    #[test]
    fn errors_name_the_key() {
        let file = ConfigFile::parse("[gateway]\ndefault_region = \"eu\"\n").unwrap();
        let e = file.gateway.resolve().unwrap_err().to_string();
        assert!(e.contains("gateway.tls_cert") && e.contains("plain_http"), "{e}");
        let e = ConfigFile::parse("[gateway]\nlisten = \"nope\"\n").unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = ConfigFile::parse("[gateway]\nlisen = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(e.contains("lisen"), "unknown keys are refused: {e}");
        let sfu = SfuSection { region: Some("eu".into()), ..Default::default() };
        assert!(sfu.resolve().unwrap_err().to_string().contains("sfu.advertise"));
        assert!(DatabaseSection::default().required().unwrap_err().to_string().contains("database.url"));
        let turn = TurnSection { relay_ip: Some([203, 0, 113, 5].into()), ..Default::default() };
        assert!(turn.resolve().unwrap_err().to_string().contains("turn.secret"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file =
            GatewaySection { listen: Some(default_addr("127.0.0.1:1")), plain_http: Some(true), ..Default::default() };
        let cli = GatewaySection { listen: Some(default_addr("127.0.0.1:2")), ..Default::default() };
        let merged = cli.over(&file);
        assert_eq!((merged.listen, merged.plain_http), (Some(default_addr("127.0.0.1:2")), Some(true)));
    }

    #[test]
    fn a_turn_bandwidth_cap_of_0_is_no_cap_and_none_given_is_the_default() {
        let cap = |line: &str| {
            let file = ConfigFile::parse(&format!("[turn]\nrelay_ip = \"203.0.113.5\"\nsecret = \"s\"\n{line}"));
            file.expect("parses").turn.resolve().expect("resolves").relay.bandwidth_cap.map(|c| c.get())
        };
        assert_eq!(cap("bandwidth_cap = 0"), None);
        assert_eq!(cap(""), Some(meridian_turn::DEFAULT_BANDWIDTH_CAP.get()));
        assert_eq!(cap("bandwidth_cap = 8000"), Some(8000));
    }
}
