//! What the pipeline writes to the broker: each topic's offsets at two
//! moments, and the records and bytes written between them, so the bench can
//! say how much broker traffic one accepted event costs, topic by topic.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Each topic's partitions' high watermarks.
pub type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

fn consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    Ok(rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-pipeline-traffic")
        .set("enable.auto.commit", "false")
        // Every record written counts, whatever became of its transaction.
        .set("isolation.level", "read_uncommitted")
        .set("enable.partition.eof", "false")
        .create()?)
}

/// The high watermark of every partition of every topic but the broker's own.
pub fn offsets(brokers: &str) -> anyhow::Result<Offsets> {
    let c = consumer(brokers)?;
    let timeout = Duration::from_secs(10);
    let md = c.fetch_metadata(None, timeout)?;
    let mut out = Offsets::new();
    for t in md.topics() {
        if t.name().starts_with("__") {
            continue;
        }
        let parts = out.entry(t.name().to_string()).or_default();
        for p in t.partitions() {
            let (_, high) = c.fetch_watermarks(t.name(), p.id(), timeout)?;
            parts.insert(p.id(), high);
        }
    }
    Ok(out)
}

/// A topic's traffic between two snapshots.
pub struct TopicTraffic {
    pub topic: String,
    /// Offsets taken: records plus transaction markers.
    pub offsets: i64,
    /// Records read back (markers are never delivered).
    pub records: u64,
    /// Key, value and header bytes of those records, uncompressed.
    pub bytes: u64,
}

/// Reads every topic from `before` to `after` and sums what was written.
pub fn between(
    brokers: &str,
    before: &Offsets,
    after: &Offsets,
) -> anyhow::Result<Vec<TopicTraffic>> {
    let mut out = vec![];
    for (topic, ends) in after {
        let starts = before.get(topic);
        let start_of = |p: i32| starts.and_then(|s| s.get(&p)).copied().unwrap_or(0);
        let offsets: i64 = ends.iter().map(|(&p, &end)| end - start_of(p)).sum();
        if offsets == 0 {
            continue;
        }
        let c = consumer(brokers)?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = BTreeMap::new();
        for (&p, &end) in ends {
            if end > start_of(p) {
                tpl.add_partition_offset(topic, p, Offset::Offset(start_of(p)))?;
                remaining.insert(p, end);
            }
        }
        c.assign(&tpl)?;
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut last_progress = Instant::now();
        while !remaining.is_empty() {
            anyhow::ensure!(
                last_progress.elapsed() < Duration::from_secs(60),
                "reading {topic}: no progress for 60 s, partitions left {remaining:?}"
            );
            match c.poll(Duration::from_millis(200)) {
                Some(m) => {
                    let m = m?;
                    last_progress = Instant::now();
                    let Some(&end) = remaining.get(&m.partition()) else {
                        continue;
                    };
                    if m.offset() < end {
                        records += 1;
                        bytes += (m.key().map_or(0, <[u8]>::len)
                            + m.payload().map_or(0, <[u8]>::len))
                            as u64;
                        if let Some(h) = m.headers() {
                            bytes += h
                                .iter()
                                .map(|h| (h.key.len() + h.value.map_or(0, <[u8]>::len)) as u64)
                                .sum::<u64>();
                        }
                    }
                    if m.offset() + 1 >= end {
                        remaining.remove(&m.partition());
                    }
                }
                None => {
                    // A partition ending in a marker delivers nothing at its end.
                    let pos = c.position()?;
                    for e in pos.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            if remaining.get(&e.partition()).is_some_and(|&end| o >= end) {
                                remaining.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
        out.push(TopicTraffic {
            topic: topic.clone(),
            offsets,
            records,
            bytes,
        });
    }
    Ok(out)
}
