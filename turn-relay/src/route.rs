//! The address pairs the relay keys its state by, as structs with named fields so
//! that no call site can swap the two addresses silently.
//!
//! A relayed packet crosses two legs (RFC 8656 §2): client to relay, keyed by
//! [`ClientRoute`], and relay to peer, keyed by [`PeerRoute`].

use std::net::SocketAddr;

/// A client as the `turn` crate keys its allocation: the listener the client
/// talks to and the client's address (RFC 8656 §2's 5-tuple, less the
/// transport, which the listener implies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientRoute {
    /// The listener's local address (the crate's `dst_addr`).
    pub listener: SocketAddr,
    /// The client's address as the listener sees it (the crate's `src_addr`).
    pub client: SocketAddr,
}

impl ClientRoute {
    /// The client of an allocation the crate reports (e.g. closed).
    pub fn of(five_tuple: &turn::allocation::five_tuple::FiveTuple) -> Self {
        Self { listener: five_tuple.dst_addr, client: five_tuple.src_addr }
    }
}

/// An allocation's leg to one peer: its relayed transport address
/// (XOR-RELAYED-ADDRESS) and the peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerRoute {
    /// The allocation's relayed address on this relay.
    pub relayed: SocketAddr,
    /// The peer's address (XOR-PEER-ADDRESS).
    pub peer: SocketAddr,
}
