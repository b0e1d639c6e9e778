//! The forwarding floor: what it costs this machine to SRTP-protect one RTP
//! packet and send it over UDP, in a tight loop on one thread, with nothing else
//! (no receive, no routing, no async runtime). An SFU pays at least this per
//! packet per subscriber, so it is the limit the load tester's per-packet figures
//! are read against (`docs/benchmarks.md`).
//!
//! The packet is a 12-byte RTP header and `size` bytes of payload. It is
//! protected with `webrtc-srtp` (the library Meridian's SFU uses) in the profile
//! given, and sent with a blocking `send_to` to a socket on 127.0.0.1 that a
//! second thread drains, as a subscriber would. CPU time is the sending thread's
//! own (`/proc/thread-self/schedstat`), so the draining thread does not count.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use webrtc::srtp::context::Context;
use webrtc::srtp::protection_profile::ProtectionProfile;

/// One run's figures, in nanoseconds of the sending thread's CPU per packet.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// `encrypt_rtp` alone.
    pub protect_ns: f64,
    /// `send_to` alone, of an already protected packet.
    pub send_ns: f64,
    /// Both, packet after packet: the floor.
    pub protect_and_send_ns: f64,
}

/// The sending thread's CPU time so far, in nanoseconds (schedstat's first field).
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").context("reading /proc/thread-self/schedstat")?;
    s.split_whitespace().next().and_then(|f| f.parse().ok()).context("schedstat: no CPU time")
}

/// Measures `packets` packets of `size` payload bytes under `profile`
/// (`gcm`: AEAD_AES_128_GCM, RFC 7714, what Chrome and webrtc-rs prefer;
/// `ctr`: AES_CM_128_HMAC_SHA1_80, RFC 3711).
///
/// Errors: an unknown profile, sockets that cannot be bound on 127.0.0.1.
pub fn measure(profile: &str, size: usize, packets: u32) -> anyhow::Result<Floor> {
    let profile = match profile {
        "gcm" => ProtectionProfile::AeadAes128Gcm,
        "ctr" => ProtectionProfile::Aes128CmHmacSha1_80,
        other => anyhow::bail!("unknown profile {other}: gcm or ctr"),
    };
    let key = vec![7u8; profile.key_len()];
    let salt = vec![9u8; profile.salt_len()];
    let mut ctx = Context::new(&key, &salt, profile, None, None)?;
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let to = sink.local_addr()?;
    let done = Arc::new(AtomicBool::new(false));
    sink.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
    let draining = Arc::clone(&done);
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !draining.load(Ordering::Relaxed) {
            let _ = sink.recv(&mut buf);
        }
    });
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut packet = vec![0u8; 12 + size];
    packet[0] = 0x80; // version 2
    packet[1] = 96; // dynamic payload type
    packet[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let stamp = |packet: &mut [u8], i: u32| {
        packet[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        packet[4..8].copy_from_slice(&(i.wrapping_mul(3000)).to_be_bytes());
    };

    let start = thread_cpu_ns()?;
    let mut last = bytes::Bytes::new();
    for i in 0..packets {
        stamp(&mut packet, i);
        last = ctx.encrypt_rtp(&packet)?;
    }
    let protect = thread_cpu_ns()? - start;

    let start = thread_cpu_ns()?;
    for _ in 0..packets {
        socket.send_to(&last, to)?;
    }
    let send = thread_cpu_ns()? - start;

    let start = thread_cpu_ns()?;
    for i in 0..packets {
        stamp(&mut packet, packets + i);
        let protected = ctx.encrypt_rtp(&packet)?;
        socket.send_to(&protected, to)?;
    }
    let both = thread_cpu_ns()? - start;
    done.store(true, Ordering::Relaxed);
    let _ = drain.join();
    let per = |ns: u64| ns as f64 / f64::from(packets.max(1));
    Ok(Floor { protect_ns: per(protect), send_ns: per(send), protect_and_send_ns: per(both) })
}
