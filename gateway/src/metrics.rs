//! The gateway's Prometheus metrics, registered in the registry the process passes
//! down (`/metrics` renders it).
//!
//! - `meridian_gateway_join_duration_seconds{region}`: from the `/rtc` request to the
//!   node's `101 Switching Protocols`, in seconds (histogram).
//! - `meridian_gateway_routing_decisions_total{region,reason}`: joins routed, by
//!   region and reason (`room_affinity`, `nearest`, `default_unlocated`).
//! - `meridian_gateway_join_refusals_total{status}`: joins refused, by HTTP status.
//! - `meridian_gateway_http_responses_total{api,class}`: every HTTP answer, by
//!   surface (`rtc`, `rtc_validate`, `v1`, `twirp`, `dev`, `other`) and status
//!   class (`1xx` for the signal upgrade … `5xx`).

use meridian_ids::RegionId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabel {
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    region: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    api: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

fn join_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Handles to the gateway's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    join_duration: Family<RegionLabel, Histogram, fn() -> Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    refusals: Family<StatusLabel, Counter>,
    responses: Family<ResponseLabels, Counter>,
}

impl GatewayMetrics {
    /// Registers the metrics under `meridian_gateway_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            join_duration: Family::new_with_constructor(join_histogram as fn() -> Histogram),
            decisions: Family::default(),
            refusals: Family::default(),
            responses: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("meridian_gateway");
        r.register(
            "join_duration_seconds",
            "Time from /rtc request to the node's 101, by region",
            m.join_duration.clone(),
        );
        r.register("routing_decisions", "Joins routed, by region and reason", m.decisions.clone());
        r.register("join_refusals", "Joins refused, by HTTP status", m.refusals.clone());
        r.register("http_responses", "HTTP answers, by surface and status class", m.responses.clone());
        m
    }

    /// Records a routed join that took `seconds` to reach the node.
    pub fn routed(&self, region: &RegionId, reason: &str, seconds: f64) {
        self.decisions.get_or_create(&DecisionLabels { region: region.to_string(), reason: reason.to_owned() }).inc();
        self.join_duration.get_or_create(&RegionLabel { region: region.to_string() }).observe(seconds);
    }

    /// Records an HTTP answer with `status` to a request for `path`.
    pub fn answered(&self, path: &str, status: u16) {
        let api = match path {
            "/rtc" => "rtc",
            "/rtc/validate" => "rtc_validate",
            "/dev/token" => "dev",
            p if p.starts_with("/v1/") => "v1",
            p if p.starts_with(meridian_twirp::PREFIX) => "twirp",
            _ => "other",
        };
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.responses.get_or_create(&ResponseLabels { api, class }).inc();
    }

    /// Records a refused join.
    pub fn refused(&self, status: u16) {
        self.refusals.get_or_create(&StatusLabel { status }).inc();
    }
}
