//! The `meridian` binary: `dev` runs a whole region on loopback; `gateway`, `sfu`
//! and `turn` run one production role each from a config file (see
//! `docs/meridian.example.toml`); `migrate` applies the Postgres schema; `token`
//! mints a join token from the command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use meridian::{config, roles, DevOptions, DEV_API_KEY, DEV_API_SECRET};
use meridian_auth::{Grants, MintRequest, TokenAuthority, DEFAULT_TOKEN_TTL};

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
    /// Run a gateway: token API, geolocated routing, /rtc proxy (needs Postgres).
    Gateway(GatewayArgs),
    /// Run an SFU node of a region (needs Postgres).
    Sfu(SfuArgs),
    /// Run a region's TURN relay.
    Turn(TurnArgs),
}

/// `--config FILE`, shared by the roles.
#[derive(Args)]
struct ConfigPath {
    /// TOML config file (see docs/meridian.example.toml); flags and environment win over it.
    #[arg(long, env = "MERIDIAN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct GatewayArgs {
    #[command(flatten)]
    file: ConfigPath,
    #[command(flatten)]
    api: config::ApiSection,
    #[command(flatten)]
    database: config::DatabaseSection,
    #[command(flatten)]
    gateway: config::GatewaySection,
}

#[derive(Args)]
struct SfuArgs {
    #[command(flatten)]
    file: ConfigPath,
    #[command(flatten)]
    api: config::ApiSection,
    #[command(flatten)]
    database: config::DatabaseSection,
    #[command(flatten)]
    sfu: config::SfuSection,
    #[command(flatten)]
    webhook: config::WebhookSection,
}

#[derive(Args)]
struct TurnArgs {
    #[command(flatten)]
    file: ConfigPath,
    #[command(flatten)]
    turn: config::TurnSection,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested");
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
    #[command(flatten)]
    webhook: config::WebhookSection,
    /// Address every listener binds to (and the TURN relay advertises).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Gateway port (HTTP API, demo page, /rtc).
    #[arg(long, default_value_t = 7880)]
    port: u16,
    /// SFU node signal port (the gateway proxies /rtc to it).
    #[arg(long, default_value_t = 7881)]
    sfu_port: u16,
    /// TURN relay UDP and TCP port.
    #[arg(long, default_value_t = meridian_turn::DEFAULT_TURN_PORT)]
    turn_port: u16,
    /// TURN relay TLS port.
    #[arg(long, default_value_t = meridian_turn::DEFAULT_TURNS_PORT)]
    turn_tls_port: u16,
    /// PEM certificate for TURN over TLS; a self-signed one is generated when absent.
    #[arg(long, requires = "turn_tls_key")]
    turn_tls_cert: Option<PathBuf>,
    /// PEM key for `--turn-tls-cert`.
    #[arg(long, requires = "turn_tls_cert")]
    turn_tls_key: Option<PathBuf>,
    /// TURN REST API secret; generated (and printed) when absent.
    #[arg(long, env = "MERIDIAN_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// Peer range (CIDR) the relay relays to despite its block list; repeatable.
    #[arg(long = "turn-allow-peer")]
    turn_allow_peers: Vec<ipnet::IpNet>,
    /// Peer range (CIDR) the relay never relays to; repeatable.
    #[arg(long = "turn-deny-peer")]
    turn_deny_peers: Vec<ipnet::IpNet>,
    /// Postgres URL; without it the store is in memory.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// MaxMind-format City database for client geolocation.
    #[arg(long)]
    geoip_db: Option<PathBuf>,
    /// livekit-client browser build served to the demo page.
    #[arg(long, env = "MERIDIAN_CLIENT_JS")]
    client_js: Option<PathBuf>,
    /// A region to run, as ID@LAT,LON (repeatable); each gets an SFU node and a TURN
    /// relay on the next ports. Default: one region `local`.
    #[arg(long = "region", value_name = "ID@LAT,LON")]
    regions: Vec<meridian::DevRegion>,
    /// Region for clients that cannot be located (default: the first).
    #[arg(long)]
    default_region: Option<String>,
    /// A proxy (CIDR) whose Forwarded / X-Forwarded-For headers are believed (repeatable).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<ipnet::IpNet>,
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

/// glibc malloc settings every `meridian` process runs with unless the operator
/// sets `GLIBC_TUNABLES` itself: a fixed 128 KiB mmap and trim threshold. With
/// glibc's dynamic threshold, freed memory stayed with the process: after 300
/// participants joined, published and left, RSS went from 35 to 62 MiB and
/// stayed; with these, to 44 MiB, flat from the first run on (`bench/soak.sh`,
/// decisions §19).
pub const MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072";

/// glibc reads its tunables once, at process start, so the binary execs itself
/// again (same PID, arguments and environment) with [`MALLOC_TUNABLES`] when
/// `GLIBC_TUNABLES` is unset. Before any thread exists; if the exec fails, it
/// says so and runs with glibc's defaults.
fn with_malloc_tunables() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe).arg0(arg0).args(args).env("GLIBC_TUNABLES", MALLOC_TUNABLES).exec();
    eprintln!("warning: running with glibc's malloc defaults (re-exec with GLIBC_TUNABLES failed: {err})");
}

