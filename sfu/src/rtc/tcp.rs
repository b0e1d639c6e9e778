//! ICE over TCP on the node's one TCP media port (RFC 6544, LiveKit's
//! `rtc.tcp_port`), for clients whose network lets no UDP through and that
//! have no TURN relay to fall back on.
//!
//! Each peer offers one passive TCP host candidate beside its UDP one; the
//! client connects (active) and speaks what it would over UDP (STUN, DTLS,
//! SRTP), each packet framed by RFC 4571: a 16-bit big-endian length, then
//! that many bytes. One task per connection reads frames and hands them to the
//! driver, which routes them as it routes datagrams (STUN Binding requests by
//! ufrag, the rest by the connection a request was accepted on) and writes
//! what str0m sends over TCP back to the connection it is addressed to.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once (more are closed at
//! accept); frames above [`MAX_FRAME`] bytes, or none within
//! [`FIRST_FRAME`] of connecting and [`IDLE`] afterwards (consent checks come
//! every few seconds, RFC 7675), close the connection; so does a first frame
//! that is not a STUN Binding request for a peer of the driver. Frames wait in
//! a queue of [`WRITE_QUEUE`] per connection; when it is full, more are
//! dropped, as a full network would.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Command;

/// Connections open at once on one driver's TCP port.
pub const MAX_CONNECTIONS: usize = 1024;
/// The largest frame taken, in bytes (above any packet a WebRTC peer sends
/// over TCP; RFC 4571 allows 65 535).
pub const MAX_FRAME: usize = 2048;
/// How long a new connection has to send its first frame.
pub const FIRST_FRAME: Duration = Duration::from_secs(10);
/// How long a connection may be silent after that.
pub const IDLE: Duration = Duration::from_secs(30);
/// Frames that may wait to be written to one connection.
pub const WRITE_QUEUE: usize = 256;

/// What a connection's task tells the driver.
pub(super) enum TcpEvent {
    /// A client connected from `source`; frames for it go to `writer`.
    Opened { conn: u64, source: SocketAddr, writer: mpsc::Sender<Vec<u8>> },
    /// One frame's payload from `source`.
    Frame { conn: u64, source: SocketAddr, data: Vec<u8> },
    /// The connection has ended.
    Closed { conn: u64, source: SocketAddr },
}

/// A connection as the driver holds it.
pub(super) struct TcpConn<K> {
    /// Which connection from this address it is (an address may reconnect).
    pub conn: u64,
    /// Frames to write, framed already.
    pub writer: mpsc::Sender<Vec<u8>>,
    /// The peer a STUN request on it was accepted for; until then, only such
    /// a request is taken from it.
    pub peer: Option<K>,
}

/// `payload` framed for the wire (RFC 4571 §2); `None` when it is too long
/// to frame.
pub(super) fn frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(payload.len().checked_add(2)?);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// Serves one connection accepted by the driver: frames in to the driver,
/// frames out from it. It holds the driver's queue weakly, so an open
/// connection does not keep a driver nobody else holds alive; it ends when
/// the driver lets go of it. Always ends by telling the driver it closed.
pub(super) async fn connection(stream: TcpStream, source: SocketAddr, conn: u64, commands: mpsc::WeakSender<Command>) {
    serve(stream, source, conn, &commands).await;
    tell(&commands, TcpEvent::Closed { conn, source }).await;
}

async fn serve(stream: TcpStream, source: SocketAddr, conn: u64, commands: &mpsc::WeakSender<Command>) {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let (writer, mut frames) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    if !tell(commands, TcpEvent::Opened { conn, source, writer }).await {
        return;
    }
    let reader = async {
        let mut limit = FIRST_FRAME;
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(limit, read.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let len = usize::from(u16::from_be_bytes(len));
            if len == 0 || len > MAX_FRAME {
                tracing::debug!(%source, len, "ICE/TCP frame refused: connection closed");
                return;
            }
            let mut data = vec![0u8; len];
            match tokio::time::timeout(IDLE, read.read_exact(&mut data)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            if !tell(commands, TcpEvent::Frame { conn, source, data }).await {
                return;
            }
            limit = IDLE;
        }
    };
    // Ends when the driver lets go of the connection (its writer dropped).
    let writer = async {
        while let Some(f) = frames.recv().await {
            if write.write_all(&f).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

/// Hands `event` to the driver, waiting while its queue is full; false once it has ended.
async fn tell(commands: &mpsc::WeakSender<Command>, event: TcpEvent) -> bool {
    match commands.upgrade() {
        Some(c) => c.send(Command::Tcp(event)).await.is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length_and_refuse_what_does_not_fit() {
        assert_eq!(frame(&[7, 8, 9]), Some(vec![0, 3, 7, 8, 9]));
        assert_eq!(frame(&[]), Some(vec![0, 0]));
        assert_eq!(frame(&vec![0u8; 65_536]), None);
    }
}
