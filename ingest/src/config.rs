//! Ingest configuration, with the defaults documented in docs/configuration.md.

use serde::{Deserialize, Serialize};
use weir_core::api_keys::AuthConfig;
use weir_core::group_lag::{LagWatchConfig, WatchedGroup};
use weir_core::kafka::KafkaConfig;
use weir_core::ops::HttpConfig;
use weir_core::telemetry::TelemetryConfig;
use weir_core::topics::Topics;

/// Per-write-key token bucket, counted in events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained events per second per key; 0 turns the limit off.
    pub events_per_second: u32,
    /// Bucket size: the largest burst; 0 means one second's worth.
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Address of the event API and the ops endpoints.
    pub listen: String,
    /// Address of the logeater-compatible gRPC API; empty turns it off.
    pub grpc_listen: String,
    pub schema_registry_url: String,
    /// Tenant stamped on events when auth is off; with auth on, the key's tenant.
    pub tenant: String,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub max_future_skew_ms: i64,
    /// Events older than this (by their time, after the `sent_at`
    /// correction, against ingest's clock) are refused with a 400; every
    /// younger one is counted. Default 7 days (see `validate`).
    pub max_event_age_ms: i64,
    pub max_string_bytes: usize,
    pub max_properties: usize,
    /// Older events are accepted with a warning in the answer (and counted
    /// in `weir_ingest_events_flagged_total`): they are counted through the
    /// aggregator's late lane.
    pub flag_older_than_ms: i64,
    /// How long Kafka may take to acknowledge before the request gets a 503.
    pub delivery_timeout_ms: u64,
    /// Events handed to the producer and not yet acknowledged; past this
    /// high-water mark requests get 503 instead of queueing without bound.
    pub max_in_flight_events: usize,
    /// Requests served at once; more get 503. With `max_body_bytes` this
    /// bounds the memory bodies can take.
    pub max_concurrent_requests: usize,
    /// Origins browsers may send events from: `*`, or a comma-separated
    /// list of origins; empty turns CORS off.
    pub cors_allowed_origins: String,
    /// On SIGTERM: how long to finish open requests and flush the producer
    /// before exiting anyway. Keep it under the pod's termination grace period.
    pub shutdown_timeout_ms: u64,
    /// Header and body timeouts and header limits of the HTTP server.
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub topics: Topics,
    /// The processor's group, watched from the broker (`group_lag`).
    pub lag_watch: LagWatchConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            grpc_listen: "0.0.0.0:50051".into(),
            schema_registry_url: "http://127.0.0.1:8081".into(),
            tenant: "default".into(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            max_body_bytes: 5 * 1024 * 1024,
            max_batch_events: 1_000,
            max_future_skew_ms: 10 * 60 * 1000,
            max_event_age_ms: crate::validate::DEFAULT_MAX_EVENT_AGE_MS,
            max_string_bytes: 8 * 1024,
            max_properties: 256,
            flag_older_than_ms: 24 * 60 * 60 * 1000,
            delivery_timeout_ms: 30_000,
            max_in_flight_events: 100_000,
            max_concurrent_requests: 256,
            cors_allowed_origins: "*".into(),
            shutdown_timeout_ms: 25_000,
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            topics: Topics::default(),
            lag_watch: LagWatchConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl IngestConfig {
    /// The groups ingest watches: the processor's, on `events.raw`.
    pub fn watched_groups(&self) -> Vec<WatchedGroup> {
        self.lag_watch.groups_or(vec![WatchedGroup {
            stage: "processor".into(),
            group: "weir-processor".into(),
            topics: vec![self.topics.raw.clone()],
        }])
    }

    /// The limits `validate` applies to each event under these settings.
    pub fn limits(&self) -> crate::validate::Limits {
        crate::validate::Limits {
            max_future_skew_ms: self.max_future_skew_ms,
            max_string_bytes: self.max_string_bytes,
            max_properties: self.max_properties,
            max_event_age_ms: self.max_event_age_ms,
            flag_older_than_ms: self.flag_older_than_ms,
            ..Default::default()
        }
    }
}

impl weir_core::service::StageConfig for IngestConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
