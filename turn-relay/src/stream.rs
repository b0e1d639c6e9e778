//! TURN over TCP and TLS (RFC 8656 §3.1, §12.5): a [`Conn`] that accepts stream
//! connections and presents their messages to the `turn` crate's server as if they
//! were datagrams from the connection's remote address.
//!
//! Framing on a stream: a STUN message is its 20-byte header plus the length in
//! bytes 2-3 (always a multiple of 4); a ChannelData message is its 4-byte header
//! plus the length in bytes 2-3, padded to a multiple of 4 (RFC 8656 §12.5). The
//! padding is dropped on the way in and added on the way out. Anything else on the
//! stream is a protocol violation and closes that one connection.
//!
//! The server answers a client with `send_to(client address)`, which this conn
//! routes to the connection's writer task through a bounded queue; a full queue
//! drops the message, as a full socket buffer would for UDP. Relayed traffic to
//! peers stays UDP (REQUESTED-TRANSPORT 17), as in coturn and LiveKit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use webrtc_util::conn::Conn;

/// Default cap on open stream connections per listener.
pub const DEFAULT_MAX_STREAM_CONNECTIONS: usize = 10_000;
/// How long a new connection has to finish its TLS handshake and send its first message.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay silent before it is closed: longer than the
/// default allocation lifetime (10 min), so a client that refreshes on time never
/// hits it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(11 * 60);
/// Largest message taken off a stream, in bytes with its header: the `turn`
/// crate's server reads into a 1500-byte buffer (its `INBOUND_MTU`), so a larger
/// one could not be passed whole. A longer length field closes the connection
/// before anything is allocated for it (it was up to 64 KiB per connection, held
/// for as long as the sender stalled).
pub const MAX_STREAM_MESSAGE: usize = 1500;
/// STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// Messages queued towards one client before further ones are dropped.
const WRITE_QUEUE: usize = 512;
/// Messages queued from all connections towards the server.
const READ_QUEUE: usize = 1024;

/// Gives the TLS acceptor for a new connection; called per connection so that a
/// reloaded certificate applies to the next handshake.
pub type AcceptorSource = Arc<dyn Fn() -> TlsAcceptor + Send + Sync>;

/// The stream listener as the `turn` server sees it.
pub struct StreamConn {
    pub(crate) local: SocketAddr,
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    clients: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    closed: watch::Sender<bool>,
    ended: Mutex<Option<mpsc::Receiver<SocketAddr>>>,
}

impl StreamConn {
    /// Starts accepting on `listener`; with `tls`, every connection is TLS first.
    /// At most `max_connections` are open at once; further ones are closed at accept.
    pub fn listen(listener: TcpListener, tls: Option<AcceptorSource>, max_connections: usize) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (inbound_tx, inbound_rx) = mpsc::channel(READ_QUEUE);
        let clients: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>> = Arc::default();
        let (closed, closed_rx) = watch::channel(false);
        let (ended_tx, ended_rx) = mpsc::channel(READ_QUEUE);
        let limits = (max_connections, ended_tx);
        tokio::spawn(accept_loop(listener, tls, limits, inbound_tx, Arc::clone(&clients), closed_rx));
        Ok(Self {
            local,
            inbound: tokio::sync::Mutex::new(inbound_rx),
            clients,
            closed,
            ended: Mutex::new(Some(ended_rx)),
        })
    }

    /// The addresses of connections as they end (once; later calls get `None`).
    /// A connection's allocation ends with it (RFC 8656 §3.1).
    pub fn ended_connections(&self) -> Option<mpsc::Receiver<SocketAddr>> {
        lock(&self.ended).take()
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        let _ = self.closed.send(true);
        lock(&self.clients).clear();
    }
}

async fn until_closed(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold no invariant a panicking holder could break.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<AcceptorSource>,
    (max_connections, ended): (usize, mpsc::Sender<SocketAddr>),
    inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    clients: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    mut closed: watch::Receiver<bool>,
) {
    let at_capacity = meridian_runtime::log_limit::LogLimit::new("TURN stream connections refused at capacity");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "TURN stream accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = until_closed(&mut closed) => return,
        };
        if lock(&clients).len() >= max_connections {
            at_capacity.log(
                peer.ip(),
                || tracing::warn!(%peer, max_connections, "TURN stream connection refused: at capacity"),
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        lock(&clients).insert(peer, tx);
        let (inbound, clients, tls, closed) = (inbound.clone(), Arc::clone(&clients), tls.clone(), closed.clone());
        let ended = ended.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => serve(stream, peer, inbound, rx, closed).await,
                Some(acceptor) => match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, acceptor().accept(stream)).await {
                    Ok(Ok(tls)) => serve(tls, peer, inbound, rx, closed).await,
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            lock(&clients).remove(&peer);
            // Full: the gate is behind; the allocation then times out instead.
            let _ = ended.try_send(peer);
            if let Err(why) = served {
                tracing::debug!(%peer, %why, "TURN stream connection closed");
            }
        });
    }
}

