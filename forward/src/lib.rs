//! Meridian's forwarding core, sans IO (issue 13): what each subscriber gets of
//! each published track, decided from `(now, packet)` with no runtime, clock
//! or socket inside, so every rule is a unit test in virtual time.
//!
//! - [`downtrack`]: a subscriber's down-track: simulcast layer switches at
//!   keyframes, continuous sequence numbers, timestamps and VP8 picture ids,
//!   NACK translation;
//! - [`layers`]: which layer a subscriber's tile or quality asks for (LiveKit's
//!   rules and tolerance), and what to fall back to when it is not arriving;
//! - [`allocation`]: one subscriber's estimated bandwidth shared among its
//!   down-tracks (audio, then screen shares, then cameras; LiveKit's rules);
//! - [`bitrate`]: the bitrate each simulcast layer arrives at (what allocation
//!   charges for it);
//! - [`keyframes`]: keyframe requests (PLI) to a publisher, throttled per layer;
//! - [`dynacast`]: which layers to tell a publisher to send (LiveKit's
//!   `SubscribedQualityUpdate`: upgrades at once, downgrades after 5 s);
//! - [`quality`]: connection quality scores and buckets (LiveKit's);
//! - [`speakers`]: active speakers from RFC 6464 audio levels (LiveKit's
//!   algorithm and defaults) and the changes a room announces;
//! - [`seq`]: extended sequence numbers (rollovers counted, as SRTP needs);
//! - [`vp8`], [`h264`]: the payload parsing that needs (bounds-checked).

pub mod allocation;
pub mod bitrate;
pub mod downtrack;
pub mod dynacast;
pub mod h264;
pub mod keyframes;
pub mod layers;
pub mod quality;
pub mod seq;
pub mod speakers;
pub mod vp8;
