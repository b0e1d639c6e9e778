//! Which peer a datagram on the node's one UDP port belongs to (issue 13: one
//! port for every peer, as LiveKit's `rtc.udp_port` and mediasoup's
//! WebRtcServer).
//!
//! A STUN Binding request names its peer: its USERNAME is
//! `<our ufrag>:<their ufrag>` (RFC 8445 §7.2.2, RFC 5389 §15.3). Every other
//! datagram (DTLS, SRTP, SRTCP) is known by the address it came from, once a
//! STUN request from that address was accepted for the peer
//! ([`Demux::learn`]). What neither names is nobody's, and is dropped.
//!
//! Bounds: a peer keeps at most [`MAX_ADDRESSES`] addresses (the oldest goes),
//! so a client cycling its source port cannot grow the table; parsing reads
//! only within the datagram.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;

/// Addresses remembered per peer: its candidates' that were checked.
pub const MAX_ADDRESSES: usize = 8;

/// STUN's magic cookie (RFC 5389 §6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// Binding request (RFC 5389 §6: method 0x001, class request).
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
/// The USERNAME attribute (RFC 5389 §15.3).
const USERNAME: [u8; 2] = [0x00, 0x06];
/// RFC 5389's header length.
const HEADER: usize = 20;

/// The ufrag a STUN Binding request is addressed to (the part of its
/// USERNAME before the colon), or `None` for any other datagram, a malformed
/// one included.
pub fn binding_ufrag(datagram: &[u8]) -> Option<&str> {
    let header = datagram.get(..HEADER)?;
    if header.get(..2)? != BINDING_REQUEST || header.get(4..8)? != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?]));
    let end = HEADER.checked_add(length)?;
    let mut attributes = datagram.get(HEADER..end)?;
    while attributes.len() >= 4 {
        let kind = attributes.get(..2)?;
        let len = usize::from(u16::from_be_bytes([*attributes.get(2)?, *attributes.get(3)?]));
        let value = attributes.get(4..4usize.checked_add(len)?)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Values are padded to four bytes.
        let padded = len.checked_add(3)? & !3;
        attributes = attributes.get(4usize.checked_add(padded)?..).unwrap_or(&[]);
    }
    None
}

/// The routing table of one UDP port: peers by ufrag and by checked address.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<String, K>,
    by_address: HashMap<SocketAddr, K>,
    addresses: HashMap<K, VecDeque<SocketAddr>>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Self { by_ufrag: HashMap::new(), by_address: HashMap::new(), addresses: HashMap::new() }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// Routes STUN requests for `ufrag` to `peer`.
    pub fn insert(&mut self, ufrag: &str, peer: K) {
        self.by_ufrag.insert(ufrag.to_owned(), peer);
    }

    /// Forgets `peer`: its ufrag and addresses.
    pub fn remove(&mut self, peer: K) {
        self.by_ufrag.retain(|_, p| *p != peer);
        for a in self.addresses.remove(&peer).into_iter().flatten() {
            if self.by_address.get(&a) == Some(&peer) {
                self.by_address.remove(&a);
            }
        }
    }

    /// The peer `datagram` from `source` is for: by USERNAME for a STUN
    /// Binding request, else by `source`.
    pub fn route(&self, source: SocketAddr, datagram: &[u8]) -> Option<K> {
        match binding_ufrag(datagram) {
            Some(ufrag) => self.by_ufrag.get(ufrag).copied(),
            None => self.by_address.get(&source).copied(),
        }
    }

    /// Routes what comes from `source` to `peer` from now on (a STUN request
    /// from there was accepted for it). A peer keeps its newest
    /// [`MAX_ADDRESSES`]; an address moves to the peer that last checked from it.
    pub fn learn(&mut self, source: SocketAddr, peer: K) {
        if self.by_address.get(&source) == Some(&peer) {
            return;
        }
        if let Some(previous) = self.by_address.insert(source, peer) {
            if let Some(list) = self.addresses.get_mut(&previous) {
                list.retain(|a| *a != source);
            }
        }
        let list = self.addresses.entry(peer).or_default();
        list.push_back(source);
        if list.len() > MAX_ADDRESSES {
            if let Some(oldest) = list.pop_front() {
                self.by_address.remove(&oldest);
            }
        }
    }

    /// Ufrags routed (a peer has two for a while after an ICE restart).
    pub fn len(&self) -> usize {
        self.by_ufrag.len()
    }

    /// Whether no ufrag is routed.
    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with `attributes` (type, value) after the header.
    fn binding(attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attributes {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut d = vec![0x00, 0x01];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&MAGIC_COOKIE);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&body);
        d
    }

    #[test]
    fn the_ufrag_is_read_after_other_attributes_and_padding() {
        let d = binding(&[(0x0024, &[0, 0, 0, 1]), (0x8029, b"odd"), (0x0006, b"ours:theirs")]);
        assert_eq!(binding_ufrag(&d), Some("ours"));
    }

    #[test]
    fn anything_else_names_nobody() {
        assert_eq!(binding_ufrag(&[]), None);
        assert_eq!(binding_ufrag(&[0x80, 0x60, 0, 1]), None, "RTP");
        let mut response = binding(&[(0x0006, b"ours:theirs")]);
        response[0] = 0x01;
        assert_eq!(binding_ufrag(&response), None, "a Binding success response");
        let mut cookie = binding(&[(0x0006, b"ours:theirs")]);
        cookie[4] = 0;
        assert_eq!(binding_ufrag(&cookie), None, "no magic cookie");
        assert_eq!(binding_ufrag(&binding(&[(0x0024, &[0, 0, 0, 1])])), None, "no USERNAME");
    }

    #[test]
    fn lengths_past_the_datagram_are_refused() {
        let mut long_message = binding(&[(0x0006, b"ours:theirs")]);
        long_message[2] = 0xff;
        assert_eq!(binding_ufrag(&long_message), None);
        let mut long_attribute = binding(&[(0x0006, b"ours:theirs")]);
        long_attribute[HEADER + 2] = 0xff;
        assert_eq!(binding_ufrag(&long_attribute), None);
        let mut not_utf8 = binding(&[(0x0006, b"ours:theirs")]);
        not_utf8[HEADER + 4] = 0xff;
        assert_eq!(binding_ufrag(&not_utf8), None);
    }

    #[test]
    fn datagrams_are_routed_by_ufrag_then_by_learnt_address() {
        let mut demux = Demux::default();
        demux.insert("alice", 1);
        demux.insert("bob", 2);
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let rtp = [0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(demux.route(a, &binding(&[(0x0006, b"bob:x")])), Some(2));
        assert_eq!(demux.route(a, &rtp), None, "not learnt yet");
        demux.learn(a, 2);
        assert_eq!(demux.route(a, &rtp), Some(2));
        demux.remove(2);
        assert_eq!(demux.route(a, &rtp), None);
        assert_eq!(demux.route(a, &binding(&[(0x0006, b"bob:x")])), None);
        assert_eq!(demux.len(), 1);
    }

    #[test]
    fn a_peer_keeps_its_newest_addresses_only() {
        let mut demux = Demux::default();
        demux.insert("alice", 1);
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        for port in 0..20 {
            demux.learn(addr(port), 1);
        }
        assert_eq!(demux.by_address.len(), MAX_ADDRESSES);
        assert_eq!(demux.route(addr(19), &[0x80]), Some(1));
        assert_eq!(demux.route(addr(0), &[0x80]), None);
    }
}
