//! The str0m engine's IO (issue 13, docs/decisions.md §24): every peer
//! connection of the node on **one UDP port**, driven by one task.
//!
//! A [`Driver`] owns the socket and every peer's `str0m::Rtc` (sans-IO: it
//! takes datagrams and time, and gives datagrams, events and its next
//! deadline). Datagrams are routed to their peer by [`demux`] (STUN by
//! ufrag, the rest by source address). The rest of the node holds a [`Peer`]:
//! it runs closures on its `Rtc` inside the driver ([`Peer::with`], for SDP,
//! candidates and writing RTP) and reads its events ([`Peer::next_event`]).
//!
//! Peers are ICE-lite with a UDP host candidate (the socket's address, or the
//! address given to [`Driver::bind`] to advertise: a cloud's elastic IP in
//! front of a 1:1 NAT, LiveKit's `rtc.node_ip`) and, when the driver has a TCP
//! port, a passive TCP host candidate on it ([`tcp`], RFC 6544, LiveKit's
//! `rtc.tcp_port`); what arrives is handed to str0m as if sent to the
//! advertised address, so its candidate pairs match.
//!
//! Bounds: a peer's events wait in a queue of [`EVENT_QUEUE`]; when its reader
//! falls that far behind, further events are dropped (and counted in the log
//! at debug), never the driver blocked. Datagrams the socket cannot take at
//! once are dropped, as a full network would.
//!
//! Cost: a turn of the loop serves the peer a datagram or command went to and
//! the peers whose deadlines are due, found in a heap ([`deadlines`]), so it
//! does not grow with the peers that have nothing to do.
//!
//! Every PC of the node's participants runs here, publisher and subscriber.
//! The packet path hands the driver one packet's writes to all its
//! down-tracks as one command ([`RtpWrites`]).

pub mod deadlines;
pub mod demux;
pub mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::Mid;
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use deadlines::Deadlines;
use demux::Demux;
use tcp::{TcpConn, TcpEvent};

/// Events a peer's reader may fall behind by before more are dropped.
pub const EVENT_QUEUE: usize = 1024;
/// Commands (calls, writes, peers added) that may wait for the driver; a
/// [`Peer::post`] past them is refused.
pub const COMMAND_QUEUE: usize = 8192;
/// The longest the driver sleeps with no deadline from any peer.
const IDLE: Duration = Duration::from_millis(100);
/// Times one drain serves deadlines that are already due before yielding.
const MAX_DUE_TURNS: u32 = 16;
/// Largest datagram read (above any path MTU).
const DATAGRAM: usize = 2048;

/// A peer's number inside its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(u64);

/// The driver has ended (the node is shutting down) or no longer holds the peer.
#[derive(Debug, thiserror::Error)]
#[error("the peer connection is closed")]
pub struct Closed;

type Call = Box<dyn FnOnce(&mut Rtc) + Send>;

enum Command {
    Add { rtc: Box<Rtc>, events: mpsc::Sender<Event>, reply: oneshot::Sender<Result<PeerId, String>> },
    Call { peer: PeerId, call: Call },
    Writes(Vec<(PeerId, Mid, RtpWrite)>),
    Remove(PeerId),
    Tcp(TcpEvent),
}

/// The node's UDP (and TCP) port for media, and the task that drives its peers.
#[derive(Clone)]
pub struct Driver {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
    advertised: SocketAddr,
    tcp_local: Option<SocketAddr>,
}

impl Driver {
    /// Binds UDP `addr` (port 0: any) and TCP on the same address (port 0:
    /// any, else the same port number) and starts the driver task. Peers'
    /// candidates carry `advertise` if given (with the sockets' ports), else
    /// the sockets' addresses.
    ///
    /// Errors: a socket cannot be bound.
    pub async fn bind(addr: SocketAddr, advertise: Option<std::net::IpAddr>) -> std::io::Result<Self> {
        Self::start(std::net::UdpSocket::bind(addr)?, Some(std::net::TcpListener::bind(addr)?), advertise)
    }

