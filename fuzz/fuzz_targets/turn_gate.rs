//! The TURN gate (`turn-relay/src/gate/`): one client datagram through the UDP
//! listener's `GateConn::recv_from`, so the channel data path, the rate limiter, the
//! STUN decode and `GateConn::judge` (nonce, REST credentials, MESSAGE-INTEGRITY,
//! peer policy, quotas, rewrite, CreatePermission split) all run, and a stand-in
//! server answers what the gate passes (so `on_answer` and re-signing run too).
//!
//! Input: one flag byte, then the datagram.
//! - Flag bit 1 set: the datagram is written as text, one attribute a line, and
//!   the harness encodes it (lengths, padding), so that mutations may grow or
//!   shrink a value: the first line is the message type in hex (`0003`: Allocate
//!   request), each further line `tttt=value`, the attribute type in hex and the
//!   value's bytes up to the newline.
//! - Flag bit 0 set: before the gate sees it, the datagram's NONCE is replaced by
//!   one the gate signed for the client and its MESSAGE-INTEGRITY recomputed with
//!   the REST password of its USERNAME (a FINGERPRINT stays last), so the fuzzer
//!   gets past the HMACs it cannot forge.
#![no_main]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::prelude::{Engine, BASE64_STANDARD};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use meridian_turn::fuzzing::{GateHarness, CLIENT};
use stun::attributes::{
    ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{Message, Setter};

/// The relay's REST secret and realm in the harness (the seeds are signed with them).
const SECRET: &[u8] = b"fuzz-secret";
const REALM: &str = "meridian";
/// Gate nonces live an hour (`gate::NONCE_LIFETIME`); the harness asks again sooner.
const NONCE_REFRESH: Duration = Duration::from_secs(30 * 60);

struct State {
    gate: GateHarness,
    nonce: (String, Instant),
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&flags, datagram)) = data.split_first() else { return };
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = state.get_or_insert_with(|| {
        let gate = GateHarness::new(SECRET, REALM);
        let nonce = gate.client_nonce().expect("the gate challenges an unauthenticated Allocate");
        State { gate, nonce: (nonce, Instant::now()) }
    });
    if state.nonce.1.elapsed() > NONCE_REFRESH {
        let nonce = state.gate.client_nonce().expect("the gate challenges an unauthenticated Allocate");
        state.nonce = (nonce, Instant::now());
    }
    let encoded = if flags & 2 == 2 { Some(encode(datagram)) } else { None };
    let datagram = encoded.as_deref().unwrap_or(datagram);
    let resigned = if flags & 1 == 1 { resign(datagram, &state.nonce.0) } else { None };
    let datagram = resigned.as_deref().unwrap_or(datagram);
    let out = state.gate.datagram(datagram, CLIENT);
    for answer in &out.to_client {
        // Whatever the gate says to a client is a STUN message the client can read.
        let mut m = Message::new();
        m.raw = answer.clone();
        assert!(m.decode().is_ok(), "the gate sent an undecodable answer: {answer:02x?}");
    }
});

/// The STUN message that `text` describes (see the module docs): the type, a
/// fixed transaction id, and each attribute with its length and padding.
fn encode(text: &[u8]) -> Vec<u8> {
    let mut lines = text.split(|&b| b == b'\n');
    let hex = |s: &[u8]| std::str::from_utf8(s).ok().and_then(|s| u16::from_str_radix(s.trim(), 16).ok());
    let typ = lines.next().and_then(hex).unwrap_or(0x0003);
    let mut body = Vec::new();
    for line in lines {
        let Some(eq) = line.iter().position(|&b| b == b'=') else { continue };
        let (Some(t), value) = (hex(&line[..eq]), &line[eq + 1..]) else { continue };
        let Ok(len) = u16::try_from(value.len()) else { continue };
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let mut raw = Vec::with_capacity(20 + body.len());
    raw.extend_from_slice(&typ.to_be_bytes());
    raw.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    raw.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    raw.extend_from_slice(&[0x4d; 12]);
    raw.extend_from_slice(&body);
    raw
}

/// `raw` with the gate's nonce for the client and a MESSAGE-INTEGRITY that checks,
/// or `None` when it is not a STUN message.
fn resign(raw: &[u8], nonce: &str) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.raw = raw.to_vec();
    m.decode().ok()?;
    let mut out = Message::new();
    out.typ = m.typ;
    out.transaction_id = m.transaction_id;
    out.write_header();
    let (mut username, mut realm, mut integrity, mut fingerprint) = (None, None, false, false);
    for a in &m.attributes.0 {
        match a.typ {
            t if t == ATTR_MESSAGE_INTEGRITY || t == ATTR_MESSAGE_INTEGRITY_SHA256 => integrity = true,
            t if t == ATTR_FINGERPRINT => fingerprint = true,
            t if t == ATTR_NONCE => out.add(t, nonce.as_bytes()),
            t => {
                if t == ATTR_USERNAME {
                    username = String::from_utf8(a.value.clone()).ok();
                } else if t == ATTR_REALM {
                    realm = String::from_utf8(a.value.clone()).ok();
                }
                out.add(t, &a.value);
            }
        }
    }
    if integrity {
        let (username, realm) = (username.unwrap_or_default(), realm.unwrap_or_else(|| REALM.to_owned()));
        // The TURN REST password: base64(HMAC-SHA1(secret, username)).
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SECRET).expect("HMAC takes any key length");
        mac.update(username.as_bytes());
        let password = BASE64_STANDARD.encode(mac.finalize().into_bytes());
        MessageIntegrity::new_long_term_integrity(username, realm, password).add_to(&mut out).ok()?;
    }
    if fingerprint {
        FINGERPRINT.add_to(&mut out).ok()?;
    }
    Some(out.raw)
}
