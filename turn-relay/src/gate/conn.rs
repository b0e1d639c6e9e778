//! [`GateConn`], the gate on one listener, as the `turn` crate's server sees it:
//! its `recv_from` hands the server only what passed the gate (and the re-signed
//! requests queued by it), its `send_to` watches the server's answers on their
//! way out. On the UDP listener it first offers each datagram to the channel data
//! path ([`crate::channel_data`]). [`ListenerWatch`] reports the listener's end
//! to the process's health.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::mpsc;
use webrtc_util::conn::Conn;

use super::resign::{self, ServerNonce, Signed, Splits};
use super::verdict::Verdict;
use super::{lock, Gate};
use crate::channel_data::Channels;
use crate::route::ClientRoute;

/// Where the gate's own nonce-fetching request comes from: no client can have it.
const FETCH_SRC: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// One listener, gated.
pub struct GateConn {
    inner: Arc<dyn Conn + Send + Sync>,
    pub(super) gate: Arc<Gate>,
    /// The listener's address, as the crate keys its clients.
    pub(super) local: SocketAddr,
    /// `inner`'s bound address, read once: the crate asks for it on every
    /// ChannelData message, and each ask was a `getsockname` system call.
    bound: Option<SocketAddr>,
    /// Re-signed requests for the server, in order.
    queue: Mutex<VecDeque<Signed>>,
    server_nonce: ServerNonce,
    /// Split CreatePermission requests whose answers are to be swallowed.
    pub(super) splits: Splits,
    closed: Option<tokio::sync::Mutex<mpsc::Receiver<SocketAddr>>>,
    /// The channel data path, on the UDP listener (see [`GateConn::with_channels`]).
    pub(super) channels: Option<Arc<Channels>>,
    /// Who to tell when this listener stops serving (see [`GateConn::watched`]).
    pub(super) watch: Option<ListenerWatch>,
    /// Test hook: the next read panics, uncontained.
    #[cfg(any(test, feature = "test-hooks"))]
    fault: Option<Arc<AtomicBool>>,
}

/// A listener's name and the health its end is reported to.
#[derive(Clone)]
pub struct ListenerWatch {
    /// e.g. `turn udp listener 0.0.0.0:3478`.
    pub name: String,
    /// The process's health.
    pub health: meridian_runtime::Health,
    /// Set when the relay closes: an end after that is expected.
    pub closing: Arc<AtomicBool>,
}

/// Reports a panic that unwinds out of a listener's read: the `turn` crate's read
/// loop (which nobody awaits) ends with it.
struct UnwindWatch<'a>(&'a ListenerWatch);

impl Drop for UnwindWatch<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.health.task_ended(&self.0.name, "a panic unwound through its read; the read loop is gone");
        }
    }
}