fn main() -> anyhow::Result<()> {
    with_malloc_tunables();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Gateway(_) => "meridian-gateway",
        Command::Sfu(_) => "meridian-sfu",
        Command::Turn(_) => "meridian-turn",
        _ => "meridian",
    };
    let _telemetry = meridian::telemetry::init(service)?;
    match cli.command {
        Command::Dev(args) => dev(args).await,
        Command::Migrate { database_url } => {
            meridian_schema::postgres::migrate(&database_url).await.context("migrate")?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Gateway(args) => {
            let file = config::ConfigFile::load(args.file.config.as_deref())?;
            let api = args.api.over(&file.api).required()?;
            let db = args.database.over(&file.database).required()?;
            let role = args.gateway.over(&file.gateway).resolve()?;
            roles::run_gateway(api, &db, role, terminated()).await
        }
        Command::Sfu(args) => {
            let file = config::ConfigFile::load(args.file.config.as_deref())?;
            let api = args.api.over(&file.api).required()?;
            let db = args.database.over(&file.database).required()?;
            let mut role = args.sfu.over(&file.sfu).resolve()?;
            role.webhook_urls = args.webhook.over(&file.webhook).resolve(&api.0)?;
            roles::run_sfu(api, &db, role, terminated()).await
        }
        Command::Turn(args) => {
            let file = config::ConfigFile::load(args.file.config.as_deref())?;
            let role = args.turn.over(&file.turn).resolve()?;
            roles::run_turn(role, terminated()).await
        }
        Command::Token(args) => {
            let authority = TokenAuthority::new(&args.keys.api_key, &args.keys.api_secret);
            let minted = authority.mint(&MintRequest {
                room: args.room.into(),
                identity: args.identity.into(),
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

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let turn_secret = args.turn_secret.clone().unwrap_or_else(meridian::random_secret);
    let stack = meridian::start_dev(DevOptions {
        bind: args.bind,
        port: args.port,
        sfu_port: args.sfu_port,
        turn_port: args.turn_port,
        turn_tls_port: args.turn_tls_port,
        turn_tls: args.turn_tls_cert.clone().zip(args.turn_tls_key.clone()),
        turn_allow_peers: args.turn_allow_peers.clone(),
        turn_deny_peers: args.turn_deny_peers.clone(),
        api_key: args.keys.api_key.clone(),
        api_secret: args.keys.api_secret.clone(),
        turn_secret: turn_secret.clone(),
        database_url: args.database_url.clone(),
        geoip_db: args.geoip_db.clone(),
        client_js: args.client_js.clone(),
        regions: if args.regions.is_empty() { DevOptions::default().regions } else { args.regions.clone() },
        default_region: args.default_region.clone().map(Into::into),
        trusted_proxies: args.trusted_proxies.clone(),
        webhook_urls: args.webhook.over(&Default::default()).resolve(&args.keys.api_key)?,
    })
    .await?;
    meridian_runtime::panic::install_hook(stack.health().clone());
    let gw = stack.gateway_addr;
    println!("Meridian dev is up.");
    println!("  demo page and API  http://{gw}/");
    println!("  signal URL         ws://{gw}");
    for r in &stack.regions {
        println!(
            "  region {}: SFU node {} at {}, TURN relay udp {} tcp {} tls {}",
            r.id, r.node_id, r.sfu_addr, r.turn_addr, r.turn_tcp_addr, r.turn_tls_addr
        );
    }
    println!("  TURN TLS cert      {}", stack.turn_tls_cert.display());
    println!("  store              {}", if stack.on_postgres { "postgres" } else { "memory" });
    println!("  API key / secret   {} / {}", args.keys.api_key, args.keys.api_secret);
    println!("  TURN secret        {turn_secret}");
    if args.keys.api_key == DEV_API_KEY || args.keys.api_secret == DEV_API_SECRET {
        println!(
            "  WARNING: these credentials are for development only; set --api-key/--api-secret for anything else."
        );
    }
    if stack.client_js.is_none() {
        println!("  note: the demo page needs `npm ci --prefix web` (livekit-client not found)");
    }
    terminated().await;
    stack.shutdown().await;
    eprintln!("meridian dev stopped");
    Ok(())
}
