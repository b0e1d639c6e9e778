//! Entry points for the coverage-guided fuzz targets in `fuzz/` (`docs/decisions.md §18`);
//! compiled only with `--cfg fuzzing`, which no normal build sets.
//!
//! The parsers are private to their modules, so these harnesses reach them the
//! way a datagram does:
//! - [`GateHarness::datagram`] hands a client's datagram to a [`GateConn`]'s
//!   `recv_from`: the channel data path ([`Channels`], `channel_data::parse`),
//!   the rate limiter, the STUN decode and `GateConn::judge` with everything it
//!   calls (nonce, credentials, integrity, peer policy, quotas, rewrite, split).
//!   A stand-in server answers what the gate passes on, so `on_answer` and the
//!   re-signing of queued requests run too.
//! - [`ChannelHarness`] hands ChannelData from a client, and data from a peer, to
//!   a [`Channels`] with bound channels, a hairpin among them.
//!
//! Every conn here is a [`Feed`]: it receives what it is given and sends nowhere,
//! so every future completes on its first poll ([`ready`]) and no runtime is needed.
//! The stream framing (`stream::read_message`) is reached from the fuzz crate
//! through [`crate::stream::StreamConn`] on a loopback socket instead.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM};
use stun::message::{
    Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND,
};
use stun::textattrs::TextAttribute;
use turn::proto::chandata::ChannelData;
use turn::proto::channum::ChannelNumber;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use webrtc_util::conn::Conn;

use crate::bandwidth::Cap;
use crate::channel_data::Channels;
use crate::gate::{Gate, GateConfig, GateConn};
use crate::policy::PeerPolicy;
use crate::route::ClientRoute;

/// The UDP listener's address.
pub const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 3478);
/// The source address of the harnesses' client datagrams.
pub const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40000);
/// The `turn` server reads into a buffer of this size (`INBOUND_MTU`); so does the harness.
pub const SERVER_BUFFER: usize = 1500;

/// Polls `future` once; a [`Feed`] never waits, so it must be ready.
///
/// Panics when it is not: a harness bug (something awaited a real socket or timer).
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("fuzz harness: a future pended, but every conn is a Feed"),
    }
}

/// A conn that receives the datagrams pushed into it, in order, then reports
/// itself closed; whatever is sent on it is kept for [`Feed::take_sent`].
pub struct Feed {
    local: SocketAddr,
    inbox: Mutex<VecDeque<(Vec<u8>, SocketAddr)>>,
    sent: Mutex<Vec<(Vec<u8>, SocketAddr)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single pushes and takes; a poisoned lock still holds whole values.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Feed {
    /// An empty feed bound (in name) to `local`.
    pub fn new(local: SocketAddr) -> Arc<Self> {
        Arc::new(Self { local, inbox: Mutex::default(), sent: Mutex::default() })
    }

    /// Queues `packet` from `from` for the next `recv_from`.
    pub fn push(&self, packet: Vec<u8>, from: SocketAddr) {
        lock(&self.inbox).push_back((packet, from));
    }

    /// What was sent since the last call, with the targets.
    pub fn take_sent(&self) -> Vec<(Vec<u8>, SocketAddr)> {
        std::mem::take(&mut *lock(&self.sent))
    }
}

#[async_trait]
impl Conn for Feed {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (packet, from) = lock(&self.inbox).pop_front().ok_or(webrtc_util::Error::ErrUseClosedNetworkConn)?;
        // A datagram longer than the buffer is cut, as recvfrom(2) cuts it.
        let n = packet.len().min(buf.len());
        buf[..n].copy_from_slice(&packet[..n]);
        Ok((n, from))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(buf.len())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        lock(&self.sent).push((buf.to_vec(), target));
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// What one client datagram led to.
#[derive(Debug, Default)]
pub struct GateOutcome {
    /// Datagrams the `turn` server received (passed, or rewritten and re-signed).
    pub to_server: Vec<Vec<u8>>,
    /// Datagrams sent on the listener: the gate's refusals and the stand-in
    /// server's answers that the gate let out.
    pub to_client: Vec<Vec<u8>>,
}

/// A UDP listener's gate in front of a stand-in server.
pub struct GateHarness {
    feed: Arc<Feed>,
    conn: GateConn,
}

impl GateHarness {
    /// A gate with the default policy and quotas, `secret` and `realm`, and a
    /// rate limit no fuzzer reaches (every datagram comes from [`CLIENT`]).
    pub fn new(secret: &[u8], realm: &str) -> Self {
        let gate = Gate::new(GateConfig {
            request_rate: 1e12,
            request_burst: 1e12,
            ..GateConfig::new(PeerPolicy::default(), secret.to_vec(), realm.to_owned())
        });
        let feed = Feed::new(LISTENER);
        let inner: Arc<dyn Conn + Send + Sync> = Arc::clone(&feed) as _;
        let conn = GateConn::new(inner, gate, None).with_channels(Channels::new(crate::CHANNEL_BIND_LIFETIME));
        Self { feed, conn }
    }

