//! Which peers the relay relays to (a pure decision).
//!
//! By default the relay refuses peers that an attacker could reach only through
//! it: loopback, private (RFC 1918, RFC 4193), link-local (incl. the cloud
//! metadata address 169.254.169.254), CGNAT, multicast, unspecified, broadcast,
//! benchmarking and reserved ranges (after eturnal's default block list; coturn
//! by default still relays to private IPv4). Operators open holes with an allow
//! list (e.g. the co-located SFU's address) and close more with a deny list; an
//! explicit deny beats an allow, which beats the defaults.

use std::net::IpAddr;

use ipnet::IpNet;

/// Ranges refused unless allowed.
pub const DEFAULT_DENIED: [&str; 19] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    "2001:db8::/32",
];

/// The relay's peer policy.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    defaults: Vec<IpNet>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Default for PeerPolicy {
    /// The default block list, no allow or deny list.
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl PeerPolicy {
    /// The default block list with `allow` holes and extra `deny` ranges.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        // The constants above are valid CIDRs.
        let defaults = DEFAULT_DENIED.iter().filter_map(|n| n.parse().ok()).collect();
        Self { defaults, allow, deny }
    }

    /// Whether the relay may send to and receive from `peer`.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            // An IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let within = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&peer));
        if within(&self.deny) {
            return false;
        }
        if within(&self.allow) {
            return true;
        }
        !within(&self.defaults) && !matches!(peer, IpAddr::V4(v4) if v4.is_broadcast())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_and_metadata_addresses_are_refused_by_default() {
        let p = PeerPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.0.0.1",
            "172.20.1.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.allows(ip(bad)), "{bad}");
        }
        for good in ["203.0.113.7", "8.8.8.8", "2a00:1450::1"] {
            assert!(p.allows(ip(good)), "{good}");
        }
    }

    #[test]
    fn allow_opens_a_hole_and_deny_wins_over_allow() {
        let p = PeerPolicy::new(vec!["10.1.0.0/16".parse().unwrap()], vec!["10.1.2.0/24".parse().unwrap()]);
        assert!(p.allows(ip("10.1.0.5")), "allowed hole");
        assert!(!p.allows(ip("10.1.2.5")), "deny beats allow");
        assert!(!p.allows(ip("10.2.0.5")), "the rest of 10/8 stays refused");
        let p = PeerPolicy::new(vec![], vec!["203.0.113.0/24".parse().unwrap()]);
        assert!(!p.allows(ip("203.0.113.7")), "deny closes public ranges too");
    }
}
