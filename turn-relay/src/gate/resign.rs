//! Rewriting and re-signing what the gate lets through (RFC 8489 §14.5,
//! MESSAGE-INTEGRITY with the client's long-term key): the server sees only
//! requests that carry its own current nonce, so the gate rewrites each one and
//! signs it again with the key the client used.
//!
//! The rewrite: NONCE becomes the server's ([`ServerNonce`], fetched with an
//! unauthenticated request of the gate's own, once per listener per
//! [`SERVER_NONCE_REFRESH`]); MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT are
//! recomputed; DONT-FRAGMENT is removed; LIFETIME is capped to [`MAX_LIFETIME`];
//! a CreatePermission naming several peers becomes one request per peer, whose
//! success answers but the last are swallowed ([`Splits`]). Also here: the signed
//! Refresh of lifetime 0 that ends a closed stream connection's allocation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stun::agent::TransactionId;
use stun::attributes::{
    AttrType, ATTR_DONT_FRAGMENT, ATTR_FINGERPRINT, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY,
    ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    Message, MessageType, Setter, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CREATE_PERMISSION, METHOD_REFRESH,
};
use stun::textattrs::TextAttribute;

use super::lock;

/// Longest allocation lifetime granted. The crate's maximum is 3600 s, exclusive:
/// a request for 3600 s or more would get its 600 s default.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3599);
/// The server's nonces live an hour (`turn` crate); the gate fetches a new one sooner.
const SERVER_NONCE_REFRESH: Duration = Duration::from_secs(50 * 60);
/// Split CreatePermission requests awaiting answers, at most.
const MAX_SPLIT_IN_FLIGHT: usize = 10_000;

/// A request to hand to the server once the server's nonce is known: the
/// client's attributes, re-signed with the client's long-term key.
pub(super) struct Signed {
    pub(super) typ: MessageType,
    pub(super) transaction_id: TransactionId,
    pub(super) attributes: Vec<(AttrType, Vec<u8>)>,
    pub(super) key: Vec<u8>,
    pub(super) fingerprint: bool,
    /// The client it is from (the server answers there).
    pub(super) src: SocketAddr,
}

impl Signed {
    /// The request with `nonce` as its NONCE, signed; `None` if it does not encode.
    pub(super) fn encode(&self, nonce: &str) -> Option<Vec<u8>> {
        let mut m = Message::new();
        m.typ = self.typ;
        m.transaction_id = self.transaction_id;
        m.write_header();
        for (t, v) in &self.attributes {
            m.add(*t, if *t == ATTR_NONCE { nonce.as_bytes() } else { v });
        }
        MessageIntegrity(self.key.clone()).add_to(&mut m).ok()?;
        if self.fingerprint {
            FINGERPRINT.add_to(&mut m).ok()?;
        }
        Some(m.raw)
    }
}

/// The request `m` from `src`, checked and signed with `key`, as the server is to
/// see it: without integrity, fingerprint and DONT-FRAGMENT, LIFETIME capped to
/// [`MAX_LIFETIME`], and a CreatePermission with several XOR-PEER-ADDRESS split
/// into one request per peer (in order; the caller swallows all answers but the
/// last with [`Splits`]).
pub(super) fn rewrite(m: &Message, key: &[u8], src: SocketAddr) -> Vec<Signed> {
    let max = u32::try_from(MAX_LIFETIME.as_secs()).unwrap_or(u32::MAX);
    let attributes: Vec<(AttrType, Vec<u8>)> = m
        .attributes
        .0
        .iter()
        .filter(|a| {
            ![ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_FINGERPRINT, ATTR_DONT_FRAGMENT]
                .contains(&a.typ)
        })
        .map(|a| {
            let value = match (a.typ, <[u8; 4]>::try_from(a.value.as_slice())) {
                (t, Ok(secs)) if t == ATTR_LIFETIME && u32::from_be_bytes(secs) > max => max.to_be_bytes().to_vec(),
                _ => a.value.clone(),
            };
            (a.typ, value)
        })
        .collect();
    let signed = |attributes: Vec<(AttrType, Vec<u8>)>| Signed {
        typ: m.typ,
        transaction_id: m.transaction_id,
        attributes,
        key: key.to_vec(),
        fingerprint: m.contains(ATTR_FINGERPRINT),
        src,
    };
    let peers = attributes.iter().filter(|(t, _)| *t == ATTR_XOR_PEER_ADDRESS).count();
    if m.typ.method != METHOD_CREATE_PERMISSION || peers < 2 {
        return vec![signed(attributes)];
    }
    // One request per peer; the server answers each, the client hears the last.
    (0..peers)
        .map(|i| {
            let mut k = 0;
            let one = attributes
                .iter()
                .filter(|(t, _)| {
                    if *t != ATTR_XOR_PEER_ADDRESS {
                        return true;
                    }
                    k += 1;
                    k - 1 == i
                })
                .cloned()
                .collect();
            signed(one)
        })
        .collect()
}