    /// A nonce the gate signed for [`CLIENT`], from its 401 to an unauthenticated Allocate.
    pub fn client_nonce(&self) -> Option<String> {
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId::new()), Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST))]).ok()?;
        let out = self.datagram(&m.raw, CLIENT);
        let mut reply = Message::new();
        reply.raw = out.to_client.first()?.clone();
        reply.decode().ok()?;
        TextAttribute::get_from_as(&reply, ATTR_NONCE).ok().map(|n| n.text)
    }

    /// Hands `packet` from `src` to the gate as the UDP listener receives it, and
    /// lets the stand-in server answer whatever reaches it.
    pub fn datagram(&self, packet: &[u8], src: SocketAddr) -> GateOutcome {
        self.feed.push(packet.to_vec(), src);
        let mut out = GateOutcome::default();
        let mut buf = vec![0u8; SERVER_BUFFER];
        // Each call returns one datagram for the server; the feed's end ends the loop.
        // A split CreatePermission yields one per peer; more than 64 is a harness bug.
        for _ in 0..64 {
            let Ok((n, from)) = ready(self.conn.recv_from(&mut buf)) else { break };
            let received = buf[..n].to_vec();
            if let Some(answer) = serve(&received) {
                let _ = ready(self.conn.send_to(&answer, from));
            }
            out.to_server.push(received);
        }
        out.to_client = self.feed.take_sent().into_iter().map(|(p, _)| p).collect();
        out
    }
}

/// The stand-in server's answer to a request: 401 with a nonce to the gate's own
/// unauthenticated request, success (with a relayed address for Allocate)
/// to authenticated ones, nothing to anything else.
fn serve(request: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.raw = request.to_vec();
    m.decode().ok()?;
    if m.typ.class != CLASS_REQUEST {
        return None;
    }
    let mut setters: Vec<Box<dyn Setter>> = vec![Box::new(m.clone())];
    if !m.contains(stun::attributes::ATTR_MESSAGE_INTEGRITY) {
        setters.push(Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)));
        setters.push(Box::new(stun::error_code::ErrorCodeAttribute {
            code: stun::error_code::CODE_UNAUTHORIZED,
            reason: b"Unauthorized".to_vec(),
        }));
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, "meridian".into())));
        setters.push(Box::new(TextAttribute::new(ATTR_NONCE, "fuzz-server-nonce".into())));
    } else {
        setters.push(Box::new(MessageType::new(m.typ.method, CLASS_SUCCESS_RESPONSE)));
        if m.typ.method == METHOD_ALLOCATE {
            setters.push(Box::new(RelayedAddress { ip: LISTENER.ip(), port: 50_000 }));
        }
    }
    let mut reply = Message::new();
    reply.build(&setters).ok()?;
    Some(reply.raw)
}

/// The channel data path with bindings: [`CLIENT`]'s allocation has channels
/// 0x4000 (to an outside peer) and 0x7FFF (to a second client's relayed address,
/// which is bound back: a hairpin).
pub struct ChannelHarness {
    channels: Arc<Channels>,
    listener: Arc<Feed>,
    relays: [Arc<Feed>; 2],
}

/// The outside peer bound to channel 0x4000.
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 5000);
const RELAYED: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 50_000),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 50_001),
];
const OTHER_CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 40000);