    /// Starts the driver task on `socket` and, for ICE over TCP, `tcp`, bound
    /// already (the node binds its ports at startup, before a runtime may be
    /// running). Must be called inside a tokio runtime. Candidates carry
    /// `advertise` as in [`Driver::bind`].
    ///
    /// Errors: a socket cannot be made non-blocking or registered with the runtime.
    pub fn start(
        socket: std::net::UdpSocket,
        tcp: Option<std::net::TcpListener>,
        advertise: Option<std::net::IpAddr>,
    ) -> std::io::Result<Self> {
        // str0m's DTLS and SRTP take the process's provider (aws-lc); idempotent.
        str0m::crypto::from_feature_flags().install_process_default();
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let local = socket.local_addr()?;
        let advertised = advertise.map_or(local, |ip| SocketAddr::new(ip, local.port()));
        let listener = match tcp {
            Some(l) => {
                l.set_nonblocking(true)?;
                Some(TcpListener::from_std(l)?)
            }
            None => None,
        };
        let tcp_local = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let tcp_advertised = tcp_local.map(|a| SocketAddr::new(advertised.ip(), a.port()));
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let sockets = Sockets { udp: socket, advertised, tcp: listener, tcp_advertised, weak: commands.downgrade() };
        tokio::spawn(run(sockets, rx));
        Ok(Self { commands, local, advertised, tcp_local })
    }

    /// The UDP socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The TCP port's address, when the driver has one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp_local
    }

    /// The address peers' UDP candidates carry.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// Hands `rtc` to the driver, with the driver's host candidate added.
    ///
    /// Errors: the driver has ended, or str0m refused the candidate.
    pub async fn add(&self, rtc: Rtc) -> Result<Peer, AddError> {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Add { rtc: Box::new(rtc), events: events_tx, reply })
            .await
            .map_err(|_| AddError::Closed)?;
        let id = answer.await.map_err(|_| AddError::Closed)?.map_err(AddError::Candidate)?;
        Ok(Peer { handle: PeerHandle { id, commands: self.commands.clone() }, events })
    }
}

/// Why [`Driver::add`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The driver has ended.
    #[error("the media driver has ended")]
    Closed,
    /// str0m refused the host candidate (an address it cannot use).
    #[error("host candidate refused: {0}")]
    Candidate(String),
}

/// Why [`Peer::post`] dropped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The driver's command queue is full.
    #[error("the media driver is behind")]
    Full,
    /// The driver has ended.
    #[error("the media driver has ended")]
    Closed,
}

/// One peer connection in a [`Driver`]. Dropping it closes the connection.
pub struct Peer {
    handle: PeerHandle,
    events: mpsc::Receiver<Event>,
}

/// Calls into one peer of a [`Driver`], for whoever holds it besides the
/// reader of its events (a participant, a down-track's sink). Cloning is
/// cheap; dropping a handle closes nothing ([`PeerHandle::close`] does, and
/// so does dropping the [`Peer`]).
#[derive(Clone)]
pub struct PeerHandle {
    id: PeerId,
    commands: mpsc::Sender<Command>,
}

impl Peer {
    /// A handle for calls into this peer from elsewhere.
    pub fn handle(&self) -> PeerHandle {
        self.handle.clone()
    }

    /// Runs `f` on the peer's `Rtc` inside the driver (see [`PeerHandle::with`]).
    ///
    /// Errors: the peer is gone.
    pub async fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Rtc) -> T + Send + 'static) -> Result<T, Closed> {
        self.handle.with(f).await
    }

    /// Posts `f` to the peer's `Rtc` (see [`PeerHandle::post`]).
    ///
    /// Errors: as [`PeerHandle::post`].
    pub fn post(&self, f: impl FnOnce(&mut Rtc) + Send + 'static) -> Result<(), PostError> {
        self.handle.post(f)
    }

    /// The peer's next event; `None` once it is gone.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl PeerHandle {
    /// Adds a candidate the client trickled (`candidate:…`; an empty one, the
    /// end of candidates, is ignored). ICE-lite answers the client's checks
    /// whatever it trickles, so a candidate str0m cannot parse is only logged,
    /// and so is one dropped because the driver is behind.
    pub fn add_remote_candidate(&self, candidate: &str) {
        if candidate.is_empty() {
            return;
        }
        match Candidate::from_sdp_string(candidate) {
            Ok(c) => {
                if let Err(e) = self.post(move |rtc| rtc.add_remote_candidate(c)) {
                    tracing::debug!(error = %e, "candidate dropped");
                }
            }
            Err(e) => tracing::debug!(error = %e, "candidate not parsed"),
        }
    }

    /// Runs `f` on the peer's `Rtc` inside the driver and returns its result;
    /// what `f` makes the peer send goes out before the driver does anything else.
    ///
    /// Errors: the peer is gone (closed, failed or the driver ended).
    pub async fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Rtc) -> T + Send + 'static) -> Result<T, Closed> {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |rtc| {
            let _ = reply.send(f(rtc));
        });
        self.commands.send(Command::Call { peer: self.id, call }).await.map_err(|_| Closed)?;
        answer.await.map_err(|_| Closed)
    }

    /// Runs `f` on the peer's `Rtc` inside the driver, without waiting for it:
    /// the packet path (writing a forwarded RTP packet), where a reply per
    /// packet would cost a wakeup. Calls run in the order they were posted.
    ///
    /// Errors: [`PostError::Full`] when [`COMMAND_QUEUE`] commands are waiting
    /// (the call is dropped, as a full network drops a packet);
    /// [`PostError::Closed`] when the driver has ended.
    pub fn post(&self, f: impl FnOnce(&mut Rtc) + Send + 'static) -> Result<(), PostError> {
        send_command(&self.commands, Command::Call { peer: self.id, call: Box::new(f) })
    }

    /// Closes the peer connection (the driver forgets it). Idempotent.
    pub fn close(&self) {
        // A full queue means the driver is busy; it drops the peer when its
        // event queue closes (see `run`) anyway.
        let _ = self.commands.try_send(Command::Remove(self.id));
    }
}

