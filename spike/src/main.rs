//! Issue 13's engine spike: the smallest SFU that forwards on `str0m`, to
//! measure beside the webrtc-rs node under the same load
//! (`bench/engine_spike.sh`, figures in docs/benchmarks.md, the decision in
//! docs/decisions.md).
//!
//! What it is: one UDP socket for every peer (str0m demultiplexes by ICE
//! username and address, `Rtc::accepts`), ICE-lite, RTP mode (packets in and
//! out as they are, no depacketising), and per subscriber per track the
//! forwarding core's [`DownTrack`] rewriting sequence numbers and timestamps,
//! as the node does. Signalling is WHIP/WHEP-like HTTP: `POST /whip/{room}`
//! with a publisher's SDP offer, `POST /whep/{room}` with a subscriber's
//! receive-only offer; each answers `201` with the SDP answer. A room has one
//! publisher; its audio and video go to every subscriber of the room, and a
//! subscriber's PLI or FIR goes to it as a PLI.
//!
//! What it is not: the node. No LiveKit signalling, no simulcast layer choice,
//! no data channels, no limits on what a client may send; it is never shipped.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use meridian_forward::downtrack::{Codec, DownTrack, Packet, Verdict};
use meridian_forward::keyframes::KeyframeRequests;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::format::Codec as Str0mCodec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Where the spike listens.
#[derive(Parser)]
struct Args {
    /// The signalling address (HTTP).
    #[arg(long, default_value = "127.0.0.1:7900")]
    http: SocketAddr,
    /// The one UDP address all peers' media use.
    #[arg(long, default_value = "127.0.0.1:7901")]
    udp: SocketAddr,
    /// Run str0m's send-side bandwidth estimation (TWCC) towards subscribers,
    /// probing up to 2 Mbit/s, and print each estimate as `bwe <peer> <kbit/s>`.
    #[arg(long)]
    bwe: bool,
}

/// A peer's part in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

/// A peer connection handed from signalling to the media loop.
struct Joined {
    rtc: Rtc,
    room: String,
    role: Role,
}

/// One of a subscriber's media sections and the down-track it carries.
struct Out {
    mid: Mid,
    kind: MediaKind,
    /// The payload type the subscriber accepted for the codec, once looked up.
    pt: Option<Pt>,
    down: DownTrack,
    /// The last extended sequence number written.
    ext_seq: Option<u64>,
}

struct Peer {
    rtc: Rtc,
    room: String,
    role: Role,
    /// Publisher: its video media section (where PLIs go), and the PLI throttle.
    video_mid: Option<Mid>,
    keyframes: KeyframeRequests,
    /// Subscriber: its media sections.
    outs: Vec<Out>,
    timeout: Instant,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    str0m::crypto::from_feature_flags().install_process_default();
    let socket = UdpSocket::bind(args.udp)?;
    let udp = socket.local_addr()?;
    let (tx, rx) = mpsc::channel::<Joined>();
    std::thread::spawn(move || media_loop(&socket, &rx));
    let bwe = args.bwe;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.http).await?;
        println!("spike up: http {} udp {udp}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| signal(req, udp, bwe, tx.clone()));
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    tracing::debug!(error = %e, "signalling connection ended");
                }
            });
        }
    })
}

/// Answers one WHIP or WHEP offer and hands its `Rtc` to the media loop.
async fn signal(
    req: Request<hyper::body::Incoming>,
    udp: SocketAddr,
    bwe: bool,
    tx: mpsc::Sender<Joined>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        Ok(r)
    };
    let path = req.uri().path().to_owned();
    let (role, room) = match path.split_once('/').map(|(_, p)| p.split_once('/')) {
        Some(Some(("whip", room))) => (Role::Publisher, room.to_owned()),
        Some(Some(("whep", room))) => (Role::Subscriber, room.to_owned()),
        _ => return reply(StatusCode::NOT_FOUND, "POST /whip/{room} or /whep/{room}\n".into()),
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let offer = match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|s| SdpOffer::from_sdp_string(s).map_err(|e| e.to_string()))
    {
        Ok(o) => o,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("not an SDP offer: {e}\n")),
    };
    let mut config = Rtc::builder().set_rtp_mode(true).set_ice_lite(true);
    if bwe && role == Role::Subscriber {
        config = config.enable_bwe(Some(Bitrate::kbps(300)));
    }
    let mut rtc = config.build(Instant::now());
    if bwe && role == Role::Subscriber {
        rtc.bwe().set_bitrate(Bitrate::kbps(0), Bitrate::mbps(2));
    }
    match Candidate::host(udp, "udp") {
        Ok(c) => {
            rtc.add_local_candidate(c);
        }
        Err(e) => return reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
    let answer = match rtc.sdp_api().accept_offer(offer) {
        Ok(a) => a.to_sdp_string(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("offer refused: {e}\n")),
    };
    if tx.send(Joined { rtc, room, role }).is_err() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "media loop ended\n".into());
    }
    reply(StatusCode::CREATED, answer)
}