/// A Refresh with LIFETIME 0 for `client`'s allocation, made as `username` in
/// `realm` with `password`: deletes it (RFC 8656 §7.3).
pub(super) fn refresh_zero(username: &str, realm: &str, password: &str, client: SocketAddr) -> Signed {
    Signed {
        typ: MessageType::new(METHOD_REFRESH, CLASS_REQUEST),
        transaction_id: TransactionId::new(),
        attributes: vec![
            (ATTR_LIFETIME, 0u32.to_be_bytes().to_vec()),
            (ATTR_USERNAME, username.as_bytes().to_vec()),
            (ATTR_REALM, realm.as_bytes().to_vec()),
            (ATTR_NONCE, Vec::new()),
        ],
        key: turn::auth::generate_auth_key(username, realm, password),
        fingerprint: false,
        src: client,
    }
}

/// An unauthenticated Allocate, which the server answers with 401 and its nonce.
pub(super) fn nonce_request() -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.build(&[Box::new(TransactionId::new()), Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST))]).ok()?;
    Some(m.raw)
}

/// The server's current nonce, as one listener last learned it.
#[derive(Default)]
pub(super) struct ServerNonce {
    nonce: Mutex<Option<(String, Instant)>>,
    /// A fetch is out and unanswered.
    fetching: AtomicBool,
}

impl ServerNonce {
    /// The nonce, unless none was learned or it was learned [`SERVER_NONCE_REFRESH`]
    /// or longer before `now`.
    pub(super) fn current(&self, now: Instant) -> Option<String> {
        lock(&self.nonce)
            .as_ref()
            .filter(|(_, at)| now.duration_since(*at) < SERVER_NONCE_REFRESH)
            .map(|(n, _)| n.clone())
    }

    /// A fetch goes out now.
    pub(super) fn fetch_sent(&self) {
        self.fetching.store(true, Ordering::Relaxed);
    }

    /// Whether the last fetch went unanswered; the next call says `false`.
    pub(super) fn fetch_unanswered(&self) -> bool {
        self.fetching.swap(false, Ordering::Relaxed)
    }

