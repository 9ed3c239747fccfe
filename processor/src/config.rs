//! Processor configuration, with the defaults documented in docs/configuration.md.

use crate::partition::TimeRules;
use crate::window::WindowAssigner;
use serde::{Deserialize, Serialize};
use weir_core::group_lag::{LagWatchConfig, WatchedGroup};
use weir_core::kafka::KafkaConfig;
use weir_core::telemetry::TelemetryConfig;
use weir_core::topics::Topics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitModeSetting {
    /// Transactions when the broker has them, `ordered` otherwise.
    Auto,
    ExactlyOnce,
    Ordered,
}

/// A window spec emitted besides the primary one, to `aggregates.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraWindow {
    /// Names the output topic: `aggregates.<name>` (for example `1h`).
    pub name: String,
    pub size_ms: i64,
    /// Equal to the size for tumbling windows; smaller for hopping windows.
    pub advance_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Address of the health, readiness and metrics endpoints.
    pub listen: String,
    pub schema_registry_url: String,
    pub group_id: String,
    /// Stable name of this instance; `transactional.id` derives from it, so a
    /// restarted instance fences its previous life and releases its open
    /// transaction. Defaults to the host name.
    pub instance_id: String,
    pub commit_mode: CommitModeSetting,
    pub commit_interval_ms: u64,
    /// Most records taken into one transaction.
    pub max_batch: usize,
    /// The primary windows: one-minute tumbling windows, the unit the
    /// aggregator's tables and the query API add up (totals, groups by
    /// minute, hour and day, rolling windows, active users). Any other spec
    /// would be counted wrongly there, so `validate` refuses it.
    pub window_size_ms: i64,
    pub window_advance_ms: i64,
    /// More window specs, each counted from the same stream at once and
    /// written to `aggregates.<name>` only (Kafka outputs for downstream
    /// consumers; ClickHouse and the API read the primary windows), e.g.
    /// `[{ name = "1h", size_ms = 3600000, advance_ms = 300000 }]`. An event
    /// too late for the primary window is counted by the aggregator's late
    /// lane (primary windows only), not in these.
    pub extra_windows: Vec<ExtraWindow>,
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    pub dedup_horizon_ms: i64,
    /// Ids a partition keeps in memory (about 42 bytes each); past it the
    /// older half goes to a file under `dedup_spill_dir`. 0: never spill.
    pub dedup_max_memory_keys: usize,
    /// Where spilled ids live, one file per partition under
    /// `<dir>/<instance_id>/`. A cache of the changelog: any local disk will do.
    pub dedup_spill_dir: String,
    pub idle_partition_timeout_ms: u64,
    /// How long the group waits for a silent instance before moving its
    /// partitions to the others. With static membership a restart within
    /// this time keeps its partitions; a crash costs this much lag.
    pub session_timeout_ms: u64,
    /// Header timeout and header limits of the HTTP server.
    pub http: weir_core::ops::HttpConfig,
    pub kafka: KafkaConfig,
    pub topics: Topics,
    /// The aggregator's and the archiver's groups, watched from the broker
    /// (`group_lag`).
    pub lag_watch: LagWatchConfig,
    pub telemetry: TelemetryConfig,
}

