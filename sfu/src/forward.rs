//! RTP forwarding: one published track, one local track bound to every subscriber.
//!
//! A [`PublishedTrack`] owns a `TrackLocalStaticRTP`; each subscriber PC that adds
//! it gets a binding (its down-track), and the `webrtc` crate rewrites SSRC and
//! payload type per binding. [`spawn_forwarder`] reads the publisher's RTP and
//! writes it to the local track. Header extensions are stripped, since their ids
//! were negotiated on the publisher PC and mean other things on subscriber PCs.
//!
//! Two twins of the local track serve subscriptions (LiveKit's
//! `UpdateSubscription`, `UpdateTrackSettings`): a subscriber that disabled the
//! track has its sender switched to the idle twin, which is never written; one
//! that subscribes again after unsubscribing gets a later generation under
//! another track id ([`PublishedTrack::local_track_of`]).
//!
//! Simulcast: the forwarder takes one layer per track, [`FORWARDED_RID`] (the
//! lowest, which browsers pause last), or another layer if that one has not
//! arrived within [`LAYER_FALLBACK_WAIT`]; the other layers are read and dropped. Layer switching
//! per subscriber comes with the sans-IO forwarder.
//!
//! Keyframes: [`PublishedTrack::request_keyframe`] sends a PLI (RFC 4585 §6.3.1)
//! to the publisher, at most once per [`KEYFRAME_REQUEST_INTERVAL`].
//!
//! Reception reports: the subscriber's RTCP receiver (and sender) reports about a
//! down-track go into the node's `meridian_sfu_subscriber_*` histograms
//! ([`reception`] does the arithmetic).

pub mod reception;

use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use livekit_protocol::TrackInfo;
use meridian_ids::{ParticipantSid, TrackSid};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::packet::Packet as RtcpPacket;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::reception_report::ReceptionReport;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtp::header::Header;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;

use crate::metrics::SubscriberReports;
use reception::Reception;

/// The simulcast layer forwarded to subscribers (`q`, LiveKit's lowest layer).
pub const FORWARDED_RID: &str = "q";
/// How long other simulcast layers wait for [`FORWARDED_RID`] before one of them
/// is forwarded instead.
pub const LAYER_FALLBACK_WAIT: Duration = Duration::from_secs(2);
/// Times one subscriber may subscribe to one track again after unsubscribing
/// (see [`PublishedTrack::local_track_of`]).
pub const MAX_RESUBSCRIPTIONS: usize = 16;
/// Minimum spacing of keyframe requests sent to one publisher track.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A track a participant publishes, as forwarded by this node.
pub struct PublishedTrack {
    /// Track sid (`TR_…`), as `info.sid` announced it.
    pub sid: TrackSid,
    /// Publishing participant's sid (`PA_…`).
    pub publisher_sid: ParticipantSid,
    info: Mutex<TrackInfo>,
    local: Arc<TrackLocalStaticRTP>,
    /// The same codec, ids and stream, never written: what a down-track the
    /// subscriber disabled (`UpdateTrackSettings{disabled}`) sends, which is nothing.
    idle: Arc<TrackLocalStaticRTP>,
    /// Local tracks of later generations, for subscribers subscribing again:
    /// `extra[n - 1]` is generation `n`, track id `TR_…~n`.
    extra: Mutex<Vec<Arc<TrackLocalStaticRTP>>>,
    /// Whether a subscriber has bound a down-track of it yet (LiveKit's
    /// `TrackSubscribed` goes to the publisher once per track).
    ever_subscribed: AtomicBool,
    media_ssrc: u32,
    /// The codec's RTP clock rate, in Hz: the unit of reported jitter.
    clock_rate: u32,
    publisher_pc: Weak<RTCPeerConnection>,
    last_keyframe_request: Mutex<Option<Instant>>,
    reports: SubscriberReports,
}

