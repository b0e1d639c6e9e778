//! Logging and tracing for every subcommand: `tracing` to stderr (filter from
//! `RUST_LOG`), and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span exported
//! over OTLP/HTTP (protobuf) through `tracing-opentelemetry`, with W3C trace
//! context as the propagator. The standard OTel variables apply
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_BSP_SCHEDULE_DELAY`, …).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Default log filter: our crates at info, the WebRTC stack's chatter at warn.
pub const DEFAULT_FILTER: &str = "info,webrtc=warn,webrtc_ice=warn,webrtc_dtls=error,dtls=error,turn=warn";

/// Keeps the exporter alive; dropping it flushes and stops it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("OpenTelemetry shutdown: {e}");
            }
        }
    }
}

/// Installs the global subscriber for a process named `service` (OTel `service.name`).
///
/// Errors: an OTLP endpoint was configured but the exporter could not be built.
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let provider = match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
        None => None,
        Some(_) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service).build())
                    .build(),
            )
        }
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("meridian")));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(Telemetry { provider })
}
