//! Archiver configuration, with the defaults documented in
//! docs/configuration.md.

use crate::layout::Format;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weir_aggregator::config::ClickHouseConfig;
use weir_core::kafka::KafkaConfig;
use weir_core::telemetry::TelemetryConfig;
use weir_core::topics::Topics;

/// Where the archive is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///abs/dir`, `s3://bucket/prefix` (`gs://`, `az://` in builds
    /// with the `gcs` or `azure` feature).
    pub url: String,
    /// The object_store crate's options for the URL's scheme, e.g.
    /// `aws_endpoint`, `aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_region`, `aws_allow_http`. The AWS_* environment variables are
    /// read too.
    pub options: BTreeMap<String, String>,
    pub format: Format,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "file:///var/lib/weir/archive".into(),
            options: BTreeMap::new(),
            format: Format::Parquet,
        }
    }
}

/// When a part file is closed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollConfig {
    /// Close the files once this many events are buffered (`n`)...
    pub max_events: usize,
    /// ...or once the oldest buffered event has waited this long (`m`),
    /// whichever comes first.
    pub max_interval_ms: u64,
}

impl Default for RollConfig {
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_interval_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    pub enabled: bool,
    /// How often the compactor runs.
    pub interval_ms: u64,
    /// An hour is compacted once it ended this long ago (its part files
    /// stop arriving, but for late events, which are compacted in later).
    pub min_hour_age_ms: u64,
    /// A compacted file is cut past about this many bytes of input.
    pub max_file_bytes: u64,
    /// Replaced files are deleted this long after the manifest replaced
    /// them: a reader that listed them before has this long to finish.
    pub grace_ms: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 3_600_000,
            min_hour_age_ms: 600_000,
            max_file_bytes: 512 * 1024 * 1024,
            grace_ms: 600_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiverConfig {
    /// Address of the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub listen: String,
    pub schema_registry_url: String,
    pub group_id: String,
    /// Static group membership (as the aggregator's). Defaults to the host name.
    pub instance_id: String,
    pub session_timeout_ms: u64,
    pub store: StoreConfig,
    pub roll: RollConfig,
    pub compaction: CompactionConfig,
    /// Where `backfill` writes (the aggregator's ClickHouse).
    pub clickhouse: ClickHouseConfig,
    pub http: weir_core::ops::HttpConfig,
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub telemetry: TelemetryConfig,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8091".into(),
            schema_registry_url: "http://127.0.0.1:8081".into(),
            group_id: "weir-archiver".into(),
            instance_id: std::env::var("HOSTNAME").unwrap_or_else(|_| "archiver-0".into()),
            session_timeout_ms: 30_000,
            store: StoreConfig::default(),
            roll: RollConfig::default(),
            compaction: CompactionConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            http: Default::default(),
            kafka: KafkaConfig::default(),
            topics: Topics::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl weir_core::service::StageConfig for ArchiverConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
