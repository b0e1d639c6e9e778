//! Meridian's edge gateway: the one URL clients and app backends talk to.
//!
//! It is stateless: everything it decides comes from the request, its config and
//! the store. Routes (all on one HTTP/1.1 listener):
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the demo page (join a room with camera and microphone) |
//! | `GET /livekit-client.umd.js` | the `livekit-client` browser build the demo page loads |
//! | `POST /v1/tokens` | mint a join token (API auth: Basic key:secret or Bearer JWT), see [`api`] |
//! | `GET /v1/tokens?room=&identity=`, `DELETE /v1/tokens/{id}` | list minted tokens, revoke one (API auth), see [`v1`] |
//! | `GET /v1/rooms`, `GET`/`DELETE /v1/rooms/{name}` | rooms in the store; delete disconnects everyone (API auth) |
//! | `GET /v1/openapi.json` | the OpenAPI 3.0 document of `/v1` |
//! | `GET /v1/route?ip=…[&room=…]` | explain the routing decision for a client address (API auth) |
//! | `POST /v1/rooms` | create a room, optionally pinned to a region (API auth) |
//! | `POST /dev/token` | mint without auth, only when [`GatewayConfig::dev_tokens`] is on |
//! | `GET /rtc/validate` | LiveKit's token pre-check (token from `Authorization: Bearer` or `access_token`): 200, or 401/400 with the reason |
//! | `GET /rtc` (WebSocket) | verify, geolocate, pick region and node, proxy the signal socket ([`proxy`]) |
//! | `POST /twirp/livekit.RoomService/<Method>` | LiveKit's RoomService (server-API JWT), on the room's node wherever it is ([`room_service`]) |
//! | `GET /rtc/v1`, `/rtc/v1/validate` | 404, so `livekit-client` falls back to the dual-PC `/rtc` path |
//! | `GET /healthz` | 200 `ok`, or 503 naming the failed tasks once any has failed ([`meridian_runtime::Health`]) |
//! | `GET /metrics` | Prometheus text format: the process's registry ([`metrics`]) |
//!
//! Run loop: [`serve`] accepts connections (bounded by
//! [`GatewayConfig::max_connections`]) until the shutdown future resolves; each
//! connection is served by hyper, WebSocket upgrades included.

pub mod api;
pub mod client_ip;
mod http_util;
pub mod metrics;
pub mod proxy;
pub mod registry_cache;
pub mod room_service;
pub mod route;
pub mod splice;
pub mod tls;
pub mod v1;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use meridian_auth::TokenAuthority;
use meridian_geo::Locator;
use meridian_ids::{NodeId, RegionId, RoomName};
use meridian_schema::Store;
use tokio::net::TcpListener;

use http_util::{text, Body};

/// Default listen address of the gateway (LiveKit's port, loopback for dev).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7880";
/// Default bound on concurrently served connections (signal sockets included).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// URL handed to clients in `/v1/tokens` answers, e.g. `ws://127.0.0.1:7880`.
    pub public_url: String,
    /// Region for clients that cannot be located.
    pub default_region: RegionId,
    /// Serve `POST /dev/token` without auth (`meridian dev` only).
    pub dev_tokens: bool,
    /// Path of `livekit-client.umd.js` for the demo page; `None` serves a 404 that
    /// says how to get it.
    pub client_js: Option<PathBuf>,
    /// Bound on concurrently served connections (default [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Peers whose `Forwarded`/`X-Forwarded-For` headers are believed (load
    /// balancers in front of the gateway); default none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve HTTPS/WSS with this certificate (reloadable); `None` serves plain HTTP.
    pub tls: Option<Arc<tls::ReloadableTls>>,
}

/// Everything a request handler needs, shared by all connections.
pub struct Gateway {
    config: GatewayConfig,
    authority: TokenAuthority,
    store: Arc<dyn Store>,
    locator: Locator,
    observe: Observability,
    /// Refused joins are counted in metrics, every one; logged a few per source.
    refusal_log: meridian_runtime::log_limit::LogLimit<std::net::IpAddr>,
    /// The last good registry and room reads, for routing while the store is down.
    cache: registry_cache::RegistryCache,
}

