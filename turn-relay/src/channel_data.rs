//! The relay's channel data path (RFC 8656 §12), beside the `turn` crate.
//!
//! The crate relays a ChannelData message with a `Request` built per packet, an
//! allocation and channel lookup behind async locks, a copy into a fresh buffer
//! and, on the way back, a linear scan of the channel bindings; that user-space
//! work put the relay at or above coturn's CPU per message (docs/benchmarks.md).
//! Once a channel is bound, this path carries its data instead: the gate's UDP
//! listener sends a client's ChannelData payload straight from the allocation's
//! relayed socket, and each relayed socket wraps data from a bound peer in a
//! ChannelData header and sends it straight to the client. When the peer is
//! another allocation's relayed address on this relay, bound back to a channel
//! (two clients behind restrictive NATs calling each other through one relay),
//! the data goes from one client to the other without crossing the relayed
//! sockets at all (a hairpin), with both allocations' caps charged.
//!
//! The crate stays the authority. The tables here only mirror what it
//! answered: an Allocate success gives the relayed address of a client's
//! allocation, a ChannelBind success (to the request the gate let through) gives
//! a binding, for [`crate::CHANNEL_BIND_LIFETIME`] from that answer, refreshed by
//! the next. Everything of a client goes when the crate reports its allocation
//! closed ([`Channels::forget`]). Whatever is not in the tables (Send and Data
//! indications, unbound channels, TCP and TLS clients) takes the crate's path.
//!
//! Each relayed socket comes with its allocation's bandwidth [`Cap`]
//! (`Channels::add_relay`), which this path charges for what it carries past
//! the socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use stun::message::{Getter, Message};
use turn::proto::channum::ChannelNumber;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use webrtc_util::conn::Conn;

use crate::bandwidth::{Cap, Direction};
use crate::route::{ClientRoute, PeerRoute};

type DynConn = Arc<dyn Conn + Send + Sync>;

/// Channel numbers served: RFC 5766 §11's 0x4000 through 0x7FFF, which the
/// crate accepts and coturn's client uses, not only RFC 8656 §12's 0x4000
/// through 0x4FFF.
const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;
/// Entries kept before expired ones are swept on insert.
const SWEEP_AT: usize = 4096;

/// A relayed socket the relay generator made, with its allocation's cap.
struct Relay {
    conn: Weak<dyn Conn + Send + Sync>,
    cap: Arc<Cap>,
}

/// Where a client's data on a channel goes.
struct ToPeer {
    relay: DynConn,
    cap: Arc<Cap>,
    route: PeerRoute,
    expires: Instant,
}

struct ToClient {
    cap: Arc<Cap>,
    listener: DynConn,
    client: SocketAddr,
    channel: u16,
    expires: Instant,
}

#[derive(Default)]
struct Tables {
    /// Relayed sockets by relayed address, as the relay generator made them.
    relays: HashMap<SocketAddr, Relay>,
    /// Each client's relayed address, from the crate's Allocate success.
    allocations: HashMap<ClientRoute, SocketAddr>,
    /// ChannelBind requests let through, awaiting the crate's answer.
    pending: HashMap<(ClientRoute, [u8; 12]), (u16, SocketAddr)>,
    to_peer: HashMap<(ClientRoute, u16), ToPeer>,
    to_client: HashMap<PeerRoute, ToClient>,
}

/// The channel bindings the data path serves, shared by the gate's UDP
/// listener and every relayed socket.
pub struct Channels {
    tables: Mutex<Tables>,
    lifetime: Duration,
    to_peer_messages: AtomicU64,
    to_client_messages: AtomicU64,
    hairpinned_messages: AtomicU64,
}

/// What the channel data path has carried since the relay started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Bindings it serves now (expired ones may linger until swept).
    pub bindings: usize,
    /// ChannelData messages from clients it sent on to their peers.
    pub to_peer_messages: u64,
    /// Datagrams from bound peers it sent to their clients as ChannelData.
    pub to_client_messages: u64,
    /// ChannelData messages it passed from one client to another whose
    /// allocations are bound to each other here (the relayed sockets skipped).
    pub hairpinned_messages: u64,
}

