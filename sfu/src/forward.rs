//! RTP forwarding: each subscriber's down-track of a published track gets the
//! simulcast layer it asks for, through the sans-IO core of `meridian-forward`.
//!
//! A [`PublishedTrack`] gets each packet of its layers from the publisher's
//! str0m PC ([`PublishedTrack::receive`]; rids `q`, `h`, `f` are layers 0, 1,
//! 2; a track without simulcast is layer 0) and asks every [`Sink`] (a
//! down-track's forwarding half) what to send: the core's `DownTrack` joins a layer at a keyframe and
//! rewrites sequence numbers, timestamps and VP8 picture ids so the
//! subscriber's stream stays continuous. Each sink writes to its own media
//! section of the subscriber's str0m PC ([`crate::subscriber`]), which gives
//! it its SSRC, the payload type the subscriber accepted and the header
//! extensions negotiated there, and answers NACKs from its send buffer. One
//! packet's writes to all its down-tracks go to the driver as one batch
//! ([`RtpWrites`]), sharing the payload.
//!
//! Which layer: the subscriber's `UpdateTrackSettings` (tile size with
//! LiveKit's 0.9 tolerance, or quality; the top layer until it says), or, when
//! that layer is not arriving (the publisher paused it), the nearest one that
//! is ([`meridian_forward::layers`]). `disabled` pauses the sink.
//!
//! Congestion control: each subscriber's bandwidth estimate (str0m's TWCC
//! estimate from its feedback) is shared among its down-tracks by
//! [`allocate`]: audio first, then screen shares, then cameras, each layer
//! charged at its measured bitrate ([`meridian_forward::bitrate`]); a sink
//! sends no higher than its [`Allowance`], and a video that cannot have even
//! its lowest layer is paused (`StreamStateUpdate` `PAUSED`) until it can.
//!
//! Dynacast: the publisher of a video track is told which layers anyone wants
//! (`SubscribedQualityUpdate`; upgrades at once, downgrades after 5 s, all off
//! 10 s after publishing with nobody watching: [`meridian_forward::dynacast`]),
//! so a client with `dynacast: true` stops encoding the others.
//!
//! A subscriber that subscribes to a track again gets a sink under another
//! track id (`TR_…~n`, [`PublishedTrack::new_sink`]): the transceiver its
//! earlier down-track left keeps that one's `a=msid`.
//!
//! Keyframes: a sink waiting to join a layer, and a subscriber's PLI or FIR,
//! make a PLI (RFC 4585 §6.3.1) to the publisher for that layer, at most once
//! per layer per [`meridian_forward::keyframes::INTERVAL`].
//!
//! Reception reports: str0m's egress stats of a down-track (from the
//! subscriber's receiver reports) go into its connection quality and the
//! node's `meridian_sfu_subscriber_*` histograms ([`on_egress_stats`]).

pub mod reception;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use livekit_protocol::TrackInfo;
use meridian_forward::allocation::{Demand, Priority};
use meridian_forward::bitrate::LayerBitrates;
use meridian_forward::downtrack::{Codec, DownTrack, Packet, Verdict};
use meridian_forward::dynacast::Dynacast;
use meridian_forward::keyframes::KeyframeRequests;
use meridian_forward::layers::{self, LayerSize};
use meridian_forward::quality::{self, Quality, Scorer, SequenceLoss, Window};
use meridian_forward::speakers::{AudioLevel, AudioLevelConfig};
use meridian_ids::{ParticipantSid, TrackSid};
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo};

use crate::metrics::SubscriberReports;
use crate::publisher::Negotiated;
use crate::rtc::{PeerHandle, RtpWrites};
use crate::subscription::Preference;
use reception::Reception;

/// Simulcast layers a track may have (LiveKit's `q`, `h`, `f`).
pub const MAX_LAYERS: usize = 3;
/// How often the packet path looks at dynacast's timers.
pub const DYNACAST_POLL: Duration = Duration::from_millis(100);
/// Times one subscriber may subscribe to one track again after unsubscribing
/// (see [`PublishedTrack::new_sink`]).
pub const MAX_RESUBSCRIPTIONS: usize = 16;

/// The layer index of simulcast rid `rid`: `q` (and no rid) 0, `h` 1, `f` 2.
pub fn layer_of(rid: &str) -> u8 {
    match rid {
        "h" => 1,
        "f" => 2,
        _ => 0,
    }
}