/// Where the gateway's metrics go and what `/metrics` renders.
pub struct Observability {
    /// The gateway's metric handles (registered in `registry`).
    pub metrics: metrics::GatewayMetrics,
    /// The process's whole registry, rendered at `/metrics`.
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// The process's health, answered at `/healthz`.
    pub health: meridian_runtime::Health,
}

impl Gateway {
    /// A gateway with its token authority, store, geolocation database and metrics.
    pub fn new(
        config: GatewayConfig,
        authority: TokenAuthority,
        store: Arc<dyn Store>,
        locator: Locator,
        observe: Observability,
    ) -> Self {
        let refusal_log = meridian_runtime::log_limit::LogLimit::new("refused joins");
        Self { config, authority, store, locator, observe, refusal_log, cache: Default::default() }
    }

    fn render_metrics(&self) -> Response<Body> {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.observe.registry).is_err() {
            return text(500, "metrics encoding failed");
        }
        let mut r = text(200, &out);
        if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    }

    async fn handle(self: Arc<Self>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let response = match (req.method(), path.as_str()) {
            (&Method::GET, "/") | (&Method::GET, "/index.html") => http_util::html(include_str!("demo.html")),
            (&Method::GET, "/livekit-client.umd.js") => self.client_js().await,
            (&Method::GET, "/healthz") => {
                let (status, body) = self.observe.health.healthz();
                text(status, &body)
            }
            (&Method::GET, "/metrics") => self.render_metrics(),
            (_, p) if p.starts_with("/v1/") => match v1::route(&self, req).await {
                Some(response) => response,
                None => text(404, "not found"),
            },
            (&Method::POST, "/dev/token") if self.config.dev_tokens => api::mint_token(&self, req, true).await,
            (&Method::GET, "/rtc/validate") => proxy::validate(&self, &req).await,
            (&Method::GET, "/rtc") => proxy::rtc(&self, peer, req).await,
            (_, p) if p.starts_with(meridian_twirp::PREFIX) => room_service::handle(&self, req).await,
            // We speak the dual peer-connection path only; livekit-client falls back
            // to `/rtc` when `/rtc/v1/validate` answers 404 (see docs/gateway.md).
            (_, "/rtc/v1") | (_, "/rtc/v1/validate") => {
                text(404, "v1 signalling (single peer connection) is not supported; use /rtc")
            }
            _ => text(404, "not found"),
        };
        tracing::debug!(%peer, %path, status = response.status().as_u16(), "request");
        self.observe.metrics.answered(&path, response.status().as_u16());
        response
    }

    /// The client address of `req` from `peer`, believing forwarding headers only
    /// from trusted proxies.
    fn client_ip<B>(&self, peer: SocketAddr, req: &Request<B>) -> std::net::IpAddr {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        client_ip::client_ip(peer, header("forwarded"), header("x-forwarded-for"), &self.config.trusted_proxies)
    }

    /// Decides where a client at `ip` joining `room` goes.
    ///
    /// Nodes in `unreachable` (this request failed to connect to them) are left out.
    /// While the store is down, routes from the last good reads
    /// ([`registry_cache`]); the plan says how old they are.
    ///
    /// Errors: [`RouteError::Store`] when the store is down and there is no
    /// snapshot yet, [`RouteError::NeedsWrite`] when it is down and the room is not
    /// known to be live (placing it is a write).
    async fn route(
        &self,
        ip: std::net::IpAddr,
        room: Option<&RoomName>,
        unreachable: &[NodeId],
        explain: route::Explain,
    ) -> Result<RoutePlan, RouteError> {
        let located = tracing::info_span!("gateway.geo_lookup").in_scope(|| self.locator.locate(ip));
        let select = async {
            let now = std::time::SystemTime::now();
            let (record, room_from_cache) = match room {
                Some(name) => match self.store.room(name).await {
                    Ok(record) => {
                        self.cache.room_read(name, record.as_ref());
                        (record, false)
                    }
                    Err(e) => match self.cache.room(name) {
                        Some(record) => (Some(record), true),
                        None => return Err(RouteError::NeedsWrite(e)),
                    },
                },
                None => (None, false),
            };
            let snapshot = match self.store.nodes().await {
                Ok(nodes) => {
                    self.cache.nodes_read(&nodes, now);
                    registry_cache::Snapshot { nodes, read_at: now }
                }
                Err(e) => self.cache.nodes().ok_or(RouteError::Store(e))?,
            };
            let from_cache = (snapshot.read_at != now || room_from_cache)
                .then(|| now.duration_since(snapshot.read_at).unwrap_or_default());
            let room_node = record.as_ref().and_then(|r| r.node.as_ref());
            let pinned_region = record.as_ref().filter(|r| r.pinned).and_then(|r| r.region.as_ref());
            let mut nodes = snapshot.nodes;
            nodes.retain(|n| !unreachable.contains(&n.id));
            let route = route::choose(
                &nodes,
                &self.config.default_region,
                located.as_ref().map(|l| l.position),
                room_node,
                pinned_region,
                // Staleness as of the snapshot: nodes do not go stale because
                // the store went down.
                snapshot.read_at,
                &mut rand::rng(),
                explain,
            );
            Ok::<_, RouteError>((route, from_cache))
        };
        let (route, registry_age) =
            tracing::Instrument::instrument(select, tracing::info_span!("gateway.route_selection")).await?;
        if let Some(age) = registry_age {
            tracing::warn!(?age, "store unavailable: routed from the cached registry");
        }
        Ok(RoutePlan { located, route, registry_age })
    }

    async fn client_js(&self) -> Response<Body> {
        let Some(path) = &self.config.client_js else {
            return text(404, "livekit-client.umd.js not configured: run `npm ci --prefix web` and pass --client-js");
        };
        match tokio::fs::read(path).await {
            Ok(bytes) => Response::builder()
                .header("content-type", "application/javascript")
                .header("cache-control", "max-age=300")
                .body(http_util::full(bytes))
                .unwrap_or_else(|_| text(500, "response build failed")),
            Err(e) => text(404, &format!("cannot read {}: {e}; run `npm ci --prefix web`", path.display())),
        }
    }
}

