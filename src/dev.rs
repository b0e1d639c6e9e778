//! `meridian dev`: the whole of Meridian in one process: a gateway, one SFU
//! node and one TURN relay per region (default: one region, `local`), and a
//! store (memory, or Postgres with a URL).
//!
//! It is built from the production roles and nothing else: each role's
//! configuration section is filled in with loopback defaults, resolved as a
//! config file's would be ([`crate::config`]), and started by the same builders
//! ([`roles::start_turn`], [`roles::start_sfu`], [`roles::build_gateway`]).
//! What dev adds: one store, one metrics registry and one [`Health`] for all the
//! roles, ephemeral ports on request (port 0), a self-signed TURN certificate,
//! and dev tokens on the gateway (`POST /dev/token`).
//!
//! [`start_dev`] binds everything and returns a [`DevStack`] with the bound
//! addresses; [`DevStack::shutdown`] stops it. The end-to-end tests under
//! `tests/` start stacks on ephemeral ports the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use meridian_auth::TokenAuthority;
use meridian_geo::Position;
use meridian_ids::{NodeId, RegionId};
use meridian_runtime::Health;
use meridian_schema::Store;
use meridian_sfu::metrics::SfuMetrics;
use meridian_turn::metrics::TurnMetrics;
use meridian_turn::TurnRelay;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{GatewaySection, SfuSection, TurnSection};
use crate::roles::{self, RunningNode, Shared};

/// Default development API key (printed with a warning at start).
pub const DEV_API_KEY: &str = "devkey";
/// Default development API secret (printed with a warning at start).
pub const DEV_API_SECRET: &str = "secret";
/// The region `meridian dev` runs.
pub const DEV_REGION: &str = "local";
/// Where `npm ci --prefix web` puts the livekit-client browser build.
pub const CLIENT_JS: &str = "web/node_modules/livekit-client/dist/livekit-client.umd.js";

/// What to run. Port 0 picks an ephemeral port.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Address every listener binds to, and the TURN relay advertises (default 127.0.0.1).
    pub bind: IpAddr,
    /// Gateway port (default 7880).
    pub port: u16,
    /// SFU node signal port (default 7881).
    pub sfu_port: u16,
    /// TURN relay UDP and TCP port (default 3478).
    pub turn_port: u16,
    /// TURN relay TLS port (default 5349).
    pub turn_tls_port: u16,
    /// Certificate and key (PEM) for TURN over TLS; `None` generates a self-signed
    /// pair for the bind address and `localhost`.
    pub turn_tls: Option<(PathBuf, PathBuf)>,
    /// Peer ranges the relays relay to despite the block list (the bind address is always allowed).
    pub turn_allow_peers: Vec<ipnet::IpNet>,
    /// Peer ranges the relays never relay to.
    pub turn_deny_peers: Vec<ipnet::IpNet>,
    /// API key (default [`DEV_API_KEY`]).
    pub api_key: String,
    /// API secret (default [`DEV_API_SECRET`]).
    pub api_secret: String,
    /// TURN REST API secret shared by SFU and relay.
    pub turn_secret: String,
    /// Webhook URLs (`[webhook] urls`); empty: none.
    pub webhook_urls: Vec<String>,
    /// Postgres URL; `None` runs on the memory store.
    pub database_url: Option<String>,
    /// MaxMind-format City database for geolocation.
    pub geoip_db: Option<PathBuf>,
    /// The livekit-client browser build for the demo page.
    pub client_js: Option<PathBuf>,
    /// Regions to run, one SFU node and TURN relay each (default: one, [`DEV_REGION`],
    /// with no position). Region *i* gets ports `sfu_port + i`, `turn_port + i` and
    /// `turn_tls_port + i`.
    pub regions: Vec<DevRegion>,
    /// Region for clients that cannot be located (default: the first).
    pub default_region: Option<RegionId>,
    /// Proxies whose forwarding headers the gateway believes.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A region as `--region ID@LAT,LON` (or just `ID`) names it.
