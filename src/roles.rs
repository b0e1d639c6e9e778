//! The production roles, one per process: `gateway`, `sfu` and `turn`. Each takes
//! its resolved configuration ([`crate::config`]) and a shutdown future (SIGTERM or
//! Ctrl-C in `main`), and runs until it resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_auth::turn_rest::DEFAULT_CREDENTIAL_TTL;
use meridian_auth::TokenAuthority;
use meridian_gateway::metrics::GatewayMetrics;
use meridian_gateway::tls::ReloadableTls;
use meridian_gateway::{Gateway, GatewayConfig, Observability};
use meridian_geo::Locator;
use meridian_runtime::Health;
use meridian_schema::{PgStore, Store};
use meridian_sfu::engine::IceConfig;
use meridian_sfu::metrics::SfuMetrics;
use meridian_sfu::registry::LoadSampler;
use meridian_sfu::{Sfu, SfuConfig, TurnAdvert};
use meridian_turn::metrics::TurnMetrics;
use meridian_turn::{TlsListen, TurnRelay};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use tokio::sync::watch;

use crate::config::{GatewayRole, SfuRole, TurnRole};

/// The process's health, with its metrics in `registry` and the panic hook
/// reporting to it. Each role runs once per process, so this is called once.
fn process_health(registry: &mut Registry) -> Health {
    let health = Health::new();
    health.register(registry);
    meridian_runtime::panic::install_hook(health.clone());
    health
}

/// How often a draining node checks whether its rooms have emptied.
const DRAIN_POLL: Duration = Duration::from_millis(500);

async fn postgres(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    meridian_schema::postgres::migrate(url).await.context("migrating the database")?;
    let store = PgStore::connect(url).await.context("connecting to the database")?;
    Ok(Arc::new(store))
}

/// Serves the registry as Prometheus text at `GET /metrics`, and `health` at
/// `GET /healthz` (200 `ok` or 503 naming what failed), on `addr`, in the
/// background, for roles without an HTTP listener of their own.
///
/// Errors: the port.
pub async fn serve_metrics(addr: SocketAddr, registry: Arc<Registry>, health: Health) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics_listen {addr}"))?;
    tracing::info!(%addr, "metrics on /metrics");
    /// Scrapes and health checks at once, at most.
    const MAX_METRICS_CONNECTIONS: usize = 64;
    tokio::spawn(meridian_runtime::accept::serve_bounded(
        "metrics",
        listener,
        MAX_METRICS_CONNECTIONS,
        std::future::pending(),
        move |stream, _peer| {
            let (registry, health) = (Arc::clone(&registry), health.clone());
            async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let registry = Arc::clone(&registry);
                    let health = health.clone();
                    async move {
                        let mut body = String::new();
                        let status = if req.uri().path() == "/healthz" {
                            let (status, text) = health.healthz();
                            body = text;
                            status
                        } else if req.uri().path() != "/metrics" {
                            body.push_str("not found");
                            404
                        } else if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
                            500
                        } else {
                            200
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            }
        },
    ));
    Ok(())
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
        reload_on_hangup(Arc::clone(tls))?;
    }
    tracing::info!(listen = %role.listen, tls = tls.is_some(), public_url = %role.public_url, "gateway up");
    let mut registry = Registry::default();
    let health = process_health(&mut registry);
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
        Observability { metrics: GatewayMetrics::register(&mut registry), registry: Arc::new(registry), health },
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
    let mut registry = Registry::default();
    let health = process_health(&mut registry);
    let sfu_metrics = SfuMetrics::register(&mut registry);
    let sfu = Sfu::new(
        SfuConfig {
            region: role.region.clone(),
            node_id: role.node_id.clone(),
            turn: role.turn.map(|(urls, secret)| TurnAdvert {
                urls,
                secret: secret.into_bytes(),
                ttl: DEFAULT_CREDENTIAL_TTL,
                probe: role.turn_probe.clone(),
            }),
            ice: IceConfig { include_loopback: role.include_loopback, loopback_only: role.listen.ip().is_loopback() },
            max_connections: meridian_sfu::DEFAULT_MAX_CONNECTIONS,
            position: role.position,
            advertise_signal: role.advertise.clone(),
            capacity: role.capacity,
        },
        TokenAuthority::new(&api_key, &api_secret),
        store,
        &sfu_metrics,
    )?;
    if let Some(addr) = role.metrics_listen {
        serve_metrics(addr, Arc::new(registry), health.clone()).await?;
    }
    sfu.heartbeat(&mut LoadSampler::default()).await.context("registering the node")?;
    tracing::info!(node = %role.node_id, region = %role.region, listen = %role.listen, advertise = %role.advertise, "SFU node up");
    let (stop, stop_rx) = watch::channel(false);
    let heartbeats =
        tokio::spawn(meridian_sfu::registry::run_heartbeats(Arc::clone(&sfu), health, stopped(stop_rx.clone())));
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

/// Runs a TURN relay until `shutdown` resolves. SIGHUP reloads the TLS certificate.
///
/// Errors: a port in use, an unusable certificate.
pub async fn run_turn(role: TurnRole, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut config = role.relay;
    if let Some((listen, cert, key)) = &role.tls {
        let tls = Arc::new(ReloadableTls::load_with_alpn(cert, key, &[]).context("loading the TURN TLS certificate")?);
        reload_on_hangup(Arc::clone(&tls))?;
        config.tls = Some(TlsListen { listen: *listen, acceptor: Arc::new(move || tls.acceptor()) });
    }
    let mut registry = Registry::default();
    let health = process_health(&mut registry);
    let relay = TurnRelay::start(config, health.clone()).await.context("starting the TURN relay")?;
    let metrics = TurnMetrics::register(&mut registry);
    relay.report(&metrics);
    if let Some(addr) = role.metrics_listen {
        serve_metrics(addr, Arc::new(registry), health).await?;
    }
    tracing::info!(udp = %relay.local_addr(), tcp = ?relay.tcp_addr(), tls = ?relay.tls_addr(), "TURN relay up");
    shutdown.await;
    relay.close().await?;
    Ok(())
}

/// Reloads `tls` from its files on every SIGHUP; a failed reload keeps the old one.
fn reload_on_hangup(tls: Arc<ReloadableTls>) -> anyhow::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(e) = tls.reload() {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate");
            }
        }
    });
    Ok(())
}