/// The layers as received: each one's simulcast RID once a packet of it has
/// come (what a keyframe request names), and their bitrates (which also say
/// whether each is arriving).
struct LayersIn {
    rids: [Option<Option<Rid>>; MAX_LAYERS],
    bitrates: LayerBitrates<MAX_LAYERS>,
}

/// What congestion control lets a down-track send (LiveKit's stream
/// allocator's verdict): unlimited until the subscriber's first estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// No estimate yet: what the subscriber asks for.
    Unlimited,
    /// At most this layer.
    UpTo(u8),
    /// Nothing: the estimate does not carry even the lowest layer
    /// (LiveKit's `StreamState` `PAUSED`).
    Paused,
}

/// A down-track's forwarding half: what one subscriber gets of the track.
pub struct Sink {
    /// The `a=msid` track id of its media section (`TR_…`, `TR_…~n`).
    track_id: String,
    /// Where it writes, once the subscriber's answer has bound its media section.
    output: Mutex<Option<SinkOutput>>,
    state: Mutex<SinkState>,
    quality: Mutex<SinkQuality>,
}

/// What a VP8 payload rewrite changes ([`meridian_forward::downtrack::Rewrite::payload_key`]).
type PayloadKey = (u16, u8, u8);

/// A packet's RTP header fields as a down-track sends them.
struct Rewritten {
    seq: u16,
    timestamp: u32,
    marker: bool,
}

/// A bound down-track's media section on the subscriber PC.
struct SinkOutput {
    peer: PeerHandle,
    mid: Mid,
    pt: Pt,
    /// Whether the subscriber may NACK it (video; str0m keeps those packets to resend).
    nackable: bool,
    /// The last extended sequence number written (SRTP counts rollovers).
    last_seq: Option<u64>,
}

/// What the current connection quality window saw of a down-track.
struct SinkQuality {
    sent: u32,
    loss_sum: f64,
    reports: u32,
    rtt: Option<Duration>,
    jitter: Option<Duration>,
    scorer: Scorer,
}

struct SinkState {
    core: DownTrack,
    /// The layer the subscriber's settings ask for when every layer arrives
    /// (`PublishedTrack::wanted_layer`); `None` while it disabled the track.
    wanted: Option<u8>,
    allowance: Allowance,
}

impl SinkState {
    /// The layer to send at, given which layers are `arriving`: the wanted
    /// one or the nearest arriving ([`layers::available`]), no higher than
    /// the allowance.
    fn target(&self, arriving: &[bool]) -> Option<u8> {
        let wanted = match self.allowance {
            Allowance::Unlimited => self.wanted?,
            Allowance::UpTo(l) => self.wanted?.min(l),
            Allowance::Paused => return None,
        };
        arriving_layer(wanted, arriving)
    }
}

/// Layer `wanted`, or the nearest of those `arriving` ([`layers::available`]).
fn arriving_layer(wanted: u8, arriving: &[bool]) -> Option<u8> {
    layers::available(usize::from(wanted), arriving).and_then(|l| u8::try_from(l).ok())
}

impl Sink {
    /// The `a=msid` track id its media section carries.
    pub fn track_id(&self) -> &str {
        &self.track_id
    }

    /// Starts writing to media section `mid` of the subscriber PC `peer`, with
    /// payload type `pt` (what the subscriber's answer accepted for the codec).
    pub fn bind(&self, peer: PeerHandle, mid: Mid, pt: Pt, kind: MediaKind) {
        let nackable = kind == MediaKind::Video;
        *lock(&self.output) = Some(SinkOutput { peer, mid, pt, nackable, last_seq: None });
    }

    /// The media section it writes to, once bound.
    pub fn mid(&self) -> Option<Mid> {
        lock(&self.output).as_ref().map(|o| o.mid)
    }

