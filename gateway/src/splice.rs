//! The spliced signal socket between a client and its SFU node, and what the
//! gateway says when the node dies under it.
//!
//! Bytes pass through unchanged both ways. The node→client direction is also
//! followed frame by frame (RFC 6455 §5.2 headers only; payloads are never
//! read), so that when the node's side ends without a close frame (the node
//! died or was killed) on a frame boundary, the gateway can add one frame of
//! its own: LiveKit's `LeaveRequest{action: RECONNECT}`, then a close. A resume
//! there would be refused (the participant died with the node), so the client
//! goes straight to a full rejoin, which the gateway routes to a live node,
//! instead of first spending a round trip on `reconnect=1`. `livekit-client`
//! rejoins on that leave at once, without its retry delay.

use livekit_protocol as proto;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest the gateway keeps a client's socket open after telling it to
/// rejoin, for the client to read the leave and close its side first (closing
/// with unread input would reset the connection and could lose the leave).
pub const LEAVE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a server→client byte stream is in its WebSocket framing.
#[derive(Debug, Default)]
pub struct FrameTracker {
    /// Header bytes of the frame being read (at most 14: 2, 8 length, 4 mask).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    /// Whether a close frame (opcode 8) went by.
    closed: bool,
}

impl FrameTracker {
    /// Follows `bytes`, the next ones of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                // n <= remaining by construction.
                self.remaining -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let Some(slot) = self.header.get_mut(self.have) else {
                // Cannot happen: a header is complete at 14 bytes at most.
                self.have = 0;
                continue;
            };
            *slot = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(len) = self.payload_len() {
                self.closed |= self.header[0] & 0x0f == 0x8;
                self.remaining = len;
                self.have = 0;
            }
        }
    }

    /// The payload length once the header is complete.
    fn payload_len(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let (ext, len) = match self.header[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let mask = if masked { 4 } else { 0 };
        if self.have < 2 + ext + mask {
            return None;
        }
        Some(len.unwrap_or_else(|| self.header[2..2 + ext].iter().fold(0u64, |v, b| (v << 8) | u64::from(*b))))
    }

    /// Whether the stream is between frames.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Whether a close frame went by.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

/// The frames the gateway sends a client whose node died: a binary frame with
/// `SignalResponse{leave: LeaveRequest{can_reconnect, action: RECONNECT, reason:
/// SIGNAL_CLOSE}}` and a close frame (1000), both unmasked (server frames).
pub fn rejoin_frames() -> Vec<u8> {
    let leave = proto::SignalResponse {
        message: Some(proto::signal_response::Message::Leave(proto::LeaveRequest {
            can_reconnect: true,
            reason: proto::DisconnectReason::SignalClose as i32,
            action: proto::leave_request::Action::Reconnect as i32,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let mut frames = vec![0x82];
    // RFC 6455 §5.2: 7 bits of length, or 126 and 16 bits. A LeaveRequest is a
    // few bytes, far under the 16-bit form's 64 KiB.
    match u8::try_from(leave.len()) {
        Ok(n) if n < 126 => frames.push(n),
        _ => {
            frames.push(126);
            frames.extend_from_slice(&u16::try_from(leave.len()).unwrap_or(u16::MAX).to_be_bytes());
        }
    }
    frames.extend_from_slice(&leave);
    frames.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
    frames
}

/// Which end of a one-way copy stopped it.
#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    /// End of input or a read error.
    Reader,
    /// A write error.
    Writer,
}

async fn pump<R, W>(from: &mut R, to: &mut W, buf: &mut [u8], mut seen: impl FnMut(&[u8])) -> Stopped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let n = match from.read(buf).await {
            Ok(0) | Err(_) => return Stopped::Reader,
            Ok(n) => n,
        };
        seen(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            return Stopped::Writer;
        }
    }
}

/// What ended a spliced socket.
#[derive(Debug, PartialEq, Eq)]
pub enum SpliceEnd {
    /// The client went away (or the node closed properly).
    Client,
    /// The node's side ended with a close frame or mid-frame: nothing added.
    Node,
    /// The node's side ended between frames without a close: the client was
    /// told to rejoin ([`rejoin_frames`]).
    NodeDied,
}

/// Copies bytes both ways between `client` and `node`, `buffer` bytes per
/// direction, until either side ends; see the module doc for what is added
/// when the node's side ends first.
pub async fn splice<C, N>(client: C, node: N, buffer: usize) -> SpliceEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    N: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut node_r, mut node_w) = tokio::io::split(node);
    let (mut up, mut down) = (vec![0u8; buffer], vec![0u8; buffer]);
    let mut frames = FrameTracker::default();
    let node_ended = tokio::select! {
        stopped = pump(&mut client_r, &mut node_w, &mut up, |_| {}) => stopped == Stopped::Writer,
        stopped = pump(&mut node_r, &mut client_w, &mut down, |b| frames.feed(b)) => stopped == Stopped::Reader,
    };
    if !node_ended {
        let _ = node_w.shutdown().await;
        return SpliceEnd::Client;
    }
    if !frames.at_boundary() || frames.closed() {
        let _ = client_w.shutdown().await;
        return SpliceEnd::Node;
    }
    if client_w.write_all(&rejoin_frames()).await.is_ok() && client_w.flush().await.is_ok() {
        let _ = client_w.shutdown().await;
        // Read (and drop) what the client still sends until it closes.
        let drain = async { while matches!(client_r.read(&mut up).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(LEAVE_LINGER, drain).await;
    }
    SpliceEnd::NodeDied
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    fn frame(opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_of_every_length_form_are_followed_whatever_the_read_sizes() {
        let mut stream = Vec::new();
        for (len, mask) in [(0, false), (5, false), (125, true), (126, false), (4000, false), (70_000, true)] {
            stream.extend(frame(0x2, &vec![7u8; len], mask));
        }
        for chunk in [1, 2, 3, 7, 13, 1000, stream.len()] {
            let mut t = FrameTracker::default();
            for (i, piece) in stream.chunks(chunk).enumerate() {
                t.feed(piece);
                let end = (i + 1) * chunk >= stream.len();
                if end {
                    assert!(t.at_boundary(), "at a boundary after the last frame (chunks of {chunk})");
                }
            }
            assert!(!t.closed());
        }
        let mut t = FrameTracker::default();
        t.feed(&frame(0x2, &[1; 300], false)[..100]);
        assert!(!t.at_boundary(), "mid-payload");
        let mut t = FrameTracker::default();
        t.feed(&frame(0x2, &[1; 300], false)[..3]);
        assert!(!t.at_boundary(), "mid-header");
        let mut t = FrameTracker::default();
        t.feed(&frame(0x8, &[3, 0xe8], false));
        assert!(t.at_boundary() && t.closed(), "a close frame is seen");
    }

    #[test]
    fn a_hostile_length_does_not_overflow() {
        let mut t = FrameTracker::default();
        t.feed(&[0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert!(!t.at_boundary());
    }

    #[test]
    fn the_rejoin_frames_hold_a_leave_request_to_reconnect() {
        let frames = rejoin_frames();
        let mut t = FrameTracker::default();
        t.feed(&frames);
        assert!(t.at_boundary() && t.closed());
        let len = usize::from(frames[1]);
        assert!(len > 0);
        let response = proto::SignalResponse::decode(&frames[2..2 + len]).unwrap();
        let Some(proto::signal_response::Message::Leave(leave)) = response.message else { panic!("{response:?}") };
        assert_eq!(leave.action, proto::leave_request::Action::Reconnect as i32);
        assert!(leave.can_reconnect);
    }

    /// Runs a splice over in-memory pipes; returns the client's end, the
    /// node's end and the splice.
    fn spliced() -> (tokio::io::DuplexStream, tokio::io::DuplexStream, tokio::task::JoinHandle<SpliceEnd>) {
        let (client, client_gw) = duplex(4096);
        let (node, node_gw) = duplex(4096);
        (client, node, tokio::spawn(splice(client_gw, node_gw, 512)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_dies_between_frames_gets_the_client_told_to_rejoin() {
        let (mut client, mut node, splice) = spliced();
        let hello = frame(0x2, b"join response", false);
        node.write_all(&hello).await.unwrap();
        client.write_all(&frame(0x2, b"ping", true)).await.unwrap();
        let mut got = vec![0u8; hello.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello, "bytes pass unchanged");
        drop(node);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, rejoin_frames());
        drop(client);
        assert_eq!(splice.await.unwrap(), SpliceEnd::NodeDied);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_closes_properly_or_dies_mid_frame_adds_nothing() {
        for tail in [frame(0x8, &[3, 0xe8], false), frame(0x2, &[9; 100], false)[..50].to_vec()] {
            let (mut client, mut node, splice) = spliced();
            node.write_all(&tail).await.unwrap();
            drop(node);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, tail, "only the node's bytes");
            assert_eq!(splice.await.unwrap(), SpliceEnd::Node);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_goes_away_closes_the_node_side() {
        let (mut client, mut node, splice) = spliced();
        client.write_all(&frame(0x2, b"leave", true)).await.unwrap();
        drop(client);
        let mut got = Vec::new();
        node.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, frame(0x2, b"leave", true));
        assert_eq!(splice.await.unwrap(), SpliceEnd::Client);
    }
}