impl Default for ChannelHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelHarness {
    /// The bindings above, made as the crate's answers make them.
    pub fn new() -> Self {
        let channels = Channels::new(crate::CHANNEL_BIND_LIFETIME);
        let listener = Feed::new(LISTENER);
        let relays = RELAYED.map(Feed::new);
        let dyn_listener: Arc<dyn Conn + Send + Sync> = Arc::clone(&listener) as _;
        for (relay, relayed) in relays.iter().zip(RELAYED) {
            // No cap: the harness checks what the path sends, not what a cap drops.
            let cap = Arc::new(Cap::new(None, std::time::Instant::now()));
            channels.add_relay(relayed, &(Arc::clone(relay) as Arc<dyn Conn + Send + Sync>), cap);
        }
        let bind = |client: SocketAddr, relayed: SocketAddr, channel: u16, peer: SocketAddr| {
            let key = ClientRoute { listener: LISTENER, client };
            let allocated =
                response(METHOD_ALLOCATE, vec![Box::new(RelayedAddress { ip: relayed.ip(), port: relayed.port() })]);
            channels.answered(&dyn_listener, key, (0x03, true, [1; 12]), &allocated);
            let mut request = Message::new();
            let built = request.build(&[
                Box::new(TransactionId([2; 12])),
                Box::new(MessageType::new(METHOD_CHANNEL_BIND, CLASS_REQUEST)),
                Box::new(ChannelNumber(channel)),
                Box::new(PeerAddress { ip: peer.ip(), port: peer.port() }),
            ]);
            assert!(built.is_ok(), "fuzz harness: ChannelBind request");
            channels.bind_requested(key, &request);
            channels.answered(&dyn_listener, key, (0x09, true, [2; 12]), &response(METHOD_CHANNEL_BIND, vec![]));
        };
        bind(CLIENT, RELAYED[0], 0x4000, PEER);
        bind(CLIENT, RELAYED[0], 0x7FFF, RELAYED[1]);
        bind(OTHER_CLIENT, RELAYED[1], 0x4001, RELAYED[0]);
        assert_eq!(channels.stats().bindings, 3, "fuzz harness: bindings made");
        Self { channels, listener, relays }
    }

    /// Hands `packet` from [`CLIENT`] to the channel data path; `true` when it
    /// took it. Checks the path against an independent reading of RFC 8656
    /// §12.4: it takes exactly the well-formed ChannelData on a bound channel,
    /// and sends its payload whole, once.
    pub fn client_data(&self, packet: &[u8]) -> bool {
        let taken = ready(self.channels.client_data(ClientRoute { listener: LISTENER, client: CLIENT }, packet));
        let sent: Vec<_> = self.relays.iter().flat_map(|r| r.take_sent()).chain(self.listener.take_sent()).collect();
        let expected = parse_channel_data(packet).filter(|(channel, _)| [0x4000, 0x7FFF].contains(channel));
        assert_eq!(taken, expected.is_some(), "taken iff ChannelData on a bound channel");
        if let Some((channel, payload)) = expected {
            assert_eq!(sent.len(), 1, "one datagram per ChannelData message");
            assert!(sent[0].0.ends_with(payload), "the payload, whole, for channel {channel:#x}");
        }
        taken
    }

    /// Hands `payload` from `peer` (on the first relayed address) to the path.
    pub fn peer_data(&self, peer: SocketAddr, payload: &[u8]) -> bool {
        let taken = ready(self.channels.peer_data(crate::route::PeerRoute { relayed: RELAYED[0], peer }, payload));
        for (out, _) in self.listener.take_sent() {
            // What the client gets must read back as the same ChannelData.
            let mut cd = ChannelData { raw: out, ..Default::default() };
            assert!(cd.decode().is_ok(), "the turn crate reads our ChannelData");
            assert_eq!(cd.data, payload, "payload relayed whole");
        }
        taken
    }
}

/// A success response for `method` with `setters` (transaction id irrelevant:
/// the path takes it from the gate).
fn response(method: stun::message::Method, setters: Vec<Box<dyn Setter>>) -> Vec<u8> {
    let mut all: Vec<Box<dyn Setter>> =
        vec![Box::new(TransactionId([1; 12])), Box::new(MessageType::new(method, CLASS_SUCCESS_RESPONSE))];
    all.extend(setters);
    let mut m = Message::new();
    assert!(m.build(&all).is_ok(), "fuzz harness: response");
    m.raw
}

/// RFC 8656 §12.4 read independently of `channel_data`, as the harness's oracle.
fn parse_channel_data(packet: &[u8]) -> Option<(u16, &[u8])> {
    let channel = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
    let len = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    Some((channel, packet.get(4..4 + len)?))
}