    /// Adds one rewritten packet to `batch`; returns its payload bytes (0
    /// before the down-track is bound).
    fn write(&self, batch: &mut RtpWrites, rewrite: Rewritten, payload: &Arc<[u8]>, now: Instant) -> usize {
        let mut output = lock(&self.output);
        let Some(o) = output.as_mut() else { return 0 };
        let ext = meridian_forward::seq::extend(o.last_seq, rewrite.seq);
        o.last_seq = Some(o.last_seq.map_or(ext, |l| l.max(ext)));
        let write = RtpWrite::new(o.pt, SeqNo::from(ext), rewrite.timestamp, now, Arc::clone(payload))
            .marker(rewrite.marker)
            .nackable(o.nackable);
        match batch.push(&o.peer, o.mid, write) {
            Ok(()) => payload.len(),
            Err(e) => {
                tracing::debug!(error = %e, "RTP not written to a down-track");
                0
            }
        }
    }

    /// The layer being sent now.
    pub fn current_layer(&self) -> Option<u8> {
        lock(&self.state).core.current()
    }

    /// Applies congestion control's verdict; returns the one it replaced.
    pub fn set_allowance(&self, allowance: Allowance) -> Allowance {
        std::mem::replace(&mut lock(&self.state).allowance, allowance)
    }

    /// A subscriber's report block about this down-track.
    fn observe(&self, r: &Reception) {
        let mut q = lock(&self.quality);
        q.loss_sum += r.loss_ratio;
        q.reports = q.reports.saturating_add(1);
        q.rtt = q.rtt.max(r.round_trip);
        q.jitter = q.jitter.max(r.jitter);
    }

    /// Closes this down-track's connection quality window. A paused
    /// down-track (disabled, nothing arriving to send, or its track `muted`)
    /// keeps its score.
    pub fn close_quality_window(&self, muted: bool) -> Quality {
        let paused = muted || lock(&self.state).core.target().is_none();
        let mut q = lock(&self.quality);
        let loss = if q.reports == 0 { 0.0 } else { q.loss_sum / f64::from(q.reports) };
        let window = Window { packets: q.sent, loss, rtt: q.rtt, jitter: q.jitter, reported: q.reports > 0 };
        let score = q.scorer.update(&window, paused);
        (q.sent, q.loss_sum, q.reports, q.rtt, q.jitter) = (0, 0.0, 0, None, None);
        Quality::of(score)
    }
}

/// A track a participant publishes, as forwarded by this node.
pub struct PublishedTrack {
    /// Track sid (`TR_…`), as `info.sid` announced it.
    pub sid: TrackSid,
    /// Publishing participant's sid (`PA_…`).
    pub publisher_sid: ParticipantSid,
    info: Mutex<TrackInfo>,
    /// The negotiated codec's MIME type, as LiveKit writes it (`video/VP8`).
    mime_type: String,
    kind: MediaKind,
    codec: Codec,
    stream: String,
    /// The announced layers' sizes, lowest first, with their layer index.
    layer_sizes: Vec<(u8, LayerSize)>,
    layers: Mutex<LayersIn>,
    /// The down-tracks' sinks; replaced, never edited, so the packet path
    /// takes the list with one reference count.
    sinks: Mutex<Arc<Vec<Arc<Sink>>>>,
    /// Whether a subscriber has bound a down-track of it yet (LiveKit's
    /// `TrackSubscribed` goes to the publisher once per track).
    ever_subscribed: AtomicBool,
    /// The codec's RTP clock rate, in Hz: the unit of reported jitter.
    clock_rate: u32,
    /// The publisher PC and the media section the track arrives on there
    /// (what keyframe requests go to).
    publisher_pc: PeerHandle,
    mid: Mid,
    /// Who hears dynacast's `SubscribedQualityUpdate`s.
    publisher: Weak<crate::participant::Participant>,
    /// Video tracks only: dynacast's state, and when the packet path last polled it.
    dynacast: Option<Mutex<(Dynacast, Instant)>>,
    keyframes: Mutex<KeyframeRequests>,
    /// Microphone tracks: the level their RFC 6464 extension gives.
    audio_level: Option<Mutex<AudioLevel>>,
    /// The join's `sfu.first_rtp_forwarded` milestone, until it is reached.
    first_rtp: Mutex<Option<tracing::Span>>,
    /// Upstream connection quality: losses per layer in the current window, and the score.
    upstream: Mutex<([SequenceLoss; MAX_LAYERS], Scorer)>,
    reports: SubscriberReports,
}

