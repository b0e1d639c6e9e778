//! The whole of Meridian in one process, as `meridian dev` runs it: a gateway, one
//! region (`local`) with one SFU node and its TURN relay, and a store.
//!
//! [`start_dev`] binds everything and returns a [`DevStack`] with the bound
//! addresses; [`DevStack::shutdown`] stops it. The end-to-end tests under `tests/`
//! start stacks on ephemeral ports the same way.

pub mod config;
pub mod roles;
pub mod telemetry;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use meridian_auth::turn_rest::DEFAULT_CREDENTIAL_TTL;
use meridian_auth::TokenAuthority;
use meridian_gateway::metrics::GatewayMetrics;
use meridian_gateway::tls::ReloadableTls;
use meridian_gateway::{Gateway, GatewayConfig, Observability};
use meridian_geo::{Locator, Position};
use meridian_runtime::Health;
use meridian_schema::{MemoryStore, PgStore, Store};
use meridian_sfu::engine::IceConfig;
use meridian_sfu::metrics::SfuMetrics;
use meridian_sfu::registry::LoadSampler;
use meridian_sfu::{Sfu, SfuConfig, TurnAdvert};
use meridian_turn::metrics::TurnMetrics;
use meridian_turn::policy::PeerPolicy;
use meridian_turn::{TlsListen, TurnConfig, TurnRelay, DEFAULT_REALM, DEFAULT_RECV_BUFFER_BYTES};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    pub default_region: Option<String>,
    /// Proxies whose forwarding headers the gateway believes.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A region as `--region ID@LAT,LON` (or just `ID`) names it.
#[derive(Debug, Clone, PartialEq)]
pub struct DevRegion {
    /// Region id, e.g. `eu-west`.
    pub id: String,
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
        Ok(Self { id: id.to_owned(), position })
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
    pub id: String,
    /// Its SFU node's id.
    pub node_id: String,
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
    tasks: Vec<JoinHandle<()>>,
    relays: Vec<TurnRelay>,
    sfus: Vec<Arc<Sfu>>,
    health: Health,
}

impl DevStack {
    /// The process's health (what `/healthz` answers). `main` installs the panic
    /// hook for it ([`meridian_runtime::panic::install_hook`]).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Region `id`'s TURN relay.
    pub fn relay(&self, id: &str) -> Option<&TurnRelay> {
        self.regions.iter().position(|r| r.id == id).map(|at| &self.relays[at])
    }

    /// Puts region `id`'s node into draining (no new rooms), as SIGTERM will.
    ///
    /// Errors: an unknown region, or a store that cannot be reached.
    pub async fn drain_region(&self, id: &str) -> anyhow::Result<()> {
        let at = self.regions.iter().position(|r| r.id == id).with_context(|| format!("no region {id}"))?;
        self.sfus[at].drain().await?;
        Ok(())
    }

    /// Stops accepting, closes the TURN relay and waits for the accept loops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        for relay in self.relays {
            let _ = relay.close().await;
        }
    }
}

