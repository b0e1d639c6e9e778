//! The one-port demultiplexer of the str0m driver (`sfu/src/rtc/demux.rs`):
//! arbitrary datagrams from arbitrary source ports, routed among three peers
//! and learnt from as the driver does. The harness checks: no panic; a
//! Binding request whose USERNAME names a peer's ufrag is routed to that peer
//! and nothing else is routed by ufrag; what is learnt routes as a plain
//! model of the rules says (an address belongs to the peer that last learnt
//! it; a peer keeps its newest `MAX_ADDRESSES`), so the table stays bounded.
//!
//! Input: operations of a source port (2 bytes), a length (1) and that many
//! bytes of datagram.
#![no_main]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use meridian_sfu::rtc::demux::{binding_ufrag, Demux, MAX_ADDRESSES};

const UFRAGS: [&str; 3] = ["alice", "bob", "carol"];

fuzz_target!(|data: &[u8]| {
    let mut demux = Demux::default();
    for (i, u) in UFRAGS.iter().enumerate() {
        demux.insert(u, i);
    }
    // The model: each peer's addresses, oldest first, and each address's peer.
    let mut lists: Vec<VecDeque<SocketAddr>> = vec![VecDeque::new(); UFRAGS.len()];
    let mut owner: HashMap<SocketAddr, usize> = HashMap::new();
    let mut rest = data;
    while let [p0, p1, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (datagram, tail) = tail.split_at(take);
        rest = tail;
        let source = SocketAddr::from(([127, 0, 0, 1], u16::from_be_bytes([*p0, *p1])));
        let routed = demux.route(source, datagram);
        if let Some(ufrag) = binding_ufrag(datagram) {
            assert_eq!(routed, UFRAGS.iter().position(|u| *u == ufrag), "routed by its ufrag");
            if let Some(peer) = routed {
                demux.learn(source, peer);
                if owner.get(&source) != Some(&peer) {
                    if let Some(previous) = owner.insert(source, peer) {
                        lists[previous].retain(|a| *a != source);
                    }
                    lists[peer].push_back(source);
                    if lists[peer].len() > MAX_ADDRESSES {
                        if let Some(oldest) = lists[peer].pop_front() {
                            owner.remove(&oldest);
                        }
                    }
                }
            }
        }
    }
    for (peer, list) in lists.iter().enumerate() {
        assert!(list.len() <= MAX_ADDRESSES);
        for a in list {
            assert_eq!(demux.route(*a, &[0x80, 0x60]), Some(peer), "a learnt address routes to its peer");
        }
    }
    let unknown = SocketAddr::from(([127, 0, 0, 2], 1));
    assert_eq!(demux.route(unknown, &[0x80, 0x60]), None, "an address nobody learnt routes nowhere");
});
