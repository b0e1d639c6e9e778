//! The SFU role: one node of a region ([`meridian_sfu`]): its signal listener,
//! its registry heartbeat, and its drain at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_auth::turn_rest::DEFAULT_CREDENTIAL_TTL;
use meridian_sfu::engine::IceConfig;
use meridian_sfu::metrics::SfuMetrics;
use meridian_sfu::registry::LoadSampler;
use meridian_sfu::{Sfu, SfuConfig, TurnAdvert};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{bind, serve_metrics, stopped, Shared};
use crate::config::SfuRole;

/// How often a draining node checks whether its rooms have emptied.
const DRAIN_POLL: Duration = Duration::from_millis(500);

/// A node taking joins: registered, heartbeating and serving its listener.
pub struct RunningNode {
    /// The node.
    pub sfu: Arc<Sfu>,
    /// Its signal listener's address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: [JoinHandle<()>; 5],
}

impl RunningNode {
    /// Stops accepting and heartbeating; the node leaves the registry.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the node of `role` on `listener` (bound by the caller, so that port 0
/// works): registers it (before returning, so that the first join finds it),
/// then heartbeats and serves signal connections in the background until
/// [`RunningNode::stop`]. `metrics` holds the process's SFU metric families.
///
/// Errors: the WebRTC engine, or a store that cannot be reached.
pub async fn start_sfu(
    role: &SfuRole,
    listener: TcpListener,
    shared: &Shared,
    metrics: &SfuMetrics,
) -> anyhow::Result<RunningNode> {
    let addr = listener.local_addr()?;
    let sfu = Sfu::new(
        SfuConfig {
            region: role.region.clone(),
            node_id: role.node_id.clone(),
            turn: role.turn.as_ref().map(|(urls, secret)| TurnAdvert {
                urls: urls.clone(),
                secret: secret.clone().into_bytes(),
                ttl: DEFAULT_CREDENTIAL_TTL,
                probe: role.turn_probe.clone(),
            }),
            ice: IceConfig {
                include_loopback: role.include_loopback,
                loopback_only: addr.ip().is_loopback(),
                node_ip: role.node_ip,
                udp_port: role.udp_port,
                tcp_port: role.tcp_port,
                udp_ip: Some(addr.ip()).filter(|ip| !ip.is_unspecified()),
            },
            max_connections: meridian_sfu::DEFAULT_MAX_CONNECTIONS,
            position: role.position,
            advertise_signal: role.advertise.clone(),
            capacity: role.capacity,
            webhook_urls: role.webhook_urls.clone(),
        },
        shared.authority.clone(),
        Arc::clone(&shared.store),
        metrics,
    )?;
    sfu.heartbeat(&mut LoadSampler::default()).await.with_context(|| format!("registering node {}", role.node_id))?;
    let (stop, stop_rx) = watch::channel(false);
    let heartbeats = tokio::spawn(meridian_sfu::registry::run_heartbeats(
        Arc::clone(&sfu),
        shared.health.clone(),
        stopped(stop_rx.clone()),
    ));
    let webhooks = tokio::spawn(meridian_sfu::Sfu::run_webhooks(Arc::clone(&sfu), stopped(stop_rx.clone())));
    let sweeper = tokio::spawn(meridian_sfu::Sfu::run_room_sweeper(Arc::clone(&sfu), stopped(stop_rx.clone())));
    let room_updates = tokio::spawn(meridian_sfu::Sfu::run_room_updates(Arc::clone(&sfu), stopped(stop_rx.clone())));
    let serving = tokio::spawn(meridian_sfu::serve(Arc::clone(&sfu), listener, stopped(stop_rx)));
    Ok(RunningNode { sfu, addr, stop, tasks: [heartbeats, webhooks, sweeper, room_updates, serving] })
}

/// Runs an SFU node on Postgres until `shutdown` resolves; then it drains (no
/// new rooms) for up to the grace period while rooms remain, leaves the
/// registry and stops.
///
/// Errors: the database or the port.
pub async fn run_sfu(
    api: (String, String),
    database_url: &str,
    role: SfuRole,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let shared = Shared::production(api, database_url, &mut registry).await?;
    let metrics = SfuMetrics::register(&mut registry);
    let listener = bind(role.listen, "sfu.listen").await?;
    let node = start_sfu(&role, listener, &shared, &metrics).await?;
    if let Some(addr) = role.metrics_listen {
        serve_metrics(addr, Arc::new(registry), shared.health.clone()).await?;
    }
    tracing::info!(node = %role.node_id, region = %role.region, listen = %role.listen, advertise = %role.advertise, "SFU node up");

    shutdown.await;
    if let Err(e) = node.sfu.drain().await {
        tracing::warn!(error = %e, "could not announce draining");
    }
    // A grace too long for an Instant (the operator's number) means no deadline.
    let deadline = Instant::now().checked_add(role.drain_grace);
    while node.sfu.rooms().room_count() > 0 && deadline.is_none_or(|d| Instant::now() < d) {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    tracing::info!(rooms_left = node.sfu.rooms().room_count(), "drain over; stopping");
    node.stop().await;
    Ok(())
}
