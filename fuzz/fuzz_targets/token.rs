//! Join tokens and server-API credentials (`auth/src/lib.rs`):
//! `TokenAuthority::verify_join(token, room)` as the SFU's `/rtc` upgrade and the
//! gateway call it, and `TokenAuthority::check_api_auth(Authorization)` as the
//! server API calls it.
//!
//! Input: one mode byte (taken modulo 6), then text:
//! 0. the token; `verify_join(token, None)`;
//! 1. `token\nroom`; `verify_join(token, Some(room))`;
//! 2. an `Authorization` value; `check_api_auth`, and `join_token` as `/rtc`
//!    reads it;
//! 3. `header JSON\npayload JSON[\nroom]`, signed by the harness with the
//!    authority's secret (HS256), so the claims checks after the signature run;
//!    `verify_join`;
//! 4. as 3, sent as `Authorization: Bearer <token>`; `check_api_auth`.
//! 5. typed claims: `exp` and `nbf` as 8 big-endian bytes each, a byte of grant
//!    flags, then `room\nidentity`; the harness writes the claims JSON and signs
//!    it, so time claims anywhere in `u64` are tried (a byte mutator rarely writes
//!    a 19-digit number into JSON); `verify_join`, whose grant must then name
//!    the token's room, or the URL's when the token names none.
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
    match mode % 6 {
        0 => check_grant(authority.verify_join(&text, None), None),
        1 => {
            let (token, room) = text.split_once('\n').unwrap_or((&text, ""));
            check_grant(authority.verify_join(token, Some(room)), None);
        }
        2 => {
            let _ = authority.check_api_auth(Some(&text));
            if let Ok(token) = TokenAuthority::join_token(Some(&text), None) {
                assert!(!token.is_empty() && text.starts_with("Bearer "), "{text:?}");
            }
        }
        3 => {
            let (token, room) = signed(&text);
            check_grant(authority.verify_join(&token, Some(&room)), None);
        }
        4 => {
            let (token, _) = signed(&text);
            let _ = authority.check_api_auth(Some(&format!("Bearer {token}")));
        }
        _ => {
            let Some((claims, token_room, url_room)) = typed_claims(rest) else { return };
            let (token, _) = signed(&claims);
            let expected = if token_room.is_empty() { &url_room } else { &token_room };
            check_grant(authority.verify_join(&token, Some(&url_room)), Some(expected));
        }
    }
});

/// A grant that verified names a room and an identity, and `room` when given.
fn check_grant(result: Result<meridian_auth::VerifiedGrant, meridian_auth::TokenError>, room: Option<&str>) {
    let Ok(grant) = result else { return };
    assert!(!grant.room().as_str().is_empty() && !grant.identity().as_str().is_empty(), "{grant:?}");
    if let Some(room) = room {
        assert_eq!(grant.room(), room, "a grant for another room");
    }
}

/// Mode 5's claims JSON (as `signed` takes it), the token's room and the URL's.
fn typed_claims(rest: &[u8]) -> Option<(String, String, String)> {
    let exp = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let nbf = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    let flags = *rest.get(16)?;
    let text = String::from_utf8_lossy(&rest[17..]);
    let (room, identity) = text.split_once('\n').unwrap_or((&text, "fuzzer"));
    let bit = |n: u8| flags & (1 << n) != 0;
    let claims = serde_json::json!({
        "iss": if bit(0) { "otherkey" } else { API_KEY },
        "sub": identity,
        "nbf": nbf,
        "exp": exp,
        "video": {
            "roomJoin": !bit(1),
            "room": room,
            "canPublish": bit(2),
            "canSubscribe": !bit(3),
            "hidden": bit(4),
            "roomAdmin": bit(5),
        },
    });
    // Bit 6 asks for no room in the URL, bit 7 for another room than the token's.
    let url_room = match (bit(6), bit(7)) {
        (true, _) => String::new(),
        (false, true) => format!("{room}-other"),
        (false, false) => room.to_owned(),
    };
    Some((claims.to_string(), room.to_owned(), url_room))
}

/// `header\npayload[\nroom]` as a JWT signed with the authority's secret, and the room.
fn signed(text: &str) -> (String, String) {
    let mut parts = text.splitn(3, '\n');
    let (first, second, room) = (parts.next().unwrap_or(""), parts.next(), parts.next().unwrap_or(""));
    let (header, payload) = match second {
        Some(payload) => (first, payload),
        None => (HEADER, first),
    };
    let input = format!(
        "{}.{}",
        BASE64_URL_SAFE_NO_PAD.encode(header.as_bytes()),
        BASE64_URL_SAFE_NO_PAD.encode(payload.as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(API_SECRET.as_bytes()).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    let signature = BASE64_URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    (format!("{input}.{signature}"), room.to_owned())
}