impl PublishedTrack {
    /// A published track arriving on media section `mid` of the publisher PC
    /// `publisher_pc`, as `negotiated` there, and
    /// described by `info` (whose `mime_type` and `mid` are filled in). Local
    /// tracks get stream id `PA_…|TR_…` and track id `TR_…`, which is how
    /// livekit-client maps subscribed media to the publication. Subscribers'
    /// reports about its down-tracks go to `reports`. A microphone track (Opus)
    /// takes part in active speaker detection, by the RFC 6464 levels its
    /// packets carry. `publisher` hears dynacast's updates; `first_rtp` closes
    /// at the first packet forwarded.
    // `TrackInfo.layers` is deprecated in the proto; it is what clients announce.
    #[allow(deprecated)]
    pub fn new(
        mut info: TrackInfo,
        (mid, negotiated): (Mid, &Negotiated),
        (publisher_pc, publisher, publisher_sid): (PeerHandle, Weak<crate::participant::Participant>, &ParticipantSid),
        reports: SubscriberReports,
        first_rtp: Option<tracing::Span>,
    ) -> Self {
        let now = Instant::now();
        let mime = negotiated.mime_type.to_ascii_lowercase();
        let dynacast = (negotiated.kind == MediaKind::Video).then(|| Mutex::new((Dynacast::new(now), now)));
        let clock_rate = negotiated.clock_rate;
        let codec = match mime.as_str() {
            "video/vp8" => Codec::Vp8,
            "video/h264" => Codec::H264,
            _ => Codec::Other,
        };
        info.mime_type = negotiated.mime_type.clone();
        info.mid = mid.to_string();
        let mut layer_sizes: Vec<(u8, LayerSize)> = info
            .layers
            .iter()
            .filter_map(|l| {
                let quality = u8::try_from(l.quality).ok().filter(|q| usize::from(*q) < MAX_LAYERS)?;
                Some((quality, LayerSize { width: l.width, height: l.height }))
            })
            .collect();
        layer_sizes.sort_by_key(|(q, _)| *q);
        layer_sizes.dedup_by_key(|(q, _)| *q);
        let stream = format!("{publisher_sid}|{}", info.sid);
        let microphone = info.source == livekit_protocol::TrackSource::Microphone as i32;
        let audio_level = (microphone && negotiated.kind == MediaKind::Audio)
            .then(|| Mutex::new(AudioLevel::new(AudioLevelConfig::default(), clock_rate)));
        Self {
            sid: TrackSid::new(info.sid.as_str()),
            publisher_sid: publisher_sid.clone(),
            info: Mutex::new(info),
            mime_type: negotiated.mime_type.clone(),
            kind: negotiated.kind,
            codec,
            stream,
            layer_sizes,
            layers: Mutex::new(LayersIn { rids: [None; MAX_LAYERS], bitrates: LayerBitrates::new(now) }),
            sinks: Mutex::new(Arc::new(Vec::new())),
            ever_subscribed: AtomicBool::new(false),
            clock_rate,
            publisher_pc,
            mid,
            publisher,
            dynacast,
            keyframes: Mutex::new(KeyframeRequests::default()),
            audio_level,
            first_rtp: Mutex::new(first_rtp),
            upstream: Mutex::new((Default::default(), Scorer::new(quality::loss_weight(codec == Codec::Other)))),
            reports,
        }
    }

    /// The `a=msid` stream id of its down-tracks: `PA_…|TR_…`.
    pub fn stream_id(&self) -> &str {
        &self.stream
    }

    /// The negotiated codec's MIME type (`video/VP8`, `audio/opus`, …).
    pub fn mime_type(&self) -> &str {
        &self.mime_type
    }

    /// Audio or video.
    pub fn media_kind(&self) -> MediaKind {
        self.kind
    }

    /// The LiveKit `TrackInfo` of this track.
    pub fn info(&self) -> TrackInfo {
        lock(&self.info).clone()
    }

    /// The SDP media id (`a=mid`) the track arrives on in the publisher PC, or
    /// empty when unknown.
    pub fn mid(&self) -> String {
        lock(&self.info).mid.clone()
    }

    /// The media section it arrives on in the publisher PC.
    pub fn publisher_mid(&self) -> Mid {
        self.mid
    }

