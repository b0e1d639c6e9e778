//! What a load run is asked to do: the [`Target`] SFU and protocol, and the
//! [`Config`] of rooms, participants, clips and duration. Plain data, read by
//! `run` and by both targets; the `meridian-loadtest` binary fills it from its
//! flags.

use std::path::PathBuf;
use std::time::Duration;

/// The SFU under load and the protocol spoken to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// LiveKit's signal protocol (`/rtc`): Meridian's gateway or node, or a LiveKit
    /// server; see the `livekit` module.
    #[default]
    LiveKit,
    /// Janus's VideoRoom plugin over its WebSocket API (`janus-protocol`); see the `janus` module.
    Janus,
    /// One HTTP POST per peer connection (`/whip/{room}`, `/whep/{room}`): the
    /// str0m engine spike of issue 13; see the `whip` module.
    Whip,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The protocol of `url`.
    pub target: Target,
    /// `ws://HOST:PORT` of the gateway (or a node), or of Janus's WebSocket
    /// transport; `http://HOST:PORT` of a WHIP/WHEP target.
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