#[derive(Debug, Clone, PartialEq)]
pub struct DevRegion {
    /// Region id, e.g. `eu-west`.
    pub id: RegionId,
    /// Where it is, for nearest-region routing.
    pub position: Option<Position>,
}

impl std::str::FromStr for DevRegion {
    type Err = String;

    /// Parses `eu-west@51.51,-0.13` or `local`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, at) = match s.split_once('@') {
            Some((id, at)) => (id, Some(at)),
            None => (s, None),
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("region id {id:?} must be letters, digits, '-' or '_'"));
        }
        let position = match at {
            None => None,
            Some(at) => {
                let (lat, lon) = at.split_once(',').ok_or_else(|| format!("{s:?}: expected ID@LAT,LON"))?;
                let latitude: f64 =
                    lat.trim().parse().map_err(|_| format!("{s:?}: latitude {lat:?} is not a number"))?;
                let longitude: f64 =
                    lon.trim().parse().map_err(|_| format!("{s:?}: longitude {lon:?} is not a number"))?;
                if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
                    return Err(format!("{s:?}: latitude must be -90..90 and longitude -180..180"));
                }
                Some(Position { latitude, longitude })
            }
        };
        Ok(Self { id: id.into(), position })
    }
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 7880,
            sfu_port: 7881,
            turn_port: meridian_turn::DEFAULT_TURN_PORT,
            turn_tls_port: meridian_turn::DEFAULT_TURNS_PORT,
            turn_tls: None,
            turn_allow_peers: Vec::new(),
            turn_deny_peers: Vec::new(),
            api_key: DEV_API_KEY.into(),
            api_secret: DEV_API_SECRET.into(),
            turn_secret: random_secret(),
            webhook_urls: Vec::new(),
            database_url: None,
            geoip_db: None,
            client_js: None,
            regions: vec![DevRegion { id: DEV_REGION.into(), position: None }],
            default_region: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A fresh 32-character alphanumeric secret.
pub fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// One region of a running dev stack.
#[derive(Debug, Clone)]
pub struct RunningRegion {
    /// Region id.
    pub id: RegionId,
    /// Its SFU node's id.
    pub node_id: NodeId,
    /// Its SFU node's signal address.
    pub sfu_addr: SocketAddr,
    /// Its TURN relay's UDP address.
    pub turn_addr: SocketAddr,
    /// Its TURN relay's TCP address.
    pub turn_tcp_addr: SocketAddr,
    /// Its TURN relay's TLS address.
    pub turn_tls_addr: SocketAddr,
}

/// A running dev stack.
pub struct DevStack {
    /// Gateway address (HTTP API, demo page, `/rtc`).
    pub gateway_addr: SocketAddr,
    /// The regions, in the order given.
    pub regions: Vec<RunningRegion>,
    /// The store every component shares.
    pub store: Arc<dyn Store>,
    /// Whether the store is Postgres.
    pub on_postgres: bool,
    /// The livekit-client build the demo page gets, if found.
    pub client_js: Option<PathBuf>,
    /// The TURN TLS certificate in use (generated, unless one was given).
    pub turn_tls_cert: PathBuf,
    stop: watch::Sender<bool>,
    gateway: JoinHandle<()>,
    relays: Vec<TurnRelay>,
    nodes: Vec<RunningNode>,
    health: Health,
}

impl DevStack {
    /// The process's health (what `/healthz` answers). `main` installs the panic
    /// hook for it ([`meridian_runtime::panic::install_hook`]).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Region `id`'s TURN relay.
    pub fn relay(&self, id: &RegionId) -> Option<&TurnRelay> {
        self.regions.iter().position(|r| r.id == *id).map(|at| &self.relays[at])
    }

    /// Puts region `id`'s node into draining (no new rooms), as SIGTERM will.
    ///
    /// Errors: an unknown region, or a store that cannot be reached.
    pub async fn drain_region(&self, id: &RegionId) -> anyhow::Result<()> {
        let at = self.regions.iter().position(|r| r.id == *id).with_context(|| format!("no region {id}"))?;
        self.nodes[at].sfu.drain().await?;
        Ok(())
    }

