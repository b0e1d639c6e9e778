//! The load tester runs a tiny livestream end to end against `meridian dev`: one
//! publisher sending ffmpeg-made VP8 and Opus clips, two subscribers. The second
//! subscriber of a track is where webrtc-rs's shared-packet extensions bit (see
//! `Engine::subscriber_peer_connection`): with audio negotiated before video on
//! one subscriber PC, about one run in five had a video track that never fired
//! `on_track`.
//! It checks the instrument, not the SFU's speed (no timing is asserted).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use meridian_bench::loadtest::{run, Config, Target};

/// Makes 3-second 320x240 clips with `bench/clips.sh` (Debian's ffmpeg).
fn clips() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-clips-{}", std::process::id()));
    let status = Command::new("bash")
        .args([concat!(env!("CARGO_MANIFEST_DIR"), "/bench/clips.sh")])
        .arg(&dir)
        .args(["3", "320x240"])
        .status()
        .expect("bash runs");
    assert!(status.success(), "bench/clips.sh made the clips (needs ffmpeg; scripts/setup installs it)");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_livestream_is_measured_end_to_end() {
    let dir = clips();
    let stack = common::stack().await;
    let report = run(Config {
        target: Target::LiveKit,
        url: format!("ws://{}", stack.gateway_addr),
        api_key: common::KEY.into(),
        api_secret: common::SECRET.into(),
        publishers: 1,
        subscribers: 2,
        rooms: 1,
        duration: Duration::from_secs(3),
        video: Some(dir.join("video.ivf")),
        audio: Some(dir.join("audio.ogg")),
        sfu_pid: Some(std::process::id()),
    })
    .await
    .expect("the load test runs");
    assert_eq!(report.participants, 3);
    assert_eq!(report.tracks_expected, 4);
    assert_eq!(report.tracks_received, 4, "each subscriber receives the video and the audio: {report:?}");
    assert_eq!(report.tracks_stalled, 0, "every track flows until the end: {report:?}");
    assert!(report.packets > 100, "{report:?}");
    assert!(report.frames > 30, "video frames arrive: {report:?}");
    assert!(report.loss_percent < 5.0, "{report:?}");
    assert!(report.delay_p50_ms > 0.0 && report.delay_p99_ms >= report.delay_p50_ms, "{report:?}");
    assert!(report.sfu_cpu_seconds.is_some_and(|c| c > 0.0) && report.sfu_rss_mib.is_some(), "{report:?}");
    stack.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