/// Runs one connection until either side closes it. `Err` says why it ended early.
async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    mut closed: watch::Receiver<bool>,
) -> Result<(), String> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = async move {
        while let Some(message) = outbound.recv().await {
            writer.write_all(&message).await?;
        }
        writer.shutdown().await
    };
    let reading = async move {
        let mut timeout = FIRST_MESSAGE_TIMEOUT;
        loop {
            let message = match tokio::time::timeout(timeout, read_message(&mut reader)).await {
                Err(_) => return Err("idle".to_owned()),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(m))) => m,
                Ok(Err(e)) => return Err(e),
            };
            timeout = IDLE_TIMEOUT;
            if inbound.send((message, peer)).await.is_err() {
                return Ok(()); // server closed
            }
        }
    };
    tokio::select! {
        r = reading => r,
        w = writing => w.map_err(|e| e.to_string()),
        _ = until_closed(&mut closed) => Ok(()),
    }
}

/// Reads one framed message without its padding; `None` at a clean end of stream.
async fn read_message<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, String> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let (whole, padded, stun) = match header[0] {
        // STUN: 20-byte header, length excludes it and is a multiple of 4.
        0x00..=0x3f if length % 4 == 0 => (20 + length, 20 + length, true),
        // ChannelData, padded to 4 on streams. RFC 8656 §12 narrowed channel
        // numbers to 0x4000-0x4FFF, but RFC 5766 clients (coturn's) use up to 0x7FFF.
        0x40..=0x7f => (4 + length, 4 + length.div_ceil(4) * 4, false),
        _ => return Err(format!("not STUN or ChannelData (first bytes {header:02x?})")),
    };
    if whole > MAX_STREAM_MESSAGE {
        return Err(format!("message of {whole} bytes over the {MAX_STREAM_MESSAGE}-byte limit"));
    }
    let mut message = vec![0u8; padded];
    message[..4].copy_from_slice(&header);
    if stun {
        // STUN: check the magic cookie before reading the body, so that another
        // protocol (a TLS ClientHello on the TCP port) is refused at once.
        reader.read_exact(&mut message[4..8]).await.map_err(|e| e.to_string())?;
        if message[4..8] != MAGIC_COOKIE {
            return Err(format!("not STUN (no magic cookie; first bytes {:02x?})", &message[..8]));
        }
        reader.read_exact(&mut message[8..]).await.map_err(|e| e.to_string())?;
    } else {
        reader.read_exact(&mut message[4..]).await.map_err(|e| e.to_string())?;
    }
    message.truncate(whole);
    Ok(Some(message))
}

/// `message` as written to a stream: ChannelData padded to a multiple of 4.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = message.to_vec();
    if message.first().is_some_and(|b| b >> 6 == 1) {
        out.resize(message.len().div_ceil(4) * 4, 0);
    }
    out
}