impl GateConn {
    /// Gates `inner`. `closed` reports stream connections that ended (TCP, TLS),
    /// by client address; each one's allocation is then deleted.
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        gate: Arc<Gate>,
        closed: Option<mpsc::Receiver<SocketAddr>>,
    ) -> Self {
        let bound = inner.local_addr().ok();
        Self {
            inner,
            gate,
            local: bound.unwrap_or(FETCH_SRC),
            bound,
            queue: Mutex::default(),
            server_nonce: ServerNonce::default(),
            splits: Splits::default(),
            closed: closed.map(tokio::sync::Mutex::new),
            channels: None,
            watch: None,
            #[cfg(any(test, feature = "test-hooks"))]
            fault: None,
        }
    }

    /// Reports this listener's end to `watch.health`: a failed read (the crate's
    /// read loop stops on the first) or a panic out of a read, unless the relay is
    /// closing. Panics in the verdict on one datagram are contained to it.
    pub fn watched(mut self, watch: ListenerWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// The address this gate's listener is bound to.
    pub fn listener_addr(&self) -> SocketAddr {
        self.local
    }

    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn with_fault(mut self, fault: Arc<AtomicBool>) -> Self {
        self.fault = Some(fault);
        self
    }

    /// Serves bound channels' data on this listener through `channels` instead
    /// of the crate (UDP listeners only: stream clients need padded framing).
    pub fn with_channels(mut self, channels: Arc<Channels>) -> Self {
        self.channels = Some(channels);
        self
    }

    /// A signed Refresh with lifetime 0 for `client`'s allocation, if it has one.
    fn release_request(&self, client: SocketAddr) -> Option<Signed> {
        let username = self.gate.quotas.owner(ClientRoute { listener: self.local, client })?;
        let password = meridian_auth::turn_rest::password_for(&self.gate.config.secret, &username);
        Some(resign::refresh_zero(&username, &self.gate.config.realm, &password, client))
    }

    /// The next queued packet for the server at `now`, fetching the server's
    /// nonce first when it is missing or old.
    fn next_queued(&self, now: Instant) -> Option<(Vec<u8>, SocketAddr)> {
        let mut queue = lock(&self.queue);
        loop {
            let signed = queue.pop_front()?;
            match self.server_nonce.current(now) {
                Some(nonce) => match signed.encode(&nonce) {
                    Some(packet) => return Some((packet, signed.src)),
                    None => continue,
                },
                None if self.server_nonce.fetch_unanswered() => {
                    // The server did not answer our fetch; do not loop on it.
                    tracing::warn!(src = %signed.src, "TURN server gave no nonce; request dropped");
                }
                None => {
                    // Ask the server for a nonce, then come back to this one.
                    self.server_nonce.fetch_sent();
                    queue.push_front(signed);
                    self.gate.counters.server_challenges.fetch_add(1, Ordering::Relaxed);
                    return Some((resign::nonce_request()?, FETCH_SRC));
                }
            }
        }
    }

    /// Watches the server's answer to `target` at `now`: learns the server's
    /// nonce, counts allocations, swallows split CreatePermission answers.
    /// `false` to drop it.
    pub(super) fn on_answer(&self, packet: &[u8], target: SocketAddr, now: Instant) -> bool {
        if target == FETCH_SRC {
            self.server_nonce.learn(packet, now);
            return false;
        }
        // Responses only: class bit C1 (the low bit of the first byte) set; C0
        // (0x10 of the second) tells error from success. TURN methods fit in the
        // second byte's low nibble.
        if packet.len() < 20 || packet[0] != 0x01 {
            return true;
        }
        let success = packet[1] & 0x10 == 0;
        let method = packet[1] & 0x0f;
        let Ok(txid) = <[u8; 12]>::try_from(&packet[8..20]) else { return true };
        let client = ClientRoute { listener: self.local, client: target };
        if let Some(channels) = &self.channels {
            channels.answered(&self.inner, client, (method, success, txid), packet);
        }
        match method {
            0x03 => {
                if !success {
                    self.gate.allocate_failed(packet);
                }
                self.gate.quotas.answered(client, txid, success);
                true
            }
            0x08 => self.splits.passes(target, txid, success),
            _ => true,
        }
    }

    /// The listener's next packet for the server, after the gate and the channel
    /// data path have taken theirs.
    async fn gated_recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            if let Some((packet, src)) = self.next_queued(Instant::now()) {
                if packet.len() <= buf.len() {
                    buf[..packet.len()].copy_from_slice(&packet);
                    return Ok((packet.len(), src));
                }
                continue;
            }
            let received = match &self.closed {
                None => self.inner.recv_from(buf).await,
                Some(closed) => {
                    let mut closed = closed.lock().await;
                    tokio::select! {
                        r = self.inner.recv_from(buf) => r,
                        Some(client) = closed.recv() => {
                            if let Some(release) = self.release_request(client) {
                                lock(&self.queue).push_back(release);
                            }
                            continue;
                        }
                    }
                }
            };
            let (n, src) = received?;
            if let Some(channels) = &self.channels {
                if channels.client_data(ClientRoute { listener: self.local, client: src }, &buf[..n]).await {
                    continue;
                }
            }
            #[cfg(any(test, feature = "test-hooks"))]
            if self.fault.as_ref().is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
                panic!("test hook: the listener's read loop breaks");
            }
            match self.judge_contained(&buf[..n], src) {
                Verdict::Pass => return Ok((n, src)),
                Verdict::Drop => {}
                Verdict::Answer(answer) => {
                    if let Err(e) = self.inner.send_to(&answer, src).await {
                        tracing::debug!(%src, error = %e, "TURN refusal not sent");
                    }
                }
                Verdict::Queue(signed) => lock(&self.queue).extend(signed),
            }
        }
    }
}

