//! Whether this node's TURN relay answers: one STUN Binding request (RFC 8489
//! §6) to the relay's UDP listener per heartbeat.
//!
//! A relay that runs as its own process (`meridian turn`) fails its own
//! `/healthz` when a listener dies, but the node would keep advertising it to
//! every client. A Binding request goes through the gate and into the `turn`
//! crate's read loop, which answers it, so an answer shows the loop is alive.
//! After [`PROBE_FAILURES`] unanswered probes in a row the node leaves the
//! registry (gateways route its region's joins elsewhere); the first answer
//! after that brings it back. Rooms on the node carry on either way.

use std::time::Duration;

use tokio::net::UdpSocket;
use webrtc::stun::agent::TransactionId;
use webrtc::stun::message::{Message, BINDING_REQUEST, BINDING_SUCCESS};

/// How long one probe waits for the answer (1 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Unanswered probes in a row after which the relay counts as down (3, so
/// about 6 s at the 2 s heartbeat).
pub const PROBE_FAILURES: u32 = 3;

/// Why one probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The relay's address did not resolve, or a local socket could not be had.
    #[error("cannot reach {target}: {source}")]
    Io {
        /// The probed `host:port`.
        target: String,
        /// The OS or resolver error.
        source: std::io::Error,
    },
    /// No Binding success answer within [`PROBE_TIMEOUT`].
    #[error("{target} did not answer a STUN Binding request within {PROBE_TIMEOUT:?}")]
    Silent {
        /// The probed `host:port`.
        target: String,
    },
}

/// The `host:port` a node probes: that of the first `turn:` URL over UDP (no
/// `transport` parameter means UDP, RFC 7065 §3), or `None` when there is none.
///
/// `turn:turn.example.com:3478?transport=udp` gives `turn.example.com:3478`;
/// a URL without a port gets 3478.
pub fn probe_target(urls: &[String]) -> Option<String> {
    urls.iter().find_map(|url| {
        let rest = url.strip_prefix("turn:")?;
        let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
        let udp = query.split('&').all(|kv| kv.strip_prefix("transport=").is_none_or(|t| t == "udp"));
        if !udp || host_port.is_empty() {
            return None;
        }
        // A bracketed IPv6 address or a host; a port after the last ':' outside brackets.
        let has_port = match host_port.rfind(']') {
            Some(close) => host_port[close..].contains(':'),
            None => host_port.contains(':'),
        };
        Some(if has_port { host_port.to_owned() } else { format!("{host_port}:3478") })
    })
}

/// Sends one Binding request to `target` and waits up to [`PROBE_TIMEOUT`] for
/// its success answer (same transaction id); other datagrams are ignored.
///
/// Errors: [`ProbeError`].
pub async fn probe(target: &str) -> Result<(), ProbeError> {
    let io = |source| ProbeError::Io { target: target.to_owned(), source };
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))?;
    let local = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    let mut request = Message::new();
    request
        .build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    socket.send_to(&request.raw, addr).await.map_err(io)?;
    let answer = async {
        let mut buf = [0u8; 1500];
        loop {
            // An unconnected socket gets no ICMP errors; any error is local and lasting.
            let (n, from) = socket.recv_from(&mut buf).await?;
            let mut m = Message::new();
            m.raw = buf.get(..n).unwrap_or_default().to_vec();
            if from == addr
                && m.decode().is_ok()
                && m.transaction_id == request.transaction_id
                && m.typ == BINDING_SUCCESS
            {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, answer).await {
        Ok(answered) => answered.map_err(io),
        Err(_) => Err(ProbeError::Silent { target: target.to_owned() }),
    }
}

/// A change of the relay's state, as [`Reachability::observe`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// [`PROBE_FAILURES`] probes in a row went unanswered.
    Down,
    /// A probe was answered after the relay was down.
    Up,
}

/// Counts probe results into up/down, with [`PROBE_FAILURES`] of hysteresis
/// going down and none coming back. Starts up.
#[derive(Debug, Default)]
pub struct Reachability {
    failures: u32,
    down: bool,
}

impl Reachability {
    /// Takes one probe's result; says when the state changes.
    pub fn observe(&mut self, answered: bool) -> Option<Change> {
        if answered {
            self.failures = 0;
            return std::mem::take(&mut self.down).then_some(Change::Up);
        }
        self.failures = self.failures.saturating_add(1);
        if !self.down && self.failures >= PROBE_FAILURES {
            self.down = true;
            return Some(Change::Down);
        }
        None
    }

    /// Whether the relay counts as down.
    pub fn is_down(&self) -> bool {
        self.down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_udp_turn_url_is_probed() {
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            probe_target(&urls(&[
                "turns:a:5349?transport=tcp",
                "turn:b:3479?transport=tcp",
                "turn:c:3480?transport=udp"
            ])),
            Some("c:3480".into())
        );
        assert_eq!(probe_target(&urls(&["turn:relay.example.com"])), Some("relay.example.com:3478".into()));
        assert_eq!(probe_target(&urls(&["turn:[::1]:3478"])), Some("[::1]:3478".into()));
        assert_eq!(probe_target(&urls(&["turn:[::1]?transport=udp"])), Some("[::1]:3478".into()));
        assert_eq!(probe_target(&urls(&["turns:a:5349", "stun:b:3478"])), None);
        assert_eq!(probe_target(&[]), None);
    }

    #[test]
    fn down_after_three_silent_probes_and_up_at_the_first_answer() {
        let mut r = Reachability::default();
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(true), None, "an answer resets the count");
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(false), Some(Change::Down));
        assert!(r.is_down());
        assert_eq!(r.observe(false), None, "reported once");
        assert_eq!(r.observe(true), Some(Change::Up));
        assert!(!r.is_down());
        assert_eq!(r.observe(true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_relay_fails_the_probe_after_the_timeout() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = silent.local_addr().unwrap().to_string();
        let start = tokio::time::Instant::now();
        let err = probe(&target).await.unwrap_err();
        assert!(matches!(err, ProbeError::Silent { .. }), "{err}");
        assert!(start.elapsed() >= PROBE_TIMEOUT);
        // The request did arrive: the relay was silent, not unreachable.
        let mut buf = [0u8; 64];
        let (n, _) = silent.recv_from(&mut buf).await.unwrap();
        assert_eq!(buf.get(..2), Some(&[0x00, 0x01][..]), "a Binding request, {n} bytes");
    }
}
