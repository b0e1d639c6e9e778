//! The load tester: participants that join rooms through a LiveKit-protocol URL
//! (Meridian's gateway, or a node), Janus's VideoRoom or WHIP/WHEP (the str0m
//! engine spike), publish real encoded
//! media from files, and measure what they receive, after LiveKit's
//! `lk load-test`. [`run`] takes a [`Config`] and returns a [`Report`].
//!
//! Publishers send VP8 frames from an IVF file or H.264 frames from an Annex B
//! stream, and Opus packets from an Ogg file (made with `ffmpeg`,
//! `bench/clips.sh`), looped, packetised by the load tester itself ([`clips`]) so
//! that the send time of every RTP sequence number is known. Every participant subscribes to everything and
//! counts, per received track, packets, bytes, frames, loss, jitter and the
//! forwarding delay (see [`measure`]).
//!
//! Layout: one module per target on top of shared modules, which never call
//! back up; only [`run`] knows the targets, and no target uses another.
//!
//! ```text
//! loadtest (run)  -> livekit, janus, whip, measure, clips, config
//! livekit, janus, whip -> send, measure, sdp, clips, config, sync
//! send            -> measure, clips, sync
//! measure         -> sync
//! clips, config, sdp, sync: nothing of this crate
//! ```
//!
//! - [`config`]: what to run ([`Config`], [`Target`]).
//! - [`clips`]: the media read from files and its RTP packetization.
//! - [`send`]: the paced sender, logging each packet's send time.
//! - [`measure`]: send logs, per-track receive statistics, the [`Report`].
//! - [`livekit`]: LiveKit's signal protocol (`/rtc`), dual peer connection.
//! - [`janus`]: Janus's VideoRoom over its WebSocket API.
//! - [`whip`]: WHIP/WHEP-like HTTP offers (the str0m engine spike, issue 13).
//! - [`sdp`]: non-trickle SDP (gathered candidates), for janus and whip.
//! - [`sync`]: the poison-tolerant lock they share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_sfu::engine::{Engine, IceConfig};

pub mod clips;
pub mod config;
pub mod janus;
pub mod livekit;
pub mod measure;
pub mod sdp;
pub mod send;
pub mod sync;
pub mod whip;

use clips::Clips;
pub use config::{Config, Target};
pub use measure::Report;
use measure::Shared;

/// Runs the load and returns the figures.
///
/// Errors: unreadable clips, a participant that cannot join within 20 s.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    let clips = Arc::new(Clips::read(cfg.video.as_deref(), cfg.audio.as_deref())?);
    // Janus never gathers on loopback interfaces (bench/loadtest.sh gives it a veth
    // address in the run's own namespace), so its peers gather where it does.
    let loopback = cfg.target != Target::Janus
        && (cfg.url.contains("://127.") || cfg.url.contains("://localhost") || cfg.url.contains("://[::1]"));
    let engine = Arc::new(Engine::client(&IceConfig {
        include_loopback: loopback,
        loopback_only: loopback,
        node_ip: None,
        udp_port: None,
        tcp_port: None,
        udp_ip: None,
    })?);
    let shared = Arc::new(Shared::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let joined: Vec<Peer> = match cfg.target {
        Target::LiveKit => livekit::join_rooms(&cfg, &clips, &engine, &shared, &stop_rx)
            .await?
            .into_iter()
            .map(Peer::LiveKit)
            .collect(),
        Target::Janus => {
            janus::join_rooms(&cfg, &clips, &engine, &shared, &stop_rx).await?.into_iter().map(Peer::Janus).collect()
        }
        Target::Whip => {
            whip::join_rooms(&cfg, &clips, &engine, &shared, &stop_rx).await?.into_iter().map(Peer::Whip).collect()
        }
    };
    // Let negotiation settle and keyframes arrive before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    shared.start_measuring();
    let cpu_before = cfg.sfu_pid.and_then(measure::cpu_seconds);
    let start = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    let elapsed = start.elapsed();
    shared.stop_measuring();
    let cpu_after = cfg.sfu_pid.and_then(measure::cpu_seconds);
    let rss = cfg.sfu_pid.and_then(measure::rss_mib);
    let _ = stop_tx.send(true);

    let cpu = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
    let report =
        shared.report(cfg.rooms * (cfg.publishers + cfg.subscribers), tracks_expected(&cfg, &clips), elapsed, cpu, rss);
    for p in joined {
        match p {
            Peer::LiveKit(p) => p.close().await,
            Peer::Janus(p) => p.close().await,
            Peer::Whip(p) => p.close().await,
        }
    }
    Ok(report)
}

/// Tracks the participants should receive, summed: every publisher's tracks go
/// to every other publisher and to every subscriber of its room.
fn tracks_expected(cfg: &Config, clips: &Clips) -> usize {
    let per_publisher = clips.tracks().len();
    let p = cfg.publishers;
    cfg.rooms * per_publisher * (p * p.saturating_sub(1) + cfg.subscribers * p)
}

/// A joined participant of either target.
enum Peer {
    LiveKit(livekit::Participant),
    Janus(janus::Participant),
    Whip(whip::Participant),
}