async fn open_store(database_url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    match database_url {
        Some(url) => {
            meridian_schema::postgres::migrate(url).await.context("migrating the database")?;
            Ok(Arc::new(PgStore::connect(url).await.context("connecting to the database")?))
        }
        None => Ok(Arc::new(MemoryStore::new())),
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

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}

/// Starts the stack.
///
/// Errors: a port in use, a database that cannot be reached or migrated, or a
/// geolocation database that cannot be opened.
pub async fn start_dev(opts: DevOptions) -> anyhow::Result<DevStack> {
    let store = open_store(opts.database_url.as_deref()).await?;
    let authority = TokenAuthority::new(&opts.api_key, &opts.api_secret);

    if opts.regions.is_empty() {
        anyhow::bail!("at least one region is needed");
    }
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut relays = Vec::new();
    let mut running = Vec::new();
    let mut sfus = Vec::new();
    let mut registry = Registry::default();
    // One health for the whole dev process: a dead listener of any region takes
    // every region out, as one machine would be.
    let health = Health::new();
    health.register(&mut registry);
    let sfu_metrics = SfuMetrics::register(&mut registry);
    let turn_metrics = TurnMetrics::register(&mut registry);
    let (turn_cert, turn_key) = match &opts.turn_tls {
        Some(pair) => pair.clone(),
        None => self_signed_pair(opts.bind).context("generating the TURN TLS certificate")?,
    };
    let turn_tls = Arc::new(
        ReloadableTls::load_with_alpn(&turn_cert, &turn_key, &[]).context("loading the TURN TLS certificate")?,
    );
    // The co-located SFU listens on the bind address; everything else internal
    // stays refused unless allowed.
    let mut allow_peers = vec![ipnet::IpNet::from(opts.bind)];
    allow_peers.extend(opts.turn_allow_peers.iter().copied());
    for (i, region) in opts.regions.iter().enumerate() {
        let offset = |port: u16| if port == 0 { 0 } else { port.saturating_add(i as u16) };
        let udp = SocketAddr::new(opts.bind, offset(opts.turn_port));
        let turn_tls = Arc::clone(&turn_tls);
        let turn = TurnRelay::start(
            TurnConfig {
                listen: udp,
                relay_ip: opts.bind,
                realm: DEFAULT_REALM.into(),
                secret: opts.turn_secret.clone().into_bytes(),
                recv_buffer_bytes: DEFAULT_RECV_BUFFER_BYTES,
                peer_policy: PeerPolicy::new(allow_peers.clone(), opts.turn_deny_peers.clone()),
                // Port 0 means "any" for UDP; TCP then takes whatever port it gets.
                tcp_listen: Some(udp),
                tls: Some(TlsListen {
                    listen: SocketAddr::new(opts.bind, offset(opts.turn_tls_port)),
                    acceptor: Arc::new(move || turn_tls.acceptor()),
                }),
                max_stream_connections: meridian_turn::stream::DEFAULT_MAX_STREAM_CONNECTIONS,
                user_quota: meridian_turn::gate::DEFAULT_USER_QUOTA,
                total_quota: meridian_turn::gate::DEFAULT_TOTAL_QUOTA,
                bandwidth_cap: Some(meridian_turn::DEFAULT_BANDWIDTH_CAP),
            },
            health.clone(),
        )
        .await
        .with_context(|| format!("starting the TURN relay of region {}", region.id))?;
        let turn_addr = turn.local_addr();
        // Both are set: the config above asks for them.
        let turn_tcp_addr = turn.tcp_addr().unwrap_or(turn_addr);
        let turn_tls_addr = turn.tls_addr().unwrap_or(turn_addr);
        turn.report(&turn_metrics);
        relays.push(turn);

        let node_id = format!("{}-1", region.id);
        let sfu_listener = tokio::net::TcpListener::bind(SocketAddr::new(opts.bind, offset(opts.sfu_port)))
            .await
            .with_context(|| format!("binding the SFU signal port of region {}", region.id))?;
        let sfu_addr = sfu_listener.local_addr()?;
        let sfu = Sfu::new(
            SfuConfig {
                region: region.id.clone(),
                node_id: node_id.clone(),
                turn: Some(TurnAdvert {
                    urls: vec![
                        format!("turn:{turn_addr}?transport=udp"),
                        format!("turn:{turn_tcp_addr}?transport=tcp"),
                        format!("turns:{turn_tls_addr}?transport=tcp"),
                    ],
                    secret: opts.turn_secret.clone().into_bytes(),
                    ttl: DEFAULT_CREDENTIAL_TTL,
                    // The relay is in this process and reports to its health; a
                    // probe would tell nothing more.
                    probe: None,
                }),
                ice: IceConfig { include_loopback: true, loopback_only: opts.bind.is_loopback() },
                max_connections: meridian_sfu::DEFAULT_MAX_CONNECTIONS,
                position: region.position.map(|p| (p.latitude, p.longitude)),
                advertise_signal: sfu_addr.to_string(),
                capacity: meridian_sfu::DEFAULT_CAPACITY,
            },
            authority.clone(),
            Arc::clone(&store),
            &sfu_metrics,
        )?;
        // Registered before the gateway opens, so the first join finds the node.
        sfu.heartbeat(&mut LoadSampler::default()).await.context("registering the SFU node")?;
        tasks.push(tokio::spawn(meridian_sfu::registry::run_heartbeats(
            Arc::clone(&sfu),
            health.clone(),
            stopped(stop_rx.clone()),
        )));
        tasks.push(tokio::spawn(meridian_sfu::serve(Arc::clone(&sfu), sfu_listener, stopped(stop_rx.clone()))));
        sfus.push(sfu);
        running.push(RunningRegion {
            id: region.id.clone(),
            node_id,
            sfu_addr,
            turn_addr,
            turn_tcp_addr,
            turn_tls_addr,
        });
    }
    let default_region = opts.default_region.clone().unwrap_or_else(|| opts.regions[0].id.clone());
    if !opts.regions.iter().any(|r| r.id == default_region) {
        anyhow::bail!("default region {default_region:?} is not one of the regions");
    }

    let locator = match &opts.geoip_db {
        Some(path) => Locator::open(path)?,
        None => Locator::none(),
    };
    let gw_listener = tokio::net::TcpListener::bind(SocketAddr::new(opts.bind, opts.port))
        .await
        .with_context(|| format!("binding the gateway port {}:{}", opts.bind, opts.port))?;
    let gateway_addr = gw_listener.local_addr()?;
    let client_js = find_client_js(opts.client_js.clone());
    let gateway = Arc::new(Gateway::new(
        GatewayConfig {
            public_url: format!("ws://{gateway_addr}"),
            default_region,
            dev_tokens: true,
            client_js: client_js.clone(),
            max_connections: meridian_gateway::DEFAULT_MAX_CONNECTIONS,
            trusted_proxies: opts.trusted_proxies.clone(),
            tls: None,
        },
        authority,
        Arc::clone(&store),
        locator,
        Observability {
            metrics: GatewayMetrics::register(&mut registry),
            registry: Arc::new(registry),
            health: health.clone(),
        },
    ));

    tasks.push(tokio::spawn(meridian_gateway::serve(gateway, gw_listener, stopped(stop_rx))));
    Ok(DevStack {
        gateway_addr,
        regions: running,
        store,
        on_postgres: opts.database_url.is_some(),
        client_js,
        turn_tls_cert: turn_cert,
        stop,
        tasks,
        relays,
        sfus,
        health,
    })
}