/// A routing decision with the location it was based on.
pub(crate) struct RoutePlan {
    located: Option<meridian_geo::Located>,
    route: Option<route::Route>,
    /// How old the registry read was, when the store was down and the cache
    /// answered; `None` for a fresh read.
    registry_age: Option<std::time::Duration>,
}

/// Why no route could be chosen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    /// The store is down and no registry has been read yet (upstream; retry).
    #[error("store unavailable and no registry read yet: {0}")]
    Store(meridian_schema::StoreError),
    /// The store is down and the room is not known to be live: placing it is a
    /// write (upstream; retry).
    #[error("store unavailable: a room not known to be live cannot be placed ({0})")]
    NeedsWrite(meridian_schema::StoreError),
}

/// Longest a client may take to send a request's headers (hyper's default, set
/// explicitly since it needs a timer).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest a client may take over its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_connection<S>(gateway: Arc<Gateway>, peer: SocketAddr, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let gateway = Arc::clone(&gateway);
        async move { Ok::<_, std::convert::Infallible>(gateway.handle(peer, req).await) }
    });
    // hyper's header-read timeout needs a timer; without one it was silently off and
    // a client sending one header byte a minute held a connection slot for ever.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// Serves HTTP (or HTTPS, with [`GatewayConfig::tls`]) on `listener` until `shutdown` resolves. Connections in flight are
