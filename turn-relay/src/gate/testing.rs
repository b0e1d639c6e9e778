//! What the gate's unit tests share: a gate and a gated socket, requests signed
//! as a client signs them, and readers of the answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use stun::agent::TransactionId;
use stun::attributes::{AttrType, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::integrity::MessageIntegrity;
use stun::message::{Getter, Message, MessageType, Setter, CLASS_REQUEST};
use stun::textattrs::TextAttribute;
use turn::proto::peeraddr::PeerAddress;

use super::verdict::Verdict;
use super::{lock, Gate, GateConfig, GateConn};
use crate::policy::PeerPolicy;

/// The TURN REST secret of [`gate`].
pub(super) const SECRET: &[u8] = b"s";
/// The client the tests' requests come from.
pub(super) const SRC: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40000);

/// A gate with the defaults, [`SECRET`] and the realm `meridian`.
pub(super) fn gate() -> Arc<Gate> {
    Gate::new(GateConfig::new(PeerPolicy::default(), SECRET.to_vec(), "meridian".into()))
}

/// A gated socket; call inside a runtime.
pub(super) fn conn(gate: Arc<Gate>) -> GateConn {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    GateConn::new(Arc::new(tokio::net::UdpSocket::from_std(socket).unwrap()), gate, None)
}

/// A request for `method` naming `peers`, signed for a fresh REST username
/// with `nonce` (unsigned when `nonce` is `None`), with `extra` attributes
/// added before the integrity.
pub(super) fn request(
    method: stun::message::Method,
    peers: &[&str],
    nonce: Option<&str>,
    extra: &[(AttrType, Vec<u8>)],
) -> Message {
    let creds = meridian_auth::turn_rest::mint(SECRET, "alice", Duration::from_secs(60), SystemTime::now());
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter>> =
        vec![Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))];
    for p in peers {
        let sa: SocketAddr = p.parse().unwrap();
        setters.push(Box::new(PeerAddress { ip: sa.ip(), port: sa.port() }));
    }
    if let Some(nonce) = nonce {
        setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, creds.username.clone())));
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, "meridian".into())));
        setters.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce.into())));
    }
    m.build(&setters).unwrap();
    for (t, v) in extra {
        m.add(*t, v);
    }
    if nonce.is_some() {
        MessageIntegrity::new_long_term_integrity(creds.username, "meridian".into(), creds.password)
            .add_to(&mut m)
            .unwrap();
    }
    m
}

/// The ERROR-CODE of an error response.
pub(super) fn code_of(reply: &[u8]) -> u16 {
    let mut m = Message::new();
    m.raw = reply.to_vec();
    m.decode().unwrap();
    let mut code = ErrorCodeAttribute::default();
    code.get_from(&m).unwrap();
    code.code.0
}

/// The answer of an [`Verdict::Answer`]; panics on any other verdict.
pub(super) fn answer(v: Verdict) -> Vec<u8> {
    match v {
        Verdict::Answer(a) => a,
        _ => panic!("expected an answer"),
    }
}

/// The server's 401 answer to the gate's own nonce fetch, with `nonce`.
pub(super) fn server_challenge(nonce: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.build(&[
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(stun::message::METHOD_ALLOCATE, stun::message::CLASS_ERROR_RESPONSE)),
        Box::new(TextAttribute::new(ATTR_NONCE, nonce.into())),
    ])
    .unwrap();
    m.raw
}

/// The NONCE of the STUN message `packet`.
pub(super) fn nonce_of(packet: &[u8]) -> String {
    let mut m = Message::new();
    m.raw = packet.to_vec();
    m.decode().unwrap();
    TextAttribute::get_from_as(&m, ATTR_NONCE).unwrap().text
}

/// A writer into a shared buffer, to read what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with a log subscriber on this thread; the lines it logged that contain `needle`.
pub(super) fn lines_logged(needle: &str, f: impl FnOnce()) -> usize {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer({
        let captured = captured.clone();
        move || captured.clone()
    });
    tracing::subscriber::with_default(subscriber.finish(), f);
    let text = String::from_utf8(lock(&captured.0).clone()).unwrap();
    text.lines().filter(|l| l.contains(needle)).count()
}
