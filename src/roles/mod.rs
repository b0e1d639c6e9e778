//! The roles, each built once: `gateway`, `sfu` and `turn`. Production runs one
//! per process (`run_gateway`, `run_sfu`, `run_turn`: the role's configuration
//! from [`crate::config`] and a shutdown future, SIGTERM or Ctrl-C in `main`);
//! `meridian dev` ([`crate::dev`]) runs all of them in one process by calling the
//! same builders ([`build_gateway`], [`start_sfu`], [`start_turn`]) with the
//! memory store and loopback defaults. What a builder does, dev does too.

mod gateway;
mod sfu;
mod turn;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use meridian_auth::TokenAuthority;
use meridian_gateway::tls::ReloadableTls;
use meridian_runtime::Health;
use meridian_schema::{MemoryStore, PgStore, Store};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use gateway::{build_gateway, run_gateway};
pub use sfu::{run_sfu, start_sfu, RunningNode};
pub use turn::{run_turn, start_turn};

/// What the roles of one process share: one in production, all of them in dev.
#[derive(Clone)]
pub struct Shared {
    /// Signs and checks join tokens (the gateway mints, nodes verify).
    pub authority: TokenAuthority,
    /// Rooms, tokens and the node registry.
    pub store: Arc<dyn Store>,
    /// The process's health: what `/healthz` answers.
    pub health: Health,
}

impl Shared {
    /// A production process's: the token authority of `(api_key, api_secret)`,
    /// Postgres at `database_url` (migrated first), and the process's health
    /// ([`process_health`]) with its metrics in `registry`.
    ///
    /// Errors: a database that cannot be reached or migrated.
    pub async fn production(
        (api_key, api_secret): (String, String),
        database_url: &str,
        registry: &mut Registry,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            authority: TokenAuthority::new(&api_key, &api_secret),
            store: open_store(Some(database_url)).await?,
            health: process_health(registry),
        })
    }
}

/// A TCP listener on `addr`, the value of configuration key `key`.
///
/// Errors: the port, naming the key.
async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {key} {addr}"))
}

/// The process's health, with its metrics in `registry` and the panic hook
/// reporting to it. Once per process (the hook is process-wide).
pub fn process_health(registry: &mut Registry) -> Health {
    let health = Health::new();
    health.register(registry);
    meridian_runtime::panic::install_hook(health.clone());
    health
}

/// Postgres at `url`, migrated first, or the memory store when `None`.
///
/// Errors: a database that cannot be reached or migrated.
pub async fn open_store(url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    match url {
        Some(url) => {
            meridian_schema::postgres::migrate(url).await.context("migrating the database")?;
            Ok(Arc::new(PgStore::connect(url).await.context("connecting to the database")?))
        }
        None => Ok(Arc::new(MemoryStore::new())),
    }
}

/// Resolves once `rx` holds `true` (or its sender is gone).
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}

/// Serves the registry as Prometheus text at `GET /metrics`, and `health` at
/// `GET /healthz` (200 `ok` or 503 naming what failed), on `addr`, in the
/// background, for roles without an HTTP listener of their own.
///
/// Errors: the port.
pub async fn serve_metrics(addr: SocketAddr, registry: Arc<Registry>, health: Health) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = bind(addr, "metrics_listen").await?;
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
