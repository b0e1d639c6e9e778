//! The `meridian` binary: `dev` runs a whole region on loopback; `migrate` applies
//! the Postgres schema; `token` mints a join token from the command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use meridian_auth::{Grants, MintRequest, TokenAuthority, DEFAULT_TOKEN_TTL};
use meridian_gateway::{Gateway, GatewayConfig, NodeTarget, RegionTarget};
use meridian_geo::{Locator, Region};
use meridian_schema::{MemoryStore, PgStore, Store};
use meridian_sfu::engine::IceConfig;
use meridian_sfu::{Sfu, SfuConfig, TurnAdvert};
use meridian_turn::{TurnConfig, TurnRelay, DEFAULT_CREDENTIAL_TTL, DEFAULT_REALM, DEFAULT_RECV_BUFFER_BYTES};

/// Default development API key (printed with a warning at start).
const DEV_API_KEY: &str = "devkey";
/// Default development API secret (printed with a warning at start).
const DEV_API_SECRET: &str = "secret";
/// Where `npm ci --prefix web` puts the livekit-client browser build.
const CLIENT_JS: &str = "web/node_modules/livekit-client/dist/livekit-client.umd.js";

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "One URL for real-time media: gateway, LiveKit-compatible SFU and TURN relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run gateway, one SFU node and one TURN relay (region `local`) on loopback.
    Dev(DevArgs),
    /// Apply pending database migrations and exit.
    Migrate {
        /// Postgres URL, e.g. postgres://postgres@127.0.0.1:5432/test.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Mint a join token and print it.
    Token(TokenArgs),
}

#[derive(Args)]
struct Keys {
    /// API key: the `iss` of join tokens.
    #[arg(long, env = "MERIDIAN_API_KEY", default_value = DEV_API_KEY)]
    api_key: String,
    /// API secret that signs join tokens.
    #[arg(long, env = "MERIDIAN_API_SECRET", default_value = DEV_API_SECRET, hide_env_values = true)]
    api_secret: String,
}

