//! Join tokens and server-API credentials (`auth/src/lib.rs`):
//! `TokenAuthority::verify_join(token, room)` as the SFU's `/rtc` upgrade and the
//! gateway call it, and `TokenAuthority::check_api_auth(Authorization)` as the
//! server API calls it.
//!
//! Input: one mode byte (taken modulo 5), then text:
//! 0. the token; `verify_join(token, None)`;
//! 1. `token\nroom`; `verify_join(token, Some(room))`;
//! 2. an `Authorization` value; `check_api_auth`;
//! 3. `header JSON\npayload JSON[\nroom]`, signed by the harness with the
//!    authority's secret (HS256), so the claims checks after the signature run;
//!    `verify_join`;
//! 4. as 3, sent as `Authorization: Bearer <token>`; `check_api_auth`.
#![no_main]

use std::sync::OnceLock;

use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use meridian_auth::TokenAuthority;

const API_KEY: &str = "devkey";
const API_SECRET: &str = "secret";
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

static AUTHORITY: OnceLock<TokenAuthority> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let authority = AUTHORITY.get_or_init(|| TokenAuthority::new(API_KEY, API_SECRET));
    let Some((&mode, rest)) = data.split_first() else { return };
    // Tokens arrive in a query string or a header: text.
    let text = String::from_utf8_lossy(rest);
    match mode % 5 {
        0 => check_grant(authority.verify_join(&text, None), None),
        1 => {
            let (token, room) = text.split_once('\n').unwrap_or((&text, ""));
            check_grant(authority.verify_join(token, Some(room)), Some(room));
        }
        2 => {
            let _ = authority.check_api_auth(Some(&text));
        }
        3 => {
            let (token, room) = signed(&text);
            check_grant(authority.verify_join(&token, Some(&room)), Some(&room));
        }
        _ => {
            let (token, _) = signed(&text);
            let _ = authority.check_api_auth(Some(&format!("Bearer {token}")));
        }
    }
});

/// A grant that verified names a room and an identity, and the room asked for.
fn check_grant(result: Result<meridian_auth::VerifiedGrant, meridian_auth::TokenError>, room: Option<&str>) {
    let Ok(grant) = result else { return };
    assert!(!grant.room().is_empty() && !grant.identity().is_empty(), "{grant:?}");
    if let Some(room) = room.filter(|r| !r.is_empty()) {
        assert_eq!(grant.room(), room, "a grant for another room");
    }
}

/// `header\npayload[\nroom]` as a JWT signed with the authority's secret, and the room.
fn signed(text: &str) -> (String, String) {
    let mut parts = text.splitn(3, '\n');
    let (first, second, room) = (parts.next().unwrap_or(""), parts.next(), parts.next().unwrap_or(""));
    let (header, payload) = match second {
        Some(payload) => (first, payload),
        None => (HEADER, first),
    };
    let input =
        format!("{}.{}", BASE64_URL_SAFE_NO_PAD.encode(header.as_bytes()), BASE64_URL_SAFE_NO_PAD.encode(payload.as_bytes()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(API_SECRET.as_bytes()).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    let signature = BASE64_URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    (format!("{input}.{signature}"), room.to_owned())
}