    /// Closes the upstream connection quality window: the loss of the layer
    /// that brought the most packets (sequence gaps). A muted or paused track
    /// keeps its score.
    pub fn close_quality_window(&self) -> Quality {
        let muted = lock(&self.info).muted;
        let mut up = lock(&self.upstream);
        let (packets, loss) = up.0.iter_mut().map(SequenceLoss::close).max_by_key(|(n, _)| *n).unwrap_or((0, 0.0));
        let window = Window { packets, loss, rtt: None, jitter: None, reported: true };
        if packets > 0 {
            self.reports.publisher_loss_ratio.observe(loss);
        }
        // Nothing arriving is a pause (dynacast turned every layer off, or the
        // publisher stopped sending), not a bad link: a dead one ends the PC.
        Quality::of(up.1.update(&window, muted || packets == 0))
    }

    /// A microphone track's smoothed audio level at `now` and whether it is a
    /// speaker; `None` for other tracks.
    pub fn audio_level(&self, now: Instant) -> Option<(f64, bool)> {
        self.audio_level.as_ref().map(|level| lock(level).level(now))
    }

    /// Records a mute change; returns whether it changed anything.
    pub fn set_muted(&self, muted: bool) -> bool {
        let mut info = lock(&self.info);
        let changed = info.muted != muted;
        info.muted = muted;
        changed
    }

    /// A new down-track's sink, wanting `preference` (paused when `disabled`).
    /// `generation` counts this subscriber's down-tracks of this track: 0 gets
    /// track id `TR_…`, a later one `TR_…~n`, since the transceiver an earlier
    /// down-track left keeps that one's `a=msid` (RFC 8829 §5.2.2) and
    /// libwebrtc refuses an offer with the same msid twice; clients take the
    /// track sid from the stream id (`PA_…|TR_…`), which stays. `None` past
    /// [`MAX_RESUBSCRIPTIONS`].
    pub fn new_sink(&self, generation: usize, preference: Preference, disabled: bool) -> Option<Arc<Sink>> {
        if generation > MAX_RESUBSCRIPTIONS {
            return None;
        }
        let track_id = if generation == 0 { self.sid.to_string() } else { format!("{}~{generation}", self.sid) };
        let sink = Arc::new(Sink {
            track_id,
            output: Mutex::new(None),
            state: Mutex::new(SinkState {
                core: DownTrack::new(self.codec, self.clock_rate, None),
                wanted: (!disabled).then(|| self.wanted_layer(preference)),
                allowance: Allowance::Unlimited,
            }),
            quality: Mutex::new(SinkQuality {
                sent: 0,
                loss_sum: 0.0,
                reports: 0,
                rtt: None,
                jitter: None,
                scorer: Scorer::new(quality::loss_weight(self.codec == Codec::Other)),
            }),
        });
        {
            let mut sinks = lock(&self.sinks);
            let mut next = Vec::clone(&sinks);
            next.push(Arc::clone(&sink));
            *sinks = Arc::new(next);
        }
        self.poll_dynacast(Instant::now());
        Some(sink)
    }

    /// Stops forwarding to `sink`.
    pub fn remove_sink(&self, sink: &Arc<Sink>) {
        {
            let mut sinks = lock(&self.sinks);
            let next: Vec<Arc<Sink>> = sinks.iter().filter(|s| !Arc::ptr_eq(s, sink)).cloned().collect();
            *sinks = Arc::new(next);
        }
        self.poll_dynacast(Instant::now());
    }

    /// Applies a subscriber's `UpdateTrackSettings` to its `sink`: the layer
    /// `preference` asks for, and whether it `disabled` the track (nothing is
    /// sent then; enabled again, the down-track resumes at a keyframe).
    pub fn set_sink_settings(&self, sink: &Sink, preference: Preference, disabled: bool) {
        lock(&sink.state).wanted = (!disabled).then(|| self.wanted_layer(preference));
        self.poll_dynacast(Instant::now());
    }