/// The primary windows' size and advance: one-minute tumbling windows.
pub const PRIMARY_WINDOW_MS: i64 = 60_000;

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9102".into(),
            schema_registry_url: "http://127.0.0.1:8081".into(),
            group_id: "weir-processor".into(),
            instance_id: std::env::var("HOSTNAME").unwrap_or_else(|_| "processor-0".into()),
            commit_mode: CommitModeSetting::Auto,
            commit_interval_ms: 500,
            max_batch: 5_000,
            window_size_ms: PRIMARY_WINDOW_MS,
            window_advance_ms: PRIMARY_WINDOW_MS,
            extra_windows: vec![],
            out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 60_000,
            dedup_horizon_ms: 24 * 3600 * 1000,
            dedup_max_memory_keys: 4_000_000,
            dedup_spill_dir: std::env::temp_dir()
                .join("weir-processor")
                .to_string_lossy()
                .into_owned(),
            idle_partition_timeout_ms: 30_000,
            session_timeout_ms: 30_000,
            http: Default::default(),
            kafka: KafkaConfig::default(),
            topics: Topics::default(),
            lag_watch: LagWatchConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl ProcessorConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.window_size_ms == PRIMARY_WINDOW_MS && self.window_advance_ms == PRIMARY_WINDOW_MS,
            "window_size_ms and window_advance_ms must both be {PRIMARY_WINDOW_MS} (got {} and {}): \
             the primary windows are the one-minute units ClickHouse and the query API add up, \
             and hopping ones would count each event size/advance times there; count other \
             specs with extra_windows",
            self.window_size_ms,
            self.window_advance_ms
        );
        let mut names = std::collections::BTreeSet::new();
        for w in &self.extra_windows {
            anyhow::ensure!(
                !w.name.is_empty()
                    && w.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "extra_windows: name {:?} must be letters, digits, _ or -",
                w.name
            );
            anyhow::ensure!(names.insert(&w.name), "extra_windows: {:?} twice", w.name);
            anyhow::ensure!(
                w.size_ms > 0 && w.advance_ms > 0 && w.advance_ms <= w.size_ms,
                "extra_windows {:?}: need 0 < advance_ms <= size_ms",
                w.name
            );
            anyhow::ensure!(
                self.dedup_horizon_ms > self.allowed_lateness_ms + w.size_ms,
                "extra_windows {:?}: dedup_horizon_ms must exceed size_ms + allowed_lateness_ms",
                w.name
            );
        }
        anyhow::ensure!(
            self.out_of_orderness_ms >= 0,
            "out_of_orderness_ms must be >= 0"
        );
        anyhow::ensure!(
            self.allowed_lateness_ms >= 0,
            "allowed_lateness_ms must be >= 0"
        );
        anyhow::ensure!(
            self.dedup_horizon_ms > self.allowed_lateness_ms + self.window_size_ms,
            "dedup_horizon_ms must exceed window_size_ms + allowed_lateness_ms, or duplicates of on-time events could be counted"
        );
        anyhow::ensure!(self.max_batch > 0, "max_batch must be positive");
        anyhow::ensure!(
            !self.instance_id.is_empty(),
            "instance_id must not be empty"
        );
        Ok(())
    }
}

impl ProcessorConfig {
    /// The groups the processor watches: the readers of what it writes, the
    /// aggregator (every output it counts from) and the archiver.
    pub fn watched_groups(&self) -> Vec<WatchedGroup> {
        let t = &self.topics;
        self.lag_watch.groups_or(vec![
            WatchedGroup {
                stage: "aggregator".into(),
                group: "weir-aggregator".into(),
                topics: vec![
                    t.clean.clone(),
                    t.aggregates.clone(),
                    t.late.clone(),
                    t.invalid.clone(),
                ],
            },
            WatchedGroup {
                stage: "archiver".into(),
                group: "weir-archiver".into(),
                topics: vec![t.clean.clone()],
            },
        ])
    }

    /// The time semantics these settings give the pure core.
    pub fn time_rules(&self) -> TimeRules {
        TimeRules {
            assigner: WindowAssigner::hopping(self.window_size_ms, self.window_advance_ms),
            extra: self
                .extra_windows
                .iter()
                .map(|w| WindowAssigner::hopping(w.size_ms, w.advance_ms))
                .collect(),
            out_of_orderness_ms: self.out_of_orderness_ms,
            allowed_lateness_ms: self.allowed_lateness_ms,
            dedup_horizon_ms: self.dedup_horizon_ms,
        }
    }

    /// The topic the aggregates of extra window `w` go to.
    pub fn extra_topic(&self, w: &ExtraWindow) -> String {
        format!("aggregates.{}", w.name)
    }
}

impl weir_core::service::StageConfig for ProcessorConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_minute_tumbling_primary_windows_start() {
        assert!(ProcessorConfig::default().validate().is_ok());
        for (size, advance) in [(60_000, 30_000), (300_000, 300_000), (300_000, 60_000)] {
            let cfg = ProcessorConfig {
                window_size_ms: size,
                window_advance_ms: advance,
                ..Default::default()
            };
            let e = cfg.validate().unwrap_err().to_string();
            assert!(
                e.contains("window_advance_ms must both be 60000") && e.contains("extra_windows"),
                "{size}/{advance}: {e}"
            );
        }
        // Hopping specs are for extra windows, which only Kafka readers see.
        let cfg = ProcessorConfig {
            extra_windows: vec![ExtraWindow {
                name: "1h".into(),
                size_ms: 3_600_000,
                advance_ms: 300_000,
            }],
            ..Default::default()
        };
        assert!(cfg.validate().is_ok());
    }
}
