//! The load tester: participants that join rooms through a LiveKit-protocol URL
//! (Meridian's gateway, or a node) or Janus's VideoRoom ([`crate::janus`]),
//! publish real encoded media from files, and measure what they receive, after
//! LiveKit's `lk load-test`.
//!
//! Each participant speaks LiveKit's signal protocol (dual peer connection, as
//! livekit-client does) over `ws(s)://HOST/rtc` with `webrtc` peers. Publishers
//! send VP8 frames from an IVF file or H.264 frames from an Annex B stream, and
//! Opus packets from an Ogg file (made with `ffmpeg`, `bench/clips.sh`), looped,
//! packetised here so that the send time of every RTP sequence number is known.
//! Every participant subscribes to everything (the SFU's auto-subscribe) and
//! counts, per received track: packets, bytes, frames (marker bits), loss
//! (sequence gaps), interarrival jitter (RFC 3550 §6.4.1), and the forwarding
//! delay (send and receive time of the same packet on this process's clock).
//! With `sfu_pid`, the SFU process's CPU seconds and RSS are read from `/proc`
//! around the run. `LOADTEST_DEBUG=1` prints each received track's start, end
//! and counts.
//!
//! Loss counts sequence gaps, plus, for a track that got less than half of what
//! its publisher sent while measuring (a stalled track), everything it missed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use meridian_auth::{Grants, MintRequest, TokenAuthority};
use meridian_sfu::engine::{Engine, IceConfig};
use prost::Message as _;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp::packetizer::Packetizer;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_remote::TrackRemote;

/// The SFU under load and the protocol spoken to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// LiveKit's signal protocol (`/rtc`): Meridian's gateway or node, or a LiveKit server.
    #[default]
    LiveKit,
    /// Janus's VideoRoom plugin over its WebSocket API (`janus-protocol`); see [`crate::janus`].
    Janus,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The protocol of `url`.
    pub target: Target,
    /// `ws://HOST:PORT` of the gateway (or a node), or of Janus's WebSocket transport.
    pub url: String,
    /// API key and secret to mint join tokens with.
    pub api_key: String,
    /// API secret.
    pub api_secret: String,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribe-only participants per room.
    pub subscribers: usize,
    /// Rooms, each with `publishers` and `subscribers`.
    pub rooms: usize,
    /// How long to measure, after everyone has joined.
    pub duration: Duration,
    /// Video publishers send (looped): VP8 in IVF, or H.264 Annex B if the name
    /// ends in `.h264`; `None` for audio only.
    pub video: Option<PathBuf>,
    /// Ogg Opus file (20 ms pages) publishers send (looped); `None` for no audio.
    pub audio: Option<PathBuf>,
    /// The SFU process, for CPU seconds and RSS from `/proc`.
    pub sfu_pid: Option<u32>,
}

/// One run's figures. Delays and jitter in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Participants that joined.
    pub participants: usize,
    /// Tracks every participant should receive (everyone subscribes to every
    /// other publisher's tracks), summed.
    pub tracks_expected: usize,
    /// Tracks received, summed over participants.
    pub tracks_received: usize,
    /// Of those, tracks that got less than half of what their publisher sent
    /// while measuring; their missing packets count in `loss_percent`.
    pub tracks_stalled: usize,
    /// RTP packets received by all participants during the measurement.
    pub packets: u64,
    /// Of those, per second.
    pub packets_per_second: f64,
    /// Bytes of RTP payload and header received.
    pub bytes: u64,
    /// Video frames received (marker bits).
    pub frames: u64,
    /// Packets missing from the sequence, as a percentage of those expected.
    pub loss_percent: f64,
    /// Forwarding delay (publisher's send to subscriber's receive), median.
    pub delay_p50_ms: f64,
    /// Forwarding delay, 99th percentile.
    pub delay_p99_ms: f64,
    /// Interarrival jitter at the end, median over tracks.
    pub jitter_p50_ms: f64,
    /// Interarrival jitter at the end, 99th percentile over tracks.
    pub jitter_p99_ms: f64,
    /// SFU CPU seconds (user + system) during the measurement.
    pub sfu_cpu_seconds: Option<f64>,
    /// SFU resident memory at the end, MiB.
    pub sfu_rss_mib: Option<f64>,
    /// SFU CPU microseconds per received packet.
    pub sfu_cpu_us_per_packet: Option<f64>,
}

