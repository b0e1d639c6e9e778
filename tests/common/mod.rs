//! Helpers for the end-to-end tests: a dev stack on ephemeral loopback ports, a
//! minimal HTTP/1.1 client, and a LiveKit signal client over tokio-tungstenite.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use meridian::{DevOptions, DevStack};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &str = "testkey";
pub const SECRET: &str = "test-secret-of-some-length";

/// An HS256 JWT over `claims`, signed by hand so tests can make tokens the
/// minting API does not make (expired, no roomJoin, attributes).
pub fn jwt(claims: serde_json::Value, secret: &str) -> String {
    use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
    use hmac::{Hmac, Mac};
    let header = BASE64_URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = BASE64_URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", BASE64_URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// A join token for `identity` in `room`, signed with [`SECRET`], valid for an
/// hour; `video` is merged into the `video` claim (`roomJoin` and `room` are set)
/// and `extra` into the claims (`attributes`, `metadata`, `name`).
pub fn join_token(room: &str, identity: &str, video: serde_json::Value, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "iss": KEY, "sub": identity, "nbf": now() - 60, "exp": now() + 3600,
        "video": { "roomJoin": true, "room": room },
    });
    for (k, v) in video.as_object().into_iter().flatten() {
        claims["video"][k] = v.clone();
    }
    for (k, v) in extra.as_object().into_iter().flatten() {
        claims[k] = v.clone();
    }
    jwt(claims, SECRET)
}

/// A stack on ephemeral ports with [`KEY`]/[`SECRET`] and the memory store.
pub async fn stack() -> DevStack {
    stack_with(None).await
}

/// A stack on ephemeral ports, on Postgres when `database_url` is given.
pub async fn stack_with(database_url: Option<String>) -> DevStack {
    init_logs();
    meridian::start_dev(DevOptions { database_url, ..options() }).await.expect("dev stack starts")
}

