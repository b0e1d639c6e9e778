//! TURN REST API credentials: ephemeral username/password pairs minted per join.
//!
//! Scheme (draft-uberti-behave-turn-rest-00, as coturn's `use-auth-secret`):
//! username = `<expiry unix seconds>:<identity>`,
//! password = `base64(HMAC-SHA1(secret, username))`.
//! The relay recomputes the password from the username, so it keeps no
//! credential table; expiry is part of the signed username.
//!
//! Both sides use it: the SFU mints with [`mint`] for `JoinResponse.ice_servers`,
//! the relay checks with [`verify`] on every authenticated request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::prelude::{Engine, BASE64_STANDARD};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Default lifetime of minted credentials: 24 h, coturn's and LiveKit's usual choice.
pub const DEFAULT_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// A minted TURN credential, as handed to a client in `JoinResponse.ice_servers`
/// (LiveKit proto `ICEServer.username` / `ICEServer.credential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `<expiry unix seconds>:<identity>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// When the relay stops accepting this username.
    pub expires_at: SystemTime,
}

/// Why a REST-API username was refused. All variants are the client's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// The username is not `<expiry unix seconds>:<identity>`.
    #[error("TURN username is not '<expiry>:<identity>'")]
    Malformed,
    /// The expiry in the username is in the past.
    #[error("TURN credential expired")]
    Expired,
}

/// Mints credentials for `identity`, valid for `ttl` from `now`, signed with the
/// region's `secret`.
pub fn mint(secret: &[u8], identity: &str, ttl: Duration, now: SystemTime) -> TurnCredentials {
    // `ttl` is the operator's (configuration), `now` the clock's; neither is a
    // client's, but a wild TTL still saturates instead of panicking.
    let expires_at = now.checked_add(ttl).unwrap_or(now);
    let expiry_secs = expires_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let username = format!("{expiry_secs}:{identity}");
    let password = password_for(secret, &username);
    TurnCredentials { username, password, expires_at: crate::unix_time(expiry_secs).unwrap_or(expires_at) }
}

/// Checks a REST-API `username` at `now` and returns the password the client must
/// have used (the relay derives the long-term key from it, RFC 8489 §9.2.2).
///
/// Errors: [`CredentialError::Malformed`] when the expiry prefix is missing, not a
/// number or past what a `SystemTime` holds, [`CredentialError::Expired`] when it
/// is before `now`.
pub fn verify(secret: &[u8], username: &str, now: SystemTime) -> Result<String, CredentialError> {
    let (expiry, _identity) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    let expiry = crate::unix_time(expiry).ok_or(CredentialError::Malformed)?;
    if expiry < now {
        return Err(CredentialError::Expired);
    }
    Ok(password_for(secret, username))
}

/// `base64(HMAC-SHA1(secret, username))`, whatever the expiry (the relay signs
/// its own requests for a client's allocation with it).
pub fn password_for(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    BASE64_STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_verify_until_expiry() {
        let now = crate::unix_time(1_700_000_000).unwrap();
        let c = mint(b"s3cret", "alice", Duration::from_secs(60), now);
        assert_eq!(c.username, "1700000060:alice");
        assert_eq!(verify(b"s3cret", &c.username, now).unwrap(), c.password);
        assert_eq!(verify(b"s3cret", &c.username, now + Duration::from_secs(61)), Err(CredentialError::Expired));
    }

    #[test]
    fn password_matches_coturn_rest_scheme() {
        // Reference value from openssl, as coturn computes it: printf -n "1700000060:alice" | openssl dgst -binary -sha1 -hmac s3cret | base64
        let c = mint(b"s3cret", "alice", Duration::from_secs(60), crate::unix_time(1_700_000_000).unwrap());
        assert_eq!(c.password, "fWllCr+TI/EYIfcy4+Rebc5arZ8=");
    }

    #[test]
    fn malformed_usernames_are_refused() {
        let now = UNIX_EPOCH;
        assert_eq!(verify(b"k", "alice", now), Err(CredentialError::Malformed));
        assert_eq!(verify(b"k", "soon:alice", now), Err(CredentialError::Malformed));
    }

    /// An expiry past the end of `SystemTime` (over `i64::MAX` seconds) panicked in
    /// unchecked `SystemTime` addition; one unauthenticated datagram reached it.
    #[test]
    fn an_expiry_past_the_end_of_time_is_malformed_not_a_panic() {
        let now = crate::unix_time(1_700_000_000).unwrap();
        for username in ["18446744073709551615:x", "9223372036854775808:x", "99999999999999999999:x"] {
            assert_eq!(verify(b"k", username, now), Err(CredentialError::Malformed), "{username}");
        }
        let far = verify(b"k", "9223372036854775807:x", now);
        assert!(far.is_ok() || far == Err(CredentialError::Malformed), "the largest i64 either fits or is refused");
        let c = mint(b"k", "alice", Duration::MAX, now);
        assert!(verify(b"k", &c.username, now).is_ok(), "a saturated TTL still mints something usable");
    }
}
