//! Where the acknowledged events a run did not count stopped. Read only when
//! a run loses events: for each hop's topic (`events.raw`, then
//! `events.clean`), how many of them it holds, per partition with their
//! offsets, beside the partition's end and the offset each stage's consumer
//! group committed. Each topic is read twice: as a `read_committed` reader
//! (what the next stage sees) and as a `read_uncommitted` one (what the log
//! holds). An id in the log but hidden from `read_committed` sits in an
//! aborted or never-ended transaction, or the broker filtered it wrongly. An
//! id in `events.raw` below the processor's commit but absent from
//! `events.clean` was skipped; one at or above it was never reached (a
//! stalled partition).

use std::collections::{BTreeMap, BTreeSet, HashSet};
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

/// How many of the missing ids one partition holds, and where.
#[derive(Clone, Copy)]
struct Found {
    count: usize,
    lowest: i64,
    highest: i64,
}

impl Found {
    fn describe(found: Option<&Found>) -> String {
        found.map_or("0".to_string(), |f| {
            format!("{} at offsets {}..={}", f.count, f.lowest, f.highest)
        })
    }
}

/// One line per hop, then one per partition that holds any of `missing`.
pub fn locate(brokers: &str, missing: &HashSet<String>) -> anyhow::Result<Vec<String>> {
    let kafka = KafkaConfig {
        brokers: brokers.to_string(),
        ..Default::default()
    };
    let mut lines = vec![];
    for (topic, group) in HOPS {
        // Each view on its own: a read_committed reader stalled behind an
        // open transaction is when the log's view matters most.
        let mut view = |isolation| match find(&kafka, topic, missing, isolation) {
            Ok(read) => Some(read),
            Err(e) => {
                lines.push(format!("{topic}: reading it {isolation:?} failed: {e:#}"));
                None
            }
        };
        let read_committed = view(Isolation::ReadCommitted);
        let logged = view(Isolation::ReadUncommitted);
        let Some((ends, _)) = read_committed.as_ref().or(logged.as_ref()) else {
            continue;
        };
        let committed = committed(&kafka, group, topic, ends.keys().copied())?;
        let total = |read: &Option<Read>| {
            read.as_ref().map_or("?".to_string(), |(_, f)| {
                f.values().map(|f| f.count).sum::<usize>().to_string()
            })
        };
        lines.push(format!(
            "{topic}: {} of the {} uncounted to read_committed readers, {} in the log",
            total(&read_committed),
            missing.len(),
            total(&logged)
        ));
        let found = |read: &Option<Read>, p: i32| {
            read.as_ref()
                .map_or("?".to_string(), |(_, f)| Found::describe(f.get(&p)))
        };
        let partitions: BTreeSet<i32> = [&read_committed, &logged]
            .into_iter()
            .flatten()
            .flat_map(|(_, f)| f.keys().copied())
            .collect();
        for p in partitions {
            lines.push(format!(
                "  partition {p}: read_committed {}; in the log {}; end {}, {group} committed {}",
                found(&read_committed, p),
                found(&logged, p),
                ends.get(&p).copied().unwrap_or(-1),
                committed
                    .get(&p)
                    .map_or("nothing".to_string(), i64::to_string)
            ));
        }
    }
    Ok(lines)
}

/// One topic read to its end: each partition's end offset, and where the
/// missing ids sit per partition.
type Read = (BTreeMap<i32, i64>, BTreeMap<i32, Found>);

/// Reads `topic` to its end under `isolation`.
fn find(
    kafka: &KafkaConfig,
    topic: &str,
    missing: &HashSet<String>,
    isolation: Isolation,
) -> anyhow::Result<Read> {
    let mut found: BTreeMap<i32, Found> = BTreeMap::new();
    let ends = read_to_end(kafka, "weir-chaos-locate", topic, None, isolation, |m| {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default());
        if missing.contains(key.as_ref()) {
            let f = found.entry(m.partition()).or_insert(Found {
                count: 0,
                lowest: i64::MAX,
                highest: i64::MIN,
            });
            f.count += 1;
            f.lowest = f.lowest.min(m.offset());
            f.highest = f.highest.max(m.offset());
        }
        Ok(())
    })?;
    Ok((ends, found))
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
