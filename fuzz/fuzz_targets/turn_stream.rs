//! TURN over TCP (`turn-relay/src/stream.rs`): the input is everything a client
//! writes on one connection to a `StreamConn` listener on loopback, then it closes
//! its side. `read_message` frames it (STUN by its length, ChannelData padded to 4)
//! until the end, an error or a protocol violation; the messages reach
//! `Conn::recv_from` as the `turn` server would read them.
//!
//! The harness checks them against its own reading of RFC 8656 §12.5 (the framing
//! in `stream.rs`'s module docs): the same messages, in order, without padding;
//! a message over the server's 1500-byte buffer ends the connection.
//!
//! `read_message` is private; a real socket is the only way in without changing
//! `stream.rs`. Each input is one TCP connection from a rotating loopback source
//! address (127.0.0.2 to 127.0.0.250), so TIME_WAIT never exhausts the ports.
#![no_main]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use meridian_turn::stream::StreamConn;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use webrtc_util::conn::Conn;

/// The `turn` server's read buffer (`INBOUND_MTU`).
const SERVER_BUFFER: usize = 1500;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

struct State {
    runtime: tokio::runtime::Runtime,
    conn: StreamConn,
    ended: mpsc::Receiver<SocketAddr>,
    addr: SocketAddr,
    next_source: u32,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = state.get_or_insert_with(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (conn, addr) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback listener");
            let addr = listener.local_addr().expect("bound address");
            (StreamConn::listen(listener, None, 16).expect("stream listener"), addr)
        });
        let ended = conn.ended_connections().expect("the first call has the receiver");
        State { runtime, conn, ended, addr, next_source: 0 }
    });
    state.next_source = (state.next_source + 1) % 249;
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + state.next_source as u8)), 0);
    let State { runtime, conn, ended, addr, .. } = state;
    let got = runtime.block_on(one_connection(conn, ended, *addr, source, data));
    assert_eq!(got, expected(data), "stream framing of {data:02x?}");
});

/// Writes `data` on a new connection, closes the write side and collects what the
/// listener hands the server from it until the connection has ended.
async fn one_connection(
    conn: &StreamConn,
    ended: &mut mpsc::Receiver<SocketAddr>,
    addr: SocketAddr,
    source: SocketAddr,
    data: &[u8],
) -> Vec<Vec<u8>> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(source).expect("bind a loopback source");
    let mut stream = socket.connect(addr).await.expect("loopback connect");
    let local = stream.local_addr().expect("local address");
    // The listener may close early (a protocol violation): then writing fails.
    let _ = stream.write_all(data).await;
    let _ = stream.shutdown().await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; SERVER_BUFFER];
    loop {
        tokio::select! {
            biased;
            r = conn.recv_from(&mut buf) => {
                let (n, from) = r.expect("the listener stays open");
                assert_eq!(from, local, "a message from another connection");
                got.push(buf[..n].to_vec());
            }
            peer = ended.recv() => {
                if peer.expect("the listener stays open") == local { break }
            }
        }
    }
    // Everything the connection read was queued before it ended. (Polled once,
    // outside tokio's budget: a zero timeout would wait for the next timer tick.)
    while let Some(Ok((n, from))) = tokio::task::unconstrained(now_or_never(conn.recv_from(&mut buf))).await {
        assert_eq!(from, local, "a message from another connection");
        got.push(buf[..n].to_vec());
    }
    // An abortive close: no TIME_WAIT left behind on this side.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
    got
}

/// `future`'s output if it is ready at the first poll.
async fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// RFC 8656 §12.5 framing, read independently of `stream.rs`: STUN is 20 bytes
/// plus its length (a multiple of 4) and starts its body with the magic cookie;
/// ChannelData (first byte 0x40-0x7F) is 4 bytes plus its length, padded to 4;
/// anything else, a message over 1500 bytes (`stream::MAX_STREAM_MESSAGE`) or
/// one cut by the end of the stream ends it.
fn expected(mut input: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while input.len() >= 4 {
        let length = usize::from(u16::from_be_bytes([input[2], input[3]]));
        let (whole, padded) = match input[0] {
            0x00..=0x3f if length % 4 == 0 => {
                if input.get(4..8) != Some(&MAGIC_COOKIE[..]) {
                    break;
                }
                (20 + length, 20 + length)
            }
            0x40..=0x7f => (4 + length, 4 + length.div_ceil(4) * 4),
            _ => break,
        };
        if whole > SERVER_BUFFER || input.len() < padded {
            break;
        }
        out.push(input[..whole].to_vec());
        input = &input[padded..];
    }
    out
}