    /// Learns the NONCE of `answer` (the server's answer to a fetch) at `now`.
    pub(super) fn learn(&self, answer: &[u8], now: Instant) {
        let mut m = Message::new();
        m.raw = answer.to_vec();
        if m.decode().is_ok() {
            if let Ok(nonce) = TextAttribute::get_from_as(&m, ATTR_NONCE) {
                *lock(&self.nonce) = Some((nonce.text, now));
                self.fetching.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// The split CreatePermission requests whose success answers are still to be
/// swallowed, by client and transaction.
#[derive(Default)]
pub(super) struct Splits {
    swallow: Mutex<HashMap<(SocketAddr, [u8; 12]), usize>>,
}

impl Splits {
    /// `src`'s request `txid` went to the server as `pieces` requests (2 or more).
    pub(super) fn split(&self, src: SocketAddr, txid: [u8; 12], pieces: usize) {
        let mut swallow = lock(&self.swallow);
        if swallow.len() >= MAX_SPLIT_IN_FLIGHT {
            swallow.clear(); // answers lost; forget them rather than grow
        }
        swallow.insert((src, txid), pieces.saturating_sub(1));
    }

    /// Whether the server's CreatePermission answer `txid` to `target` goes out:
    /// `false` for the success answers of a split request but its last. An error
    /// answer goes out at once and ends the split.
    pub(super) fn passes(&self, target: SocketAddr, txid: [u8; 12], success: bool) -> bool {
        let mut swallow = lock(&self.swallow);
        let Some(left) = swallow.get_mut(&(target, txid)) else { return true };
        if success && *left > 0 {
            *left -= 1;
            return false;
        }
        swallow.remove(&(target, txid));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{conn, gate, request, server_challenge, SRC};
    use super::super::verdict::Verdict;
    use super::*;
    use std::sync::Arc;
    use std::time::SystemTime;
    use stun::message::Getter;
    use turn::proto::peeraddr::PeerAddress;

    #[tokio::test]
    async fn several_peers_are_split_and_lifetime_and_dont_fragment_rewritten() {
        let g = gate();
        let c = conn(Arc::clone(&g));
        let nonce = g.nonces.issue(SRC.ip(), SystemTime::now());
        let m = request(METHOD_CREATE_PERMISSION, &["203.0.113.7:5000", "203.0.113.8:5000"], Some(&nonce), &[]);
        let Verdict::Queue(pieces) = c.judge(&m.raw, SRC) else { panic!("queued") };
        assert_eq!(pieces.len(), 2);
        for (piece, want) in pieces.iter().zip(["203.0.113.7", "203.0.113.8"]) {
            let mut out = Message::new();
            out.raw = piece.encode("server-nonce").unwrap();
            out.decode().unwrap();
            let mut peer = PeerAddress::default();
            peer.get_from(&out).unwrap();
            assert_eq!(peer.ip.to_string(), want);
            assert_eq!(out.attributes.0.iter().filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS).count(), 1);
            assert_eq!(TextAttribute::get_from_as(&out, ATTR_NONCE).unwrap().text, "server-nonce");
            MessageIntegrity(piece.key.clone()).check(&mut out).expect("re-signed with the client's key");
        }

        let extra = [(ATTR_LIFETIME, 86_400u32.to_be_bytes().to_vec()), (ATTR_DONT_FRAGMENT, Vec::new())];
        let m = request(METHOD_ALLOCATE, &[], Some(&nonce), &extra);
        let Verdict::Queue(pieces) = c.judge(&m.raw, SRC) else { panic!("queued") };
        let mut out = Message::new();
        out.raw = pieces[0].encode("n").unwrap();
        out.decode().unwrap();
        assert!(!out.contains(ATTR_DONT_FRAGMENT));
        assert_eq!(out.get(ATTR_LIFETIME).unwrap(), 3599u32.to_be_bytes().to_vec(), "capped, not reset");
    }

    #[test]
    fn a_split_request_lets_out_only_its_last_success_or_its_first_error() {
        let splits = Splits::default();
        splits.split(SRC, [1; 12], 3);
        assert!(!splits.passes(SRC, [1; 12], true) && !splits.passes(SRC, [1; 12], true), "two swallowed");
        assert!(splits.passes(SRC, [1; 12], true), "the third answers the client");
        assert!(splits.passes(SRC, [1; 12], true), "done: later answers are not ours to swallow");
        splits.split(SRC, [2; 12], 3);
        assert!(splits.passes(SRC, [2; 12], false), "an error goes out at once");
        assert!(splits.passes(SRC, [2; 12], true), "and ends the split");
        assert!(splits.passes(SRC, [3; 12], true), "an unsplit request");
    }

    #[test]
    fn the_servers_nonce_is_used_for_50_minutes_then_fetched_again() {
        let server = ServerNonce::default();
        let learned = Instant::now();
        let after = |secs| learned.checked_add(Duration::from_secs(secs)).expect("an instant an hour on");
        assert_eq!(server.current(learned), None, "nothing learned yet");
        server.fetch_sent();
        server.learn(&server_challenge("n1"), learned);
        assert!(!server.fetch_unanswered(), "the answer ended the fetch");
        assert_eq!(server.current(after(50 * 60 - 1)).as_deref(), Some("n1"));
        assert_eq!(server.current(after(50 * 60)), None, "old: fetch again");
        server.fetch_sent();
        assert!(server.fetch_unanswered(), "no answer");
        assert!(!server.fetch_unanswered(), "said once");
        server.learn(b"not STUN", after(50 * 60));
        assert_eq!(server.current(after(50 * 60)), None, "nothing learned from garbage");
    }
}
