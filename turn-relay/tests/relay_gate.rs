//! The gate in front of the `turn` crate's server, end to end over real sockets:
//! quotas (486), requests the crate got wrong (several peers in one
//! CreatePermission, LIFETIME over the maximum, DONT-FRAGMENT), a flood of
//! unauthenticated requests from many sources, a TCP connection's allocation
//! ending with the connection, and channel data carried by the relay's own data
//! path until the allocation goes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_auth::turn_rest::mint;
use meridian_turn::policy::PeerPolicy;
use meridian_turn::{TurnConfig, TurnRelay};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Getter, Message, MessageType, Setter, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;

const SECRET: &[u8] = b"gate-test-secret";

/// Waits until `done` holds, checking every 20 ms, with a 60 s guard (for a
/// broken build, not a timing assertion).
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let waiting = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), waiting).await.unwrap_or_else(|_| panic!("never happened: {what}"));
}
const REALM: &str = "meridian";

async fn relay(user_quota: usize) -> TurnRelay {
    TurnRelay::start(
        TurnConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            relay_ip: "127.0.0.1".parse().unwrap(),
            realm: REALM.into(),
            secret: SECRET.to_vec(),
            recv_buffer_bytes: 1 << 20,
            // Loopback plays the public internet here.
            peer_policy: PeerPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], vec![]),
            tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
            tls: None,
            max_stream_connections: 64,
            user_quota,
            total_quota: 1000,
            bandwidth_cap: None,
        },
        meridian_runtime::Health::new(),
    )
    .await
    .expect("relay starts")
}

/// Where a raw client sends: a UDP socket or a TCP stream.
enum Transport {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

/// A TURN client written from RFC 8656 for these tests, so that it can send what
/// the `turn` crate's client cannot (several peers, DONT-FRAGMENT, LIFETIME).
struct Raw {
    t: Transport,
    username: String,
    key: Vec<u8>,
    nonce: String,
}

impl Raw {
    async fn udp(server: SocketAddr, identity: &str) -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self::new(Transport::Udp(s, server), identity)
    }

    async fn tcp(server: SocketAddr, identity: &str) -> Self {
        Self::new(Transport::Tcp(TcpStream::connect(server).await.unwrap()), identity)
    }

    fn new(t: Transport, identity: &str) -> Self {
        let c = mint(SECRET, identity, Duration::from_secs(600), SystemTime::now());
        let key = turn::auth::generate_auth_key(&c.username, REALM, &c.password);
        Self { t, username: c.username, key, nonce: String::new() }
    }

    async fn send(&mut self, m: &Message) {
        match &mut self.t {
            Transport::Udp(s, to) => {
                s.send_to(&m.raw, *to).await.unwrap();
            }
            Transport::Tcp(s) => s.write_all(&m.raw).await.unwrap(),
        }
    }

    /// Sends `m` and waits for the answer, retransmitting over UDP every 500 ms
    /// (RFC 8489 §6.2.1) up to 7 times.
    async fn transact(&mut self, m: &Message) -> Message {
        for _ in 0..7 {
            self.send(m).await;
            if let Ok(answer) = tokio::time::timeout(Duration::from_millis(500), self.recv()).await {
                return answer;
            }
            if matches!(self.t, Transport::Tcp(_)) {
                break;
            }
        }
        panic!("no answer to {:?}", m.typ);
    }

    async fn recv(&mut self) -> Message {
        let mut buf = vec![0u8; 2048];
        let raw = tokio::time::timeout(Duration::from_secs(5), async {
            match &mut self.t {
                Transport::Udp(s, _) => {
                    let n = s.recv(&mut buf).await.unwrap();
                    buf[..n].to_vec()
                }
                Transport::Tcp(s) => {
                    s.read_exact(&mut buf[..20]).await.unwrap();
                    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                    s.read_exact(&mut buf[20..20 + len]).await.unwrap();
                    buf[..20 + len].to_vec()
                }
            }
        })
        .await
        .expect("an answer within 5 s");
        let mut m = Message::new();
        m.raw = raw;
        m.decode().unwrap();
        m
    }