fn lock(m: &Mutex<Tables>) -> std::sync::MutexGuard<'_, Tables> {
    // Every critical section is a few map operations; a poisoned lock is consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Channels {
    /// No bindings; each one lasts `lifetime` after the answer that made or
    /// refreshed it.
    pub fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            tables: Mutex::default(),
            lifetime,
            to_peer_messages: AtomicU64::new(0),
            to_client_messages: AtomicU64::new(0),
            hairpinned_messages: AtomicU64::new(0),
        })
    }

    /// Bindings served and messages carried.
    pub fn stats(&self) -> ChannelStats {
        ChannelStats {
            bindings: lock(&self.tables).to_peer.len(),
            to_peer_messages: self.to_peer_messages.load(Ordering::Relaxed),
            to_client_messages: self.to_client_messages.load(Ordering::Relaxed),
            hairpinned_messages: self.hairpinned_messages.load(Ordering::Relaxed),
        }
    }

    /// Records a relayed socket the generator made for the crate, at `relayed`,
    /// and its allocation's bandwidth cap.
    pub(crate) fn add_relay(&self, relayed: SocketAddr, conn: &DynConn, cap: Arc<Cap>) {
        let mut t = lock(&self.tables);
        t.relays.retain(|_, r| r.conn.strong_count() > 0);
        t.relays.insert(relayed, Relay { conn: Arc::downgrade(conn), cap });
    }

    /// A ChannelBind request from `client` that the gate passes to the crate.
    pub(crate) fn bind_requested(&self, client: ClientRoute, request: &Message) {
        let mut number = ChannelNumber::default();
        let mut peer = PeerAddress::default();
        if number.get_from(request).is_err() || peer.get_from(request).is_err() || !CHANNELS.contains(&number.0) {
            return; // the crate refuses it
        }
        let mut t = lock(&self.tables);
        if t.pending.len() >= SWEEP_AT {
            t.pending.clear(); // answers lost; forget them rather than grow
        }
        t.pending.insert((client, request.transaction_id.0), (number.0, SocketAddr::new(peer.ip, peer.port)));
    }

    /// The crate's answer to `client`'s request `txid` (method and outcome as
    /// the gate read them from the header), sent through `listener`. `response`
    /// is the whole message.
    pub(crate) fn answered(
        &self,
        listener: &DynConn,
        client: ClientRoute,
        (method, success, txid): (u8, bool, [u8; 12]),
        response: &[u8],
    ) {
        match (method, success) {
            (0x03, true) => {
                let mut m = Message::new();
                m.raw = response.to_vec();
                let mut relayed = RelayedAddress::default();
                if m.decode().is_ok() && relayed.get_from(&m).is_ok() {
                    lock(&self.tables).allocations.insert(client, SocketAddr::new(relayed.ip, relayed.port));
                }
            }
            (0x09, _) => {
                let mut t = lock(&self.tables);
                let Some((channel, peer)) = t.pending.remove(&(client, txid)) else { return };
                if success {
                    self.bound(&mut t, listener, client, channel, peer, Instant::now());
                }
            }
            _ => {}
        }
    }

    fn bound(
        &self,
        t: &mut Tables,
        listener: &DynConn,
        client: ClientRoute,
        channel: u16,
        peer: SocketAddr,
        now: Instant,
    ) {
        let Some(relayed) = t.allocations.get(&client).copied() else { return };
        let Some((relay, cap)) = t.relays.get(&relayed).and_then(|r| Some((r.conn.upgrade()?, Arc::clone(&r.cap))))
        else {
            return;
        };
        if t.to_peer.len() >= SWEEP_AT {
            t.to_peer.retain(|_, e| e.expires > now);
            t.to_client.retain(|_, e| e.expires > now);
        }
        let expires = now + self.lifetime;
        let route = PeerRoute { relayed, peer };
        t.to_peer.insert((client, channel), ToPeer { relay, cap: Arc::clone(&cap), route, expires });
        t.to_client
            .insert(route, ToClient { cap, listener: Arc::clone(listener), client: client.client, channel, expires });
    }

    /// Forgets `client`'s allocation and channels (the crate closed it).
    pub fn forget(&self, client: ClientRoute) {
        let mut t = lock(&self.tables);
        t.to_peer.retain(|(c, _), _| *c != client);
        if let Some(relayed) = t.allocations.remove(&client) {
            t.to_client.retain(|r, _| r.relayed != relayed);
            t.relays.remove(&relayed);
        }
    }

    /// Where `client`'s data on `channel` goes: the relayed socket, its cap and
    /// its route to the peer.
    fn to_peer(&self, client: ClientRoute, channel: u16, now: Instant) -> Option<(DynConn, Arc<Cap>, PeerRoute)> {
        let t = lock(&self.tables);
        let e = t.to_peer.get(&(client, channel)).filter(|e| e.expires > now)?;
        Some((Arc::clone(&e.relay), Arc::clone(&e.cap), e.route))
    }

    /// Where data from `route.peer` to `route.relayed` goes.
    fn to_client(&self, route: PeerRoute, now: Instant) -> Option<Delivery> {
        let t = lock(&self.tables);
        let e = t.to_client.get(&route).filter(|e| e.expires > now)?;
        Some(Delivery {
            cap: Arc::clone(&e.cap),
            listener: Arc::clone(&e.listener),
            client: e.client,
            channel: e.channel,
        })
    }

    /// Relays `packet`, received on `listener_addr` from `client`, if it is
    /// ChannelData on a bound channel: sends its payload from the relayed socket
    /// to the peer and returns `true`. `false` leaves it to the crate (not
    /// ChannelData, malformed, or no binding here).
    pub(crate) async fn client_data(&self, client: ClientRoute, packet: &[u8]) -> bool {
        let Some((channel, payload)) = parse(packet) else { return false };
        let now = Instant::now();
        let Some((relay, cap, route)) = self.to_peer(client, channel, now) else { return false };
        // A hairpin: the peer is another allocation's relayed address here, and
        // that allocation is bound back to ours as its peer.
        if let Some(other) = self.to_client(PeerRoute { relayed: route.peer, peer: route.relayed }, now) {
            let n = payload.len();
            if cap.charge(Direction::ToPeer, n, now) && other.cap.charge(Direction::FromPeer, n, now) {
                self.hairpinned_messages.fetch_add(1, Ordering::Relaxed);
                other.deliver(payload, route.relayed).await;
            }
            return true;
        }
        self.to_peer_messages.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = relay.send_to(payload, route.peer).await {
            tracing::debug!(client = %client.client, peer = %route.peer, error = %e, "channel data not relayed to the peer");
        }
        true
    }

    /// Relays `payload`, received on the relayed socket `route.relayed` from
    /// `route.peer`, if that peer is bound to a channel: sends it to the client
    /// as ChannelData and returns `true`. `false` leaves it to the crate.
    pub(crate) async fn peer_data(&self, route: PeerRoute, payload: &[u8]) -> bool {
        let Some(to) = self.to_client(route, Instant::now()) else { return false };
        self.to_client_messages.fetch_add(1, Ordering::Relaxed);
        to.deliver(payload, route.peer).await;
        true
    }
}

