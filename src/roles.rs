//! The production roles, one per process: `gateway`, `sfu` and `turn`. Each takes
//! its resolved configuration ([`crate::config`]) and a shutdown future (SIGTERM or
//! Ctrl-C in `main`), and runs until it resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_auth::TokenAuthority;
use meridian_gateway::tls::ReloadableTls;
use meridian_gateway::{Gateway, GatewayConfig};
use meridian_geo::Locator;
use meridian_schema::{PgStore, Store};
use meridian_sfu::engine::IceConfig;
use meridian_sfu::registry::LoadSampler;
use meridian_sfu::{Sfu, SfuConfig, TurnAdvert};
use meridian_turn::{TurnConfig, TurnRelay, DEFAULT_CREDENTIAL_TTL};
use tokio::sync::watch;

use crate::config::{GatewayRole, SfuRole};

/// How often a draining node checks whether its rooms have emptied.
const DRAIN_POLL: Duration = Duration::from_millis(500);

async fn postgres(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    meridian_schema::postgres::migrate(url).await.context("migrating the database")?;
    let store = PgStore::connect(url).await.context("connecting to the database")?;
    Ok(Arc::new(store))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}

/// Runs a gateway until `shutdown` resolves. SIGHUP reloads the TLS certificate.
///
/// Errors: the database, the certificate, the City database or the port.
pub async fn run_gateway(
    (api_key, api_secret): (String, String),
    database_url: &str,
    role: GatewayRole,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = postgres(database_url).await?;
    let tls = match &role.tls {
        Some((cert, key)) => Some(Arc::new(ReloadableTls::load(cert, key).context("loading the TLS certificate")?)),
        None => None,
    };
    let locator = match &role.geoip_db {
        Some(path) => Locator::open(path)?,
        None => Locator::none(),
    };
    let listener = tokio::net::TcpListener::bind(role.listen)
        .await
        .with_context(|| format!("binding gateway.listen {}", role.listen))?;
    if let Some(tls) = &tls {
        let tls = Arc::clone(tls);
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Err(e) = tls.reload() {
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate");
                }
            }
        });
    }
    tracing::info!(listen = %role.listen, tls = tls.is_some(), public_url = %role.public_url, "gateway up");
    let gateway = Arc::new(Gateway::new(
        GatewayConfig {
            public_url: role.public_url,
            default_region: role.default_region,
            dev_tokens: false,
            client_js: role.client_js,
            max_connections: role.max_connections,
            trusted_proxies: role.trusted_proxies,
            tls,
        },
        TokenAuthority::new(&api_key, &api_secret),
        store,
        locator,
    ));
    meridian_gateway::serve(gateway, listener, shutdown).await;
    Ok(())
}

/// Runs an SFU node until `shutdown` resolves; then it drains (no new rooms) for
/// up to the grace period while rooms remain, leaves the registry and stops.
///
/// Errors: the database or the port.
pub async fn run_sfu(
    (api_key, api_secret): (String, String),
    database_url: &str,
    role: SfuRole,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = postgres(database_url).await?;
    let listener = tokio::net::TcpListener::bind(role.listen)
        .await
        .with_context(|| format!("binding sfu.listen {}", role.listen))?;
    let sfu = Sfu::new(
        SfuConfig {
            region: role.region.clone(),
            node_id: role.node_id.clone(),
            turn: role.turn.map(|(urls, secret)| TurnAdvert {
                urls,
                secret: secret.into_bytes(),
                ttl: DEFAULT_CREDENTIAL_TTL,
            }),
            ice: IceConfig { include_loopback: role.include_loopback, loopback_only: role.listen.ip().is_loopback() },
            max_connections: meridian_sfu::DEFAULT_MAX_CONNECTIONS,
            position: role.position,
            advertise_signal: role.advertise.clone(),
            capacity: role.capacity,
        },
        TokenAuthority::new(&api_key, &api_secret),
        store,
    )?;
    sfu.heartbeat(&mut LoadSampler::default()).await.context("registering the node")?;
    tracing::info!(node = %role.node_id, region = %role.region, listen = %role.listen, advertise = %role.advertise, "SFU node up");
    let (stop, stop_rx) = watch::channel(false);
    let heartbeats = tokio::spawn(meridian_sfu::registry::run_heartbeats(Arc::clone(&sfu), stopped(stop_rx.clone())));
    let serving = tokio::spawn(meridian_sfu::serve(Arc::clone(&sfu), listener, stopped(stop_rx)));

    shutdown.await;
    if let Err(e) = sfu.drain().await {
        tracing::warn!(error = %e, "could not announce draining");
    }
    let deadline = Instant::now() + role.drain_grace;
    while sfu.rooms().room_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    tracing::info!(rooms_left = sfu.rooms().room_count(), "drain over; stopping");
    let _ = stop.send(true);
    let _ = heartbeats.await;
    let _ = serving.await;
    Ok(())
}

/// Runs a TURN relay until `shutdown` resolves.
///
/// Errors: the port.
pub async fn run_turn(config: TurnConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let relay = TurnRelay::start(config).await.context("starting the TURN relay")?;
    tracing::info!(listen = %relay.local_addr(), "TURN relay up");
    shutdown.await;
    relay.close().await?;
    Ok(())
}
