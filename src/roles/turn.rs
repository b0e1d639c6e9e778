//! The TURN role: a region's relay ([`meridian_turn`]) on its UDP, TCP and TLS
//! listeners.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use meridian_gateway::tls::ReloadableTls;
use meridian_runtime::Health;
use meridian_turn::metrics::TurnMetrics;
use meridian_turn::{TlsListen, TurnRelay};
use prometheus_client::registry::Registry;

use super::{process_health, reload_on_hangup, serve_metrics};
use crate::config::TurnRole;

/// Starts the relay of `role`: loads its TLS certificate (reloaded on SIGHUP),
/// binds its listeners, and reports its counts into `metrics` until it closes.
/// A dead listener fails `health`.
///
/// Errors: a port in use, an unusable certificate.
pub async fn start_turn(role: &TurnRole, health: &Health, metrics: &TurnMetrics) -> anyhow::Result<TurnRelay> {
    let mut config = role.relay.clone();
    if let Some((listen, cert, key)) = &role.tls {
        let tls = Arc::new(ReloadableTls::load_with_alpn(cert, key, &[]).context("loading the TURN TLS certificate")?);
        reload_on_hangup(Arc::clone(&tls))?;
        config.tls = Some(TlsListen { listen: *listen, acceptor: Arc::new(move || tls.acceptor()) });
    }
    let relay = TurnRelay::start(config, health.clone()).await.context("starting the TURN relay")?;
    relay.report(metrics);
    Ok(relay)
}

/// Runs a TURN relay until `shutdown` resolves, then closes it.
///
/// Errors: a port in use, an unusable certificate.
pub async fn run_turn(role: TurnRole, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let health = process_health(&mut registry);
    let metrics = TurnMetrics::register(&mut registry);
    let relay = start_turn(&role, &health, &metrics).await?;
    if let Some(addr) = role.metrics_listen {
        serve_metrics(addr, Arc::new(registry), health).await?;
    }
    tracing::info!(udp = %relay.local_addr(), tcp = ?relay.tcp_addr(), tls = ?relay.tls_addr(), "TURN relay up");
    shutdown.await;
    relay.close().await?;
    Ok(())
}