    /// Brings dynacast up to date at `now` (a sink came, went or changed its
    /// settings, or time passed): the highest layer any sink wants, and a
    /// `SubscribedQualityUpdate` to the publisher when one is due
    /// ([`meridian_forward::dynacast`]).
    // `subscribed_qualities` is deprecated in the proto; LiveKit still fills it
    // for older clients, and so do we.
    #[allow(deprecated)]
    pub fn poll_dynacast(&self, now: Instant) {
        let Some(dynacast) = &self.dynacast else { return };
        let sinks = Arc::clone(&lock(&self.sinks));
        let wanted = sinks.iter().filter_map(|sink| lock(&sink.state).wanted).max();
        let update = {
            let mut d = lock(dynacast);
            d.1 = now;
            d.0.update(now, wanted)
        };
        let Some(max) = update else { return };
        let Some(publisher) = self.publisher.upgrade() else { return };
        let qualities: Vec<livekit_protocol::SubscribedQuality> = (0..MAX_LAYERS as i32)
            .map(|q| livekit_protocol::SubscribedQuality {
                quality: q,
                enabled: max.is_some_and(|m| q <= i32::from(m)),
            })
            .collect();
        // LiveKit names the codec as livekit-client compares it: `vp8`, not `video/VP8`.
        let codec = self.mime_type.to_ascii_lowercase();
        let codec = codec.strip_prefix("video/").unwrap_or(&codec).to_owned();
        tracing::debug!(track = %self.sid, ?max, "dynacast: publisher told which layers are watched");
        publisher.send(livekit_protocol::signal_response::Message::SubscribedQualityUpdate(
            livekit_protocol::SubscribedQualityUpdate {
                track_sid: self.sid.to_string(),
                subscribed_qualities: qualities.clone(),
                subscribed_codecs: vec![livekit_protocol::SubscribedCodec { codec, qualities }],
            },
        ));
    }

    /// What `sink`'s down-track asks of its subscriber's bandwidth at `now`
    /// ([`meridian_forward::allocation`]): the layers' measured bitrates, the
    /// layer the subscriber's settings lead to among those arriving, and the
    /// layer congestion control last allowed it.
    pub fn demand(&self, sink: &Sink, now: Instant) -> Demand {
        let rates = lock(&self.layers).bitrates.rates(now);
        let arriving = rates.map(|r| r.is_some());
        let audio = self.media_kind() == MediaKind::Audio;
        let screen = lock(&self.info).source == livekit_protocol::TrackSource::ScreenShare as i32;
        let priority = match (audio, screen) {
            (true, _) => Priority::Audio,
            (false, true) => Priority::Screen,
            (false, false) => Priority::Camera,
        };
        let s = lock(&sink.state);
        let wanted = s.wanted.and_then(|w| arriving_layer(w, &arriving));
        let current = match s.allowance {
            Allowance::UpTo(l) => Some(l),
            Allowance::Paused => None,
            Allowance::Unlimited => s.core.current(),
        };
        let layers = if audio { rates[..1].to_vec() } else { rates.to_vec() };
        Demand { priority, layers, wanted, current, paused: s.allowance == Allowance::Paused }
    }

    /// Records that a subscriber has bound a down-track of this track; true the
    /// first time only.
    pub fn first_subscription(&self) -> bool {
        !self.ever_subscribed.swap(true, Ordering::Relaxed)
    }

    /// The layer a sink wanting `preference` should get when every layer arrives.
    /// Without announced sizes (a client that sent no `layers`), the top is the
    /// highest layer there may be, and the caller falls back to what arrives.
    fn wanted_layer(&self, preference: Preference) -> u8 {
        let Some(&(top, _)) = self.layer_sizes.last() else {
            return match preference {
                Preference::Quality(q) => q,
                Preference::Top | Preference::Size(..) => (MAX_LAYERS - 1) as u8,
            };
        };
        let position = match preference {
            Preference::Top => return top,
            Preference::Quality(q) => {
                return self.layer_sizes.iter().rev().find(|(l, _)| *l <= q).map_or(0, |(l, _)| *l);
            }
            Preference::Size(w, h) => {
                let sizes: Vec<LayerSize> = self.layer_sizes.iter().map(|(_, s)| *s).collect();
                layers::for_dimensions(&sizes, w, h)
            }
        };
        self.layer_sizes.get(position).map_or(top, |(l, _)| *l)
    }

    /// Asks the publisher for a keyframe of `layer` (PLI), unless one was asked
    /// for within the throttle interval of `now` or no packet of it has come.
    pub fn request_keyframe(&self, layer: u8, now: Instant) {
        let Some(rid) = lock(&self.layers).rids.get(usize::from(layer)).copied().flatten() else { return };
        if !lock(&self.keyframes).request(now, layer) {
            return;
        }
        crate::publisher::request_keyframe(&self.publisher_pc, self.mid, rid);
    }

