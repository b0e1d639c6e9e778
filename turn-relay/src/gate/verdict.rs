//! The gate's verdict on one datagram from a client: pass it to the server, drop
//! it, answer it instead of the server, or queue its rewritten, re-signed form.
//! The checks run in the order the [module docs](super) list: rate limit,
//! challenge, nonce, credentials, peers, quotas, rewrite.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{
    ErrorCode, ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_STALE_NONCE,
    CODE_UNAUTHORIZED,
};
use stun::integrity::MessageIntegrity;
use stun::message::{
    Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;

use super::resign::{self, Signed};
use super::GateConn;
use crate::route::ClientRoute;

/// STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: u32 = 0x2112_A442;

/// What to do with a packet from a client.
pub(super) enum Verdict {
    /// Hand it to the server as it is (not a request the gate checks).
    Pass,
    /// Drop it unanswered (rate limited, or no answer could be built).
    Drop,
    /// Send this answer to the client instead (a challenge or a refusal).
    Answer(Vec<u8>),
    /// Hand these to the server, re-signed, once its nonce is known.
    Queue(Vec<Signed>),
}

impl GateConn {
    /// The verdict on one datagram; a panic in it drops that datagram only.
    pub(super) fn judge_contained(&self, packet: &[u8], src: SocketAddr) -> Verdict {
        match &self.watch {
            Some(w) => meridian_runtime::panic::contain(&w.health, &w.name, || self.judge(packet, src))
                .unwrap_or(Verdict::Drop),
            None => self.judge(packet, src),
        }
    }

    pub(super) fn judge(&self, packet: &[u8], src: SocketAddr) -> Verdict {
        // STUN requests only: first byte 0x00/0x01 and class bits 00 (RFC 8489 §5).
        // ChannelData, indications and responses pass at the cost of two comparisons.
        if packet.len() < 20 || packet[0] > 0x3f || (packet[0] & 0x01) != 0 || (packet[1] & 0x10) != 0 {
            return Verdict::Pass;
        }
        if !self.gate.sources.admit(src.ip(), Instant::now()) {
            self.gate.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        let mut m = Message::new();
        m.raw = packet.to_vec();
        if m.decode().is_err() {
            return Verdict::Pass; // the server drops what it cannot decode
        }
        let method = m.typ.method;
        if m.typ.class != CLASS_REQUEST
            || ![METHOD_ALLOCATE, METHOD_REFRESH, METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND].contains(&method)
        {
            return Verdict::Pass;
        }
        match self.judge_request(&m, src, SystemTime::now()) {
            Ok(signed) => Verdict::Queue(signed),
            Err(Some(answer)) => Verdict::Answer(answer),
            Err(None) => Verdict::Drop,
        }
    }

    /// Checks an authenticated-method request; `Ok` holds what to pass to the
    /// server, `Err` the answer to send instead (or nothing).
    fn judge_request(&self, m: &Message, src: SocketAddr, now: SystemTime) -> Result<Vec<Signed>, Option<Vec<u8>>> {
        let gate = &self.gate;
        let refuse = |code: ErrorCode, reason: &str, with_nonce: bool| {
            let counter = if code == CODE_UNAUTHORIZED && !m.contains(ATTR_MESSAGE_INTEGRITY) {
                &gate.counters.challenged
            } else {
                &gate.counters.refused
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut extra: Vec<Box<dyn Setter>> = Vec::new();
            if with_nonce {
                extra.push(Box::new(TextAttribute::new(ATTR_REALM, gate.config.realm.clone())));
                extra.push(Box::new(TextAttribute::new(ATTR_NONCE, gate.nonces.issue(src.ip(), now))));
            }
            error_response(m, code, reason, extra)
        };
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            TextAttribute::get_from_as(m, ATTR_USERNAME),
            TextAttribute::get_from_as(m, ATTR_REALM),
            TextAttribute::get_from_as(m, ATTR_NONCE),
        ) else {
            return Err(refuse(CODE_BAD_REQUEST, "Bad Request: USERNAME, REALM and NONCE are required", false));
        };
        if !gate.nonces.verify(&nonce.text, src.ip(), now) {
            return Err(refuse(CODE_STALE_NONCE, "Stale Nonce", true));
        }
        let password = match meridian_auth::turn_rest::verify(&gate.config.secret, &username.text, now) {
            Ok(p) if realm.text == gate.config.realm => p,
            Ok(_) => {
                gate.refusal_log.log(src.ip(), || {
                    tracing::info!(%src, username = %username.text, realm = %realm.text, "TURN request for another realm refused")
                });
                return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
            }
            Err(e) => {
                gate.refusal_log.log(
                    src.ip(),
                    || tracing::info!(%src, username = %username.text, why = %e, "TURN credentials refused"),
                );
                return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
            }
        };
        let key = turn::auth::generate_auth_key(&username.text, &realm.text, &password);
        if MessageIntegrity(key.clone()).check(&mut m.clone()).is_err() {
            gate.refusal_log.log(
                src.ip(),
                || tracing::info!(%src, username = %username.text, "TURN credentials refused: wrong password"),
            );
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized", true));
        }

        let peers: Vec<_> = m.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS).collect();
        // A peer address the gate cannot read is refused, not skipped: the crate
        // reads short values as zero-padded (a 5-byte value is 0.0.0.0, which Linux
        // delivers to the relay host itself), so skipping one bypassed the policy.
        let Some(peer_ips) =
            peers.iter().map(|a| xor_peer_ip(&a.value, &m.transaction_id.0)).collect::<Option<Vec<_>>>()
        else {
            return Err(refuse(CODE_BAD_REQUEST, "Bad Request: malformed XOR-PEER-ADDRESS", false));
        };
        if let Some(refused) = peer_ips.into_iter().find(|ip| !gate.config.policy.allows(*ip)) {
            gate.refusal_log.log(
                src.ip(),
                || tracing::info!(%src, peer = %refused, method = %m.typ.method, "TURN peer refused by policy"),
            );
            return Err(refuse(CODE_FORBIDDEN, "Forbidden: peer address not allowed", false));
        }

        let client = ClientRoute { listener: self.local, client: src };
        if let (METHOD_CHANNEL_BIND, Some(channels)) = (m.typ.method, &self.channels) {
            channels.bind_requested(client, m);
        }
        if m.typ.method == METHOD_ALLOCATE {
            if let Err(mine) = gate.quotas.request(client, m.transaction_id.0, &username.text) {
                gate.refusal_log.log(
                    src.ip(),
                    || tracing::info!(%src, username = %username.text, mine, "TURN allocation quota reached"),
                );
                return Err(refuse(CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached", false));
            }
        }

        let signed = resign::rewrite(m, &key, src);
        if signed.len() > 1 {
            self.splits.split(src, m.transaction_id.0, signed.len());
        }
        Ok(signed)
    }
}

fn error_response(request: &Message, code: ErrorCode, reason: &str, extra: Vec<Box<dyn Setter>>) -> Option<Vec<u8>> {
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

/// The IP of an XOR-PEER-ADDRESS value (RFC 8489 §14.2), or `None` unless the
/// value is exactly 8 (IPv4) or 20 (IPv6) bytes of a known family.
fn xor_peer_ip(value: &[u8], transaction_id: &[u8; 12]) -> Option<IpAddr> {
    let family = *value.get(1)?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (family, value.len()) {
        (0x01, 8) => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let ip: Vec<u8> = raw.iter().zip(cookie).map(|(b, c)| b ^ c).collect();
            Some(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])))
        }
        (0x02, 20) => {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{answer, code_of, conn, gate, lines_logged, request, SECRET, SRC};
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use stun::agent::TransactionId;

    #[tokio::test]
    async fn unauthenticated_requests_get_a_stateless_challenge() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let reply = answer(c.judge(&request(METHOD_ALLOCATE, &[], None, &[]).raw, SRC));
        assert_eq!(code_of(&reply), 401);
        assert_eq!((g.stats().challenged, g.stats().allocations), (1, 0));
        let mut m = Message::new();
        m.raw = reply;
        m.decode().unwrap();
        let nonce = TextAttribute::get_from_as(&m, ATTR_NONCE).unwrap().text;
        let now = SystemTime::now();
        assert!(g.nonces.verify(&nonce, SRC.ip(), now), "the gate's own nonce, for this client");
        let late = now.checked_add(2 * super::super::NONCE_LIFETIME).unwrap();
        assert!(!g.nonces.verify(&nonce, SRC.ip(), late), "expires");
    }

    /// The datagram that stopped a region's relay: an Allocate with some
    /// MESSAGE-INTEGRITY and a NONCE whose expiry is past the end of `SystemTime`
    /// (and, with a valid gate nonce, the same in the USERNAME). Both are refused.
    #[tokio::test]
    async fn a_nonce_or_username_expiry_past_the_end_of_time_is_refused_not_a_panic() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        for nonce in ["ffffffffffffffff", "ffffffffffffffff0123456789abcdef0123", "8000000000000000"] {
            assert!(!g.nonces.verify(nonce, SRC.ip(), SystemTime::now()), "{nonce}");
            let m = request(METHOD_ALLOCATE, &[], Some(nonce), &[]);
            assert_eq!(code_of(&answer(c.judge(&m.raw, SRC))), 438, "{nonce}");
        }
        let nonce = g.nonces.issue(SRC.ip(), SystemTime::now());
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(TextAttribute::new(ATTR_USERNAME, "18446744073709551615:x".into())),
            Box::new(TextAttribute::new(ATTR_REALM, "meridian".into())),
            Box::new(TextAttribute::new(ATTR_NONCE, nonce)),
        ])
        .unwrap();
        MessageIntegrity::new_long_term_integrity("18446744073709551615:x".into(), "meridian".into(), "pw".into())
            .add_to(&mut m)
            .unwrap();
        assert_eq!(code_of(&answer(c.judge(&m.raw, SRC))), 401);
    }

    #[tokio::test]
    async fn a_foreign_nonce_is_stale_and_a_permission_to_any_refused_peer_is_403() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let stale = request(METHOD_ALLOCATE, &[], Some("not-ours"), &[]);
        assert_eq!(code_of(&answer(c.judge(&stale.raw, SRC))), 438);
        let nonce = g.nonces.issue(SRC.ip(), SystemTime::now());
        let m = request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000", "10.0.0.1:5000"], Some(&nonce), &[]);
        assert_eq!(code_of(&answer(c.judge(&m.raw, SRC))), 403, "one refused peer refuses the request");
        for peer in ["127.0.0.1:9", "[::1]:9", "169.254.169.254:80"] {
            let m = request(METHOD_CHANNEL_BIND, &[peer], Some(&nonce), &[]);
            assert_eq!(code_of(&answer(c.judge(&m.raw, SRC))), 403, "{peer}");
        }
    }

    /// An XOR-PEER-ADDRESS shorter than its family's length was skipped by the
    /// policy check while the crate read it zero-padded: `00 01 pp pp 21` is
    /// 0.0.0.0, the relay host itself. Any unreadable peer address is now a 400.
    #[tokio::test]
    async fn a_short_or_odd_peer_address_is_a_bad_request_not_a_way_past_the_policy() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let nonce = g.nonces.issue(SRC.ip(), SystemTime::now());
        let bad: [&[u8]; 5] = [
            &[0x00, 0x01, 0x13, 0x88, 0x21],
            &[0x00, 0x01, 0x13, 0x88, 0x21, 0x12, 0xa4],
            &[0x00, 0x02, 0, 1, 2],
            &[],
            &[0x00, 0x03, 0x13, 0x88, 1, 2, 3, 4],
        ];
        for method in [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND] {
            for value in bad {
                let m = request(method, &[], Some(&nonce), &[(ATTR_XOR_PEER_ADDRESS, value.to_vec())]);
                assert_eq!(code_of(&answer(c.judge(&m.raw, SRC))), 400, "{method} {value:02x?}");
            }
            let m = request(method, &["203.0.113.7:5000"], Some(&nonce), &[(ATTR_XOR_PEER_ADDRESS, bad[0].to_vec())]);
            assert_eq!(code_of(&answer(c.judge(&m.raw, SRC))), 400, "a good peer does not carry a bad one");
        }
        let ok = request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000"], Some(&nonce), &[]);
        assert!(matches!(c.judge(&ok.raw, SRC), Verdict::Queue(_)), "a well-formed public peer still passes");
    }

    /// Refused requests are counted, every one, but one source gets only a few
    /// log lines per interval: one INFO line per crafted packet filled disks.
    #[tokio::test]
    async fn refusals_are_all_counted_but_logged_a_few_per_source() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let nonce = g.nonces.issue(SRC.ip(), SystemTime::now());
        // Under the rate limit's burst (200), so each one reaches the check.
        let username =
            meridian_auth::turn_rest::mint(SECRET, "alice", Duration::from_secs(60), SystemTime::now()).username;
        let lines = lines_logged("TURN credentials refused", || {
            for _ in 0..150 {
                let mut m = Message::new();
                m.build(&[
                    Box::new(TransactionId::new()),
                    Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
                    Box::new(TextAttribute::new(ATTR_USERNAME, username.clone())),
                    Box::new(TextAttribute::new(ATTR_REALM, "meridian".into())),
                    Box::new(TextAttribute::new(ATTR_NONCE, nonce.clone())),
                ])
                .unwrap();
                MessageIntegrity::new_long_term_integrity(username.clone(), "meridian".into(), "wrong".into())
                    .add_to(&mut m)
                    .unwrap();
                assert_eq!(code_of(&answer(c.judge(&m.raw, SRC))), 401);
            }
        });
        assert_eq!(g.stats().refused, 150, "every refusal counted");
        assert_eq!(lines, meridian_runtime::log_limit::DEFAULT_LINES_PER_SOURCE as usize);
    }

    #[tokio::test]
    async fn data_and_garbage_pass_untouched() {
        let c = conn(gate());
        assert!(matches!(c.judge(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], SRC), Verdict::Pass), "ChannelData");
        assert!(matches!(c.judge(&[0u8; 3], SRC), Verdict::Pass), "runts");
        let garbage = [0x00, 0x08, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(c.judge(&garbage, SRC), Verdict::Pass), "undecodable: the server drops it");
    }

    #[test]
    fn xor_peer_addresses_are_read_with_the_cookie_and_transaction() {
        let txid = [9u8; 12];
        // 203.0.113.7 xor the cookie 21 12 a4 42 (0 xor 0x12 is 0x12).
        let v4 = [0x00, 0x01, 0x33, 0x99, 203 ^ 0x21, 0x12, 113 ^ 0xa4, 7 ^ 0x42];
        assert_eq!(xor_peer_ip(&v4, &txid), Some("203.0.113.7".parse().unwrap()));
        let want: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let key: Vec<u8> = MAGIC_COOKIE.to_be_bytes().iter().chain(&txid).copied().collect();
        let mut v6 = vec![0x00, 0x02, 0x33, 0x99];
        v6.extend(want.octets().iter().zip(&key).map(|(b, k)| b ^ k));
        assert_eq!(xor_peer_ip(&v6, &txid), Some(IpAddr::V6(want)));
        assert_eq!(xor_peer_ip(&v6[..19], &txid), None, "a byte short");
    }
}
