//! `meridian-loadtest`: joins rooms through a LiveKit-protocol URL with publishers
//! sending real VP8/Opus media from files and reports what the participants
//! received (see `meridian_bench::loadtest` and `bench/loadtest.sh`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use meridian_bench::loadtest::{run, Config};

#[derive(Parser)]
#[command(about = "Load a LiveKit-protocol SFU with real media and measure what arrives")]
struct Args {
    /// `ws://HOST:PORT` of the gateway (or a node).
    #[arg(long)]
    url: String,
    #[arg(long, env = "MERIDIAN_API_KEY")]
    api_key: String,
    #[arg(long, env = "MERIDIAN_API_SECRET", hide_env_values = true)]
    api_secret: String,
    /// Publishers per room.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribe-only participants per room.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Seconds to measure once everyone has joined.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// VP8 IVF clip publishers send (`bench/clips.sh` makes one); omit for audio only.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Ogg Opus clip (20 ms pages) publishers send; omit for no audio.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// PID of the SFU process, for its CPU seconds and RSS.
    #[arg(long)]
    sfu_pid: Option<u32>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.video.is_none() && a.audio.is_none() && a.publishers > 0 {
        anyhow::bail!("publishers need --video and/or --audio");
    }
    let report = run(Config {
        url: a.url,
        api_key: a.api_key,
        api_secret: a.api_secret,
        publishers: a.publishers,
        subscribers: a.subscribers,
        rooms: a.rooms,
        duration: Duration::from_secs(a.duration),
        video: a.video,
        audio: a.audio,
        sfu_pid: a.sfu_pid,
    })
    .await?;
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    println!(
        "participants {} tracks {} packets/s {:.0} loss {:.2}% delay p50 {:.2} ms p99 {:.2} ms jitter p50 {:.2} ms \
         p99 {:.2} ms frames {} sfu_cpu_s {} sfu_rss_mib {} sfu_cpu_us/packet {}",
        report.participants,
        report.tracks_received,
        report.packets_per_second,
        report.loss_percent,
        report.delay_p50_ms,
        report.delay_p99_ms,
        report.jitter_p50_ms,
        report.jitter_p99_ms,
        report.frames,
        opt(report.sfu_cpu_seconds),
        opt(report.sfu_rss_mib),
        opt(report.sfu_cpu_us_per_packet),
    );
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
