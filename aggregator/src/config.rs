//! Aggregator configuration, with the defaults documented in docs/configuration.md.

use crate::namespaces::NamespaceTable;
use serde::{Deserialize, Serialize};
use weir_core::api_keys::AuthConfig;
use weir_core::kafka::KafkaConfig;
use weir_core::telemetry::TelemetryConfig;
use weir_core::topics::Topics;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    /// Rows per insert, at most.
    pub batch_rows: usize,
    /// Longest a row waits before its batch is inserted.
    pub batch_interval_ms: u64,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "weir".into(),
            user: "default".into(),
            password: String::new(),
            batch_rows: 10_000,
            batch_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Address of the query API and the ops endpoints.
    pub listen: String,
    pub schema_registry_url: String,
    pub group_id: String,
    /// Static group membership: a restarted aggregator with the same id gets
    /// its partitions back at once, without waiting out a rebalance.
    /// Defaults to the host name.
    pub instance_id: String,
    /// How long the group waits for a silent aggregator before moving its
    /// partitions; a restart within it keeps them.
    pub session_timeout_ms: u64,
    /// Kafka consumers in this process, each a group member with its own
    /// partitions, batches and inserts (`<instance_id>-<n>`). One consumer
    /// reads only as fast as one broker connection serves it.
    pub consumers: usize,
    pub clickhouse: ClickHouseConfig,
    /// Read keys of the query API (`auth.read_keys`); write keys do not read.
    pub auth: AuthConfig,
    /// Extended tables: properties of a namespace's events promoted into
    /// typed columns of `ns_<name>`.
    pub namespaces: Vec<NamespaceTable>,
    /// Header timeout and header limits of the HTTP server.
    pub http: weir_core::ops::HttpConfig,
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub telemetry: TelemetryConfig,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8090".into(),
            schema_registry_url: "http://127.0.0.1:8081".into(),
            group_id: "weir-aggregator".into(),
            instance_id: std::env::var("HOSTNAME").unwrap_or_else(|_| "aggregator-0".into()),
            session_timeout_ms: 30_000,
            consumers: 1,
            clickhouse: ClickHouseConfig::default(),
            auth: AuthConfig::default(),
            namespaces: vec![],
            http: Default::default(),
            kafka: KafkaConfig::default(),
            topics: Topics::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl weir_core::service::StageConfig for AggregatorConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