/// What a publisher sent on one track.
pub(crate) struct SendLog {
    /// Send times by sequence number, nanoseconds since [`Shared::epoch`] plus one
    /// (0: not sent).
    times: Vec<AtomicU64>,
    /// Sequence number by payload fingerprint (the latest packet with that payload).
    /// A receiver learns from it how the SFU shifted the sequence numbers: Janus
    /// rewrites them, Meridian keeps them.
    fingerprints: Mutex<HashMap<u64, u16>>,
    /// Packets sent while measuring.
    measured: AtomicU64,
}

impl SendLog {
    fn new() -> Self {
        Self {
            times: (0..65_536).map(|_| AtomicU64::new(0)).collect(),
            fingerprints: Mutex::default(),
            measured: AtomicU64::new(0),
        }
    }
}

fn fingerprint(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

/// State shared by every participant of a run.
pub(crate) struct Shared {
    epoch: Instant,
    /// Send logs by source key: the track SID (LiveKit) or `janus:FEED:KIND`.
    sent: RwLock<HashMap<String, Arc<SendLog>>>,
    received: Mutex<Vec<Arc<Mutex<TrackStats>>>>,
    measuring: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[derive(Default)]
pub(crate) struct TrackStats {
    clock_rate: u32,
    /// The send log's key (see [`Shared::sent`]).
    source: String,
    packets: u64,
    bytes: u64,
    frames: u64,
    base_seq: Option<i64>,
    highest_seq: i64,
    jitter: f64,
    last_transit: Option<f64>,
    delays_us: Vec<u32>,
}

impl TrackStats {
    fn on_packet(&mut self, seq: u16, rtp_ts: u32, marker: bool, len: usize, arrival: Duration, delay_us: Option<u32>) {
        // Extend the 16-bit sequence number.
        let ext = match self.base_seq {
            None => {
                self.base_seq = Some(i64::from(seq));
                self.highest_seq = i64::from(seq);
                i64::from(seq)
            }
            Some(_) => {
                let last = self.highest_seq;
                let mut ext = (last & !0xffff) | i64::from(seq);
                if ext < last - 0x8000 {
                    ext += 0x1_0000;
                } else if ext > last + 0x8000 {
                    ext -= 0x1_0000;
                }
                ext
            }
        };
        self.highest_seq = self.highest_seq.max(ext);
        self.packets += 1;
        self.bytes += len as u64;
        if marker && self.clock_rate == 90_000 {
            self.frames += 1;
        }
        let rate = f64::from(self.clock_rate.max(1));
        let transit = arrival.as_secs_f64() * rate - f64::from(rtp_ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // Timestamps wrap; a jump of more than a minute is a wrap, not jitter.
            if d < 60.0 * rate {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.last_transit = Some(transit);
        if let Some(d) = delay_us {
            if self.delays_us.len() < 200_000 {
                self.delays_us.push(d);
            }
        }
    }

    fn expected(&self) -> u64 {
        self.base_seq.map(|b| u64::try_from(self.highest_seq - b + 1).unwrap_or(0)).unwrap_or(0)
    }
}

/// The video codec of a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    /// VP8 from an IVF file.
    Vp8,
    /// H.264 from an Annex B byte stream (constrained baseline, one slice per frame).
    H264,
}

impl VideoCodec {
    /// MIME type, clock rate and SDP `fmtp` line to publish with.
    pub(crate) fn capability(self) -> RTCRtpCodecCapability {
        match self {
            Self::Vp8 => {
                RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90_000, ..Default::default() }
            }
            Self::H264 => RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90_000,
                sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                ..Default::default()
            },
        }
    }

    /// The codec's name in LiveKit's `SimulcastCodec.codec` and Janus's `videocodec`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Vp8 => "vp8",
            Self::H264 => "h264",
        }
    }
}

/// Media read from the clip files.
pub(crate) struct Clips {
    pub(crate) video: Vec<Bytes>,
    pub(crate) video_codec: VideoCodec,
    frame: Duration,
    pub(crate) audio: Vec<Bytes>,
}

