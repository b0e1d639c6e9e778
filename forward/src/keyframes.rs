//! Keyframe requests to a publisher, throttled per simulcast layer.
//!
//! Subscribers' PLIs and FIRs, and down-tracks waiting to switch layers, all
//! want keyframes; the publisher's encoder should get at most one request per
//! layer per [`INTERVAL`], or a room of viewers each asking keeps it sending
//! keyframes (large, and each one a quality dip).

use std::time::{Duration, Instant};

/// Minimum spacing of keyframe requests for one layer.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// When each layer was last asked for a keyframe.
#[derive(Debug, Default)]
pub struct KeyframeRequests {
    last: Vec<Option<Instant>>,
}

impl KeyframeRequests {
    /// Whether a request for `layer` should go out at `now`; if so, it counts
    /// as sent.
    pub fn request(&mut self, now: Instant, layer: u8) -> bool {
        let i = usize::from(layer);
        if self.last.len() <= i {
            self.last.resize(i + 1, None);
        }
        if self.last[i].is_some_and(|t| now.saturating_duration_since(t) < INTERVAL) {
            return false;
        }
        self.last[i] = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_layer_per_interval() {
        let start = Instant::now();
        let mut k = KeyframeRequests::default();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(k.request(at(0), 0));
        assert!(!k.request(at(100), 0), "throttled");
        assert!(k.request(at(100), 2), "another layer is not");
        assert!(!k.request(at(499), 0));
        assert!(k.request(at(500), 0), "after the interval");
        assert!(!k.request(at(400), 2));
        assert!(k.request(at(600), 2));
    }
}