    /// Sends a request with `setters`, authenticated once a nonce is known;
    /// follows one 401/438 challenge. Returns the final answer.
    async fn request(&mut self, method: stun::message::Method, setters: &[&dyn Setter]) -> Message {
        for _ in 0..2 {
            let mut m = Message::new();
            m.build(&[Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))]).unwrap();
            for s in setters {
                s.add_to(&mut m).unwrap();
            }
            if !self.nonce.is_empty() {
                TextAttribute::new(ATTR_USERNAME, self.username.clone()).add_to(&mut m).unwrap();
                TextAttribute::new(ATTR_REALM, REALM.into()).add_to(&mut m).unwrap();
                TextAttribute::new(ATTR_NONCE, self.nonce.clone()).add_to(&mut m).unwrap();
                MessageIntegrity(self.key.clone()).add_to(&mut m).unwrap();
            }
            let answer = self.transact(&m).await;
            let code = error_code(&answer);
            if matches!(code, Some(401) | Some(438)) {
                self.nonce = TextAttribute::get_from_as(&answer, ATTR_NONCE).expect("challenge has a nonce").text;
                continue;
            }
            return answer;
        }
        panic!("challenged twice");
    }

    async fn allocate(&mut self, extra: &[&dyn Setter]) -> Message {
        let transport = RequestedTransport { protocol: PROTO_UDP };
        let mut setters: Vec<&dyn Setter> = vec![&transport];
        setters.extend_from_slice(extra);
        self.request(METHOD_ALLOCATE, &setters).await
    }
}

fn error_code(m: &Message) -> Option<u16> {
    let mut code = ErrorCodeAttribute::default();
    code.get_from(m).ok().map(|_| code.code.0)
}

fn relayed(m: &Message) -> SocketAddr {
    let mut a = RelayedAddress::default();
    a.get_from(m).expect("XOR-RELAYED-ADDRESS");
    SocketAddr::new(a.ip, a.port)
}

#[tokio::test]
async fn allocations_over_the_user_quota_get_486() {
    let relay = relay(2).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = Raw::udp(relay.local_addr(), "alice").await;
        let a = c.allocate(&[]).await;
        assert_eq!(a.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&a));
        clients.push(c);
    }
    let mut third = Raw::udp(relay.local_addr(), "alice").await;
    assert_eq!(error_code(&third.allocate(&[]).await), Some(486), "a third allocation for one username");
    let mut other = Raw::udp(relay.local_addr(), "bob").await;
    assert_eq!(other.allocate(&[]).await.typ.class, CLASS_SUCCESS_RESPONSE, "another user is not affected");
    assert_eq!(relay.gate_stats().allocations, 3);
    relay.close().await.unwrap();
}

#[tokio::test]
async fn dont_fragment_is_accepted_and_lifetime_capped_to_the_maximum() {
    let relay = relay(8).await;
    let mut c = Raw::udp(relay.local_addr(), "alice").await;
    let lifetime = Lifetime(Duration::from_secs(86_400));
    let dont_fragment = turn::proto::dontfrag::DontFragmentAttr;
    let a = c.allocate(&[&lifetime, &dont_fragment]).await;
    assert_eq!(a.typ.class, CLASS_SUCCESS_RESPONSE, "DONT-FRAGMENT accepted, not 420: {:?}", error_code(&a));
    let mut granted = Lifetime::default();
    granted.get_from(&a).unwrap();
    assert_eq!(granted.0, Duration::from_secs(3599), "a day is capped to the maximum, not reset to 10 min");
    relay.close().await.unwrap();
}

