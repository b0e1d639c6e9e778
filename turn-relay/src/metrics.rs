//! The relay's Prometheus metrics, labelled by `relay` (the listen address; a dev
//! process runs several relays).
//!
//! - `meridian_turn_allocations{relay}`: live TURN allocations (gauge, polled every 2 s).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabel {
    relay: String,
}

/// The metric families, registered once per process.
#[derive(Clone, Debug, Default)]
pub struct TurnMetrics {
    allocations: Family<RelayLabel, Gauge>,
}

impl TurnMetrics {
    /// Registers the families under `meridian_turn_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.sub_registry_with_prefix("meridian_turn").register(
            "allocations",
            "Live TURN allocations",
            m.allocations.clone(),
        );
        m
    }

    /// The allocations gauge of relay `relay`.
    pub fn allocations(&self, relay: &str) -> Gauge {
        self.allocations.get_or_create(&RelayLabel { relay: relay.to_owned() }).clone()
    }
}
