//! How far behind the consumer groups that read this stage's output are,
//! from the broker's committed offsets.
//!
//! Each consumer stage reports its own lag from its fetch position, but that
//! gauge dies with the stage: a crashed, hung or crash-looping aggregator
//! exports nothing, and its lag alert could never fire. So the stage that
//! writes a topic also watches the groups that read it (ingest watches the
//! processor's group on `events.raw`; the processor watches the aggregator's
//! and the archiver's on its outputs), asking the broker what each group has
//! committed. The metric is `weir_consumer_group_lag{stage,group,topic}`.

use crate::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A consumer group to watch, and the topics it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedGroup {
    /// The stage the group belongs to: the metric's `stage` label, which the
    /// alerts select on.
    pub stage: String,
    /// Its `group.id`.
    pub group: String,
    pub topics: Vec<String>,
}

/// `[lag_watch]`: which groups a stage watches, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LagWatchConfig {
    /// How often the broker is asked; 0 turns the watch off.
    pub interval_ms: u64,
    /// The groups. Unset: the stage's defaults (the readers of what it
    /// writes, under their default group ids and this stage's topic names).
    pub groups: Option<Vec<WatchedGroup>>,
}

impl Default for LagWatchConfig {
    fn default() -> Self {
        Self {
            interval_ms: 15_000,
            groups: None,
        }
    }
}

impl LagWatchConfig {
    /// The groups to watch: the configured ones, or `defaults`.
    pub fn groups_or(&self, defaults: Vec<WatchedGroup>) -> Vec<WatchedGroup> {
        self.groups.clone().unwrap_or(defaults)
    }
}

/// A partition's lag: records from the group's committed offset (or, before
/// it committed anything, from the oldest record kept, where a new group
/// starts) to the end.
pub fn partition_lag(low: i64, high: i64, committed: Option<i64>) -> i64 {
    (high - committed.unwrap_or(low).max(low)).max(0)
}

/// The watcher: one client per group, which asks for offsets and never joins
/// the group (it does not subscribe), so the group's members are untouched.
pub struct GroupLagWatch {
    groups: Vec<(WatchedGroup, BaseConsumer)>,
    timeout: Duration,
}

impl GroupLagWatch {
    pub fn build(kafka: &KafkaConfig, groups: Vec<WatchedGroup>) -> anyhow::Result<Self> {
        let groups = groups
            .into_iter()
            .map(|g| {
                let consumer: BaseConsumer = kafka
                    .client_config(&[
                        ("group.id", g.group.as_str()),
                        ("enable.auto.commit", "false"),
                    ])
                    .create()?;
                Ok((g, consumer))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            groups,
            timeout: Duration::from_secs(10),
        })
    }

    /// One group's lag on one topic, summed over its partitions (blocking).
    fn topic_lag(&self, consumer: &BaseConsumer, topic: &str) -> anyhow::Result<i64> {
        let metadata = consumer.fetch_metadata(Some(topic), self.timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, self.timeout)?;
        let mut lag = 0;
        for &p in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, self.timeout)?;
            let offset = committed
                .find_partition(topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            lag += partition_lag(low, high, offset);
        }
        Ok(lag)
    }

    /// Measures every group and topic once and sets the gauges; a group the
    /// broker cannot answer for keeps its last value and is logged.
    pub fn measure(&self) {
        for (g, consumer) in &self.groups {
            for topic in &g.topics {
                match self.topic_lag(consumer, topic) {
                    Ok(lag) => metrics::gauge!(
                        "weir_consumer_group_lag",
                        "stage" => g.stage.clone(),
                        "group" => g.group.clone(),
                        "topic" => topic.clone()
                    )
                    .set(lag as f64),
                    Err(e) => tracing::warn!(
                        group = %g.group, %topic, error = %e,
                        "cannot read a watched group's committed offsets"
                    ),
                }
            }
        }
    }

    /// Measures every `interval` until shutdown, on a thread of its own that
    /// the stage's exit does not wait for. With the broker away, one measure
    /// blocks for its timeouts (10 s a call); as a tokio blocking task it
    /// held the runtime's shutdown, and so the exit, past
    /// `shutdown_timeout_ms`.
    pub fn spawn(self, interval: Duration, shutdown: CancellationToken) {
        if interval.is_zero() || self.groups.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("group-lag".into())
            .spawn(move || {
                while !shutdown.is_cancelled() {
                    self.measure();
                    let next = std::time::Instant::now() + interval;
                    while !shutdown.is_cancelled() && std::time::Instant::now() < next {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the group lag watch; weir_consumer_group_lag stays unset");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_committed_offset_or_the_oldest_record() {
        assert_eq!(partition_lag(0, 100, Some(40)), 60);
        assert_eq!(partition_lag(0, 100, Some(100)), 0);
        // Nothing committed: a new group starts at the oldest record kept.
        assert_eq!(partition_lag(30, 100, None), 70);
        // A commit older than retention: what is left is the backlog.
        assert_eq!(partition_lag(50, 100, Some(10)), 50);
        // A commit past the end (a topic recreated): no negative lag.
        assert_eq!(partition_lag(0, 10, Some(20)), 0);
    }

    #[test]
    fn unset_groups_are_the_stage_defaults() {
        let default = vec![WatchedGroup {
            stage: "processor".into(),
            group: "weir-processor".into(),
            topics: vec!["events.raw".into()],
        }];
        assert_eq!(
            LagWatchConfig::default().groups_or(default.clone()),
            default
        );
        let mine = LagWatchConfig {
            groups: Some(vec![]),
            ..Default::default()
        };
        assert!(mine.groups_or(default).is_empty());
    }
}