/// Splits an H.264 Annex B stream into frames: each frame is its NAL units (SPS,
/// PPS, SEI...) up to and including its slice, with start codes, as the RTP
/// payloader takes them.
fn h264_frames(path: &std::path::Path) -> anyhow::Result<Vec<Bytes>> {
    use webrtc::media::io::h264_reader::{H264Reader, NalUnitType};
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = H264Reader::new(std::io::BufReader::new(file), 1 << 20);
    let (mut frames, mut frame) = (Vec::new(), bytes::BytesMut::new());
    while let Ok(nal) = reader.next_nal() {
        frame.extend_from_slice(&[0, 0, 0, 1]);
        frame.extend_from_slice(&nal.data);
        if matches!(nal.unit_type, NalUnitType::CodedSliceIdr | NalUnitType::CodedSliceNonIdr) {
            frames.push(frame.split().freeze());
        }
    }
    Ok(frames)
}

fn read_clips(cfg: &Config) -> anyhow::Result<Clips> {
    let mut clips =
        Clips { video: Vec::new(), video_codec: VideoCodec::Vp8, frame: Duration::from_millis(33), audio: Vec::new() };
    if let Some(path) = cfg.video.as_ref().filter(|p| p.extension().is_some_and(|e| e == "h264" || e == "264")) {
        // A raw byte stream has no timing: bench/clips.sh makes it at 30 fps.
        clips.video = h264_frames(path)?;
        clips.video_codec = VideoCodec::H264;
        clips.frame = Duration::from_secs_f64(1.0 / 30.0);
        if clips.video.is_empty() {
            bail!("{}: no H.264 frames", path.display());
        }
    } else if let Some(path) = &cfg.video {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let (mut reader, header) = webrtc::media::io::ivf_reader::IVFReader::new(std::io::BufReader::new(file))
            .with_context(|| format!("{} is not an IVF file", path.display()))?;
        if &header.four_cc != b"VP80" {
            bail!("{}: VP8 IVF expected, found {:?}", path.display(), header.four_cc);
        }
        if header.timebase_denominator > 0 {
            clips.frame =
                Duration::from_secs_f64(f64::from(header.timebase_numerator) / f64::from(header.timebase_denominator));
        }
        while let Ok((frame, _)) = reader.parse_next_frame() {
            clips.video.push(frame.freeze());
        }
        if clips.video.is_empty() {
            bail!("{}: no frames", path.display());
        }
    }
    if let Some(path) = &cfg.audio {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let (mut reader, _) = webrtc::media::io::ogg_reader::OggReader::new(std::io::BufReader::new(file), true)
            .with_context(|| format!("{} is not an Ogg file", path.display()))?;
        while let Ok((page, _)) = reader.parse_next_page() {
            // OpusHead and OpusTags pages carry no audio.
            if !page.starts_with(b"OpusHead") && !page.starts_with(b"OpusTags") {
                clips.audio.push(page.freeze());
            }
        }
        if clips.audio.is_empty() {
            bail!("{}: no Opus pages", path.display());
        }
    }
    Ok(clips)
}

/// Opus at 48 kHz, stereo as SDP writes it (RFC 7587).
pub(crate) fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability { mime_type: MIME_TYPE_OPUS.into(), clock_rate: 48_000, channels: 2, ..Default::default() }
}

