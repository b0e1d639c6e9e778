//! The peer filter in front of the `turn` crate's server: a [`Conn`] wrapper on
//! the listening socket that answers CreatePermission and ChannelBind requests
//! naming a refused peer with 403 Forbidden (RFC 8656 §9.1, §11.2) and drops them,
//! so the server never installs the permission. Without a permission the server
//! relays nothing to or from that peer.
//!
//! Only requests are inspected (two bytes of header tell which), so ChannelData
//! and other traffic pass at the cost of one comparison.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use std::time::SystemTime;

use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{ErrorCodeAttribute, CODE_FORBIDDEN, CODE_UNAUTHORIZED};
use stun::integrity::MessageIntegrity;
use stun::message::{
    Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;
use webrtc_util::conn::Conn;

use crate::policy::PeerPolicy;

/// STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: u32 = 0x2112_A442;

/// What the filter checks requests against.
#[derive(Debug, Clone)]
pub struct Screen {
    /// Peer policy for CreatePermission and ChannelBind.
    pub policy: PeerPolicy,
    /// The TURN REST API secret.
    pub secret: Vec<u8>,
}

/// The listening socket, screened.
pub struct PeerFilterConn {
    inner: Arc<dyn Conn + Send + Sync>,
    screen: Screen,
}

impl PeerFilterConn {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Conn + Send + Sync>, screen: Screen) -> Self {
        Self { inner, screen }
    }
}

/// The answer to send instead of passing `packet` to the server, at `now`: 401
/// for credentials that do not verify, 403 for a refused peer; `None` to let it
/// through.
pub fn screen(packet: &[u8], screen: &Screen, now: SystemTime) -> Option<Vec<u8>> {
    // Message type in the first two bytes: 0x0003 Allocate, 0x0004 Refresh,
    // 0x0008 CreatePermission, 0x0009 ChannelBind requests.
    if packet.len() < 20 || packet[0] != 0 || !matches!(packet[1], 0x03 | 0x04 | 0x08 | 0x09) {
        return None;
    }
    let mut m = Message::new();
    m.raw = packet.to_vec();
    m.decode().ok()?;
    let method = m.typ.method;
    if m.typ.class != CLASS_REQUEST
        || ![METHOD_ALLOCATE, METHOD_REFRESH, METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND].contains(&method)
    {
        return None;
    }
    if let Some(reply) = unauthorized(&mut m, &screen.secret, now) {
        return Some(reply);
    }
    if method != METHOD_CREATE_PERMISSION && method != METHOD_CHANNEL_BIND {
        return None;
    }
    let policy = &screen.policy;
    let refused = m
        .attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .filter_map(|a| xor_peer_ip(&a.value, &m.transaction_id.0))
        .find(|ip| !policy.allows(*ip))?;
    tracing::info!(peer = %refused, method = %m.typ.method, "TURN peer refused by policy");
    error_response(&m, CODE_FORBIDDEN, "Forbidden: peer address not allowed", vec![])
}

/// 401 for a request that carries MESSAGE-INTEGRITY whose credentials do not
/// verify. Requests without integrity (the first Allocate) and with missing
/// attributes are the server's to answer.
fn unauthorized(m: &mut Message, secret: &[u8], now: SystemTime) -> Option<Vec<u8>> {
    if m.get(ATTR_MESSAGE_INTEGRITY).is_err() {
        return None;
    }
    let username = TextAttribute::get_from_as(m, ATTR_USERNAME).ok()?;
    let realm = TextAttribute::get_from_as(m, ATTR_REALM).ok()?;
    let nonce = TextAttribute::get_from_as(m, ATTR_NONCE).ok()?;
    let why = match crate::credentials::verify(secret, &username.text, now) {
        Err(e) => e.to_string(),
        Ok(password) => {
            let integrity =
                MessageIntegrity::new_long_term_integrity(username.text.clone(), realm.text.clone(), password);
            match integrity.check(m) {
                Ok(()) => return None,
                Err(_) => "wrong password".to_owned(),
            }
        }
    };
    tracing::info!(username = %username.text, %why, "TURN credentials refused");
    error_response(m, CODE_UNAUTHORIZED, "Unauthorized", vec![Box::new(realm), Box::new(nonce)])
}