/// Reads the socket, drives every peer, forwards media, until the process ends.
fn media_loop(socket: &UdpSocket, joined: &mpsc::Receiver<Joined>) {
    let mut peers: Vec<Peer> = Vec::new();
    let mut buf = vec![0u8; 2000];
    let Ok(local) = socket.local_addr() else { return };
    loop {
        while let Ok(j) = joined.try_recv() {
            let now = Instant::now();
            peers.push(Peer {
                rtc: j.rtc,
                room: j.room,
                role: j.role,
                video_mid: None,
                keyframes: KeyframeRequests::default(),
                outs: Vec::new(),
                timeout: now,
            });
        }
        peers.retain(|p| p.rtc.is_alive());
        let now = Instant::now();
        let next = peers.iter().map(|p| p.timeout).min().unwrap_or(now + Duration::from_millis(100));
        let wait = next.saturating_duration_since(now).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let _ = socket.set_read_timeout(Some(wait));
        let mut touched: Option<usize> = None;
        if let Ok((n, source)) = socket.recv_from(&mut buf) {
            if let Some(data) = buf.get(..n) {
                if let Ok(contents) = data.try_into() {
                    let input = Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source, destination: local, contents },
                    );
                    if let Some(i) = peers.iter().position(|p| p.rtc.accepts(&input)) {
                        if let Some(p) = peers.get_mut(i) {
                            if p.rtc.handle_input(input).is_err() {
                                p.rtc.disconnect();
                            }
                        }
                        touched = Some(i);
                    }
                }
            }
        }
        let now = Instant::now();
        for (i, p) in peers.iter_mut().enumerate() {
            if (Some(i) == touched || p.timeout <= now) && p.rtc.handle_input(Input::Timeout(now)).is_err() {
                p.rtc.disconnect();
            }
        }
        // Poll every peer that may have output, then act on the events.
        let mut events: Vec<(usize, Event)> = Vec::new();
        for (i, p) in peers.iter_mut().enumerate() {
            if Some(i) == touched || p.timeout <= now {
                p.timeout = drain(&mut p.rtc, socket, |e| events.push((i, e)));
            }
        }
        for (i, event) in events {
            on_event(&mut peers, i, event, socket);
        }
    }
}

/// Sends what `rtc` has to send and passes its events to `on_event`; returns
/// when it next wants time.
fn drain(rtc: &mut Rtc, socket: &UdpSocket, mut on_event: impl FnMut(Event)) -> Instant {
    // What is written waits in str0m's queue until its pacer runs: a deadline
    // already due is served here, not on the next turn of the loop (which
    // doubled the forwarding delay in the first sitting).
    let mut due_turns = 0u32;
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(t)) if t <= Instant::now() && due_turns < 16 => {
                due_turns += 1;
                if rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                    rtc.disconnect();
                }
            }
            Ok(Output::Timeout(t)) => return t,
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(e)) => on_event(e),
            Err(e) => {
                tracing::debug!(error = %e, "peer failed");
                rtc.disconnect();
                return Instant::now();
            }
        }
    }
}