#[async_trait]
impl Conn for GateConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let _unwind = self.watch.as_ref().map(UnwindWatch);
        let received = self.gated_recv_from(buf).await;
        if let (Err(e), Some(w)) = (&received, &self.watch) {
            if !w.closing.load(Ordering::SeqCst) {
                w.health.task_ended(&w.name, &format!("read failed, which ends the server's read loop: {e}"));
            }
        }
        received
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.on_answer(buf, target, Instant::now()) {
            return Ok(buf.len());
        }
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        match self.bound {
            Some(addr) => Ok(addr),
            None => self.inner.local_addr(),
        }
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{conn, gate, nonce_of, request, server_challenge, SRC};
    use super::*;
    use std::time::{Duration, SystemTime};
    use stun::message::METHOD_ALLOCATE;

    /// Queues one authenticated Allocate from [`SRC`], as the verdict does.
    fn queue_allocate(c: &GateConn) {
        let nonce = c.gate.nonces.issue(SRC.ip(), SystemTime::now());
        let Verdict::Queue(signed) = c.judge(&request(METHOD_ALLOCATE, &[], Some(&nonce), &[]).raw, SRC) else {
            panic!("queued")
        };
        lock(&c.queue).extend(signed);
    }

    #[tokio::test]
    async fn queued_requests_wait_for_the_servers_nonce_which_is_fetched_again_after_50_minutes() {
        let c = conn(gate());
        let start = Instant::now();
        let later = start.checked_add(Duration::from_secs(50 * 60)).expect("an instant 50 min on");
        queue_allocate(&c);
        let (_, to) = c.next_queued(start).expect("a fetch first");
        assert_eq!((to, c.gate.stats().server_challenges), (FETCH_SRC, 1));
        assert!(!c.on_answer(&server_challenge("n1"), FETCH_SRC, start), "the fetch's answer is the gate's");
        let (packet, to) = c.next_queued(start).expect("then the request");
        assert_eq!((to, nonce_of(&packet)), (SRC, "n1".to_owned()), "with the server's nonce");
        assert!(c.next_queued(start).is_none(), "the queue is empty");

        queue_allocate(&c);
        let (_, to) = c.next_queued(later).expect("the nonce is old: a fetch");
        assert_eq!((to, c.gate.stats().server_challenges), (FETCH_SRC, 2));
        assert!(c.next_queued(later).is_none(), "no answer to the fetch: the request is dropped, not looped on");
    }

    /// A server's Allocate answer with `class` and, for errors, `code`.
    fn allocate_answer(class: stun::message::MessageClass, code: Option<u16>) -> Vec<u8> {
        use stun::message::{MessageType, Setter};
        let mut m = stun::message::Message::new();
        let mut setters: Vec<Box<dyn Setter>> =
            vec![Box::new(stun::agent::TransactionId::new()), Box::new(MessageType::new(METHOD_ALLOCATE, class))];
        if let Some(code) = code {
            setters.push(Box::new(stun::error_code::ErrorCodeAttribute {
                code: stun::error_code::ErrorCode(code),
                reason: b"test".to_vec(),
            }));
        }
        m.build(&setters).unwrap();
        m.raw
    }

    #[tokio::test]
    async fn the_servers_allocate_errors_are_counted_by_code_and_still_reach_the_client() {
        use stun::message::{CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE};
        let c = conn(gate());
        let now = Instant::now();
        for answer in [
            allocate_answer(CLASS_ERROR_RESPONSE, Some(508)),
            allocate_answer(CLASS_ERROR_RESPONSE, Some(508)),
            allocate_answer(CLASS_ERROR_RESPONSE, Some(437)),
            allocate_answer(CLASS_ERROR_RESPONSE, Some(500)),
            allocate_answer(CLASS_ERROR_RESPONSE, None),
            allocate_answer(CLASS_SUCCESS_RESPONSE, None),
        ] {
            assert!(c.on_answer(&answer, SRC, now), "passed on to the client");
        }
        // 437, 486, 508, other.
        assert_eq!(c.gate.stats().allocate_errors, [1, 0, 2, 2]);
    }
}