    /// Forwards `packet`, which arrived on the layer with simulcast RID `rid`
    /// (`None` without simulcast) at `now`, to the down-tracks that want it;
    /// returns the payload bytes handed to the driver. The first packet
    /// forwarded reaches the join's `sfu.first_rtp_forwarded` milestone.
    pub fn receive(&self, rid: Option<Rid>, packet: &RtpPacket, now: Instant) -> usize {
        let layer = layer_of(rid.as_deref().unwrap_or(""));
        if let Some(seen) = lock(&self.layers).rids.get_mut(usize::from(layer)) {
            if seen.is_none() {
                tracing::info!(track = %self.sid, ?rid, ssrc = %packet.header.ssrc, "simulcast layer arrived");
                *seen = Some(rid);
            }
        }
        let written = self.forward(layer, packet, now);
        if written > 0 {
            if let Some(milestone) = lock(&self.first_rtp).take() {
                // The milestone span closes here, marking it in the join's trace.
                milestone.in_scope(|| tracing::info!(track = %self.sid, "first RTP forwarded"));
            }
        }
        written
    }

    /// Sends `packet`, received on `layer` at `now`, to every sink that wants
    /// it; returns the bytes written.
    fn forward(&self, layer: u8, packet: &RtpPacket, now: Instant) -> usize {
        let arriving: [bool; MAX_LAYERS] = {
            let mut layers = lock(&self.layers);
            let size = packet.header.header_len.saturating_add(packet.payload.len());
            layers.bitrates.observe(now, layer, size);
            std::array::from_fn(|l| u8::try_from(l).is_ok_and(|l| layers.bitrates.arriving(now, l)))
        };
        if let Some(seq) = lock(&self.upstream).0.get_mut(usize::from(layer)) {
            seq.received(packet.header.sequence_number);
        }
        if let (Some(level), Some(dbov)) = (&self.audio_level, packet.header.ext_vals.audio_level) {
            // str0m gives the level as -dBov (0 loudest, -127 silence).
            lock(level).observe(now, dbov.unsigned_abs() & 0x7f, packet.header.timestamp);
        }
        if let Some(dynacast) = &self.dynacast {
            let due = now.saturating_duration_since(lock(dynacast).1) >= DYNACAST_POLL;
            if due {
                self.poll_dynacast(now);
            }
        }
        let sinks = Arc::clone(&lock(&self.sinks));
        let h = &packet.header;
        // Rewritten VP8 payloads of this packet, one per distinct rewrite: sinks
        // that switched alike share one copy (and so do the NACK buffers that
        // keep it); sinks that never switched send the payload as it came.
        let mut rewritten: Vec<(PayloadKey, Arc<[u8]>)> = Vec::new();
        // One command to the driver for all the down-tracks.
        let mut batch = RtpWrites::default();
        let mut sent: Vec<(&Sink, usize)> = Vec::new();
        for sink in sinks.iter() {
            let (verdict, awaiting) = {
                let mut s = lock(&sink.state);
                let target = s.target(&arriving);
                if s.core.target() != target {
                    s.core.set_target(target);
                }
                let input = Packet { layer, seq: h.sequence_number, timestamp: h.timestamp, payload: &packet.payload };
                (s.core.on_packet(now, &input), s.core.awaiting_keyframe())
            };
            if let Verdict::Forward(rewrite) = verdict {
                let payload = match rewrite.payload_key() {
                    None => &packet.payload,
                    Some(key) => match rewritten.iter().position(|(k, _)| *k == key) {
                        // In bounds: found there, or pushed just now.
                        Some(i) => &rewritten[i].1,
                        None => {
                            let mut copy = packet.payload.to_vec();
                            rewrite.apply_to_payload(&mut copy);
                            rewritten.push((key, Arc::from(copy)));
                            &rewritten[rewritten.len() - 1].1
                        }
                    },
                };
                let header = Rewritten { seq: rewrite.seq, timestamp: rewrite.timestamp, marker: h.marker };
                let n = sink.write(&mut batch, header, payload, now);
                if n > 0 {
                    sent.push((sink, n));
                }
            }
            if let Some(layer) = awaiting {
                self.request_keyframe(layer, now);
            }
        }
        if let Err(e) = batch.send() {
            tracing::debug!(track = %self.sid, error = %e, "RTP not written to the down-tracks");
            return 0;
        }
        let mut written = 0usize;
        for (sink, n) in sent {
            written = written.saturating_add(n);
            let mut q = lock(&sink.quality);
            q.sent = q.sent.saturating_add(1);
        }
        written
    }