#[derive(Args)]
struct DevArgs {
    #[command(flatten)]
    keys: Keys,
    /// Address every listener binds to (and the TURN relay advertises).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Gateway port (HTTP API, demo page, /rtc).
    #[arg(long, default_value_t = 7880)]
    port: u16,
    /// SFU node signal port (the gateway proxies /rtc to it).
    #[arg(long, default_value_t = 7881)]
    sfu_port: u16,
    /// TURN relay UDP port.
    #[arg(long, default_value_t = meridian_turn::DEFAULT_TURN_PORT)]
    turn_port: u16,
    /// TURN REST API secret; generated when absent.
    #[arg(long, env = "MERIDIAN_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// Postgres URL; without it the store is in memory.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// MaxMind-format City database for client geolocation.
    #[arg(long)]
    geoip_db: Option<PathBuf>,
    /// livekit-client browser build served to the demo page.
    #[arg(long, env = "MERIDIAN_CLIENT_JS")]
    client_js: Option<PathBuf>,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    keys: Keys,
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Participant identity.
    #[arg(long)]
    identity: String,
    /// Display name.
    #[arg(long, default_value = "")]
    name: String,
    /// Lifetime in seconds (default 6 h).
    #[arg(long, default_value_t = DEFAULT_TOKEN_TTL.as_secs())]
    ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,webrtc_ice=warn,webrtc_dtls=error,dtls=error,turn=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Dev(args) => dev(args).await,
        Command::Migrate { database_url } => {
            meridian_schema::postgres::migrate(&database_url).await.context("migrate")?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Token(args) => {
            let authority = TokenAuthority::new(&args.keys.api_key, &args.keys.api_secret);
            let minted = authority.mint(&MintRequest {
                room: args.room,
                identity: args.identity,
                name: args.name,
                metadata: String::new(),
                ttl: Duration::from_secs(args.ttl),
                grants: Grants::default(),
            })?;
            println!("{}", minted.jwt);
            Ok(())
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

fn find_client_js(flag: Option<PathBuf>) -> Option<PathBuf> {
    if flag.is_some() {
        return flag;
    }
    let mut candidates = vec![PathBuf::from(CLIENT_JS)];
    // A binary under target/<profile>/ finds the repository two levels up.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(repo) = exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()) {
            candidates.push(repo.join(CLIENT_JS));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let store = open_store(args.database_url.as_deref()).await?;
    let authority = TokenAuthority::new(&args.keys.api_key, &args.keys.api_secret);
    let turn_secret = args.turn_secret.clone().unwrap_or_else(|| {
        use rand::distr::{Alphanumeric, SampleString};
        Alphanumeric.sample_string(&mut rand::rng(), 32)
    });

    let turn = TurnRelay::start(TurnConfig {
        listen: SocketAddr::new(args.bind, args.turn_port),
        relay_ip: args.bind,
        realm: DEFAULT_REALM.into(),
        secret: turn_secret.clone().into_bytes(),
        recv_buffer_bytes: DEFAULT_RECV_BUFFER_BYTES,
    })
    .await
    .context("starting the TURN relay")?;

    let region = "local".to_owned();
    let node_id = "local-1".to_owned();
    let sfu_listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.sfu_port))
        .await
        .with_context(|| format!("binding the SFU signal port {}:{}", args.bind, args.sfu_port))?;
    let sfu_addr = sfu_listener.local_addr()?;
    let sfu = Sfu::new(
        SfuConfig {
            region: region.clone(),
            node_id: node_id.clone(),
            turn: Some(TurnAdvert {
                urls: vec![format!("turn:{}?transport=udp", turn.local_addr())],
                secret: turn_secret.clone().into_bytes(),
                ttl: DEFAULT_CREDENTIAL_TTL,
            }),
            ice: IceConfig { include_loopback: true, loopback_only: args.bind.is_loopback() },
            max_connections: meridian_sfu::DEFAULT_MAX_CONNECTIONS,
        },
        authority.clone(),
        Arc::clone(&store),
    )?;

    let locator = match &args.geoip_db {
        Some(path) => Locator::open(path)?,
        None => Locator::none(),
    };
    let gw_listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port))
        .await
        .with_context(|| format!("binding the gateway port {}:{}", args.bind, args.port))?;
    let gw_addr = gw_listener.local_addr()?;
    let client_js = find_client_js(args.client_js.clone());
    let gateway = Arc::new(Gateway::new(
        GatewayConfig {
            public_url: format!("ws://{gw_addr}"),
            regions: vec![RegionTarget {
                region: Region { id: region.clone(), position: None },
                nodes: vec![NodeTarget { id: node_id.clone(), signal_addr: sfu_addr }],
            }],
            default_region: region.clone(),
            dev_tokens: true,
            client_js: client_js.clone(),
            max_connections: meridian_gateway::DEFAULT_MAX_CONNECTIONS,
        },
        authority,
        Arc::clone(&store),
        locator,
    ));

    println!("Meridian dev is up.");
    println!("  demo page and API  http://{gw_addr}/");
    println!("  signal URL         ws://{gw_addr}");
    println!("  region {region}: SFU node {node_id} at {sfu_addr}, TURN relay udp {}", turn.local_addr());
    println!("  store              {}", if args.database_url.is_some() { "postgres" } else { "memory" });
    println!("  API key / secret   {} / {}", args.keys.api_key, args.keys.api_secret);
    println!("  TURN secret        {turn_secret}");
    if args.keys.api_key == DEV_API_KEY || args.keys.api_secret == DEV_API_SECRET {
        println!(
            "  WARNING: these credentials are for development only; set --api-key/--api-secret for anything else."
        );
    }
    if client_js.is_none() {
        println!("  note: demo page needs `npm ci --prefix web` (livekit-client not found)");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    tokio::select! {
        _ = meridian_sfu::serve(sfu, sfu_listener, stopped(stop_rx.clone())) => {},
        _ = meridian_gateway::serve(gateway, gw_listener, stopped(stop_rx)) => {},
    }
    turn.close().await.ok();
    eprintln!("meridian dev stopped");
    Ok(())
}

/// Resolves once the watched flag turns true (Ctrl-C).
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}
