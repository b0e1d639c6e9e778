//! The gateway role: the token API, geolocated routing and the `/rtc` proxy
//! ([`meridian_gateway`]) on one listener.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use meridian_gateway::metrics::GatewayMetrics;
use meridian_gateway::tls::ReloadableTls;
use meridian_gateway::{Gateway, GatewayConfig, Observability};
use meridian_geo::Locator;
use prometheus_client::registry::Registry;

use super::{bind, reload_on_hangup, Shared};
use crate::config::GatewayRole;

/// Builds the gateway of `role` for `listener` (bound by the caller, so that
/// port 0 works): loads its TLS certificate (reloaded on SIGHUP) and City
/// database, and registers its metrics in `registry`, which it then serves
/// whole at `/metrics`. Register every other role's metrics first.
///
/// Errors: the certificate or the City database.
pub fn build_gateway(role: &GatewayRole, shared: &Shared, mut registry: Registry) -> anyhow::Result<Arc<Gateway>> {
    let tls = match &role.tls {
        Some((cert, key)) => {
            let tls = Arc::new(ReloadableTls::load(cert, key).context("loading the TLS certificate")?);
            reload_on_hangup(Arc::clone(&tls))?;
            Some(tls)
        }
        None => None,
    };
    let locator = match &role.geoip_db {
        Some(path) => Locator::open(path)?,
        None => Locator::none(),
    };
    let metrics = GatewayMetrics::register(&mut registry);
    Ok(Arc::new(Gateway::new(
        GatewayConfig {
            public_url: role.public_url.clone(),
            default_region: role.default_region.clone(),
            dev_tokens: role.dev_tokens,
            client_js: role.client_js.clone(),
            max_connections: role.max_connections,
            trusted_proxies: role.trusted_proxies.clone(),
            tls,
        },
        shared.authority.clone(),
        Arc::clone(&shared.store),
        locator,
        Observability { metrics, registry: Arc::new(registry), health: shared.health.clone() },
    )))
}

/// Runs a gateway on Postgres until `shutdown` resolves.
///
/// Errors: the database, the certificate, the City database or the port.
pub async fn run_gateway(
    api: (String, String),
    database_url: &str,
    role: GatewayRole,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let shared = Shared::production(api, database_url, &mut registry).await?;
    let listener = bind(role.listen, "gateway.listen").await?;
    let gateway = build_gateway(&role, &shared, registry)?;
    tracing::info!(listen = %role.listen, tls = role.tls.is_some(), public_url = %role.public_url, "gateway up");
    meridian_gateway::serve(gateway, listener, shutdown).await;
    Ok(())
}