/// RTP packets for media sections of peers of one driver, handed to it as
/// one command: the packet path, where one forwarded packet goes to every
/// down-track of its track. A command per packet per down-track would cost
/// the driver a turn of its loop (a wakeup, a timer, a poll of the socket)
/// for each; a batch costs one.
#[derive(Default)]
pub struct RtpWrites {
    commands: Option<mpsc::Sender<Command>>,
    writes: Vec<(PeerId, Mid, RtpWrite)>,
}

impl RtpWrites {
    /// Adds `write` for media section `mid` of `peer`. A peer of another
    /// driver than the batch's first (tests run several) gets its own command,
    /// at once, under the same rules as [`RtpWrites::send`].
    pub fn push(&mut self, peer: &PeerHandle, mid: Mid, write: RtpWrite) -> Result<(), PostError> {
        match &self.commands {
            None => self.commands = Some(peer.commands.clone()),
            Some(c) if !c.same_channel(&peer.commands) => {
                return send_command(&peer.commands, Command::Writes(vec![(peer.id, mid, write)]));
            }
            Some(_) => {}
        }
        self.writes.push((peer.id, mid, write));
        Ok(())
    }

    /// Hands the batch to the driver; writes for peers it no longer holds, and
    /// for media sections a peer has not got, are dropped there. An empty
    /// batch sends nothing.
    ///
    /// Errors: as [`PeerHandle::post`] (the whole batch is dropped).
    pub fn send(self) -> Result<(), PostError> {
        match self.commands {
            Some(c) if !self.writes.is_empty() => send_command(&c, Command::Writes(self.writes)),
            _ => Ok(()),
        }
    }
}

fn send_command(commands: &mpsc::Sender<Command>, command: Command) -> Result<(), PostError> {
    commands.try_send(command).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => PostError::Full,
        mpsc::error::TrySendError::Closed(_) => PostError::Closed,
    })
}

struct Entry {
    rtc: Box<Rtc>,
    /// The local ICE ufrag STUN requests are routed by (an ICE restart makes a new one).
    ufrag: String,
    events: mpsc::Sender<Event>,
    dropped_events: u64,
}

/// What the driver reads and writes.
struct Sockets {
    udp: UdpSocket,
    /// The UDP candidates' address.
    advertised: SocketAddr,
    tcp: Option<TcpListener>,
    /// The TCP candidates' address.
    tcp_advertised: Option<SocketAddr>,
    /// The driver's own queue, for connections' tasks (weakly: they must not
    /// keep it alive).
    weak: mpsc::WeakSender<Command>,
}

/// The next connection on `listener`, not before `after` (a failed accept
/// waits a little); never, without one.
async fn accept(
    listener: Option<&TcpListener>,
    after: Instant,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => {
            tokio::time::sleep_until(after.into()).await;
            l.accept().await
        }
        None => std::future::pending().await,
    }
}

type TcpConns = HashMap<SocketAddr, TcpConn<PeerId>>;

/// Forgets peer `id`: its routes, its deadline, its TCP connections (closed).
fn forget(
    peers: &mut HashMap<PeerId, Entry>,
    demux: &mut Demux<PeerId>,
    deadlines: &mut Deadlines<PeerId>,
    tcp: &mut TcpConns,
    id: PeerId,
) {
    peers.remove(&id);
    demux.remove(id);
    deadlines.remove(id);
    tcp.retain(|_, c| c.peer != Some(id));
}

