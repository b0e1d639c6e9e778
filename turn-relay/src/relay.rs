//! Relayed transport addresses with a bandwidth cap: the `turn` crate's static
//! generator binds each allocation's UDP socket; this wraps the socket so that
//! traffic over `bytes_per_second` in either direction is dropped, as a
//! congested link would drop it (coturn's `max-bps`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::relay::RelayAddressGenerator;
use webrtc_util::conn::Conn;

/// The static generator, with each relayed socket capped.
pub struct CappedRelays {
    /// Binds the sockets.
    pub inner: RelayAddressGeneratorStatic,
    /// Cap per direction per allocation in bytes per second; 0 for none.
    pub bytes_per_second: u64,
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
        if self.bytes_per_second == 0 {
            return Ok((conn, addr));
        }
        let rate = self.bytes_per_second as f64;
        let bucket = || Mutex::new(Bucket { tokens: rate, last: Instant::now() });
        Ok((Arc::new(CappedConn { inner: conn, rate, to_peer: bucket(), from_peer: bucket() }), addr))
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

struct CappedConn {
    inner: Arc<dyn Conn + Send + Sync>,
    rate: f64,
    to_peer: Mutex<Bucket>,
    from_peer: Mutex<Bucket>,
}

fn take(bucket: &Mutex<Bucket>, bytes: usize, rate: f64) -> bool {
    bucket.lock().unwrap_or_else(|e| e.into_inner()).take(bytes, rate, Instant::now())
}

#[async_trait]
impl Conn for CappedConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            if take(&self.from_peer, n, self.rate) {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !take(&self.to_peer, buf.len(), self.rate) {
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
