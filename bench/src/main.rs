//! `meridian-bench`: the measuring instruments behind `docs/benchmarks.md`.
//!
//! - `route`: the routing decision per request (City lookup + node scoring), on a
//!   generated City database and registry, in nanoseconds per decision.
//! - `serve-gateway` / `serve-bare`: a gateway (memory store) and a bare hyper
//!   handler on loopback, for `bench/gateway.sh` to load with `wrk` side by side.
//! - `null-node` / `hold`: for `bench/gateway_ws.sh`, a stand-in SFU node that
//!   accepts signal WebSockets and holds them without a word, and a client that
//!   opens N of them (through a gateway started with `serve-gateway --node`, or
//!   straight to the node) and holds them, so the gateway's memory per proxied
//!   connection and its join rate can be read off.
//! - `floor`: SRTP-protect and send one packet in a tight loop
//!   ([`meridian_bench::floor`]), the per-packet limit an SFU works against.

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
        /// Register a node at this signal address (heartbeat every 2 s) so `/rtc` is proxied to it.
        #[arg(long)]
        node: Option<SocketAddr>,
        /// The gateway's cap on open connections.
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
    },
    /// Accept WebSocket upgrades on any path and hold them open, answering nothing.
    NullNode {
        #[arg(long, default_value = "127.0.0.1:7992")]
        addr: SocketAddr,
    },
    /// Open `connections` WebSockets to `url`, print the time it took, hold them
    /// for `hold` seconds, then close them.
    Hold {
        /// e.g. `ws://127.0.0.1:7990/rtc?access_token=...`
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connections opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 5)]
        hold: u64,
    },
    /// SRTP-protect and send RTP packets in a tight loop; medians of `runs`, in
    /// nanoseconds of CPU per packet.
    Floor {
        /// `gcm` (AEAD_AES_128_GCM) or `ctr` (AES_CM_128_HMAC_SHA1_80).
        #[arg(long, default_value = "gcm")]
        profile: String,
        /// RTP payload bytes.
        #[arg(long, default_value_t = 1200)]
        size: usize,
        /// Packets per run.
        #[arg(long, default_value_t = 200_000)]
        packets: u32,
        #[arg(long, default_value_t = 5)]
        runs: usize,
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

fn floor(profile: &str, size: usize, packets: u32, runs: usize) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for _ in 0..runs.max(1) {
        all.push(meridian_bench::floor::measure(profile, size, packets)?);
    }
    let median = |f: fn(&meridian_bench::floor::Floor) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{profile} {size} B payload, {packets} packets x {} runs, median CPU ns per packet: protect {:.0}, send {:.0}, \
         protect+send {:.0}",
        all.len(),
        median(|f| f.protect_ns),
        median(|f| f.send_ns),
        median(|f| f.protect_and_send_ns),
    );
    Ok(())
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
                id: format!("r{r}-{n}").into(),
                region: format!("r{r}").into(),
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
    let default_region = meridian_ids::RegionId::new("r0");
    let mut per_decision = Vec::new();
    let mut checksum = 0usize;
    for _ in 0..runs {
        let started = Instant::now();
        for i in 0..decisions {
            let ip = ips[i as usize % ips.len()];
            let located = locator.locate(ip);
            let position = located.map(|l| l.position);
            let route =
                meridian_gateway::route::choose(&nodes, &default_region, position, None, None, now, &mut rng, explain);
            checksum += route.map(|r| r.node.id.as_str().len()).unwrap_or(0);
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

async fn serve_gateway(addr: SocketAddr, node: Option<SocketAddr>, max_connections: usize) -> anyhow::Result<()> {
    let authority = TokenAuthority::new("benchkey", "bench-secret-of-some-length");
    let token = authority.mint(&MintRequest {
        room: "bench".into(),
        identity: "bench".into(),
        name: String::new(),
        metadata: String::new(),
        ttl: Duration::from_secs(3600),
        grants: Grants::default(),
    })?;
    let store: Arc<dyn meridian_schema::Store> = Arc::new(MemoryStore::new());
    if let Some(node) = node {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            loop {
                let record = NodeRecord {
                    id: "bench-1".into(),
                    region: "local".into(),
                    position: None,
                    signal_addr: node.to_string(),
                    turn_urls: vec![],
                    capacity: 1_000_000,
                    load: NodeLoad::default(),
                    draining: false,
                    last_seen: SystemTime::now(),
                };
                if let Err(e) = store.heartbeat(&record).await {
                    eprintln!("heartbeat: {e}");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let gateway = Arc::new(Gateway::new(
        GatewayConfig {
            public_url: format!("ws://{addr}"),
            default_region: "local".into(),
            dev_tokens: false,
            client_js: None,
            max_connections,
            trusted_proxies: vec![],
            tls: None,
        },
        authority,
        Arc::clone(&store),
        Locator::none(),
        Observability {
            metrics: GatewayMetrics::register(&mut registry),
            registry: Arc::new(registry),
            health: meridian_runtime::Health::new(),
        },
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

async fn null_node(addr: SocketAddr) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                while let Some(Ok(_)) = ws.next().await {}
            }
        });
    }
}

async fn hold(url: String, connections: usize, concurrency: usize, hold: u64) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let start = Instant::now();
    let opened: Vec<_> = futures_util::stream::iter(0..connections)
        .map(|_| {
            let url = url.clone();
            async move { tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    let (ok, failed): (Vec<_>, Vec<_>) = opened.into_iter().partition(|r| r.is_ok());
    if let Some(Err(e)) = failed.first() {
        eprintln!("first failure: {e}");
    }
    println!(
        "opened {} of {connections} in {elapsed:.2} s ({:.0} per second), {} failed",
        ok.len(),
        ok.len() as f64 / elapsed,
        failed.len()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(ok);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Route { networks, regions, decisions, runs, explain } => {
            route_bench(networks, regions, decisions, runs, explain)
        }
        Command::ServeGateway { addr, node, max_connections } => {
            tokio::runtime::Runtime::new()?.block_on(serve_gateway(addr, node, max_connections))
        }
        Command::NullNode { addr } => tokio::runtime::Runtime::new()?.block_on(null_node(addr)),
        Command::Hold { url, connections, concurrency, hold: secs } => {
            tokio::runtime::Runtime::new()?.block_on(hold(url, connections, concurrency, secs))
        }
        Command::Floor { profile, size, packets, runs } => floor(&profile, size, packets, runs),
        Command::ServeBare { addr } => tokio::runtime::Runtime::new()?.block_on(serve_bare(addr)),
    }
}
