//! Ingest configuration, with the defaults documented in the README.

use serde::{Deserialize, Serialize};
use weir_core::kafka::KafkaConfig;
use weir_core::telemetry::TelemetryConfig;
use weir_core::topics::Topics;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Address of the event API and the ops endpoints.
    pub listen: String,
    pub schema_registry_url: String,
    /// Tenant stamped on events (write keys that map to tenants come later).
    pub tenant: String,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub max_future_skew_ms: i64,
    pub max_string_bytes: usize,
    pub max_properties: usize,
    /// How long Kafka may take to acknowledge before the request gets a 503.
    pub delivery_timeout_ms: u64,
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub telemetry: TelemetryConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            schema_registry_url: "http://127.0.0.1:8081".into(),
            tenant: "default".into(),
            max_body_bytes: 5 * 1024 * 1024,
            max_batch_events: 1_000,
            max_future_skew_ms: 10 * 60 * 1000,
            max_string_bytes: 8 * 1024,
            max_properties: 256,
            delivery_timeout_ms: 30_000,
            kafka: KafkaConfig::default(),
            topics: Topics::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl weir_core::service::StageConfig for IngestConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