/// not awaited; a signal socket being proxied ends with the process.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let max = gateway.config.max_connections;
    meridian_runtime::accept::serve_bounded("gateway", listener, max, shutdown, move |stream, peer| {
        let gateway = Arc::clone(&gateway);
        async move {
            match gateway.config.tls.as_ref().map(|t| t.acceptor()) {
                None => serve_connection(gateway, peer, stream).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(gateway, peer, tls).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn gateway() -> Arc<Gateway> {
        gateway_on(Arc::new(meridian_schema::MemoryStore::new()))
    }

    fn gateway_on(store: Arc<dyn Store>) -> Arc<Gateway> {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::GatewayMetrics::register(&mut registry);
        Arc::new(Gateway::new(
            GatewayConfig {
                public_url: "ws://gateway".into(),
                default_region: "local".into(),
                dev_tokens: false,
                client_js: None,
                max_connections: 16,
                trusted_proxies: Vec::new(),
                tls: None,
            },
            meridian_auth::TokenAuthority::new("devkey", "secret"),
            store,
            meridian_geo::Locator::none(),
            Observability { metrics, registry: Arc::new(registry), health: meridian_runtime::Health::new() },
        ))
    }

    const PEER: &str = "192.0.2.1:40000";

    /// Headers that never end held the connection (and its slot) for ever while
    /// hyper had no timer; now the connection closes after [`HEADER_READ_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn headers_that_never_end_close_the_connection_after_the_header_timeout() {
        let (mut client, server) = tokio::io::duplex(4096);
        let start = tokio::time::Instant::now();
        let connection = tokio::spawn(serve_connection(gateway(), PEER.parse().unwrap(), server));
        client.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ").await.unwrap();
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(HEADER_READ_TIMEOUT * 3, client.read_to_end(&mut answer)).await;
        assert!(matches!(closed, Ok(Ok(_))), "closed: {closed:?}");
        assert!(start.elapsed() >= HEADER_READ_TIMEOUT, "not before the timeout: {:?}", start.elapsed());
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "no answer or a 408: {answer}");
        connection.await.unwrap();
    }

    /// The same connection with its headers finished is answered at once.
    #[tokio::test(start_paused = true)]
    async fn finished_headers_are_answered_before_the_timeout() {
        let (mut client, server) = tokio::io::duplex(4096);
        let start = tokio::time::Instant::now();
        tokio::spawn(serve_connection(gateway(), PEER.parse().unwrap(), server));
        client.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        assert!(start.elapsed() < HEADER_READ_TIMEOUT, "{:?}", start.elapsed());
    }

    /// A node that accepts the connection and never answers the upgrade held
    /// the join for ever; now it is given up after [`proxy::UPSTREAM_TIMEOUT`]
    /// and the join routed again (here to nothing: 503).
    #[tokio::test(start_paused = true)]
    async fn a_node_that_never_answers_the_upgrade_is_given_up_after_the_upstream_timeout() {
        let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let signal_addr = hanging.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = hanging.accept().await {
                held.push(stream);
            }
        });
        let store: Arc<dyn Store> = Arc::new(meridian_schema::MemoryStore::new());
        store
            .heartbeat(&meridian_schema::NodeRecord {
                id: "local-1".into(),
                region: "local".into(),
                position: None,
                signal_addr,
                turn_urls: Vec::new(),
                capacity: 10,
                load: Default::default(),
                draining: false,
                last_seen: std::time::SystemTime::now(),
            })
            .await
            .unwrap();
        let token = meridian_auth::TokenAuthority::new("devkey", "secret")
            .mint(&meridian_auth::MintRequest {
                room: "r".into(),
                identity: "a".into(),
                name: String::new(),
                metadata: String::new(),
                ttl: std::time::Duration::from_secs(600),
                grants: Default::default(),
            })
            .unwrap()
            .jwt;
        let (mut client, server) = tokio::io::duplex(8192);
        let start = tokio::time::Instant::now();
        let gateway = gateway_on(store);
        tokio::spawn(serve_connection(Arc::clone(&gateway), PEER.parse().unwrap(), server));
        let upgrade = format!(
            "GET /rtc?access_token={token} HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        client.write_all(upgrade.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(proxy::UPSTREAM_TIMEOUT * 6, async {
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed without an answer");
                answer.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&answer).into_owned()
        })
        .await
        .expect("an answer, not a join held for ever");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(start.elapsed() >= proxy::UPSTREAM_TIMEOUT, "not before the timeout: {:?}", start.elapsed());
        let mut metrics = String::new();
        prometheus_client::encoding::text::encode(&mut metrics, &gateway.observe.registry).unwrap();
        assert!(
            metrics.contains("meridian_gateway_join_refusals_total{status=\"503\"} 1"),
            "the refusal is counted: {metrics}"
        );
    }
}