/// Runs the load and returns the figures.
///
/// Errors: unreadable clips, a participant that cannot join within 20 s.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    let clips = Arc::new(read_clips(&cfg)?);
    // Janus never gathers on loopback interfaces (bench/loadtest.sh gives it a veth
    // address in the run's own namespace), so its peers gather where it does.
    let loopback = cfg.target == Target::LiveKit
        && (cfg.url.contains("://127.") || cfg.url.contains("://localhost") || cfg.url.contains("://[::1]"));
    let engine = Arc::new(Engine::client(&IceConfig { include_loopback: loopback, loopback_only: loopback })?);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent: RwLock::default(),
        received: Mutex::default(),
        measuring: Default::default(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let joined = match cfg.target {
        Target::LiveKit => {
            join_livekit(&cfg, &clips, &engine, &shared, &stop_rx).await?.into_iter().map(Peer::LiveKit).collect()
        }
        Target::Janus => crate::janus::join_rooms(&cfg, &clips, &engine, &shared, &stop_rx)
            .await?
            .into_iter()
            .map(Peer::Janus)
            .collect::<Vec<_>>(),
    };
    // Let negotiation settle and keyframes arrive before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tracks: Vec<_> = lock(&shared.received).clone();
    for t in tracks {
        let mut t = lock(&t);
        let (clock_rate, source) = (t.clock_rate, std::mem::take(&mut t.source));
        *t = TrackStats { clock_rate, source, ..TrackStats::default() };
    }
    shared.measuring.store(true, Ordering::Relaxed);
    let cpu_before = cfg.sfu_pid.and_then(cpu_seconds);
    let start = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    let elapsed = start.elapsed().as_secs_f64();
    shared.measuring.store(false, Ordering::Relaxed);
    let cpu_after = cfg.sfu_pid.and_then(cpu_seconds);
    let rss = cfg.sfu_pid.and_then(rss_mib);
    let _ = stop_tx.send(true);

    let tracks: Vec<_> = lock(&shared.received).clone();
    let (mut packets, mut bytes, mut frames, mut expected) = (0u64, 0u64, 0u64, 0u64);
    let mut delays: Vec<u32> = Vec::new();
    let mut jitters: Vec<f64> = Vec::new();
    let debug = std::env::var_os("LOADTEST_DEBUG").is_some();
    let mut stalled = 0;
    let sent = shared.sent.read().unwrap_or_else(|e| e.into_inner()).clone();
    for t in &tracks {
        let t = lock(t);
        // Sequence gaps cannot show a track that stopped (or never started): the
        // publisher's own count can. Under half of it is a stalled track, and what
        // it missed counts as lost.
        let sent = sent.get(&t.source).map(|l| l.measured.load(Ordering::Relaxed)).unwrap_or(0);
        let mut track_expected = t.expected();
        if t.packets * 2 < sent {
            stalled += 1;
            track_expected = track_expected.max(sent);
        }
        if debug {
            eprintln!(
                "track {}: clock {} packets {} expected {track_expected} sent {sent} frames {}",
                t.source, t.clock_rate, t.packets, t.frames
            );
        }
        packets += t.packets;
        bytes += t.bytes;
        frames += t.frames;
        expected += track_expected;
        delays.extend_from_slice(&t.delays_us);
        if t.packets > 1 {
            jitters.push(t.jitter / f64::from(t.clock_rate.max(1)) * 1000.0);
        }
    }
    delays.sort_unstable();
    jitters.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    let delays_ms: Vec<f64> = delays.iter().map(|d| f64::from(*d) / 1000.0).collect();
    let cpu = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
    for p in joined {
        match p {
            Peer::LiveKit(p) => p.close().await,
            Peer::Janus(p) => p.close().await,
        }
    }
    Ok(Report {
        participants: cfg.rooms * (cfg.publishers + cfg.subscribers),
        tracks_expected: {
            let per_publisher = usize::from(!clips.video.is_empty()) + usize::from(!clips.audio.is_empty());
            let p = cfg.publishers;
            cfg.rooms * per_publisher * (p * p.saturating_sub(1) + cfg.subscribers * p)
        },
        tracks_received: tracks.len(),
        tracks_stalled: stalled,
        packets,
        packets_per_second: packets as f64 / elapsed,
        bytes,
        frames,
        loss_percent: if expected > 0 {
            100.0 * expected.saturating_sub(packets) as f64 / expected as f64
        } else {
            0.0
        },
        delay_p50_ms: pct(&delays_ms, 0.5),
        delay_p99_ms: pct(&delays_ms, 0.99),
        jitter_p50_ms: pct(&jitters, 0.5),
        jitter_p99_ms: pct(&jitters, 0.99),
        sfu_cpu_seconds: cpu,
        sfu_rss_mib: rss,
        sfu_cpu_us_per_packet: cpu.filter(|_| packets > 0).map(|c| c * 1e6 / packets as f64),
    })
}

/// A joined participant of either target.
enum Peer {
    LiveKit(Participant),
    Janus(crate::janus::JanusParticipant),
}