/// The driver task: until every [`Driver`] and [`Peer`] is dropped.
async fn run(sockets: Sockets, mut commands: mpsc::Receiver<Command>) {
    let Sockets { udp: socket, advertised, tcp: listener, tcp_advertised, weak } = sockets;
    let mut peers: HashMap<PeerId, Entry> = HashMap::new();
    let mut demux: Demux<PeerId> = Demux::default();
    let mut deadlines: Deadlines<PeerId> = Deadlines::default();
    // ICE/TCP connections by their client's address.
    let mut tcp: TcpConns = HashMap::new();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; DATAGRAM];
    // Connections accepted and not yet closed; and when to accept again after
    // a failure (out of file descriptors, say).
    let mut tcp_open = 0usize;
    let mut next_conn = 0u64;
    let mut accept_after = now();
    // The peers a command or datagram went to: they have output now. Emptied
    // by each turn's drain below.
    let mut touched: Vec<PeerId> = Vec::new();
    loop {
        let deadline = deadlines.earliest().unwrap_or_else(|| now() + IDLE);
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Add { mut rtc, events, reply } => {
                        next_id += 1;
                        let id = PeerId(next_id);
                        if let Err(e) = add_candidates(&mut rtc, advertised, tcp_advertised) {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
                        demux.insert(&ufrag, id);
                        peers.insert(id, Entry { rtc, ufrag, events, dropped_events: 0 });
                        touched.push(id);
                        let _ = reply.send(Ok(id));
                    }
                    Command::Call { peer, call } => {
                        if let Some(e) = peers.get_mut(&peer) {
                            call(&mut e.rtc);
                            touched.push(peer);
                            // An ICE restart (SDP or direct) brings new credentials;
                            // checks with the old ufrag may still arrive, so it stays.
                            let ufrag = e.rtc.direct_api().local_ice_credentials().ufrag;
                            if ufrag != e.ufrag {
                                demux.insert(&ufrag, peer);
                                e.ufrag = ufrag;
                            }
                        }
                    }
                    Command::Writes(writes) => {
                        for (peer, mid, write) in writes {
                            let Some(e) = peers.get_mut(&peer) else { continue };
                            if let Some(tx) = e.rtc.direct_api().stream_tx_by_mid(mid, None) {
                                tx.write_rtp(write);
                                touched.push(peer);
                            }
                        }
                        // One drain per peer (a batch has one write per down-track;
                        // a subscriber may have several of the track's).
                        touched.sort_unstable();
                        touched.dedup();
                    }
                    Command::Remove(peer) => forget(&mut peers, &mut demux, &mut deadlines, &mut tcp, peer),
                    Command::Tcp(TcpEvent::Opened { conn, source, writer }) => {
                        tcp.insert(source, TcpConn { conn, writer, peer: None });
                    }
                    Command::Tcp(TcpEvent::Closed { conn, source }) => {
                        tcp_open = tcp_open.saturating_sub(1);
                        if tcp.get(&source).is_some_and(|c| c.conn == conn) {
                            tcp.remove(&source);
                        }
                    }
                    Command::Tcp(TcpEvent::Frame { conn, source, data }) => {
                        let Some(c) = tcp.get_mut(&source).filter(|c| c.conn == conn) else { continue };
                        let Some(destination) = tcp_advertised else { continue };
                        let stun = demux::binding_ufrag(&data).is_some();
                        let id = if stun { demux.route(source, &data) } else { c.peer };
                        let took = id.and_then(|id| Some((id, peers.get_mut(&id)?))).is_some_and(|(id, e)| {
                            receive(e, id, Protocol::Tcp, source, destination, &data)
                        });
                        match id {
                            Some(id) if took => {
                                if stun {
                                    c.peer = Some(id);
                                }
                                touched.push(id);
                            }
                            // A connection must open with a request for a peer of ours.
                            _ if c.peer.is_none() => {
                                tcp.remove(&source);
                            }
                            _ => {}
                        }
                    }
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let Some(datagram) = buf.get(..n) else { continue };
                let Some(id) = demux.route(source, datagram) else { continue };
                let Some(e) = peers.get_mut(&id) else { continue };
                if !receive(e, id, Protocol::Udp, source, advertised, datagram) {
                    continue;
                }
                if demux::binding_ufrag(datagram).is_some() {
                    demux.learn(source, id);
                }
                touched.push(id);
            }
            accepted = accept(listener.as_ref(), accept_after) => match accepted {
                Ok((stream, source)) if tcp_open < tcp::MAX_CONNECTIONS => {
                    tcp_open += 1;
                    next_conn = next_conn.wrapping_add(1);
                    tokio::spawn(tcp::connection(stream, source, next_conn, weak.clone()));
                }
                Ok((_, source)) => tracing::debug!(%source, "ICE/TCP connection refused: at the limit"),
                Err(e) => {
                    tracing::debug!(error = %e, "ICE/TCP accept failed");
                    accept_after = now() + Duration::from_millis(100);
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        // Drain the touched peer and every peer whose deadline is due: datagrams
        // out, events up, its next deadline back in the heap (drain serves a
        // deadline already due, str0m's timeouts included).
        let now = now();
        let due = touched.drain(..).chain(std::iter::from_fn(|| deadlines.pop_due(now))).collect::<Vec<_>>();
        for id in due {
            let Some(e) = peers.get_mut(&id) else { continue };
            let next = drain(e, &socket, &tcp, now);
            if !e.rtc.is_alive() || e.events.is_closed() {
                forget(&mut peers, &mut demux, &mut deadlines, &mut tcp, id);
            } else {
                deadlines.set(id, next);
            }
        }
    }
}

/// The time str0m is given: the runtime's clock, so that under a paused clock
/// (virtual-time tests) the driver's sleeps and str0m's deadlines agree.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Adds the peer's host candidates: UDP on `udp`, passive TCP on `tcp`.
fn add_candidates(rtc: &mut Rtc, udp: SocketAddr, tcp: Option<SocketAddr>) -> Result<(), String> {
    let mut candidates = vec![Candidate::host(udp, "udp").map_err(|e| e.to_string())?];
    if let Some(addr) = tcp {
        let c = Candidate::builder().tcp().host(addr).tcptype(TcpType::Passive).build();
        candidates.push(c.map_err(|e| e.to_string())?);
    }
    for c in candidates {
        rtc.add_local_candidate(c).ok_or_else(|| "not added".to_owned())?;
    }
    Ok(())
}

/// Hands a datagram or TCP frame from `source` to the peer, as sent to our
/// candidate at `destination`; whether str0m took it as the peer's.
fn receive(
    e: &mut Entry,
    id: PeerId,
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    data: &[u8],
) -> bool {
    let Ok(receive) = Receive::new(proto, source, destination, data) else { return false };
    let input = Input::Receive(now(), receive);
    if !e.rtc.accepts(&input) {
        return false;
    }
    if let Err(err) = e.rtc.handle_input(input) {
        tracing::debug!(peer = id.0, error = %err, "peer refused a datagram");
    }
    true
}

/// Sends one packet: over UDP, or framed over the TCP connection it is
/// addressed to. A full socket buffer or queue drops it, as the network would.
fn transmit(t: &Transmit, socket: &UdpSocket, tcp: &TcpConns) {
    match t.proto {
        Protocol::Udp => {
            let _ = socket.try_send_to(&t.contents, t.destination);
        }
        _ => {
            if let (Some(c), Some(f)) = (tcp.get(&t.destination), tcp::frame(&t.contents)) {
                let _ = c.writer.try_send(f);
            }
        }
    }
}

/// Sends what the peer has to send and queues its events; returns when it
/// next wants time.
fn drain(e: &mut Entry, socket: &UdpSocket, tcp: &TcpConns, now: Instant) -> Instant {
    // A deadline already due (str0m queues what is written until its pacer
    // runs) is served at once, not on the next turn of the loop; bounded, in
    // case a peer keeps asking.
    let mut due_turns = 0u32;
    loop {
        match e.rtc.poll_output() {
            Ok(Output::Timeout(t)) if t <= now && due_turns < MAX_DUE_TURNS => {
                due_turns += 1;
                if let Err(err) = e.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(error = %err, "peer failed on a timeout");
                    e.rtc.disconnect();
                }
            }
            Ok(Output::Timeout(t)) => return t.max(now),
            Ok(Output::Transmit(t)) => transmit(&t, socket, tcp),
            Ok(Output::Event(event)) => {
                if e.events.try_send(event).is_err() {
                    e.dropped_events = e.dropped_events.saturating_add(1);
                    tracing::debug!(dropped = e.dropped_events, "peer's reader is behind: event dropped");
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "peer failed");
                e.rtc.disconnect();
                return now + IDLE;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use str0m::change::{SdpAnswer, SdpOffer};
    use str0m::media::Mid;
    use str0m::rtp::{RtpWrite, SeqNo};
    use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
    use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
    use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
    use webrtc::track::track_local::TrackLocalWriter;

    use super::*;
    use crate::engine::{Engine, IceConfig};

    const WAIT: Duration = Duration::from_secs(10);

    /// Two webrtc-rs clients (the load tester's engine, a peer we did not
    /// write) connect through one driver port, with junk sent at that port
    /// first; each one's RTP reaches its peer's events, and RTP the driver
    /// writes reaches the client.
    #[tokio::test]
    async fn peers_share_one_port_and_rtp_flows_both_ways() {
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let port = driver.local_addr().port();
        // Junk at the port: garbage, a truncated STUN header, a Binding
        // request for a ufrag nobody has. The driver drops them all.
        let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let stun_for_nobody = [0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 6, 0, 8];
        for d in [&[0xffu8; 3][..], &[0, 1, 0, 0, 0x21], &stun_for_nobody[..], &[0x80; 1500][..]] {
            junk.send_to(d, driver.local_addr()).unwrap();
        }
        let ice = IceConfig::loopback();
        let engine = Engine::client(&ice).unwrap();
        let mut clients = Vec::new();
        for n in 0u8..2 {
            clients.push(connect(&driver, &engine, port, n).await);
        }
        for (pc, track, mut peer, mid) in clients {
            // Client to driver.
            let got = tokio::select! {
                got = tokio::time::timeout(WAIT, async {
                    loop {
                        match peer.next_event().await {
                            Some(Event::RtpPacket(p)) => return p.payload.to_vec(),
                            Some(_) => {}
                            None => panic!("peer gone"),
                        }
                    }
                }) => got,
                _ = async {
                    for seq in 0..200u16 {
                        let packet = webrtc::rtp::packet::Packet {
                            header: webrtc::rtp::header::Header {
                                version: 2,
                                payload_type: 96,
                                sequence_number: seq,
                                timestamp: u32::from(seq) * 3000,
                                ssrc: 0,
                                ..Default::default()
                            },
                            payload: bytes::Bytes::from_static(&[0x10, 1, 2, 3]),
                        };
                        if track.write_rtp(&packet).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                } => panic!("nothing arrived while the client sent"),
            };
            assert_eq!(got.expect("RTP from the client within 10 s"), vec![0x10, 1, 2, 3]);
            // Driver to client.
            let (tx, mut rx) = mpsc::channel(1);
            pc.on_track(Box::new(move |remote, _, _| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok((p, _)) = remote.read_rtp().await {
                        let _ = tx.send(p.payload.to_vec()).await;
                    }
                });
                Box::pin(async {})
            }));
            let sender = async {
                for seq in 0..200u64 {
                    let wrote = peer
                        .with(move |rtc| {
                            let pt = rtc.media(mid).and_then(|m| m.remote_pts().first().copied());
                            let Some(pt) = pt else { return false };
                            let mut api = rtc.direct_api();
                            let Some(tx) = api.stream_tx_by_mid(mid, None) else { return false };
                            tx.write_rtp(RtpWrite::new(pt, SeqNo::from(seq), 0, Instant::now(), vec![0x10, 9, 9]));
                            true
                        })
                        .await
                        .unwrap();
                    assert!(wrote, "a send stream on the answer's media section");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let received = tokio::select! {
                r = tokio::time::timeout(WAIT, rx.recv()) => r,
                _ = sender => panic!("nothing arrived while the driver sent"),
            };
            assert_eq!(received.expect("RTP from the driver within 10 s"), Some(vec![0x10, 9, 9]));
            pc.close().await.unwrap();
        }
    }

    /// ICE/TCP connections that do not open with a STUN Binding request for
    /// a peer of the driver are closed at once, with nothing written back:
    /// a junk frame, a request for a ufrag nobody has, a frame longer than
    /// the driver takes. The port keeps accepting afterwards.
    #[tokio::test]
    async fn tcp_connections_that_name_no_peer_are_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let addr = driver.tcp_local_addr().expect("a TCP port");
        let stun_for_nobody = [0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 6, 0, 8];
        let too_long = u16::try_from(tcp::MAX_FRAME + 1).unwrap().to_be_bytes().to_vec();
        for bytes in [tcp::frame(&[0x80; 100]).unwrap(), tcp::frame(&stun_for_nobody).unwrap(), too_long] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(&bytes).await.unwrap();
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("closed within 10 s");
            assert_eq!(read.unwrap_or(0), 0, "closed with nothing written back after {bytes:?}");
        }
        // A connection that has sent nothing yet is kept (until tcp::FIRST_FRAME).
        let mut quiet = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        assert!(tokio::time::timeout(Duration::from_millis(200), quiet.read(&mut buf)).await.is_err(), "still open");
    }

    /// The driver's peer offers as a subscriber PC does (LiveKit's: the SFU
    /// offers its down-tracks and data channels): a send-only video with the
    /// msid livekit-client maps by (`PA_…|TR_…`) and `_reliable`; a webrtc-rs
    /// client answers, sees the track under that stream id and the channel's
    /// message; then a renegotiation adds audio, and an ICE restart (new
    /// ufrag, so the driver must route by it) keeps the data channel working.
    #[tokio::test]
    async fn offers_renegotiates_and_restarts_ice_as_a_subscriber_pc() {
        use str0m::media::{Direction, MediaKind};
        let driver = Driver::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let ice = IceConfig::loopback();
        let engine = Engine::client(&ice).unwrap();
        let pc = engine.peer_connection().await.unwrap();
        let (tracks_tx, mut tracks) = mpsc::channel::<(String, Vec<u8>)>(8);
        pc.on_track(Box::new(move |remote, _, _| {
            let tx = tracks_tx.clone();
            tokio::spawn(async move {
                if let Ok((p, _)) = remote.read_rtp().await {
                    let _ = tx.send((remote.stream_id(), p.payload.to_vec())).await;
                }
            });
            Box::pin(async {})
        }));
        let (messages_tx, mut messages) = mpsc::channel::<(String, Vec<u8>)>(8);
        pc.on_data_channel(Box::new(move |dc| {
            let tx = messages_tx.clone();
            let label = dc.label().to_owned();
            dc.on_message(Box::new(move |m| {
                let (tx, label) = (tx.clone(), label.clone());
                Box::pin(async move {
                    let _ = tx.send((label, m.data.to_vec())).await;
                })
            }));
            Box::pin(async {})
        }));
        let rtc = Rtc::builder().set_rtp_mode(true).set_ice_lite(true).build(Instant::now());
        let mut peer = driver.add(rtc).await.unwrap();

        // Offer 1: video and `_reliable`.
        let (offer, video, reliable) = peer
            .with(|rtc| {
                let mut api = rtc.sdp_api();
                let mid = api.add_media(
                    MediaKind::Video,
                    Direction::SendOnly,
                    Some("PA_alice|TR_video".into()),
                    Some("TR_video".into()),
                    None,
                );
                let cid = api.add_channel("_reliable".into());
                let (offer, pending) = api.apply().expect("changes to offer");
                (offer.to_sdp_string(), mid, (cid, pending))
            })
            .await
            .unwrap();
        let (channel, pending) = reliable;
        let answer = answer_to(&pc, offer).await;
        peer.with(move |rtc| {
            rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap()
        })
        .await
        .unwrap();
        wait_for(&mut peer, |e| matches!(e, Event::ChannelOpen(..))).await;
        peer.with(move |rtc| rtc.channel(channel).map(|mut c| c.write(true, b"hello").is_ok())).await.unwrap();
        let got = tokio::time::timeout(WAIT, messages.recv()).await.expect("a message within 10 s");
        assert_eq!(got, Some(("_reliable".to_owned(), b"hello".to_vec())));
        let first = until_track(&peer, &mut tracks, video).await;
        assert_eq!(first.0, "PA_alice|TR_video", "the track arrives under the msid stream id");

        // Offer 2: audio added.
        let (offer, audio, pending) = peer
            .with(|rtc| {
                let mut api = rtc.sdp_api();
                let mid = api.add_media(
                    MediaKind::Audio,
                    Direction::SendOnly,
                    Some("PA_alice|TR_audio".into()),
                    Some("TR_audio".into()),
                    None,
                );
                let (offer, pending) = api.apply().expect("changes to offer");
                (offer.to_sdp_string(), mid, pending)
            })
            .await
            .unwrap();
        let answer = answer_to(&pc, offer).await;
        peer.with(move |rtc| {
            rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap()
        })
        .await
        .unwrap();
        let second = until_track(&peer, &mut tracks, audio).await;
        assert_eq!(second.0, "PA_alice|TR_audio");

        // Offer 3: an ICE restart; media goes on under the new ufrag.
        let (offer, old, pending) = peer
            .with(|rtc| {
                let old = rtc.direct_api().local_ice_credentials().ufrag;
                let mut api = rtc.sdp_api();
                api.ice_restart(true);
                let (offer, pending) = api.apply().expect("changes to offer");
                (offer.to_sdp_string(), old, pending)
            })
            .await
            .unwrap();
        assert!(!offer.contains(&format!("a=ice-ufrag:{old}")), "a new ufrag in the restart offer");
        let answer = answer_to(&pc, offer).await;
        peer.with(move |rtc| {
            rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap()
        })
        .await
        .unwrap();
        // ICE-lite goes from checking to completed once the restarted checks succeed.
        wait_for(&mut peer, |e| matches!(e, Event::IceConnectionStateChange(str0m::IceConnectionState::Checking)))
            .await;
        wait_for(&mut peer, |e| {
            use str0m::IceConnectionState::{Completed, Connected};
            matches!(e, Event::IceConnectionStateChange(Completed | Connected))
        })
        .await;
        peer.with(move |rtc| rtc.channel(channel).map(|mut c| c.write(true, b"again").is_ok())).await.unwrap();
        let got = tokio::time::timeout(WAIT, messages.recv()).await.expect("a message after the restart");
        assert_eq!(got, Some(("_reliable".to_owned(), b"again".to_vec())));
        pc.close().await.unwrap();
    }

    /// The client's answer to `offer`, with its candidates.
    pub(crate) async fn answer_to(pc: &webrtc::peer_connection::RTCPeerConnection, offer: String) -> String {
        pc.set_remote_description(RTCSessionDescription::offer(offer).unwrap()).await.unwrap();
        let answer = pc.create_answer(None).await.unwrap();
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(answer).await.unwrap();
        let _ = gathered.recv().await;
        pc.local_description().await.unwrap().sdp
    }

    /// Waits up to [`WAIT`] for an event of `peer` that `wanted` picks.
    async fn wait_for(peer: &mut Peer, wanted: impl Fn(&Event) -> bool) {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(e) = peer.next_event().await {
                if wanted(&e) {
                    return;
                }
            }
            panic!("peer gone");
        })
        .await;
        assert!(found.is_ok(), "event within 10 s");
    }

    /// Writes RTP on `mid` every 20 ms (posted, as the packet path does) until
    /// the client's `on_track` reports one; returns its stream id and payload.
    async fn until_track(peer: &Peer, tracks: &mut mpsc::Receiver<(String, Vec<u8>)>, mid: Mid) -> (String, Vec<u8>) {
        let sender = async {
            for seq in 0..500u64 {
                peer.post(move |rtc| {
                    let Some(pt) = rtc.media(mid).and_then(|m| m.remote_pts().first().copied()) else { return };
                    let mut api = rtc.direct_api();
                    if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                        tx.write_rtp(RtpWrite::new(pt, SeqNo::from(seq), 0, Instant::now(), vec![0x10, 7]));
                    }
                })
                .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            got = tokio::time::timeout(WAIT, tracks.recv()) => got.expect("a track within 10 s").expect("tracks open"),
            _ = sender => panic!("no track while the driver sent"),
        }
    }

    /// A webrtc-rs client offering one send-receive VP8 section, answered by a
    /// new peer of `driver`; returns once the peer says it is connected.
    async fn connect(
        driver: &Driver,
        engine: &Engine,
        port: u16,
        n: u8,
    ) -> (Arc<webrtc::peer_connection::RTCPeerConnection>, Arc<TrackLocalStaticRTP>, Peer, Mid) {
        let pc = engine.peer_connection().await.unwrap();
        let vp8 = RTCRtpCodecCapability { mime_type: "video/VP8".into(), clock_rate: 90_000, ..Default::default() };
        let track = Arc::new(TrackLocalStaticRTP::new(vp8, format!("video{n}"), format!("client{n}")));
        pc.add_track(Arc::clone(&track) as _).await.unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(offer).await.unwrap();
        let _ = gathered.recv().await;
        let offer = pc.local_description().await.unwrap().sdp;
        let offer_mid = offer.lines().find_map(|l| l.strip_prefix("a=mid:")).map(str::to_owned);
        let rtc = Rtc::builder().set_rtp_mode(true).set_ice_lite(true).build(Instant::now());
        let mut peer = driver.add(rtc).await.unwrap();
        let answer = peer
            .with(move |rtc| {
                let offer = SdpOffer::from_sdp_string(&offer).map_err(|e| e.to_string())?;
                rtc.sdp_api().accept_offer(offer).map(|a| a.to_sdp_string()).map_err(|e| e.to_string())
            })
            .await
            .unwrap()
            .unwrap();
        assert!(answer.contains(&format!(" {port} typ host")), "the driver's one port in {answer}");
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
        // The offer's one media section.
        let mid = offer_mid.map(|m| Mid::from(m.as_str()));
        let connected = tokio::time::timeout(WAIT, async {
            loop {
                match peer.next_event().await {
                    Some(Event::Connected) => return,
                    Some(_) => {}
                    None => panic!("peer {n} gone before connecting"),
                }
            }
        })
        .await;
        assert!(connected.is_ok(), "peer {n} connected within 10 s");
        (pc, track, peer, mid.expect("a media section in the offer"))
    }
}
