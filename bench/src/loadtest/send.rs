//! The publisher's sender: `send_media` paces a clip onto a local track in
//! real time, looping, and logs every packet's send time in the run's
//! `Shared` state so the receivers can measure against it. Target-neutral: a
//! target says, through a `Published` map, under which key the SFU's
//! subscribers will know the track.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use livekit_protocol as proto;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;

use super::clips::Clips;
use super::measure::{SendLog, Shared};
use super::sync::lock;

/// Source keys by track `cid`: the key receivers know a published track by (the
/// SID the SFU announced, LiveKit; `janus:FEED:KIND`, Janus). A sender logs
/// under it once its `cid` is there.
pub(crate) type Published = Arc<Mutex<HashMap<String, String>>>;

/// Sends the clip on `track` in real time, looping, and logs each packet's send time.
pub(crate) async fn send_media(
    cid: String,
    kind: proto::TrackType,
    track: Arc<TrackLocalStaticRTP>,
    clips: Arc<Clips>,
    (published, shared): (Published, Arc<Shared>),
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut media = clips.packetized(kind);
    let log = Arc::new(SendLog::new());
    let mut registered = false;
    let mut tick = tokio::time::interval(media.period);
    for frame in media.frames.iter().cycle() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !registered {
            if let Some(source) = lock(&published).get(&cid).cloned() {
                shared.register(source, Arc::clone(&log));
                registered = true;
            }
        }
        let Ok(packets) = media.packetizer.packetize(frame, media.samples) else { continue };
        for pkt in packets {
            shared.record_sent(&log, pkt.header.sequence_number, &pkt.payload);
            if track.write_rtp(&pkt).await.is_err() {
                return;
            }
        }
    }
}