#[async_trait]
impl Conn for StreamConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("a TURN stream listener does not connect".into()))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut inbound = self.inbound.lock().await;
        loop {
            let (message, peer) = inbound.recv().await.ok_or(webrtc_util::Error::ErrUseClosedNetworkConn)?;
            if message.len() > buf.len() {
                // The server reads into a 1500-byte buffer; a larger message cannot
                // be passed whole, and a cut one would be misread.
                tracing::debug!(%peer, len = message.len(), "TURN stream message larger than the server's buffer dropped");
                continue;
            }
            buf[..message.len()].copy_from_slice(&message);
            return Ok((message.len(), peer));
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other("a TURN stream listener sends with send_to".into()))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let queue = lock(&self.clients).get(&target).cloned();
        match queue {
            Some(queue) => {
                if queue.try_send(framed(buf)).is_err() {
                    tracing::trace!(%target, "TURN stream client's queue full; message dropped");
                }
            }
            None => tracing::trace!(%target, "TURN stream client gone; message dropped"),
        }
        Ok(buf.len())
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Does nothing: the `turn` crate closes the listening conn whenever it closes
    /// an allocation (it shares the conn between all of them). The relay stops the
    /// listener with [`StreamConn::shutdown`].
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN Binding request: 20-byte header, one 4-byte attribute.
    const STUN: [u8; 24] =
        [0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 9, 9, 9, 9];

    /// One connection being served over an in-memory stream.
    struct Served {
        /// The client's end.
        client: tokio::io::DuplexStream,
        /// What the connection hands to the server.
        inbound: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
        /// `serve` itself; it ends when the connection does.
        task: tokio::task::JoinHandle<Result<(), String>>,
        // Kept so that neither the write queue nor the listener closes.
        _outbound: mpsc::Sender<Vec<u8>>,
        _closed: watch::Sender<bool>,
    }

    impl Served {
        fn new() -> Self {
            let (client, server) = tokio::io::duplex(4096);
            let (inbound_tx, inbound) = mpsc::channel(READ_QUEUE);
            let (outbound, outbound_rx) = mpsc::channel(WRITE_QUEUE);
            let (closed, closed_rx) = watch::channel(false);
            let peer: SocketAddr = "203.0.113.9:40000".parse().expect("addr");
            let task = tokio::spawn(serve(server, peer, inbound_tx, outbound_rx, closed_rx));
            Self { client, inbound, task, _outbound: outbound, _closed: closed }
        }

        /// Sends one message and waits until the server has it.
        async fn message(&mut self) {
            self.client.write_all(&STUN).await.expect("write");
            let (message, _) = self.inbound.recv().await.expect("handed to the server");
            assert_eq!(message, STUN);
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// Asserts that `c` is still open a millisecond before `silence` from now, and
    /// closed for idleness a millisecond after.
    async fn closes_after(c: Served, silence: Duration) {
        tokio::time::sleep(silence - MS).await;
        assert!(!c.task.is_finished(), "open a millisecond before {silence:?}");
        tokio::time::sleep(2 * MS).await;
        assert!(c.task.is_finished(), "closed at {silence:?}");
        assert_eq!(c.task.await.expect("no panic"), Err("idle".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_after_the_first_message_timeout() {
        closes_after(Served::new(), FIRST_MESSAGE_TIMEOUT).await;
    }

    #[tokio::test(start_paused = true)]
    async fn after_its_first_message_a_connection_may_be_silent_for_11_minutes_and_no_longer() {
        let mut c = Served::new();
        tokio::time::sleep(FIRST_MESSAGE_TIMEOUT - MS).await;
        c.message().await;
        closes_after(c, IDLE_TIMEOUT).await;
    }

    /// A client that refreshes its allocation every 10 minutes (RFC 8656 §7.3
    /// default lifetime) stays connected however long it stays.
    #[tokio::test(start_paused = true)]
    async fn each_message_restarts_the_idle_timeout() {
        let mut c = Served::new();
        for _ in 0..12 {
            c.message().await;
            tokio::time::sleep(Duration::from_secs(10 * 60)).await;
            assert!(!c.task.is_finished(), "a message every 10 minutes keeps it open");
        }
        c.message().await;
        tokio::time::sleep(IDLE_TIMEOUT + MS).await;
        assert_eq!(c.task.await.expect("no panic"), Err("idle".to_owned()));
    }

    #[tokio::test]
    async fn messages_are_framed_and_channel_data_padding_is_dropped() {
        let stun = STUN;
        let channel = [0x40, 0x00, 0x00, 0x03, 7, 7, 7, 0];
        let whole_channel = [0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4];
        let mut input: Vec<u8> = stun.to_vec();
        input.extend_from_slice(&channel);
        input.extend_from_slice(&whole_channel);
        let mut reader = &input[..];
        assert_eq!(read_message(&mut reader).await.unwrap().unwrap(), stun);
        assert_eq!(read_message(&mut reader).await.unwrap().unwrap(), &channel[..7]);
        assert_eq!(read_message(&mut reader).await.unwrap().unwrap(), whole_channel, "no padding needed");
        assert_eq!(read_message(&mut reader).await.unwrap(), None);
        assert_eq!(framed(&channel[..7]), channel, "padding is restored on the way out");
        assert_eq!(framed(&stun), stun);
    }

    #[tokio::test]
    async fn garbage_on_the_stream_is_an_error() {
        let mut http = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert!(read_message(&mut http).await.is_err());
        let mut odd_stun = &[0x00, 0x01, 0x00, 0x05, 0, 0, 0, 0][..];
        assert!(read_message(&mut odd_stun).await.is_err());
        let mut client_hello = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03][..];
        assert!(read_message(&mut client_hello).await.is_err(), "no magic cookie");
    }

    /// A length field over what the server can take closes the connection at
    /// once: no 64 KiB buffer is allocated and held waiting for a body.
    #[tokio::test]
    async fn a_length_over_the_server_buffer_is_refused_before_reading_the_body() {
        let mut channel = &[0x40, 0x00, 0xff, 0xff][..];
        let e = read_message(&mut channel).await.unwrap_err();
        assert!(e.contains("over the 1500-byte limit"), "{e}");
        let mut stun = &[0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42][..];
        assert!(read_message(&mut stun).await.is_err());
        let mut biggest = vec![0x40, 0x00, 0x05, 0xd8];
        biggest.resize(4 + 1496, 7);
        assert_eq!(read_message(&mut &biggest[..]).await.unwrap().unwrap().len(), 1500, "1500 bytes still pass");
    }
}
