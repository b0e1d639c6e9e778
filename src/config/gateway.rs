//! `[gateway]` and the gateway's resolved configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use meridian_ids::RegionId;
use serde::Deserialize;

use super::{default_addr, ConfigError};

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

/// Default gateway listen address.
pub const DEFAULT_GATEWAY_LISTEN: &str = "0.0.0.0:7880";

/// A resolved gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayRole {
    /// Listen address.
    pub listen: SocketAddr,
    /// URL handed out with tokens.
    pub public_url: String,
    /// Default region.
    pub default_region: RegionId,
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
        let default_region = self.default_region.clone().map(RegionId::new).ok_or(ConfigError::Missing {
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
