//! One configuration format for every role: a TOML file (`--config FILE`) with
//! sections `[api]`, `[database]`, `[gateway]`, `[sfu]` and `[turn]`; every key can
//! also be given as a flag (`--gateway-listen`) or an environment variable
//! (`MERIDIAN_GATEWAY_LISTEN`). Precedence: flag or environment, then file, then
//! the default. `docs/meridian.example.toml` lists every key with its default,
//! unit and meaning; a test keeps it parseable.
//!
//! Each section parses into `Option`s ([`ConfigFile`]), and a role resolves the
//! sections it needs into a typed config, with [`ConfigError`] naming the key that
//! is wrong. This file holds the format and the shared sections (`[api]`,
//! `[database]`); each role's section and resolved config has its own file
//! (`gateway.rs`, `sfu.rs`, `turn.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

/// `[webhook]`: where LiveKit-style webhooks go (`meridian_sfu::webhook`).
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// URLs that get every event (`http://` or `https://`), each in order per
    /// room. HTTPS trusts the system's CAs, or `SSL_CERT_FILE` / `SSL_CERT_DIR`
    /// when set. Flag repeatable; `MERIDIAN_WEBHOOK_URLS` comma-separated.
    /// Default: none.
    #[arg(id = "webhook_urls", long = "webhook-url", env = "MERIDIAN_WEBHOOK_URLS", value_delimiter = ',')]
    #[serde(default)]
    pub urls: Vec<String>,
    /// The API key whose secret signs deliveries (LiveKit's `webhook.api_key`);
    /// it must be `api.key`, the one key Meridian has. Default: `api.key`.
    #[arg(id = "webhook_api_key", long = "webhook-api-key", env = "MERIDIAN_WEBHOOK_API_KEY")]
    pub api_key: Option<String>,
}

impl WebhookSection {
    /// `self` (flags) over `file`.
    pub fn over(&self, file: &Self) -> Self {
        overlay!(self, file, [api_key], [urls])
    }

    /// The URLs, checked; `api_key` is the configured API key.
    ///
    /// Errors: a URL that is not `http(s)://host[:port][/path]`, or a
    /// `webhook.api_key` that is not `api.key`.
    pub fn resolve(&self, api_key: &str) -> Result<Vec<String>, ConfigError> {
        if self.api_key.as_deref().is_some_and(|k| k != api_key) {
            return Err(ConfigError::Invalid {
                key: "webhook.api_key",
                why: "must be api.key: deliveries are signed with api.secret".into(),
            });
        }
        for url in &self.urls {
            let ok = url
                .parse::<hyper::Uri>()
                .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "webhook.urls",
                    why: format!("{url:?} is not an http:// or https:// URL"),
                });
            }
        }
        Ok(self.urls.clone())
    }
}

mod gateway;
mod sfu;
mod turn;

pub use gateway::{GatewayRole, GatewaySection, DEFAULT_GATEWAY_LISTEN};
pub use sfu::{SfuRole, SfuSection, DEFAULT_DRAIN_GRACE, DEFAULT_SFU_LISTEN};
pub use turn::{TurnRole, TurnSection, DEFAULT_TURN_LISTEN, DEFAULT_TURN_TLS_LISTEN};

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
    /// `[webhook]`.
    #[serde(default)]
    pub webhook: WebhookSection,
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

fn default_addr(s: &str) -> SocketAddr {
    // The constants above are valid socket addresses.
    s.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_resolves_for_every_role() {
        let example = include_str!("../../docs/meridian.example.toml");
        let file = ConfigFile::parse(example).expect("docs/meridian.example.toml parses");
        file.api.required().expect("api");
        file.database.required().expect("database");
        let gw = file.gateway.resolve().expect("gateway");
        assert_eq!(gw.default_region, "eu-west");
        let sfu = file.sfu.resolve().expect("sfu");
        assert_eq!((sfu.region.as_str(), sfu.capacity), ("eu-west", 500));
        assert_eq!((sfu.udp_port, sfu.tcp_port), (Some(7882), Some(7883)));
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
        let local =
            || SfuSection { region: Some("eu".into()), advertise: Some("10.0.0.1:7881".into()), ..Default::default() };
        let retired = ConfigFile::parse("[sfu]\nice_port_range_start = 50000\nice_port_range_end = 60000\n").unwrap();
        let e = retired.sfu.over(&local()).resolve().unwrap_err().to_string();
        assert!(e.contains("sfu.ice_port_range_start") && e.contains("sfu.udp_port"), "a retired key says why: {e}");
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
