//! Relayed transport addresses with a bandwidth cap: the `turn` crate's static
//! generator binds each allocation's UDP socket; this wraps the socket so that
//! traffic over `bytes_per_second` in either direction is dropped, as a
//! congested link would drop it (coturn's `max-bps`), and so that data from a
//! peer bound to a channel goes to the client by the channel data path
//! ([`crate::fastpath`]) rather than back to the crate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::relay::RelayAddressGenerator;
use webrtc_util::conn::Conn;

use crate::fastpath::Channels;

/// The static generator, with each relayed socket capped.
pub struct CappedRelays {
    /// Binds the sockets.
    pub inner: RelayAddressGeneratorStatic,
    /// Cap per direction per allocation in bytes per second; 0 for none.
    pub bytes_per_second: u64,
    /// The channel data path, which learns of each relayed socket.
    pub channels: Arc<Channels>,
}

#[async_trait]
impl RelayAddressGenerator for CappedRelays {
    fn validate(&self) -> Result<(), turn::Error> {
        self.inner.validate()
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let (conn, addr) = self.inner.allocate_conn(use_ipv4, requested_port).await?;
        let rate = self.bytes_per_second as f64;
        let bucket = || Mutex::new(Bucket { tokens: rate, last: Instant::now() });
        let cap = (self.bytes_per_second > 0).then(|| Cap { rate, to_peer: bucket(), from_peer: bucket() });
        let conn: Arc<dyn Conn + Send + Sync> =
            Arc::new(RelayedConn { inner: conn, cap, relayed: addr, channels: Arc::clone(&self.channels) });
        self.channels.add_relay(addr, &conn);
        Ok((conn, addr))
    }
}

/// A token bucket of bytes, one second deep.
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, bytes: usize, rate: f64, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        if self.tokens < bytes as f64 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

/// A bandwidth cap in each direction.
struct Cap {
    rate: f64,
    to_peer: Mutex<Bucket>,
    from_peer: Mutex<Bucket>,
}

/// An allocation's relayed socket as the crate sees it.
struct RelayedConn {
    inner: Arc<dyn Conn + Send + Sync>,
    cap: Option<Cap>,
    relayed: SocketAddr,
    channels: Arc<Channels>,
}

/// Charges `bytes` to the cap of the relayed socket `conn` made by
/// [`CappedRelays`], towards the peer or from it; `false` when over the cap
/// (the data is dropped). Always `true` for other conns or without a cap.
pub(crate) fn charge(conn: &Arc<dyn Conn + Send + Sync>, to_peer: bool, bytes: usize) -> bool {
    let Some(relayed) = conn.as_any().downcast_ref::<RelayedConn>() else { return true };
    if to_peer {
        take(&relayed.cap, |c| &c.to_peer, bytes)
    } else {
        take(&relayed.cap, |c| &c.from_peer, bytes)
    }
}

/// Takes `bytes` from the cap's `bucket`; always `true` without a cap.
fn take(cap: &Option<Cap>, bucket: impl Fn(&Cap) -> &Mutex<Bucket>, bytes: usize) -> bool {
    let Some(cap) = cap else { return true };
    bucket(cap).lock().unwrap_or_else(|e| e.into_inner()).take(bytes, cap.rate, Instant::now())
}

#[async_trait]
impl Conn for RelayedConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            if !take(&self.cap, |c| &c.from_peer, n) {
                continue;
            }
            if !self.channels.peer_data(self.relayed, from, &buf[..n]).await {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !take(&self.cap, |c| &c.to_peer, buf.len()) {
            return Ok(buf.len()); // dropped, as by a full link
        }
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
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
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_passes_the_rate_and_drops_the_excess() {
        let start = Instant::now();
        let mut b = Bucket { tokens: 1000.0, last: start };
        assert!(b.take(1000, 1000.0, start), "one second of burst");
        assert!(!b.take(1, 1000.0, start), "then nothing");
        assert!(b.take(500, 1000.0, start + Duration::from_millis(500)), "refilled at the rate");
        assert!(!b.take(600, 1000.0, start + Duration::from_millis(500)));
    }
}
