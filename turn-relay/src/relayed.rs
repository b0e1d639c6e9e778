//! Relayed transport addresses (RFC 8656 §2, XOR-RELAYED-ADDRESS) with a
//! bandwidth cap: the `turn` crate's static generator binds each allocation's UDP
//! socket; this wraps the socket so that traffic over the allocation's
//! [`Cap`] in either direction is dropped, and so that
//! data from a peer bound to a channel goes to the client by the channel data
//! path ([`crate::channel_data`]) rather than back to the crate.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::relay::RelayAddressGenerator;
use webrtc_util::conn::Conn;

use crate::bandwidth::{Cap, Direction};
use crate::channel_data::Channels;
use crate::route::PeerRoute;

/// The static generator, with each relayed socket capped.
pub struct CappedRelays {
    /// Binds the sockets.
    pub inner: RelayAddressGeneratorStatic,
    /// Cap per direction per allocation in bits per second (`None`: no cap).
    pub bandwidth_cap: Option<NonZeroU64>,
    /// The channel data path, which learns of each relayed socket and its cap.
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
        let cap = Arc::new(Cap::new(self.bandwidth_cap, Instant::now()));
        let conn: Arc<dyn Conn + Send + Sync> = Arc::new(RelayedConn {
            inner: conn,
            cap: Arc::clone(&cap),
            relayed: addr,
            channels: Arc::clone(&self.channels),
        });
        self.channels.add_relay(addr, &conn, cap);
        Ok((conn, addr))
    }
}

/// An allocation's relayed socket as the crate sees it.
struct RelayedConn {
    inner: Arc<dyn Conn + Send + Sync>,
    cap: Arc<Cap>,
    relayed: SocketAddr,
    channels: Arc<Channels>,
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
            if !self.cap.charge(Direction::FromPeer, n, Instant::now()) {
                continue;
            }
            let route = PeerRoute { relayed: self.relayed, peer: from };
            if !self.channels.peer_data(route, &buf[..n]).await {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.cap.charge(Direction::ToPeer, buf.len(), Instant::now()) {
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
