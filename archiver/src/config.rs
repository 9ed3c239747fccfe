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
    /// read too. Values may be written as strings, booleans or numbers
    /// (an environment variable `...=true` arrives as a boolean).
    #[serde(deserialize_with = "scalar_strings")]
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

/// A map whose values are any scalar, each kept as its text: the
/// object_store crate takes every option as a string, but a config layer
/// types `true` or `9000` before we see it.
fn scalar_strings<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Flag(bool),
        Int(i64),
        Float(f64),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Flag(b) => b.to_string(),
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
            };
            (k, v)
        })
        .collect())
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
    /// Negative values compact an hour before it ends: `-3600000` from its
    /// first part on, each run merging what arrived since.
    pub min_hour_age_ms: i64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use weir_core::config::CommonArgs;

    #[test]
    fn store_options_take_flags_and_numbers_as_text() {
        let args = CommonArgs::parse_from([
            "archiver",
            "--set",
            "store.options.aws_allow_http=true",
            "--set",
            "store.options.aws_endpoint=http://127.0.0.1:9000",
            "--set",
            "store.options.aws_imdsv1_fallback=1",
        ]);
        let cfg: ArchiverConfig = args.load().unwrap();
        assert_eq!(cfg.store.options["aws_allow_http"], "true");
        assert_eq!(cfg.store.options["aws_endpoint"], "http://127.0.0.1:9000");
        assert_eq!(cfg.store.options["aws_imdsv1_fallback"], "1");
    }
}
