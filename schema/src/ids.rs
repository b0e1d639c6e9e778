//! LiveKit-style ids: a prefix and 12 random alphanumerics (`RM_`, `PA_`, `TR_`).

use rand::distr::{Alphanumeric, SampleString};

/// Room sid prefix.
pub const ROOM: &str = "RM_";
/// Participant sid prefix.
pub const PARTICIPANT: &str = "PA_";
/// Track sid prefix.
pub const TRACK: &str = "TR_";

/// A fresh id with `prefix`.
pub fn new(prefix: &str) -> String {
    format!("{prefix}{}", Alphanumeric.sample_string(&mut rand::rng(), 12))
}