impl PublishedTrack {
    /// A published track for `remote`, described by `info` (whose `mime_type` is
    /// filled from the negotiated codec). The local track's stream id is
    /// `PA_…|TR_…` and its track id `TR_…`, which is how livekit-client maps
    /// subscribed media to the publication. Subscribers' reports about its
    /// down-tracks go to `reports`.
    pub fn new(
        publisher_sid: &ParticipantSid,
        mut info: TrackInfo,
        remote: &TrackRemote,
        mid: Option<String>,
        publisher_pc: Weak<RTCPeerConnection>,
        reports: SubscriberReports,
    ) -> Self {
        let codec = remote.codec().capability;
        let clock_rate = codec.clock_rate;
        info.mime_type = codec.mime_type.clone();
        info.mid = mid.unwrap_or_default();
        let stream = format!("{publisher_sid}|{}", info.sid);
        let idle = Arc::new(TrackLocalStaticRTP::new(codec.clone(), info.sid.clone(), stream.clone()));
        let local = Arc::new(TrackLocalStaticRTP::new(codec, info.sid.clone(), stream));
        Self {
            sid: TrackSid::new(info.sid.as_str()),
            publisher_sid: publisher_sid.clone(),
            info: Mutex::new(info),
            local,
            idle,
            extra: Mutex::new(Vec::new()),
            ever_subscribed: AtomicBool::new(false),
            media_ssrc: remote.ssrc(),
            clock_rate,
            publisher_pc,
            last_keyframe_request: Mutex::new(None),
            reports,
        }
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

    /// Records a mute change; returns whether it changed anything.
    pub fn set_muted(&self, muted: bool) -> bool {
        let mut info = lock(&self.info);
        let changed = info.muted != muted;
        info.muted = muted;
        changed
    }

    /// The local track to add to a subscriber PC.
    pub fn local_track(&self) -> Arc<dyn TrackLocal + Send + Sync> {
        Arc::clone(&self.local) as Arc<dyn TrackLocal + Send + Sync>
    }

    /// The local track of `generation`: 0 is [`PublishedTrack::local_track`]; a
    /// subscriber subscribing to this track for the `n`th time again gets
    /// generation `n`, the same media under track id `TR_…~n`. The transceiver
    /// its earlier down-track left keeps that one's `a=msid` (RFC 8829 §5.2.2),
    /// and libwebrtc refuses an offer with the same msid twice. Clients take the
    /// track sid from the stream id (`PA_…|TR_…`), which stays. `None` past
    /// [`MAX_RESUBSCRIPTIONS`].
    pub fn local_track_of(&self, generation: usize) -> Option<Arc<dyn TrackLocal + Send + Sync>> {
        if generation == 0 {
            return Some(self.local_track());
        }
        if generation > MAX_RESUBSCRIPTIONS {
            return None;
        }
        let mut extra = lock(&self.extra);
        while extra.len() < generation {
            let id = format!("{}~{}", self.sid, extra.len() + 1);
            extra.push(Arc::new(TrackLocalStaticRTP::new(self.local.codec(), id, self.local.stream_id().to_owned())));
        }
        Some(Arc::clone(&extra[generation - 1]) as Arc<dyn TrackLocal + Send + Sync>)
    }

    /// Writes `packet` to every generation's local track (so to every
    /// down-track); returns the bytes written, summed over down-tracks.
    async fn write_rtp(&self, packet: &webrtc::rtp::packet::Packet) -> Result<usize, webrtc::Error> {
        let mut bytes = self.local.write_rtp(packet).await?;
        // Empty unless someone subscribed again; cloning an empty Vec allocates nothing.
        let extra = lock(&self.extra).clone();
        for local in extra {
            bytes = bytes.saturating_add(local.write_rtp(packet).await?);
        }
        Ok(bytes)
    }

    /// A track like [`PublishedTrack::local_track`] that carries no media: a
    /// disabled down-track's sender is switched to it (`RTCRtpSender::replace_track`,
    /// no renegotiation), and back to the real one when enabled again.
    pub fn idle_track(&self) -> Arc<dyn TrackLocal + Send + Sync> {
        Arc::clone(&self.idle) as Arc<dyn TrackLocal + Send + Sync>
    }

    /// Records that a subscriber has bound a down-track of this track; true the
    /// first time only.
    pub fn first_subscription(&self) -> bool {
        !self.ever_subscribed.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the publisher for a keyframe (PLI), unless one was asked for within
    /// [`KEYFRAME_REQUEST_INTERVAL`] of `now`.
    pub async fn request_keyframe(&self, now: Instant) {
        {
            let mut last = lock(&self.last_keyframe_request);
            if last.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        if let Some(pc) = self.publisher_pc.upgrade() {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: self.media_ssrc };
            if let Err(e) = pc.write_rtcp(&[Box::new(pli)]).await {
                tracing::debug!(track = %self.sid, error = %e, "PLI not sent");
            }
        }
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

/// Reads `remote`'s RTP and writes it to `track`'s local track until the remote
/// track ends, then calls `on_end`. Bytes written to down-tracks are added to
/// `forwarded_bytes`.
pub fn spawn_forwarder(
    remote: Arc<TrackRemote>,
    track: Arc<PublishedTrack>,
    forwarded_bytes: Counter,
    first_rtp: tracing::Span,
    on_end: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut forwarded: u64 = 0;
        let mut first_rtp = Some(first_rtp);
        while let Ok((mut packet, _)) = remote.read_rtp().await {
            let h = &packet.header;
            packet.header = Header {
                version: h.version,
                padding: h.padding,
                marker: h.marker,
                payload_type: h.payload_type,
                sequence_number: h.sequence_number,
                timestamp: h.timestamp,
                ssrc: h.ssrc,
                csrc: std::mem::take(&mut packet.header.csrc),
                ..Header::default()
            };
            // An error here means a subscriber binding did not take the packet; keep going.
            match track.write_rtp(&packet).await {
                Ok(bytes) => {
                    forwarded_bytes.inc_by(bytes as u64);
                }
                Err(e) => tracing::debug!(track = %track.sid, error = %e, "RTP not written to every down-track"),
            }
            forwarded += 1;
            if let Some(milestone) = first_rtp.take() {
                // The milestone span closes here, marking it in the join's trace.
                milestone.in_scope(|| tracing::info!(track = %track.sid, ssrc = remote.ssrc(), "first RTP forwarded"));
            }
        }
        tracing::info!(track = %track.sid, packets = forwarded, "published track ended");
        on_end.await;
    });
}

/// Reads and drops `remote`'s RTP (simulcast layers we do not forward), so the
/// receive buffers do not fill.
pub fn spawn_drain(remote: Arc<TrackRemote>) {
    tokio::spawn(async move { while remote.read_rtp().await.is_ok() {} });
}

/// Watches a down-track's RTCP from the subscriber: keyframe requests (PLI, FIR)
/// go to the publisher, and report blocks about this down-track go to the
/// node's subscriber histograms.
pub fn spawn_down_track_rtcp(sender: Arc<RTCRtpSender>, track: Weak<PublishedTrack>) {
    tokio::spawn(async move {
        // The SSRCs this sender writes. The SRTCP session hands every sender of
        // the PC the whole compound packet, with blocks about the other
        // down-tracks too.
        let ssrcs: Vec<u32> = sender.get_parameters().await.encodings.iter().map(|e| e.ssrc).collect();
        while let Ok((packets, _)) = sender.read_rtcp().await {
            let Some(track) = track.upgrade() else { break };
            let now = reception::compact_ntp(SystemTime::now());
            for block in report_blocks(&packets).filter(|b| ssrcs.contains(&b.ssrc)) {
                track.observe(Reception::of(block, track.clock_rate, now));
            }
            let wants_keyframe = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            });
            if wants_keyframe {
                track.request_keyframe(Instant::now()).await;
            }
        }
    });
}

/// The reception report blocks of receiver and sender reports in `packets`.
fn report_blocks<'a>(
    packets: &'a [Box<dyn RtcpPacket + Send + Sync>],
) -> impl Iterator<Item = &'a ReceptionReport> + 'a {
    packets.iter().flat_map(|p| {
        let any = p.as_any();
        let blocks = match (any.downcast_ref::<ReceiverReport>(), any.downcast_ref::<SenderReport>()) {
            (Some(rr), _) => rr.reports.as_slice(),
            (None, Some(sr)) => sr.reports.as_slice(),
            (None, None) => &[],
        };
        blocks.iter()
    })
}
