//! `meridian-loadtest`: joins rooms through a LiveKit-protocol URL (or Janus's
//! VideoRoom) with publishers sending real VP8 or H.264 and Opus media from files
//! and reports what the participants received (see `meridian_bench::loadtest` and
//! `bench/loadtest.sh`). Without a file, `--video`/`--audio` use clips that
//! `bench/clips.sh` makes with ffmpeg at `--video-bitrate`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use meridian_bench::loadtest::{run, Config, Target};

#[derive(Parser)]
#[command(about = "Load a LiveKit-protocol SFU with real media and measure what arrives")]
struct Args {
    /// `ws://HOST:PORT` of the gateway (or a node), or of Janus's WebSocket
    /// transport; `http://HOST:PORT` for `whip`.
    #[arg(long)]
    url: String,
    /// The protocol of `--url`: `livekit` (Meridian, LiveKit), `janus` (Janus 1.x
    /// VideoRoom) or `whip` (the str0m engine spike: WHIP/WHEP offers).
    #[arg(long, default_value = "livekit", value_parser = ["livekit", "janus", "whip"])]
    target: String,
    /// API key to mint LiveKit join tokens with (not used with Janus).
    #[arg(long, env = "MERIDIAN_API_KEY", default_value = "")]
    api_key: String,
    /// API secret to mint LiveKit join tokens with.
    #[arg(long, env = "MERIDIAN_API_SECRET", hide_env_values = true, default_value = "")]
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
    /// Publish video: this clip, looped (VP8 in IVF, or H.264 Annex B `.h264`), or
    /// with no value a 720p clip made by `bench/clips.sh` at `--video-bitrate` in
    /// `--codec`. Omit for audio only.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    video: Option<PathBuf>,
    /// Bitrate of the made clip, kbit/s (implies `--video`).
    #[arg(long)]
    video_bitrate: Option<u32>,
    /// Codec of the made clip: `vp8` or `h264`.
    #[arg(long, default_value = "vp8", value_parser = ["vp8", "h264"])]
    codec: String,
    /// Publish Opus audio: this Ogg file (20 ms pages), or with no value the clip
    /// made by `bench/clips.sh`. Omit for no audio.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
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
    let mut a = Args::parse();
    if a.video.is_none() && a.video_bitrate.is_some() {
        a.video = Some(PathBuf::new());
    }
    if a.video.is_none() && a.audio.is_none() && a.publishers > 0 {
        anyhow::bail!("publishers need --video and/or --audio");
    }
    let made = |name: &str| -> anyhow::Result<PathBuf> {
        let kbps = a.video_bitrate.unwrap_or(1500);
        let dir = std::env::temp_dir().join(format!("meridian-clips-{kbps}"));
        let status = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/clips.sh"))
            .arg(&dir)
            .args(["10", "1280x720", &kbps.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "bench/clips.sh could not make the clips (it needs ffmpeg)");
        Ok(dir.join(name))
    };
    let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
    if empty(&a.video) {
        a.video = Some(made(if a.codec == "h264" { "video.h264" } else { "video.ivf" })?);
    }
    if empty(&a.audio) {
        a.audio = Some(made("audio.ogg")?);
    }
    let report = run(Config {
        target: match a.target.as_str() {
            "janus" => Target::Janus,
            "whip" => Target::Whip,
            _ => Target::LiveKit,
        },
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
        "participants {} tracks {}/{} stalled {} packets/s {:.0} loss {:.2}% delay p50 {:.2} ms p99 {:.2} ms jitter p50 {:.2} ms \
         p99 {:.2} ms frames {} sfu_cpu_s {} sfu_rss_mib {} sfu_cpu_us/packet {}",
        report.participants,
        report.tracks_received,
        report.tracks_expected,
        report.tracks_stalled,
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
