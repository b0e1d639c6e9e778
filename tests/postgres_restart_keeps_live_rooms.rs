//! Postgres stopped for 30 s under a live call and a loop of joins, then
//! started again, on a private server of this test's own (so no other test loses
//! its database):
//! - the call's media flows throughout (the load tester's audio track never stalls);
//! - joins to the live room are routed from the gateway's cached registry and
//!   admitted by the node, which holds the room in memory;
//! - what needs a write is refused with a clear 503: minting a token (none is
//!   handed out unrecorded) and joining a room nobody has placed;
//! - `/v1/route` answers from the cache and says how old it is;
//! - when the database is back, the node's heartbeats resume and new rooms and
//!   tokens work again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use meridian_bench::loadtest::{run, Config, Target};

/// How long the database stays down (the issue's figure).
const OUTAGE: Duration = Duration::from_secs(30);

fn clips() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-pg-clips-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/clips.sh");
    let status = Command::new("bash").arg(script).arg(&dir).args(["3", "320x240"]).status().unwrap();
    assert!(status.success(), "bench/clips.sh (needs ffmpeg; scripts/setup installs it)");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rooms_carry_on_while_postgres_restarts() {
    let pg = PrivatePostgres::start();
    let stack = stack_with(Some(pg.url())).await;
    let gw = stack.gateway_addr;
    let auth = basic_auth(KEY, SECRET);
    let dir = clips();

    // The call: one publisher, one subscriber, audio, for the outage and a margin.
    let call = tokio::spawn(run(Config {
        target: Target::LiveKit,
        url: format!("ws://{gw}"),
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        publishers: 1,
        subscribers: 1,
        rooms: 1,
        duration: OUTAGE + Duration::from_secs(15),
        video: None,
        audio: Some(dir.join("audio.ogg")),
        sfu_pid: None,
    }));
    eventually("the call's room is placed", || async {
        stack.store.room(&"load-0".into()).await.ok().flatten().is_some_and(|r| r.node.is_some())
    })
    .await;
    // A token for the live room, minted while the store is up.
    let live_token = api_token(&stack, "load-0", "late-joiner").await;
    let fresh_token = api_token(&stack, "not-yet-placed", "someone").await;
    // The gateway reads the room once, as a join would, so that it is cached.
    let mut ws = connect(&stack, &live_token).await.expect("a join before the outage");
    join(&mut ws).await;
    drop(ws);

    pg.ctl("stop");
    let down_at = SystemTime::now();
    let mut joins = 0;
    while down_at.elapsed().unwrap_or_default() < OUTAGE {
        let mut ws = connect(&stack, &live_token).await.expect("joins to the live room go on");
        let j = join(&mut ws).await;
        assert_eq!(j.room.unwrap().name, "load-0");
        drop(ws);
        joins += 1;

        let refused = connect(&stack, &fresh_token).await.expect_err("a new room needs a write");
        assert!(refused.to_string().contains("503"), "{refused}");
        let body = r#"{"room":"x","identity":"y"}"#;
        let (status, text) = http(gw, "POST", "/v1/tokens", &[("authorization", &auth)], body).await;
        assert_eq!(status, 503, "no token without its record: {text}");
        let (status, text) =
            http(gw, "GET", "/v1/route?ip=127.0.0.1&room=load-0", &[("authorization", &auth)], "").await;
        assert_eq!(status, 200, "{text}");
        let route: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(route["registry"]["source"], "cache", "{text}");
        assert!(route["registry"]["age_seconds"].as_f64().unwrap() >= 0.0, "{text}");
        assert_eq!(route["node"], "local-1");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(joins >= 5, "{joins} joins during the outage");

    pg.ctl("start");
    let back_at = SystemTime::now();
    eventually("heartbeats resume", || async {
        stack.store.nodes().await.is_ok_and(|n| n.iter().any(|n| n.last_seen > back_at))
    })
    .await;
    let body = r#"{"room":"after","identity":"z"}"#;
    let (status, text) = http(gw, "POST", "/v1/tokens", &[("authorization", &auth)], body).await;
    assert_eq!(status, 200, "minting is back: {text}");
    let mut ws = connect(&stack, &fresh_token).await.expect("new rooms are placed again");
    join(&mut ws).await;
    drop(ws);

    let report = call.await.unwrap().expect("the load test runs");
    assert_eq!(report.tracks_received, report.tracks_expected, "{report:?}");
    assert_eq!(report.tracks_stalled, 0, "media flowed through the outage: {report:?}");
    stack.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
