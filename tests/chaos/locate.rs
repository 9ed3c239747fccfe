//! Where the acknowledged events a run did not count stopped. Read only when
//! a run loses events: for each hop's topic (`events.raw`, then
//! `events.clean`), how many of them it holds to `read_committed` readers,
//! per partition with their offsets, beside the partition's end and the
//! offset each stage's consumer group committed. An id in `events.raw` below
//! the processor's commit but absent from `events.clean` was skipped; one at
//! or above it was never reached (a stalled partition).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use weir_core::kafka::KafkaConfig;
use weir_core::topic_reader::{read_to_end, Isolation};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// The hops, each with the group that reads it.
const HOPS: [(&str, &str); 2] = [
    ("events.raw", "weir-processor"),
    ("events.clean", "weir-aggregator"),
];

/// One line per hop and partition that holds any of `missing`.
pub fn locate(brokers: &str, missing: &HashSet<String>) -> anyhow::Result<Vec<String>> {
    let kafka = KafkaConfig {
        brokers: brokers.to_string(),
        ..Default::default()
    };
    let mut lines = vec![];
    for (topic, group) in HOPS {
        // partition -> (how many missing ids, lowest offset, highest offset)
        let mut found: BTreeMap<i32, (usize, i64, i64)> = BTreeMap::new();
        let ends = read_to_end(
            &kafka,
            "weir-chaos-locate",
            topic,
            None,
            Isolation::ReadCommitted,
            |m| {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default());
                if missing.contains(key.as_ref()) {
                    let e = found
                        .entry(m.partition())
                        .or_insert((0, i64::MAX, i64::MIN));
                    *e = (e.0 + 1, e.1.min(m.offset()), e.2.max(m.offset()));
                }
                Ok(())
            },
        )?;
        let committed = committed(&kafka, group, topic, ends.keys().copied())?;
        let total: usize = found.values().map(|f| f.0).sum();
        lines.push(format!(
            "{topic}: {total} of the {} uncounted",
            missing.len()
        ));
        for (p, (n, lo, hi)) in found {
            lines.push(format!(
                "  partition {p}: {n} at offsets {lo}..={hi}; end {}, {group} committed {}",
                ends.get(&p).copied().unwrap_or(-1),
                committed
                    .get(&p)
                    .map_or("nothing".to_string(), i64::to_string)
            ));
        }
    }
    Ok(lines)
}

fn committed(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = kafka.client_config(&[("group.id", group)]).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}
