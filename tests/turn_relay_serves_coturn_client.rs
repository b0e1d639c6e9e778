//! The TURN relay against a client we did not write: coturn's `turnutils_uclient`
//! (Debian `coturn`) allocates, creates permissions, binds channels and relays
//! client to client (`-y`) through `meridian dev`'s relay over UDP, TCP and TLS,
//! with TURN REST API credentials (`-W secret`).

mod common;

use std::process::Command;
use std::time::Duration;

use meridian::DevOptions;

const TURN_SECRET: &str = "coturn-client-test-secret";

/// What one `turnutils_uclient` run reported.
#[derive(Debug)]
struct Run {
    sent: u64,
    received: u64,
    lost: u64,
    output: String,
}

/// Runs `turnutils_uclient` with `args` against 127.0.0.1:`port` and reads its
/// totals. Fails the test if the client is not installed (`scripts/setup` installs it).
fn uclient(args: &[&str], port: u16) -> Run {
    let out = Command::new("turnutils_uclient")
        .args(args)
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("turnutils_uclient runs (Debian package coturn; scripts/setup installs it)");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let number_after = |key: &str| -> Option<u64> {
        let line = output.lines().rev().find(|l| l.contains(key))?;
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Run {
        sent: number_after("tot_send_msgs=").unwrap_or(0),
        received: number_after("tot_recv_msgs=").unwrap_or(0),
        lost: number_after("Total lost packets").unwrap_or(u64::MAX),
        output,
    }
}

async fn relay_stack() -> meridian::DevStack {
    meridian::start_dev(DevOptions { turn_secret: TURN_SECRET.into(), ..common::options() })
        .await
        .expect("dev stack starts")
}

/// 4 clients in pairs, 100 messages of 1000 bytes each, every 5 ms, client to
/// client over channels (`-y`, without `-s`), no RTCP allocations (`-c`).
const LOAD: [&str; 12] = ["-u", "alice", "-W", TURN_SECRET, "-y", "-c", "-m", "4", "-n", "100", "-l", "1000"];

fn assert_relayed(run: &Run, how: &str) {
    assert_eq!(run.sent, 400, "{how}: every client sent its messages\n{}", run.output);
    assert_eq!(run.received, run.sent, "{how}: every message came back through the relay\n{}", run.output);
    assert_eq!(run.lost, 0, "{how}\n{}", run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_client_relays_over_udp_tcp_and_tls() {
    let stack = relay_stack().await;
    let region = stack.regions[0].clone();
    let run = |extra: &'static [&'static str], port: u16| {
        tokio::task::spawn_blocking(move || {
            // `extra` comes last, so its `-l` overrides LOAD's (the client keeps the last value).
            let mut args: Vec<&str> = LOAD.to_vec();
            args.extend(["-z", "5"]);
            args.extend(extra);
            uclient(&args, port)
        })
    };
    assert_relayed(&run(&[], region.turn_addr.port()).await.unwrap(), "UDP");
    assert_relayed(&run(&["-t"], region.turn_tcp_addr.port()).await.unwrap(), "TCP");
    assert_relayed(&run(&["-t", "-S"], region.turn_tls_addr.port()).await.unwrap(), "TLS");
    // Payloads of 1400 bytes (a full-size RTP packet) pass whole, on channels and
    // in Send indications (-s).
    assert_relayed(&run(&["-l", "1400"], region.turn_addr.port()).await.unwrap(), "UDP, 1400-byte payloads");
    assert_relayed(
        &run(&["-s", "-l", "1400"], region.turn_addr.port()).await.unwrap(),
        "UDP, 1400-byte Send indications",
    );
    // DONT-FRAGMENT in the Allocate (-g): accepted (the crate alone answers 420).
    assert_relayed(&run(&["-g"], region.turn_addr.port()).await.unwrap(), "UDP, DONT-FRAGMENT");
    // Send indications instead of channels (-s), over TCP.
    assert_relayed(&run(&["-t", "-s"], region.turn_tcp_addr.port()).await.unwrap(), "TCP, Send indications");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_client_with_a_wrong_secret_gets_no_allocation() {
    let stack = relay_stack().await;
    let port = stack.regions[0].turn_addr.port();
    let run = tokio::task::spawn_blocking(move || {
        uclient(&["-u", "mallory", "-W", "not-the-secret", "-y", "-c", "-n", "5"], port)
    })
    .await
    .unwrap();
    assert_eq!(run.received, 0, "{}", run.output);
    assert!(run.output.contains("Cannot complete Allocation"), "{}", run.output);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_speaking_another_protocol_is_closed_alone() {
    let stack = relay_stack().await;
    let addr = stack.regions[0].turn_tcp_addr;
    // A TLS ClientHello on the plain TCP port closes that one connection; the
    // listener keeps serving.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed promptly").unwrap_or(0);
    assert_eq!(n, 0, "the relay closes a connection that does not speak STUN");
    let run = tokio::task::spawn_blocking(move || {
        let mut args = vec!["-t"];
        args.extend(LOAD);
        uclient(&args, addr.port())
    })
    .await
    .unwrap();
    assert_relayed(&run, "TCP after a bad connection");
    stack.shutdown().await;
}
