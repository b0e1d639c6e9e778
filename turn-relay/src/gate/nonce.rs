//! The gate's stateless nonces (RFC 8489 §9.2: the NONCE of the long-term
//! credential mechanism). A nonce is `<expiry, 16 hex digits of Unix seconds>`
//! followed by 20 hex digits of HMAC-SHA1 over the expiry and the client's IP, so
//! the gate can check one it issued without having stored it. Pure: the caller
//! passes `now` and the key.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// How long a gate nonce is good for: an hour. A stale one gets 438 (RFC 8489 §9.2.5).
pub const NONCE_LIFETIME: Duration = Duration::from_secs(3600);

/// Issues and checks nonces with one secret key.
pub(super) struct Nonces {
    key: [u8; 32],
}

impl Nonces {
    /// Nonces signed with `key` (random per relay: a restart invalidates them).
    pub(super) fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A nonce for `ip` valid until `now + NONCE_LIFETIME` (to the second, down).
    pub(super) fn issue(&self, ip: IpAddr, now: SystemTime) -> String {
        let expiry = now.checked_add(NONCE_LIFETIME).unwrap_or(now);
        let expiry = expiry.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        format!("{expiry:016x}{}", self.mac(expiry, ip))
    }

    fn mac(&self, expiry: u64, ip: IpAddr) -> String {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&expiry.to_be_bytes());
        mac.update(ip.to_string().as_bytes());
        mac.finalize().into_bytes()[..10].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `nonce` is one of ours for `ip`, unexpired at `now` (good through
    /// its expiry second).
    pub(super) fn verify(&self, nonce: &str, ip: IpAddr, now: SystemTime) -> bool {
        let Some((expiry, mac)) = nonce.get(..16).zip(nonce.get(16..)) else { return false };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else { return false };
        // Checked: the expiry is the client's to choose, and the unchecked
        // `SystemTime` addition panics past `i64::MAX` seconds (one datagram
        // stopped the listener).
        meridian_auth::unix_time(expiry).is_some_and(|at| at >= now) && self.mac(expiry, ip) == mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    fn at(secs: u64) -> SystemTime {
        meridian_auth::unix_time(secs).expect("a time SystemTime holds")
    }

    #[test]
    fn a_nonce_is_good_through_its_expiry_second_and_no_longer() {
        let nonces = Nonces::new([7; 32]);
        let issued = at(1_700_000_000);
        let nonce = nonces.issue(IP, issued);
        assert!(nonce.starts_with(&format!("{:016x}", 1_700_003_600u64)), "{nonce}");
        assert!(nonces.verify(&nonce, IP, issued));
        assert!(nonces.verify(&nonce, IP, at(1_700_003_600)), "at its expiry");
        let just_after = at(1_700_003_600).checked_add(Duration::from_nanos(1)).expect("in range");
        assert!(!nonces.verify(&nonce, IP, just_after), "a nanosecond later");
        assert!(!nonces.verify(&nonce, IP, at(1_700_007_200)), "an hour later");
    }

    #[test]
    fn a_nonce_is_bound_to_its_key_and_client_ip() {
        let nonces = Nonces::new([7; 32]);
        let now = at(1_700_000_000);
        let nonce = nonces.issue(IP, now);
        assert!(!nonces.verify(&nonce, "203.0.113.10".parse().expect("ip"), now), "another client IP");
        assert!(!Nonces::new([8; 32]).verify(&nonce, IP, now), "another relay's key");
        assert!(!nonces.verify("0000000000000000ffff", IP, now), "forged");
        assert!(!nonces.verify(&nonce[..20], IP, now), "cut");
    }

    /// Expiries past the end of `SystemTime` are refused, not a panic.
    #[test]
    fn an_expiry_past_the_end_of_time_is_refused() {
        let nonces = Nonces::new([7; 32]);
        for nonce in ["ffffffffffffffff", "ffffffffffffffff0123456789abcdef0123", "8000000000000000", "zz"] {
            assert!(!nonces.verify(nonce, IP, at(1_700_000_000)), "{nonce}");
        }
    }
}