#[tokio::test]
async fn one_create_permission_installs_every_peer_it_names() {
    let relay = relay(8).await;
    let mut c = Raw::udp(relay.local_addr(), "alice").await;
    let relay_addr = relayed(&c.allocate(&[]).await);
    let p1 = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let p2 = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let peer = |s: &UdpSocket| {
        let a = s.local_addr().unwrap();
        PeerAddress { ip: a.ip(), port: a.port() }
    };
    let (a1, a2) = (peer(&p1), peer(&p2));
    let answer = c.request(METHOD_CREATE_PERMISSION, &[&a1, &a2]).await;
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&answer));

    // Both peers may now reach the client: each datagram comes back as a Data indication.
    p1.send_to(b"from p1", relay_addr).await.unwrap();
    p2.send_to(b"from p2", relay_addr).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = c.recv().await;
        assert_eq!(m.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION), "only one answer reached the client");
        let mut data = Data::default();
        data.get_from(&m).unwrap();
        got.push(String::from_utf8(data.0).unwrap());
    }
    got.sort();
    assert_eq!(got, ["from p1", "from p2"], "the second peer's permission is installed too");
    relay.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_requests_from_many_sources_leaves_no_state() {
    let relay = Arc::new(relay(8).await);
    let server = relay.local_addr();
    // 200 source addresses x 250 requests: 50 000 unauthenticated Allocates.
    let mut senders = Vec::new();
    for i in 0..200u32 {
        senders.push(tokio::spawn(async move {
            let ip = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
            let s = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
            let mut m = Message::new();
            for _ in 0..250 {
                m.build(&[Box::new(TransactionId::new()), Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST))])
                    .unwrap();
                let _ = s.send_to(&m.raw, server).await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    // A good client is still served.
    let mut good = Raw::udp(server, "alice").await;
    let a = good.allocate(&[]).await;
    assert_eq!(a.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&a));
    let stats = relay.gate_stats();
    // How much of the flood reaches the gate is the kernel's to decide (a busy
    // machine drops more); what must hold is that the gate saw some and kept no
    // state for any of it.
    assert!(stats.challenged + stats.rate_limited > 0, "the gate answered or dropped the flood: {stats:?}");
    assert!(
        stats.server_challenges <= 1,
        "only the gate's own nonce fetch reached the server unauthenticated: {stats:?}"
    );
    assert!(stats.sources <= 202, "one bucket per source, no more: {stats:?}");
    assert_eq!(stats.allocations, 1, "{stats:?}");
    relay.close().await.unwrap();
}

#[tokio::test]
async fn an_allocation_over_tcp_ends_with_its_connection() {
    let relay = relay(8).await;
    let mut c = Raw::tcp(relay.tcp_addr().expect("TCP on"), "alice").await;
    let a = c.allocate(&[]).await;
    assert_eq!(a.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&a));
    assert_eq!(relay.gate_stats().allocations, 1);
    drop(c);
    eventually("closing the connection deletes its allocation (RFC 8656 §3.1)", || {
        relay.gate_stats().allocations == 0
    })
    .await;
    relay.close().await.unwrap();
}

#[tokio::test]
async fn channel_data_takes_the_relays_own_path_until_the_allocation_goes() {
    let relay = relay(8).await;
    let mut c = Raw::udp(relay.local_addr(), "alice").await;
    let relay_addr = relayed(&c.allocate(&[]).await);
    let peer = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let peer_addr = PeerAddress { ip: peer.local_addr().unwrap().ip(), port: peer.local_addr().unwrap().port() };
    let bound = c.request(METHOD_CHANNEL_BIND, &[&ChannelNumber(0x4000), &peer_addr]).await;
    assert_eq!(bound.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&bound));
    let Transport::Udp(socket, server) = &c.t else { unreachable!() };

    // Client to peer: a ChannelData message (RFC 8656 §12.4) arrives as its payload.
    socket.send_to(&[0x40, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0], *server).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], from), (&b"hello"[..], relay_addr), "the payload, from the relayed address");

    // Peer to client: the datagram comes back as ChannelData on the bound channel.
    peer.send_to(b"hi back", relay_addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..4], &[0x40, 0x00, 0x00, 0x07], "channel 0x4000, 7 bytes");
    assert_eq!(&buf[4..n], b"hi back");
    let stats = relay.channel_stats();
    assert_eq!((stats.bindings, stats.to_peer_messages, stats.to_client_messages), (1, 1, 1), "{stats:?}");

    // Deleting the allocation (Refresh with LIFETIME 0) ends the binding here too.
    let refresh = c.request(METHOD_REFRESH, &[&Lifetime(Duration::ZERO)]).await;
    assert_eq!(refresh.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&refresh));
    eventually("the binding went with the allocation", || relay.channel_stats().bindings == 0).await;
    let Transport::Udp(socket, server) = &c.t else { unreachable!() };
    socket.send_to(&[0x40, 0x00, 0x00, 0x05, b'a', b'g', b'a', b'i', b'n', 0, 0, 0], *server).await.unwrap();
    let late = tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf)).await;
    assert!(late.is_err(), "nothing is relayed for a deleted allocation");
    assert_eq!(relay.channel_stats().to_peer_messages, 1);
    relay.close().await.unwrap();
}

#[tokio::test]
async fn two_clients_bound_to_each_other_are_hairpinned() {
    let relay = relay(8).await;
    let mut a = Raw::udp(relay.local_addr(), "alice").await;
    let mut b = Raw::udp(relay.local_addr(), "bob").await;
    let (ra, rb) = (relayed(&a.allocate(&[]).await), relayed(&b.allocate(&[]).await));
    let at = |r: SocketAddr| PeerAddress { ip: r.ip(), port: r.port() };
    for (c, channel, peer) in [(&mut a, 0x4001, at(rb)), (&mut b, 0x6b00, at(ra))] {
        let bound = c.request(METHOD_CHANNEL_BIND, &[&ChannelNumber(channel), &peer]).await;
        assert_eq!(bound.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&bound));
    }
    let (Transport::Udp(sa, server), Transport::Udp(sb, _)) = (&a.t, &b.t) else { unreachable!() };
    sa.send_to(&[0x40, 0x01, 0x00, 0x03, b'a', b'-', b'b', 0], *server).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), sb.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], &[0x6b, 0x00, 0x00, 0x03, b'a', b'-', b'b'], "bob hears alice on his channel to her");
    let stats = relay.channel_stats();
    assert_eq!((stats.hairpinned_messages, stats.to_peer_messages), (1, 0), "{stats:?}");
    relay.close().await.unwrap();
}