/// Sends the stack's logs to the test's captured output, which cargo prints for a
/// failing test only. `RUST_LOG` overrides the filter (default: info, with the
/// webrtc crates' chatter at warn).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,webrtc=warn,webrtc_ice=warn,webrtc_dtls=error,dtls=error,turn=warn")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Options for a stack on ephemeral loopback ports with [`KEY`]/[`SECRET`].
pub fn options() -> DevOptions {
    DevOptions {
        port: 0,
        sfu_port: 0,
        turn_port: 0,
        turn_tls_port: 0,
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        ..DevOptions::default()
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub fn basic_auth(key: &str, secret: &str) -> String {
    use base64::prelude::{Engine, BASE64_STANDARD};
    format!("Basic {}", BASE64_STANDARD.encode(format!("{key}:{secret}")))
}

/// Mints a token through `POST /v1/tokens`.
pub async fn api_token(stack: &DevStack, room: &str, identity: &str) -> String {
    let auth = basic_auth(KEY, SECRET);
    let body = serde_json::json!({ "room": room, "identity": identity }).to_string();
    let (status, body) = http(
        stack.gateway_addr,
        "POST",
        "/v1/tokens",
        &[("authorization", &auth), ("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["token"].as_str().expect("token").to_owned()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/rtc` through the gateway as livekit-client does (v0 path).
pub async fn connect(stack: &DevStack, token: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    connect_from(stack, token, None).await
}

/// Opens `/rtc` as if through a proxy that says the client is `forwarded_for`.
pub async fn connect_from(
    stack: &DevStack,
    token: &str,
    forwarded_for: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/rtc?access_token={token}&auto_subscribe=1&sdk=js&protocol=16", stack.gateway_addr);
    let mut req = url.into_client_request()?;
    if let Some(ip) = forwarded_for {
        req.headers_mut().insert("x-forwarded-for", ip.parse().expect("header value"));
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

pub async fn send(ws: &mut Ws, message: proto::signal_request::Message) {
    let bytes = proto::SignalRequest { message: Some(message) }.encode_to_vec();
    ws.send(Frame::Binary(bytes.into())).await.expect("send");
}

/// The next signal message, or `None` when the socket closes. Panics after 10 s.
pub async fn recv(ws: &mut Ws) -> Option<proto::signal_response::Message> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message within 10 s");
        match frame {
            Some(Ok(Frame::Binary(b))) => {
                return proto::SignalResponse::decode(b.as_ref()).expect("decodable SignalResponse").message
            }
            Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Waits for a message matching `pick`, skipping others (trickles, offers).
pub async fn recv_until<T>(ws: &mut Ws, mut pick: impl FnMut(proto::signal_response::Message) -> Option<T>) -> T {
    loop {
        let m = recv(ws).await.expect("socket open");
        if let Some(t) = pick(m) {
            return t;
        }
    }
}

pub async fn join(ws: &mut Ws) -> proto::JoinResponse {
    match recv(ws).await {
        Some(proto::signal_response::Message::Join(j)) => j,
        other => panic!("first message must be JoinResponse, got {other:?}"),
    }
}

/// Postgres from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh schema of its own in the test Postgres.
pub struct ScopedPostgres {
    /// A connection for checks and clean-up.
    pub admin: tokio_postgres::Client,
    /// The schema's name.
    pub schema: String,
    /// A URL whose sessions use the schema (`search_path`).
    pub url: String,
}

impl ScopedPostgres {
    /// Drops the schema.
    pub async fn drop_schema(self) {
        self.admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema)).await.unwrap();
    }
}

/// A fresh schema named `<prefix>_<random>`, or `None` (reported on stderr as
/// SKIPPED) when Postgres is unreachable outside CI. Under `CI=true` an
/// unreachable Postgres fails the test.
pub async fn scoped_postgres(test: &str, prefix: &str) -> Option<ScopedPostgres> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let admin = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED {test}: {url} unreachable ({e})");
            return None;
        }
        Err(e) => panic!("CI=true and Postgres at {url} is unreachable: {e}"),
    };
    let schema = format!("{prefix}_{:016x}", rand::random::<u64>());
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    Some(ScopedPostgres { admin, schema, url })
}

/// Waits until `check` holds, checking every 20 ms, with a 60 s guard that fails
/// the test naming `what`. The guard is for a broken build, never a timing
/// assertion: on a loaded machine the wait just takes longer.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let waiting = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), waiting).await.unwrap_or_else(|_| panic!("never happened: {what}"));
}

/// A Postgres server in a temporary directory, run as the `postgres` user.
pub struct PrivatePostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Postgres is installed (scripts/setup installs it)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let data = std::env::temp_dir().join(format!("meridian-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        as_postgres(&["chown", "-R", "postgres", &data.display().to_string()], true);
        let port = 20_000 + (std::process::id() % 20_000) as u16;
        let initdb = bin.join("initdb").display().to_string();
        as_postgres(&["runuser", "-u", "postgres", "--", &initdb, "-A", "trust", "-U", "postgres", "-D"], false)
            .arg(&data)
            .status()
            .map(|s| assert!(s.success(), "initdb"))
            .unwrap();
        let pg = Self { bin, data, port };
        pg.ctl("start");
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn ctl(&self, action: &str) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.data.display());
        let mut cmd = as_postgres(&["runuser", "-u", "postgres", "--", &pg_ctl, action, "-w", "-m", "fast"], false);
        cmd.arg("-D").arg(&self.data).args(["-o", &opts, "-l"]).arg(self.data.join("log"));
        let status = cmd.status().unwrap();
        assert!(status.success(), "pg_ctl {action}");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.ctl("stop");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A command (run at once when `now`).
pub fn as_postgres(args: &[&str], now: bool) -> std::process::Command {
    let mut cmd = std::process::Command::new(args[0]);
    cmd.args(&args[1..]);
    if now {
        assert!(cmd.status().unwrap().success(), "{args:?}");
    }
    cmd
}
