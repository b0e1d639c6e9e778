//! What Terraform renders is what boots: `terraform/tests/render.sh` applies the
//! provider-free `config` module for two regions on loopback (eu-west on
//! 127.0.1.1, us-east on 127.0.2.1, the gateway on 127.0.0.1:7880), and this test
//! starts `meridian gateway`, `sfu` and `turn` from exactly those files, with an
//! empty environment so that no flag or variable fills a gap the files leave.
//! A client then joins through the rendered gateway address and gets the
//! rendered region, node and relay; each node reaches its rendered relay.
//!
//! Needs Terraform (installed on these machines) and Postgres; without either,
//! outside CI the test reports SKIPPED on stderr, under `CI=true` it fails.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{basic_auth, eventually, http, recv, scoped_postgres};
use livekit_protocol as proto;

/// The rendered deployment's API key and secret (`terraform/tests/render/main.tf`).
const KEY: &str = "renderkey";
const SECRET: &str = "render-api-secret-0123456789";
const GATEWAY: &str = "127.0.0.1:7880";
const GUARD: Duration = Duration::from_secs(120);

/// Kills its processes when dropped, so a failing test leaves nothing behind.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `meridian <role> --config <file>` with nothing else: no flags, an empty
/// environment but for the log filter.
fn start(role: &str, config: &Path, logs: &Path) -> Child {
    let log = std::fs::File::create(logs.join(format!("{role}-{}.log", rand::random::<u32>()))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([role, "--config", config.to_str().unwrap()])
        .env_clear()
        .env("RUST_LOG", "info,webrtc=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the meridian binary runs")
}

fn have_terraform() -> bool {
    Command::new("terraform").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[tokio::test]
async fn a_deployment_rendered_by_terraform_boots_and_takes_a_join() {
    if !have_terraform() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true and terraform is not installed");
        eprintln!("SKIPPED a_deployment_rendered_by_terraform_boots_and_takes_a_join: no terraform");
        return;
    }
    let Some(pg) = scoped_postgres("a_deployment_rendered_by_terraform_boots", "tfboot").await else { return };
    let out = std::env::temp_dir().join(&pg.schema);
    let tls = out.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.1.1".into(), "127.0.2.1".into()]).unwrap();
    std::fs::write(tls.join("turn.crt"), cert.pem()).unwrap();
    std::fs::write(tls.join("turn.key"), key_pair.serialize_pem()).unwrap();

    let rendered = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/terraform/tests/render.sh"))
        .arg(&out)
        .env("DATABASE_URL", &pg.url)
        .output()
        .expect("render.sh runs");
    assert!(rendered.status.success(), "render.sh: {}", String::from_utf8_lossy(&rendered.stderr));

    let regions = ["eu-west", "us-east"];
    let mut procs = Procs(Vec::new());
    for region in regions {
        procs.0.push(start("turn", &out.join(region).join("turn.toml"), &out));
        procs.0.push(start("sfu", &out.join(region).join("sfu.toml"), &out));
    }
    procs.0.push(start("gateway", &out.join(regions[0]).join("gateway.toml"), &out));
    let gateway = GATEWAY.parse().unwrap();

    eventually("the rendered gateway answers", || async {
        tokio::net::TcpStream::connect(GATEWAY).await.is_ok()
            && http(gateway, "GET", "/healthz", &[], "").await.0 == 200
    })
    .await;
    let nodes = || async {
        pg.admin
            .query(&format!("SELECT region FROM {}.nodes ORDER BY region", pg.schema), &[])
            .await
            .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    eventually("both rendered nodes register", || async { nodes().await == regions }).await;

    // Each node reaches the relay its file names (the probe's STUN Binding is
    // answered), on the metrics address its file names.
    for (region, ip) in [("eu-west", "127.0.1.1"), ("us-east", "127.0.2.1")] {
        let metrics = format!("{ip}:9101").parse().unwrap();
        eventually(&format!("{region}'s node sees its relay"), || async {
            tokio::net::TcpStream::connect(metrics).await.is_ok()
                && http(metrics, "GET", "/metrics", &[], "")
                    .await
                    .1
                    .lines()
                    .any(|l| l.starts_with("meridian_sfu_turn_relay_up{") && l.contains(region) && l.ends_with(" 1"))
        })
        .await;
    }

    // A token from the rendered API key, a join through the rendered gateway.
    let body = serde_json::json!({ "room": "rendered", "identity": "ops" }).to_string();
    let auth = basic_auth(KEY, SECRET);
    let (status, minted) =
        http(gateway, "POST", "/v1/tokens", &[("authorization", &auth), ("content-type", "application/json")], &body)
            .await;
    assert_eq!(status, 200, "{minted}");
    let token = serde_json::from_str::<serde_json::Value>(&minted).unwrap()["token"].as_str().unwrap().to_owned();
    let url = format!("ws://{GATEWAY}/rtc?access_token={token}&auto_subscribe=1&sdk=js&protocol=16");
    let (mut ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
        .await
        .expect("the join is answered")
        .expect("the join is accepted");
    let Some(proto::signal_response::Message::Join(join)) = recv(&mut ws).await else { panic!("a JoinResponse") };
    let server = join.server_info.unwrap();
    // 127.0.0.1 cannot be located: the rendered default region.
    assert_eq!(server.region, "eu-west");
    let urls: Vec<String> = join.ice_servers.iter().flat_map(|s| s.urls.clone()).collect();
    assert_eq!(
        urls,
        [
            "turn:127.0.1.1:3478?transport=udp",
            "turn:127.0.1.1:3478?transport=tcp",
            "turns:127.0.1.1:5349?transport=tcp"
        ],
        "the rendered relay of the region"
    );
    drop(ws);
    drop(procs);
    pg.drop_schema().await;
}
