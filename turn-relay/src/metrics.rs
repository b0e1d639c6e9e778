//! The relay's Prometheus metrics, labelled by `relay` (the listen address; a dev
//! process runs several relays).
//!
//! - `meridian_turn_allocations{relay}`: live TURN allocations (gauge, polled every 2 s).
//! - `meridian_turn_gate_requests_total{relay,outcome}`: requests the gate answered
//!   or dropped instead of the server: `challenged` (401 without credentials),
//!   `refused` (bad nonce or credentials, refused peer, quota) and `rate_limited`
//!   (counter, updated every 2 s).
//! - `meridian_turn_gate_sources{relay}`: source IPs the rate limiter tracks (gauge).
//! - `meridian_turn_allocate_errors_total{relay,code}`: Allocate requests the
//!   server answered with an error, by code: `437`, `486`, `508` or `other`
//!   ([`crate::gate::ALLOCATE_ERROR_CODES`]; counter, updated every 2 s).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelayLabel {
    relay: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    relay: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    relay: String,
    outcome: &'static str,
}

/// The metric families, registered once per process.
#[derive(Clone, Debug, Default)]
pub struct TurnMetrics {
    allocations: Family<RelayLabel, Gauge>,
    gate_requests: Family<OutcomeLabel, Counter>,
    gate_sources: Family<RelayLabel, Gauge>,
    allocate_errors: Family<CodeLabel, Counter>,
}

impl TurnMetrics {
    /// Registers the families under `meridian_turn_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("meridian_turn");
        r.register("allocations", "Live TURN allocations", m.allocations.clone());
        r.register(
            "gate_requests",
            "Requests the gate answered or dropped instead of the server, by outcome",
            m.gate_requests.clone(),
        );
        r.register("gate_sources", "Source IPs the request rate limiter tracks", m.gate_sources.clone());
        r.register(
            "allocate_errors",
            "Allocate requests the server answered with an error, by STUN error code",
            m.allocate_errors.clone(),
        );
        m
    }

    /// The allocations gauge of relay `relay`.
    pub fn allocations(&self, relay: &str) -> Gauge {
        self.allocations.get_or_create(&RelayLabel { relay: relay.to_owned() }).clone()
    }

    /// Brings relay `relay`'s gate series up to `now`, given what they were at `before`.
    pub fn record_gate(&self, relay: &str, before: &crate::gate::GateStats, now: &crate::gate::GateStats) {
        for (outcome, b, n) in [
            ("challenged", before.challenged, now.challenged),
            ("refused", before.refused, now.refused),
            ("rate_limited", before.rate_limited, now.rate_limited),
        ] {
            let label = OutcomeLabel { relay: relay.to_owned(), outcome };
            self.gate_requests.get_or_create(&label).inc_by(n.saturating_sub(b));
        }
        for (i, code) in crate::gate::ALLOCATE_ERROR_CODES.into_iter().enumerate() {
            let label = CodeLabel { relay: relay.to_owned(), code };
            self.allocate_errors
                .get_or_create(&label)
                .inc_by(now.allocate_errors[i].saturating_sub(before.allocate_errors[i]));
        }
        let sources = i64::try_from(now.sources).unwrap_or(i64::MAX);
        self.gate_sources.get_or_create(&RelayLabel { relay: relay.to_owned() }).set(sources);
    }
}