fn on_event(peers: &mut [Peer], i: usize, event: Event, socket: &UdpSocket) {
    match event {
        Event::MediaAdded(m) => {
            let Some(p) = peers.get_mut(i) else { return };
            match p.role {
                Role::Publisher if m.kind == MediaKind::Video => p.video_mid = Some(m.mid),
                Role::Publisher => {}
                Role::Subscriber => {
                    let (codec, clock) =
                        if m.kind == MediaKind::Video { (Codec::Vp8, 90_000) } else { (Codec::Other, 48_000) };
                    p.outs.push(Out {
                        mid: m.mid,
                        kind: m.kind,
                        pt: None,
                        down: DownTrack::new(codec, clock, Some(0)),
                        ext_seq: None,
                    });
                }
            }
        }
        Event::RtpPacket(packet) => forward(peers, i, &packet, socket),
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            println!("bwe {i} {}", estimate.as_u64() / 1000);
        }
        Event::KeyframeRequest(_) => {
            let Some(room) = peers.get(i).map(|p| p.room.clone()) else { return };
            request_keyframe(peers, &room, socket);
        }
        _ => {}
    }
}

/// Asks the publisher of `room` for a keyframe (PLI), at most once per
/// [`meridian_forward::keyframes::INTERVAL`].
fn request_keyframe(peers: &mut [Peer], room: &str, socket: &UdpSocket) {
    let now = Instant::now();
    for p in peers.iter_mut().filter(|p| p.role == Role::Publisher && p.room == room) {
        let Some(mid) = p.video_mid else { continue };
        if !p.keyframes.request(now, 0) {
            continue;
        }
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        p.timeout = drain(&mut p.rtc, socket, |_| {});
    }
}

/// Sends a publisher's `packet` to every subscriber of its room.
fn forward(peers: &mut [Peer], from: usize, packet: &RtpPacket, socket: &UdpSocket) {
    let Some(publisher) = peers.get_mut(from) else { return };
    if publisher.role != Role::Publisher {
        return;
    }
    let ssrc = packet.header.ssrc;
    let Some(mid) = publisher.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else { return };
    let Some(kind) = publisher.rtc.media(mid).map(|m| m.kind()) else { return };
    let room = publisher.room.clone();
    let now = Instant::now();
    let mut awaiting_keyframe = false;
    for p in peers.iter_mut().filter(|p| p.role == Role::Subscriber && p.room == room) {
        let Peer { rtc, outs, timeout, .. } = p;
        for out in outs.iter_mut().filter(|o| o.kind == kind) {
            let input = Packet {
                layer: 0,
                seq: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                payload: &packet.payload,
            };
            let Verdict::Forward(rewrite) = out.down.on_packet(now, &input) else {
                awaiting_keyframe |= out.down.awaiting_keyframe().is_some();
                continue;
            };
            if out.pt.is_none() {
                out.pt = payload_type(rtc, out.mid, kind);
            }
            let Some(pt) = out.pt else { continue };
            let ext = meridian_forward::seq::extend(out.ext_seq, rewrite.seq);
            out.ext_seq = Some(ext);
            let payload: std::sync::Arc<[u8]> = match rewrite.payload_key() {
                None => std::sync::Arc::clone(&packet.payload),
                Some(_) => {
                    let mut copy = packet.payload.to_vec();
                    rewrite.apply_to_payload(&mut copy);
                    copy.into()
                }
            };
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(out.mid, None) {
                let write = RtpWrite::new(pt, SeqNo::from(ext), rewrite.timestamp, packet.timestamp, payload)
                    .marker(packet.header.marker)
                    .nackable(kind == MediaKind::Video);
                tx.write_rtp(write);
            }
        }
        *timeout = drain(rtc, socket, |_| {});
    }
    if awaiting_keyframe {
        request_keyframe(peers, &room, socket);
    }
}

/// The payload type the subscriber accepted in `mid` for VP8 (video) or Opus (audio).
fn payload_type(rtc: &Rtc, mid: Mid, kind: MediaKind) -> Option<Pt> {
    let want = if kind == MediaKind::Video { Str0mCodec::Vp8 } else { Str0mCodec::Opus };
    let media = rtc.media(mid)?;
    let params = rtc.codec_config().params();
    media.remote_pts().iter().copied().find(|pt| params.iter().any(|p| p.pt() == *pt && p.spec().codec == want))
}