    /// Stops the gateway and the nodes (they leave the registry), then closes
    /// the TURN relays.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.gateway.await;
        for node in self.nodes {
            node.stop().await;
        }
        for relay in self.relays {
            let _ = relay.close().await;
        }
    }
}

/// The livekit-client build: `flag` if given, else [`CLIENT_JS`] under the working
/// directory or under the repository a `target/<profile>/meridian` binary sits in.
pub fn find_client_js(flag: Option<PathBuf>) -> Option<PathBuf> {
    if flag.is_some() {
        return flag;
    }
    let mut candidates = vec![PathBuf::from(CLIENT_JS)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(repo) = exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()) {
            candidates.push(repo.join(CLIENT_JS));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Writes a self-signed certificate for `ip` and `localhost`, and its key, as PEM
/// files in a fresh directory under the system's temporary directory.
fn self_signed_pair(ip: IpAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let names = vec![ip.to_string(), "localhost".to_owned()];
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(names)?;
    let dir = std::env::temp_dir().join(format!("meridian-dev-{}-{}", std::process::id(), random_secret()));
    std::fs::create_dir_all(&dir)?;
    let (cert_path, key_path) = (dir.join("turn.crt"), dir.join("turn.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key_pair.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// Region `i`'s port: `base + i`, or 0 (any) when `base` is 0.
fn port_of(base: u16, i: usize) -> u16 {
    match (base, u16::try_from(i)) {
        (0, _) => 0,
        (base, Ok(i)) => base.saturating_add(i),
        (_, Err(_)) => u16::MAX,
    }
}

/// Region `i`'s relay, as `[turn]` would configure it: on the bind address,
/// relaying to the bind address (where the co-located node listens) and
/// `allow_peers`, with TLS from `cert`.
fn turn_section(opts: &DevOptions, i: usize, (cert, key): &(PathBuf, PathBuf)) -> TurnSection {
    let udp = SocketAddr::new(opts.bind, port_of(opts.turn_port, i));
    let mut allow_peers = vec![ipnet::IpNet::from(opts.bind)];
    allow_peers.extend(opts.turn_allow_peers.iter().copied());
    TurnSection {
        listen: Some(udp),
        relay_ip: Some(opts.bind),
        secret: Some(opts.turn_secret.clone()),
        allow_peers,
        deny_peers: opts.turn_deny_peers.clone(),
        // Port 0 means "any" for UDP; TCP then takes whatever port it gets.
        tcp_listen: Some(udp),
        tls_listen: Some(SocketAddr::new(opts.bind, port_of(opts.turn_tls_port, i))),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ..Default::default()
    }
}

/// Region `i`'s node, as `[sfu]` would configure it, advertising `relay`'s
/// three listeners. It does not probe the relay: the relay is in this process
/// and reports to its health, so a probe would tell nothing more.
fn sfu_section(opts: &DevOptions, region: &DevRegion, signal: SocketAddr, relay: &TurnRelay) -> SfuSection {
    let udp = relay.local_addr();
    // Both are set: the relay's section asks for them.
    let tcp = relay.tcp_addr().unwrap_or(udp);
    let tls = relay.tls_addr().unwrap_or(udp);
    SfuSection {
        region: Some(region.id.to_string()),
        latitude: region.position.map(|p| p.latitude),
        longitude: region.position.map(|p| p.longitude),
        node_id: Some(format!("{}-1", region.id)),
        listen: Some(signal),
        advertise: Some(signal.to_string()),
        turn_urls: vec![
            format!("turn:{udp}?transport=udp"),
            format!("turn:{tcp}?transport=tcp"),
            format!("turns:{tls}?transport=tcp"),
        ],
        turn_secret: Some(opts.turn_secret.clone()),
        turn_probe: Some("off".into()),
        include_loopback: Some(true),
        ..Default::default()
    }
}

/// The gateway, as `[gateway]` would configure it: plain HTTP on `listen`.
fn gateway_section(opts: &DevOptions, listen: SocketAddr, default_region: &RegionId) -> GatewaySection {
    GatewaySection {
        listen: Some(listen),
        public_url: Some(format!("ws://{listen}")),
        default_region: Some(default_region.to_string()),
        trusted_proxies: opts.trusted_proxies.clone(),
        geoip_db: opts.geoip_db.clone(),
        plain_http: Some(true),
        client_js: find_client_js(opts.client_js.clone()),
        ..Default::default()
    }
}

/// Starts the stack.
///
/// Errors: no regions, an unknown default region, a port in use, a database
/// that cannot be reached or migrated, or a geolocation database that cannot be
/// opened.
pub async fn start_dev(opts: DevOptions) -> anyhow::Result<DevStack> {
    let first = opts.regions.first().context("at least one region is needed")?;
    let default_region = opts.default_region.clone().unwrap_or_else(|| first.id.clone());
    if !opts.regions.iter().any(|r| r.id == default_region) {
        anyhow::bail!("default region {:?} is not one of the regions", default_region.as_str());
    }
    let mut registry = Registry::default();
    // One health for the whole dev process: a dead listener of any region takes
    // every region out, as one machine would be. `main` installs the panic hook.
    let health = Health::new();
    health.register(&mut registry);
    let shared = Shared {
        authority: TokenAuthority::new(&opts.api_key, &opts.api_secret),
        store: roles::open_store(opts.database_url.as_deref()).await?,
        health: health.clone(),
    };
    let sfu_metrics = SfuMetrics::register(&mut registry);
    let turn_metrics = TurnMetrics::register(&mut registry);
    let turn_tls = match &opts.turn_tls {
        Some(pair) => pair.clone(),
        None => self_signed_pair(opts.bind).context("generating the TURN TLS certificate")?,
    };

    let (mut relays, mut nodes, mut running) = (Vec::new(), Vec::new(), Vec::new());
    for (i, region) in opts.regions.iter().enumerate() {
        let in_region = || format!("region {}", region.id);
        let turn_role = turn_section(&opts, i, &turn_tls).resolve().with_context(in_region)?;
        let relay = roles::start_turn(&turn_role, &health, &turn_metrics).await.with_context(in_region)?;
        let listener = TcpListener::bind(SocketAddr::new(opts.bind, port_of(opts.sfu_port, i)))
            .await
            .with_context(|| format!("binding the SFU signal port of region {}", region.id))?;
        let signal = listener.local_addr()?;
        let mut sfu_role = sfu_section(&opts, region, signal, &relay).resolve().with_context(in_region)?;
        sfu_role.webhook_urls = opts.webhook_urls.clone();
        let node = roles::start_sfu(&sfu_role, listener, &shared, &sfu_metrics).await.with_context(in_region)?;
        running.push(RunningRegion {
            id: region.id.clone(),
            node_id: sfu_role.node_id,
            sfu_addr: signal,
            turn_addr: relay.local_addr(),
            turn_tcp_addr: relay.tcp_addr().unwrap_or(relay.local_addr()),
            turn_tls_addr: relay.tls_addr().unwrap_or(relay.local_addr()),
        });
        relays.push(relay);
        nodes.push(node);
    }

    let listener = TcpListener::bind(SocketAddr::new(opts.bind, opts.port))
        .await
        .with_context(|| format!("binding the gateway port {}:{}", opts.bind, opts.port))?;
    let gateway_addr = listener.local_addr()?;
    let mut gateway_role = gateway_section(&opts, gateway_addr, &default_region).resolve()?;
    gateway_role.dev_tokens = true;
    let gateway = roles::build_gateway(&gateway_role, &shared, registry)?;
    let (stop, stop_rx) = watch::channel(false);
    let gateway = tokio::spawn(meridian_gateway::serve(gateway, listener, roles::stopped(stop_rx)));
    Ok(DevStack {
        gateway_addr,
        regions: running,
        store: shared.store,
        on_postgres: opts.database_url.is_some(),
        client_js: gateway_role.client_js,
        turn_tls_cert: turn_tls.0,
        stop,
        gateway,
        relays,
        nodes,
        health,
    })
}