/// A client's end of a channel binding.
struct Delivery {
    /// The allocation's bandwidth cap.
    cap: Arc<Cap>,
    listener: DynConn,
    client: SocketAddr,
    channel: u16,
}

impl Delivery {
    /// Sends `payload` from `peer` to the client as ChannelData on the channel.
    async fn deliver(&self, payload: &[u8], peer: SocketAddr) {
        let Ok(len) = u16::try_from(payload.len()) else { return };
        // Over UDP, ChannelData needs no padding (RFC 8656 §12.5).
        let mut out = Vec::with_capacity(4 + payload.len());
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        if let Err(e) = self.listener.send_to(&out, self.client).await {
            tracing::debug!(client = %self.client, %peer, error = %e, "channel data not relayed to the client");
        }
    }
}

/// The channel number and payload of a ChannelData message (RFC 8656 §12.4),
/// or `None` if `packet` is not one or its length field overruns it.
fn parse(packet: &[u8]) -> Option<(u16, &[u8])> {
    let header: [u8; 4] = packet.get(..4)?.try_into().ok()?;
    let channel = u16::from_be_bytes([header[0], header[1]]);
    if !CHANNELS.contains(&channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    packet.get(4..4 + len).map(|payload| (channel, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_is_read_by_its_length_field() {
        assert_eq!(parse(&[0x40, 0x01, 0, 3, 7, 8, 9, 0]), Some((0x4001, &[7u8, 8, 9][..])), "padding ignored");
        assert_eq!(parse(&[0x40, 0x01, 0, 5, 7, 8, 9]), None, "length beyond the packet");
        assert_eq!(parse(&[0x6b, 0x00, 0, 0]), Some((0x6b00, &[][..])), "RFC 5766's range, as coturn's client uses");
        assert_eq!(parse(&[0x80, 0x00, 0, 0]), None, "0x8000 is outside the channel range");
        assert_eq!(parse(&[0x00, 0x01, 0, 0]), None, "a STUN message");
        assert_eq!(parse(&[0x40]), None);
    }

    #[tokio::test]
    async fn a_binding_lasts_its_lifetime_and_goes_with_its_allocation() {
        let channels = Channels::new(Duration::from_secs(600));
        let relay: DynConn = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let listener: DynConn = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let relayed = relay.local_addr().expect("addr");
        let client = ClientRoute {
            listener: listener.local_addr().expect("addr"),
            client: "127.0.0.1:5000".parse().expect("addr"),
        };
        let peer: SocketAddr = "127.0.0.1:6000".parse().expect("addr");
        let now = Instant::now();
        channels.add_relay(relayed, &relay, Arc::new(Cap::new(None, now)));
        let route = PeerRoute { relayed, peer };
        {
            let mut t = lock(&channels.tables);
            channels.bound(&mut t, &listener, client, 0x4000, peer, now);
            assert!(t.to_peer.is_empty(), "no binding before the crate's Allocate success is seen");
            t.allocations.insert(client, relayed);
            channels.bound(&mut t, &listener, client, 0x4000, peer, now);
        }
        assert_eq!(channels.to_peer(client, 0x4000, now).map(|(_, _, r)| r), Some(route));
        assert_eq!(channels.to_client(route, now).map(|d| (d.client, d.channel)), Some((client.client, 0x4000)));
        assert!(channels.to_peer(client, 0x4001, now).is_none(), "an unbound channel");
        let later = now.checked_add(Duration::from_secs(601)).unwrap();
        assert!(channels.to_peer(client, 0x4000, later).is_none(), "expired");
        assert!(channels.to_client(route, later).is_none(), "expired");
        channels.forget(client);
        assert!(channels.to_peer(client, 0x4000, now).is_none(), "forgotten with the allocation");
        assert!(channels.to_client(route, now).is_none(), "forgotten with the allocation");
    }
}
