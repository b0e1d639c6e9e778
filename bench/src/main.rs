//! `meridian-bench`: the measuring instruments behind `docs/benchmarks.md`.
//!
//! - `route`: the routing decision per request (City lookup + node scoring), on a
//!   generated City database and registry, in nanoseconds per decision.
//! - `serve-gateway` / `serve-bare`: a gateway (memory store) and a bare hyper
//!   handler on loopback, for `bench/gateway.sh` to load with `wrk` side by side.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use meridian_auth::{Grants, MintRequest, TokenAuthority};
use meridian_gateway::metrics::GatewayMetrics;
use meridian_gateway::{Gateway, GatewayConfig, Observability};
use meridian_geo::Locator;
use meridian_schema::{MemoryStore, NodeLoad, NodeRecord};
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time the routing decision (locate + choose), median of `runs`.
    Route {
        /// Networks in the generated City database.
        #[arg(long, default_value_t = 100_000)]
        networks: u32,
        /// Regions in the registry (nodes per region: 4).
        #[arg(long, default_value_t = 12)]
        regions: u32,
        /// Decisions per run.
        #[arg(long, default_value_t = 200_000)]
        decisions: u32,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Also build the explanation, as `/v1/route` does.
        #[arg(long)]
        explain: bool,
    },
    /// Serve a gateway on `addr` and print a valid join token; runs until killed.
    ServeGateway {
        #[arg(long, default_value = "127.0.0.1:7990")]
        addr: SocketAddr,
    },
    /// Serve a bare hyper handler answering 200 `success` on `addr`.
    ServeBare {
        #[arg(long, default_value = "127.0.0.1:7991")]
        addr: SocketAddr,
    },
}

#[derive(Serialize)]
struct City {
    location: Location,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

fn route_bench(networks: u32, regions: u32, decisions: u32, runs: usize, explain: bool) -> anyhow::Result<()> {
    let explain = if explain { meridian_gateway::route::Explain::Yes } else { meridian_gateway::route::Explain::No };
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut w = mmdb_writer::Writer::new("Meridian-Bench-City");
    let mut ips = Vec::new();
    for i in 0..networks {
        // Spread /24s over public space (1.0.0.0 - 126.255.255.0), avoiding 10/8.
        let a = 1 + (i % 126) as u8;
        if a == 10 {
            continue;
        }
        let (b, c) = (((i / 126) % 256) as u8, ((i / (126 * 256)) % 256) as u8);
        let city = City {
            location: Location {
                latitude: rng.random_range(-60.0..70.0),
                longitude: rng.random_range(-180.0..180.0),
                accuracy_radius: 50,
            },
        };
        w.insert(format!("{a}.{b}.{c}.0/24").parse::<ipnet::IpNet>()?, &city)?;
        ips.push(IpAddr::V4(Ipv4Addr::new(a, b, c, 7)));
    }
    let path = std::env::temp_dir().join(format!("meridian-bench-{}.mmdb", std::process::id()));
    std::fs::write(&path, w.to_bytes()?)?;
    let locator = Locator::open(&path)?;
    std::fs::remove_file(&path).ok();

    let now = SystemTime::now();
    let mut nodes = Vec::new();
    for r in 0..regions {
        let position = Some((rng.random_range(-50.0..60.0), rng.random_range(-180.0..180.0)));
        for n in 0..4 {
            nodes.push(NodeRecord {
                id: format!("r{r}-{n}"),
                region: format!("r{r}"),
                position,
                signal_addr: "127.0.0.1:1".into(),
                turn_urls: vec![],
                capacity: 500,
                load: NodeLoad { participants: rng.random_range(0..400), ..NodeLoad::default() },
                draining: false,
                last_seen: now,
            });
        }
    }
    let mut per_decision = Vec::new();
    let mut checksum = 0usize;
    for _ in 0..runs {
        let started = Instant::now();
        for i in 0..decisions {
            let ip = ips[i as usize % ips.len()];
            let located = locator.locate(ip);
            let position = located.map(|l| l.position);
            let route = meridian_gateway::route::choose(&nodes, "r0", position, None, None, now, &mut rng, explain);
            checksum += route.map(|r| r.node.id.len()).unwrap_or(0);
        }
        per_decision.push(started.elapsed().as_nanos() as f64 / f64::from(decisions));
    }
    per_decision.sort_by(f64::total_cmp);
    let median = per_decision[per_decision.len() / 2];
    println!(
        "route (explain: {explain:?}): {networks} networks, {regions} regions x 4 nodes: median {median:.0} ns \
         per decision ({:.0} decisions/s on one core); runs {per_decision:.0?} (checksum {checksum})",
        1e9 / median
    );
    Ok(())
}

async fn serve_gateway(addr: SocketAddr) -> anyhow::Result<()> {
    let authority = TokenAuthority::new("benchkey", "bench-secret-of-some-length");
    let token = authority.mint(&MintRequest {
        room: "bench".into(),
        identity: "bench".into(),
        name: String::new(),
        metadata: String::new(),
        ttl: Duration::from_secs(3600),
        grants: Grants::default(),
    })?;
    let mut registry = prometheus_client::registry::Registry::default();
    let gateway = Arc::new(Gateway::new(
        GatewayConfig {
            public_url: format!("ws://{addr}"),
            default_region: "local".into(),
            dev_tokens: false,
            client_js: None,
            max_connections: 10_000,
            trusted_proxies: vec![],
            tls: None,
        },
        authority,
        Arc::new(MemoryStore::new()),
        Locator::none(),
        Observability { metrics: GatewayMetrics::register(&mut registry), registry: Arc::new(registry) },
    ));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", token.jwt);
    meridian_gateway::serve(gateway, listener, std::future::pending()).await;
    Ok(())
}

async fn serve_bare(addr: SocketAddr) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"success"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Route { networks, regions, decisions, runs, explain } => {
            route_bench(networks, regions, decisions, runs, explain)
        }
        Command::ServeGateway { addr } => tokio::runtime::Runtime::new()?.block_on(serve_gateway(addr)),
        Command::ServeBare { addr } => tokio::runtime::Runtime::new()?.block_on(serve_bare(addr)),
    }
}
