//! Which address a request comes from.
//!
//! The socket peer, unless the peer is a trusted proxy (a configured CIDR, e.g. the
//! load balancer in front of the gateways). Then `Forwarded` (RFC 7239 `for=`) or
//! else `X-Forwarded-For` is read from the right: each hop a trusted proxy appended
//! is skipped, and the first address not inside a trusted CIDR is the client. A
//! header from an untrusted peer is ignored, so a client cannot choose its own
//! region by sending one.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The client address of a request from `peer` with header values `forwarded`
/// (`Forwarded`) and `x_forwarded_for` (`X-Forwarded-For`), given the trusted
/// proxy ranges. Malformed entries end the walk: the last good address stands.
pub fn client_ip(
    peer: SocketAddr,
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.ip();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<Option<IpAddr>> = match (forwarded, x_forwarded_for) {
        (Some(f), _) => f.split(',').map(forwarded_for).collect(),
        (None, Some(x)) => x.split(',').map(|h| parse_ip(h.trim())).collect(),
        (None, None) => return client,
    };
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.1`,
/// `for="[2001:db8::1]:443"`; obfuscated names give `None`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_ip(v.trim().trim_matches('"'))
    })
}

/// An address with or without port and IPv6 brackets.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[').and_then(|r| r.split(']').next()).and_then(|v6| v6.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 40000)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let ip = client_ip(peer("203.0.113.9"), None, Some("81.2.69.142"), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        let ip = client_ip(peer("203.0.113.9"), Some("for=81.2.69.142"), None, &[]);
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // spoofed, client, inner proxy
        let xff = "1.1.1.1, 81.2.69.142, 10.1.2.3";
        assert_eq!(client_ip(peer("127.0.0.1"), None, Some(xff), &trusted), "81.2.69.142".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_takes_brackets_and_ports() {
        let trusted = nets(&["127.0.0.0/8"]);
        let f = r#"for="[2001:db8::1]:4711";proto=https, for=127.0.0.2"#;
        assert_eq!(
            client_ip(peer("127.0.0.1"), Some(f), Some("9.9.9.9"), &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer("127.0.0.1"), None, Some("81.2.69.142:5000"), &trusted),
            "81.2.69.142".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_good_address() {
        let trusted = nets(&["127.0.0.0/8"]);
        assert_eq!(
            client_ip(peer("127.0.0.1"), None, Some("not-an-ip"), &trusted),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer("127.0.0.1"), Some("for=_hidden"), None, &trusted),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
