//! Logs, metrics and traces for a weir binary.
//!
//! Logs are `tracing` events, as text or JSON. Metrics go through the `metrics`
//! facade into a Prometheus registry served at `/metrics`. Traces are exported
//! over OTLP/HTTP only when an endpoint is configured (off by default).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`. Off when empty.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
            log_level: "info".into(),
            otlp_endpoint: String::new(),
        }
    }
}

/// Keeps the exporters alive; `shutdown` flushes pending spans.
pub struct Telemetry {
    pub metrics: PrometheusHandle,
    tracer: Option<SdkTracerProvider>,
}

static TRACES_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans leave the process (an OTLP endpoint is set). Per-record
/// spans are made only then: they cost more than the record's own work.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

impl Telemetry {
    pub fn init(service: &str, cfg: &TelemetryConfig) -> anyhow::Result<Self> {
        let filter =
            EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cfg.log_level))?;
        let fmt = match cfg.log_format.as_str() {
            "json" => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .boxed(),
            "text" => tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .boxed(),
            other => anyhow::bail!("telemetry.log_format must be text or json, got {other:?}"),
        };
        let tracer = if cfg.otlp_endpoint.is_empty() {
            None
        } else {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&cfg.otlp_endpoint)
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        };
        TRACES_EXPORTED.store(tracer.is_some(), std::sync::atomic::Ordering::Relaxed);
        let otel = tracer
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_string())));
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(otel)
            .try_init()?;
        // Durations are histograms with buckets, not summaries, so that
        // Prometheus can aggregate them across replicas. The buckets reach
        // minutes for the late lane's lag, whose alert fires past 60 s.
        let metrics = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0, 300.0,
                ],
            )?
            .install_recorder()?;
        Ok(Self { metrics, tracer })
    }

    pub fn shutdown(self) {
        if let Some(p) = self.tracer {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "flushing traces failed");
            }
        }
    }
}
