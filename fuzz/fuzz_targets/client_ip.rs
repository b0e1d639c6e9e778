//! The gateway's client address (`gateway/src/client_ip.rs`): `client_ip` on a
//! `Forwarded` and an `X-Forwarded-For` value from a peer that is or is not a
//! trusted proxy.
//!
//! Input: one byte (bit 0: the peer is a trusted proxy; bit 1: a `Forwarded`
//! header is present; bit 2: an `X-Forwarded-For` header is present; bit 3: an
//! IPv6 peer), then `Forwarded\nX-Forwarded-For` (header values are bytes; hyper
//! hands over only visible ASCII, so invalid UTF-8 is replaced as `to_str` refuses it).
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use meridian_gateway::client_ip::client_ip;

static TRUSTED: OnceLock<Vec<IpNet>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let trusted = TRUSTED.get_or_init(|| {
        ["10.0.0.0/8", "127.0.0.0/8", "2001:db8::/32", "::1/128"].iter().map(|n| n.parse().expect("CIDR")).collect()
    });
    let Some((&flags, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (forwarded, xff) = text.split_once('\n').unwrap_or((&text, ""));
    let forwarded = (flags & 2 != 0).then_some(forwarded);
    let xff = (flags & 4 != 0).then_some(xff);
    let ip: IpAddr = match (flags & 1 != 0, flags & 8 != 0) {
        (true, false) => "10.1.2.3".parse().expect("address"),
        (true, true) => "2001:db8::7".parse().expect("address"),
        (false, false) => "203.0.113.9".parse().expect("address"),
        (false, true) => "2001:4860::1".parse().expect("address"),
    };
    let peer = SocketAddr::new(ip, 40000);
    let client = client_ip(peer, forwarded, xff, trusted);
    if flags & 1 == 0 || (forwarded.is_none() && xff.is_none()) {
        assert_eq!(client, ip, "headers from an untrusted peer, or none, are ignored");
    }
});