/// Joins every room's publishers (who then publish) and subscribers through
/// LiveKit's signal protocol; the SFU subscribes everyone to everything.
async fn join_livekit(
    cfg: &Config,
    clips: &Arc<Clips>,
    engine: &Arc<Engine>,
    shared: &Arc<Shared>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Participant>> {
    let authority = TokenAuthority::new(&cfg.api_key, &cfg.api_secret);
    let mut joined = Vec::new();
    for room in 0..cfg.rooms {
        for i in 0..cfg.publishers + cfg.subscribers {
            let publisher = i < cfg.publishers;
            let identity = format!("{}-{room}-{i}", if publisher { "pub" } else { "sub" });
            let token = authority
                .mint(&MintRequest {
                    room: format!("load-{room}"),
                    identity: identity.clone(),
                    name: String::new(),
                    metadata: String::new(),
                    ttl: Duration::from_secs(3600),
                    grants: Grants::default(),
                })?
                .jwt;
            let url = format!("{}/rtc?access_token={token}&auto_subscribe=1&sdk=rust&protocol=16", cfg.url);
            let p = tokio::time::timeout(
                Duration::from_secs(20),
                Participant::join(&url, Arc::clone(engine), Arc::clone(shared), stop_rx.clone()),
            )
            .await
            .with_context(|| format!("{identity} did not join within 20 s"))??;
            if publisher {
                p.publish(clips, stop_rx.clone()).await.with_context(|| format!("{identity} publishing"))?;
            }
            joined.push(p);
        }
    }
    Ok(joined)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/proc/PID/stat` utime + stime, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

type Out = mpsc::UnboundedSender<proto::signal_request::Message>;

/// One participant: a signal connection and two peer connections.
struct Participant {
    out: Out,
    publisher: Arc<RTCPeerConnection>,
    subscriber: Arc<RTCPeerConnection>,
    published: Arc<Mutex<HashMap<String, String>>>,
    /// Answers to the publisher's offers fully applied (`set_remote_description`
    /// returned), counted by the signal loop.
    answers: tokio::sync::watch::Receiver<u32>,
    shared: Arc<Shared>,
}

impl Participant {
    async fn join(
        url: &str,
        engine: Arc<Engine>,
        shared: Arc<Shared>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.context("signal connection")?;
        let (mut sink, mut stream) = ws.split();
        let join = loop {
            let Some(frame) = stream.next().await else { bail!("signal closed before JoinResponse") };
            if let Frame::Binary(b) = frame? {
                if let Some(proto::signal_response::Message::Join(j)) = proto::SignalResponse::decode(b)?.message {
                    break j;
                }
            }
        };
        if join.participant.is_none() {
            bail!("JoinResponse without a participant");
        }
        let (out, mut out_rx) = mpsc::unbounded_channel::<proto::signal_request::Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let bytes = proto::SignalRequest { message: Some(m) }.encode_to_vec();
                if sink.send(Frame::Binary(bytes.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let publisher = engine.peer_connection().await?;
        let subscriber = engine.peer_connection().await?;
        for (pc, target) in
            [(&publisher, proto::SignalTarget::Publisher), (&subscriber, proto::SignalTarget::Subscriber)]
        {
            let out = out.clone();
            pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
                let out = out.clone();
                Box::pin(async move {
                    let Some(json) = c.and_then(|c| c.to_json().ok()).and_then(|i| serde_json::to_string(&i).ok())
                    else {
                        return;
                    };
                    let _ = out.send(proto::signal_request::Message::Trickle(proto::TrickleRequest {
                        candidate_init: json,
                        target: target as i32,
                        r#final: false,
                    }));
                })
            }));
        }
        let stats_shared = Arc::clone(&shared);
        let stop_reading = stop.clone();
        subscriber.on_track(Box::new(move |track: Arc<TrackRemote>, _, _| {
            let shared = Arc::clone(&stats_shared);
            let stop = stop_reading.clone();
            // webrtc-rs awaits this handler before it reports the next track, so
            // the reading runs on its own task.
            tokio::spawn(read_track(Arc::clone(&track), track.id(), shared, stop));
            Box::pin(async {})
        }));
        let published: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let (answered, answers) = tokio::sync::watch::channel(0);
        let p = Self {
            out: out.clone(),
            publisher: Arc::clone(&publisher),
            subscriber: Arc::clone(&subscriber),
            published: Arc::clone(&published),
            answers,
            shared,
        };
        tokio::spawn(signal_loop(stream, out, (publisher, subscriber), published, answered, stop));
        Ok(p)
    }

    /// Adds a video track (VP8 or H.264, as the clip is) and an Opus track (as
    /// the clips allow) one at a time, as livekit-client does: announce
    /// (AddTrackRequest, naming the video codec), offer, wait for the answer,
    /// then the next; each starts sending once answered.
    async fn publish(&self, clips: &Arc<Clips>, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut tracks = Vec::new();
        if !clips.video.is_empty() {
            tracks.push((clips.video_codec.capability(), proto::TrackType::Video, proto::TrackSource::Camera));
        }
        if !clips.audio.is_empty() {
            tracks.push((opus_capability(), proto::TrackType::Audio, proto::TrackSource::Microphone));
        }
        for (offer_id, (codec, kind, source)) in (1u32..).zip(tracks) {
            let cid = format!("{}-{}", kind.as_str_name().to_lowercase(), rand::random::<u32>());
            let video = kind == proto::TrackType::Video;
            let track = Arc::new(TrackLocalStaticRTP::new(codec, cid.clone(), "loadtest".into()));
            self.publisher.add_track(Arc::clone(&track) as _).await?;
            let _ = self.out.send(proto::signal_request::Message::AddTrack(proto::AddTrackRequest {
                cid: cid.clone(),
                name: cid.clone(),
                r#type: kind as i32,
                width: if video { 1280 } else { 0 },
                height: if video { 720 } else { 0 },
                source: source as i32,
                simulcast_codecs: if video {
                    vec![proto::SimulcastCodec {
                        codec: clips.video_codec.name().into(),
                        cid: cid.clone(),
                        ..Default::default()
                    }]
                } else {
                    Vec::new()
                },
                ..Default::default()
            }));
            let offer = self.publisher.create_offer(None).await?;
            self.publisher.set_local_description(offer.clone()).await?;
            let _ = self.out.send(proto::signal_request::Message::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.sdp,
                id: offer_id,
                ..Default::default()
            }));
            // Not the signaling state: webrtc-rs reports `stable` before it has
            // taken the answer's codecs, and an offer made in between has a
            // section with none ("RTPSender created with no codecs").
            let mut answers = self.answers.clone();
            tokio::time::timeout(Duration::from_secs(10), answers.wait_for(|n| *n >= offer_id))
                .await
                .context("no answer within 10 s")?
                .context("signal connection closed")?;
            let clips = Arc::clone(clips);
            let published = Arc::clone(&self.published);
            let shared = Arc::clone(&self.shared);
            let stop = stop.clone();
            tokio::spawn(async move { send_media(cid, kind, track, clips, (published, shared), stop).await });
        }
        Ok(())
    }

    async fn close(self) {
        let _ = self.out.send(proto::signal_request::Message::Leave(proto::LeaveRequest::default()));
        let _ = self.publisher.close().await;
        let _ = self.subscriber.close().await;
    }
}

async fn signal_loop(
    mut stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    >,
    out: Out,
    (publisher, subscriber): (Arc<RTCPeerConnection>, Arc<RTCPeerConnection>),
    published: Arc<Mutex<HashMap<String, String>>>,
    answered: tokio::sync::watch::Sender<u32>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Trickled candidates that came before the description, [publisher, subscriber].
    let mut pending: [Vec<RTCIceCandidateInit>; 2] = [Vec::new(), Vec::new()];
    loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(Ok(Frame::Binary(b))) = frame else { return };
        let Ok(proto::SignalResponse { message: Some(m) }) = proto::SignalResponse::decode(b) else { continue };
        use proto::signal_response::Message as In;
        let result: anyhow::Result<()> = async {
            match m {
                In::Answer(a) => {
                    publisher.set_remote_description(RTCSessionDescription::answer(a.sdp)?).await?;
                    answered.send_modify(|n| *n += 1);
                    for init in pending[0].drain(..) {
                        publisher.add_ice_candidate(init).await?;
                    }
                }
                In::Offer(o) => {
                    subscriber.set_remote_description(RTCSessionDescription::offer(o.sdp.clone())?).await?;
                    for init in pending[1].drain(..) {
                        subscriber.add_ice_candidate(init).await?;
                    }
                    let answer = subscriber.create_answer(None).await?;
                    subscriber.set_local_description(answer.clone()).await?;
                    await_receivers(&subscriber, &o.sdp).await;
                    let _ = out.send(proto::signal_request::Message::Answer(proto::SessionDescription {
                        r#type: "answer".into(),
                        sdp: answer.sdp,
                        id: o.id,
                        ..Default::default()
                    }));
                }
                In::Trickle(t) => {
                    let init: RTCIceCandidateInit = serde_json::from_str(&t.candidate_init)?;
                    let subscriber_side = t.target == proto::SignalTarget::Subscriber as i32;
                    let pc = if subscriber_side { &subscriber } else { &publisher };
                    if pc.remote_description().await.is_none() {
                        // Before the answer (or offer): keep it for then.
                        pending[usize::from(subscriber_side)].push(init);
                    } else {
                        pc.add_ice_candidate(init).await?;
                    }
                }
                In::TrackPublished(t) => {
                    if let Some(track) = t.track {
                        lock(&published).insert(t.cid, track.sid);
                    }
                }
                _ => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("signal: {e:#}");
        }
    }
}

/// Waits (at most 2 s) until the receivers for every SSRC the SFU's `offer`
/// declares have started, so the answer goes out only then: the SFU sends media
/// once it has the answer, and media that comes first leaves the track reading
/// nothing (`ErrBufferClosed`). Browsers have no such gap.
async fn await_receivers(pc: &RTCPeerConnection, offer: &str) {
    let declared: Vec<_> = meridian_sfu::sdp::media_sections(offer)
        .iter()
        .flat_map(meridian_sfu::sdp::MediaSection::declared_streams)
        .collect();
    let _ = meridian_sfu::engine::await_receivers(pc, &declared, Duration::from_secs(2)).await;
}

/// Sends the clip on `track` in real time, looping, and logs each packet's send time.
pub(crate) async fn send_media(
    cid: String,
    kind: proto::TrackType,
    track: Arc<TrackLocalStaticRTP>,
    clips: Arc<Clips>,
    (published, shared): (Arc<Mutex<HashMap<String, String>>>, Arc<Shared>),
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let video = kind == proto::TrackType::Video;
    let (frames, period, clock_rate, payloader): (
        &[Bytes],
        Duration,
        u32,
        Box<dyn webrtc::rtp::packetizer::Payloader + Send + Sync>,
    ) = if video && clips.video_codec == VideoCodec::H264 {
        (&clips.video, clips.frame, 90_000, Box::<webrtc::rtp::codecs::h264::H264Payloader>::default())
    } else if video {
        (&clips.video, clips.frame, 90_000, Box::<webrtc::rtp::codecs::vp8::Vp8Payloader>::default())
    } else {
        (&clips.audio, Duration::from_millis(20), 48_000, Box::<webrtc::rtp::codecs::opus::OpusPayloader>::default())
    };
    let mut packetizer = webrtc::rtp::packetizer::new_packetizer(
        1200,
        0, // the track rewrites payload type and SSRC per binding
        0,
        payloader,
        Box::new(webrtc::rtp::sequence::new_random_sequencer()),
        clock_rate,
    );
    let samples = u32::try_from((period.as_secs_f64() * f64::from(clock_rate)).round() as u64).unwrap_or(0);
    let log = Arc::new(SendLog::new());
    let mut registered = false;
    let mut tick = tokio::time::interval(period);
    for frame in frames.iter().cycle() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !registered {
            if let Some(sid) = lock(&published).get(&cid).cloned() {
                shared.sent.write().unwrap_or_else(|e| e.into_inner()).insert(sid, Arc::clone(&log));
                registered = true;
            }
        }
        let Ok(packets) = packetizer.packetize(frame, samples) else { continue };
        for pkt in packets {
            let now = shared.now_ns();
            log.times[usize::from(pkt.header.sequence_number)].store(now + 1, Ordering::Relaxed);
            lock(&log.fingerprints).insert(fingerprint(&pkt.payload), pkt.header.sequence_number);
            if shared.measuring.load(Ordering::Relaxed) {
                log.measured.fetch_add(1, Ordering::Relaxed);
            }
            if track.write_rtp(&pkt).await.is_err() {
                return;
            }
        }
    }
}

/// Reads one received track until the run stops. `source` names the send log of
/// the publisher's track (see [`Shared::sent`]).
pub(crate) async fn read_track(
    track: Arc<TrackRemote>,
    source: String,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stats = Arc::new(Mutex::new(TrackStats {
        clock_rate: track.codec().capability.clock_rate,
        source: source.clone(),
        ..Default::default()
    }));
    lock(&shared.received).push(Arc::clone(&stats));
    let debug = std::env::var_os("LOADTEST_DEBUG").is_some();
    if debug {
        eprintln!("track {source}: on_track ssrc {} kind {}", track.ssrc(), track.kind());
    }
    let mut log: Option<Arc<SendLog>> = None;
    let mut offset = SeqOffset::default();
    loop {
        let read = tokio::select! {
            r = track.read_rtp() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((pkt, _)) = read else {
            if debug {
                eprintln!("track {source}: read ended: {:?}", read.err());
            }
            return;
        };
        let now = shared.now_ns();
        if log.is_none() {
            log = shared.sent.read().unwrap_or_else(|e| e.into_inner()).get(&source).cloned();
        }
        let seq = pkt.header.sequence_number;
        if let Some(l) = log.as_ref().filter(|_| offset.learned.is_none()) {
            let sent = lock(&l.fingerprints).get(&fingerprint(&pkt.payload)).copied();
            offset.observe(sent, seq);
            if debug && offset.learned.is_some() {
                eprintln!("track {source}: sequence offset {:?}", offset.learned);
            }
        }
        if !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        let delay_us = log.as_ref().zip(offset.learned).and_then(|(l, off)| {
            let sent = l.times[usize::from(seq.wrapping_add(off))].load(Ordering::Relaxed);
            (sent > 0 && now + 1 >= sent).then(|| u32::try_from((now + 1 - sent) / 1000).unwrap_or(u32::MAX))
        });
        let len = pkt.payload.len() + 12;
        lock(&stats).on_packet(seq, pkt.header.timestamp, pkt.header.marker, len, Duration::from_nanos(now), delay_us);
    }
}

/// Learns the constant shift between a publisher's sequence numbers and those
/// received: the sent sequence number of a payload (by fingerprint) minus the
/// received one, taken once three packets in a row agree (a repeated payload,
/// such as steady audio, gives disagreeing guesses and is skipped).
#[derive(Default)]
struct SeqOffset {
    guess: Option<u16>,
    agreeing: u8,
    learned: Option<u16>,
}

impl SeqOffset {
    fn observe(&mut self, sent: Option<u16>, received: u16) {
        let Some(sent) = sent else { return };
        let guess = sent.wrapping_sub(received);
        if self.guess == Some(guess) {
            self.agreeing += 1;
            if self.agreeing >= 3 {
                self.learned = Some(guess);
            }
        } else {
            self.guess = Some(guess);
            self.agreeing = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_frames_are_counted_across_a_sequence_wrap() {
        let mut t = TrackStats { clock_rate: 90_000, ..Default::default() };
        let mut at = Duration::ZERO;
        for (i, seq) in [65_533u16, 65_534, 65_535, 1, 2].into_iter().enumerate() {
            at += Duration::from_millis(33);
            t.on_packet(seq, i as u32 * 2970, true, 100, at, Some(1000)); // 33 ms at 90 kHz
        }
        assert_eq!((t.packets, t.expected(), t.frames), (5, 6, 5), "0 is missing; five frames");
        assert!(t.jitter < 1.0, "evenly spaced packets have no jitter: {}", t.jitter);
    }

    #[test]
    fn sequence_offset_is_learned_from_three_agreeing_packets() {
        let mut o = SeqOffset::default();
        // Janus-style rewrite: received = sent - 999. A repeated payload first
        // points at the wrong packet, then three true matches agree.
        o.observe(Some(5000), 4001);
        o.observe(Some(5000), 4002);
        o.observe(None, 4003);
        assert_eq!(o.learned, None, "disagreeing guesses teach nothing");
        for received in [4004u16, 4005, 4006] {
            o.observe(Some(received.wrapping_add(999)), received);
        }
        assert_eq!(o.learned, Some(999));
        let mut wrap = SeqOffset::default();
        for received in [10u16, 11, 12] {
            wrap.observe(Some(received.wrapping_sub(20)), received);
        }
        assert_eq!(wrap.learned.map(|o| 12u16.wrapping_add(o)), Some(65_528), "offsets wrap like sequence numbers");
    }
}
