//! The TURN channel data path (`turn-relay/src/channel_data.rs`): `Channels::client_data`
//! (and so `channel_data::parse`, the ChannelData reader) on a client with bound
//! channels, one of them a hairpin to another allocation on the relay, and
//! `Channels::peer_data` for the way back. The harness checks the path against
//! its own reading of RFC 8656 §12.4: exactly the well-formed ChannelData on a
//! bound channel is taken, and its payload leaves whole, once.
//!
//! Input: one byte choosing the direction (low bit 0: from the client; 1: from a
//! peer, the next byte choosing which), then the datagram or payload.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meridian_turn::fuzzing::{ChannelHarness, PEER};

static HARNESS: OnceLock<ChannelHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(ChannelHarness::new);
    match data.split_first() {
        Some((d, packet)) if d & 1 == 0 => {
            harness.client_data(packet);
        }
        Some((_, rest)) => {
            let Some((&which, payload)) = rest.split_first() else { return };
            let peers: [SocketAddr; 3] =
                [PEER, "198.51.100.1:50001".parse().expect("address"), "192.0.2.99:1".parse().expect("address")];
            harness.peer_data(peers[usize::from(which) % peers.len()], payload);
        }
        None => {}
    }
});