    /// Records one subscriber's report block about a down-track of this track.
    fn observe(&self, r: Reception) {
        self.reports.loss_ratio.observe(r.loss_ratio);
        if let Some(jitter) = r.jitter {
            self.reports.jitter_seconds.observe(jitter.as_secs_f64());
        }
        if let Some(rtt) = r.round_trip {
            self.reports.rtt_seconds.observe(rtt.as_secs_f64());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections here are single assignments; a poisoned lock still holds
    // consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one congestion control step decided for a subscriber ([`allocate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Allocated {
    /// Down-tracks paused or resumed by it, for LiveKit's `StreamStateUpdate`.
    pub stream_states: Vec<livekit_protocol::StreamStateInfo>,
    /// What to keep flowing so the estimate can grow into the next layer, in
    /// bits per second (str0m's `Bwe::set_bitrate` minimum; 0 when every
    /// track has what it wants).
    pub minimum_bps: u64,
    /// What the subscriber would take with no limit, in bits per second (the
    /// rate str0m probes towards).
    pub desired_bps: u64,
}

/// Congestion control for one subscriber: shares `estimate_bps` (its
/// bandwidth estimate, bits per second) among its `down_tracks` at `now`
/// ([`meridian_forward::allocation::allocate`]) and sets each sink's
/// [`Allowance`]. A video the estimate cannot carry at its lowest layer is
/// paused (and reported so); one the subscriber does not want, or with
/// nothing arriving, is held to its lowest layer, so it starts there when it
/// comes back. With no estimate to go by (`None`: not yet committed to one),
/// every sink is unlimited and only the desired bitrate is worked out.
pub fn allocate(
    estimate_bps: Option<u64>,
    down_tracks: &[(Arc<PublishedTrack>, Arc<Sink>)],
    now: Instant,
) -> Allocated {
    let demands: Vec<Demand> = down_tracks.iter().map(|(track, sink)| track.demand(sink, now)).collect();
    let allocation = meridian_forward::allocation::allocate(estimate_bps.unwrap_or(u64::MAX), &demands);
    let mut stream_states = Vec::new();
    for (((track, sink), demand), granted) in down_tracks.iter().zip(&demands).zip(&allocation.layers) {
        let allowance = match (estimate_bps, granted, demand.wanted) {
            (None, ..) => Allowance::Unlimited,
            (Some(_), Some(l), _) => Allowance::UpTo(*l),
            (Some(_), None, Some(_)) => Allowance::Paused,
            (Some(_), None, None) => Allowance::UpTo(0),
        };
        let before = sink.set_allowance(allowance);
        let (was, is) = (before == Allowance::Paused, allowance == Allowance::Paused);
        if was != is {
            let state = if is { livekit_protocol::StreamState::Paused } else { livekit_protocol::StreamState::Active };
            tracing::debug!(track = %track.sid, ?state, estimate_bps, "congestion control: stream state");
            stream_states.push(livekit_protocol::StreamStateInfo {
                participant_sid: track.publisher_sid.to_string(),
                track_sid: track.sid.to_string(),
                state: state as i32,
            });
        }
    }
    Allocated {
        stream_states,
        minimum_bps: allocation.next_step_bps(&demands).unwrap_or(0),
        desired_bps: allocation.desired_bps,
    }
}

/// What str0m's egress stats say of a down-track (from the subscriber's
/// receiver reports): into its connection quality window and the node's
/// subscriber histograms.
pub fn on_egress_stats(track: &PublishedTrack, sink: &Sink, stats: &str0m::stats::MediaEgressStats) {
    let Some(reception) = Reception::of_egress(stats, track.clock_rate) else { return };
    sink.observe(&reception);
    track.observe(reception);
}

/// The subscriber asked for a keyframe (PLI or FIR) on `sink`'s down-track:
/// the publisher is asked for one of the layer it sends (throttled).
pub fn on_keyframe_request(track: &PublishedTrack, sink: &Sink) {
    if let Some(layer) = sink.current_layer() {
        track.request_keyframe(layer, Instant::now());
    }
}