fn error_response(
    request: &Message,
    code: stun::error_code::ErrorCode,
    reason: &str,
    extra: Vec<Box<dyn Setter>>,
) -> Option<Vec<u8>> {
    let mut reply = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.clone()),
        Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute { code, reason: reason.as_bytes().to_vec() }),
    ];
    setters.extend(extra);
    reply.build(&setters).ok()?;
    Some(reply.raw)
}

/// The IP of an XOR-PEER-ADDRESS value (RFC 8489 §14.2).
fn xor_peer_ip(value: &[u8], transaction_id: &[u8; 12]) -> Option<IpAddr> {
    let family = *value.get(1)?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match family {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let ip: Vec<u8> = raw.iter().zip(cookie).map(|(b, c)| b ^ c).collect();
            Some(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let key: Vec<u8> = cookie.iter().chain(transaction_id.iter()).copied().collect();
            let mut ip = [0u8; 16];
            for (i, b) in raw.iter().enumerate() {
                ip[i] = b ^ key[i];
            }
            Some(IpAddr::V6(Ipv6Addr::from(ip)))
        }
        _ => None,
    }
}

#[async_trait]
impl Conn for PeerFilterConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.inner.recv_from(buf).await?;
            match screen(&buf[..n], &self.screen, SystemTime::now()) {
                None => return Ok((n, src)),
                Some(refusal) => {
                    if let Err(e) = self.inner.send_to(&refusal, src).await {
                        tracing::debug!(%src, error = %e, "403 not sent");
                    }
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::agent::TransactionId;
    use stun::message::Getter;
    use turn::proto::peeraddr::PeerAddress;

    fn request(method: stun::message::Method, peers: &[&str]) -> Vec<u8> {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> =
            vec![Box::new(TransactionId::new()), Box::new(MessageType::new(method, CLASS_REQUEST))];
        for p in peers {
            let sa: SocketAddr = p.parse().unwrap();
            setters.push(Box::new(PeerAddress { ip: sa.ip(), port: sa.port() }));
        }
        m.build(&setters).unwrap();
        m.raw
    }

    fn screen_peer(packet: &[u8], policy: &PeerPolicy) -> Option<Vec<u8>> {
        let s = Screen { policy: policy.clone(), secret: b"s".to_vec() };
        screen(packet, &s, SystemTime::now())
    }

    fn forbidden(reply: &[u8]) -> bool {
        let mut m = Message::new();
        m.raw = reply.to_vec();
        m.decode().unwrap();
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&m).unwrap();
        m.typ.class == CLASS_ERROR_RESPONSE && code.code == CODE_FORBIDDEN
    }

    #[test]
    fn a_permission_naming_any_refused_peer_gets_403() {
        let p = PeerPolicy::default();
        let reply = screen_peer(&request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000", "10.0.0.1:5000"]), &p);
        assert!(reply.as_deref().is_some_and(forbidden), "one refused peer refuses the request");
        assert!(screen_peer(&request(METHOD_CHANNEL_BIND, &["[::1]:5000"]), &p).as_deref().is_some_and(forbidden));
        assert!(screen_peer(&request(METHOD_CREATE_PERMISSION, &["169.254.169.254:80"]), &p).is_some());
    }

    #[test]
    fn allowed_peers_and_other_traffic_pass() {
        let p = PeerPolicy::default();
        assert!(
            screen_peer(&request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000", "[2a00:1450::1]:443"]), &p).is_none()
        );
        assert!(screen_peer(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], &p).is_none(), "ChannelData");
        assert!(screen_peer(&[0u8; 3], &p).is_none(), "runts");
        assert!(
            screen_peer(&[0x00, 0x08, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &p).is_none(),
            "garbage"
        );
    }
}
