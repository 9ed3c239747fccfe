//! Reading a topic from its beginning to the end it has now: the processor's
//! restore of its changelog, `replay-late`'s read of `events.late`, and the
//! tests' read-back of what the stages wrote all go through `read_to_end`.
//!
//! The end is each partition's high watermark when the read starts. A
//! transaction marker takes an offset but is never delivered, so a partition
//! is done when a record at `end - 1` arrives *or* the consumer's position
//! reaches `end`; waiting for a record at `end - 1` alone would hang on every
//! partition whose last offset is a marker.

use crate::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which records a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Committed transactions only: what a downstream stage sees.
    ReadCommitted,
    /// Everything written, open and aborted transactions included: never
    /// stalls behind a transaction a crashed producer left open, so the
    /// caller must tell committed records apart itself (the changelog's
    /// `weir-upto`).
    ReadUncommitted,
}

/// How long a read may go without a record or a position change before it
/// fails: a `read_committed` read stalls behind an open transaction.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads `topic` (all its partitions, or only `partitions`) from the
/// beginning to the ends they have now, calling `each` on every record in
/// offset order per partition. Returns each read partition's end offset
/// (partitions with no records are left out).
///
/// `reader` names the reader: it becomes the consumer's `group.id`, which
/// nothing is committed under.
pub fn read_to_end(
    kafka: &KafkaConfig,
    reader: &str,
    topic: &str,
    partitions: Option<&[i32]>,
    isolation: Isolation,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let isolation_level = match isolation {
        Isolation::ReadCommitted => "read_committed",
        Isolation::ReadUncommitted => "read_uncommitted",
    };
    let consumer: BaseConsumer = kafka
        .client_config(&[
            ("group.id", reader),
            ("enable.auto.commit", "false"),
            ("isolation.level", isolation_level),
            ("enable.partition.eof", "false"),
            // An offset out of range must restart from the beginning, never
            // jump to the end: a read that skips records must not look done.
            ("auto.offset.reset", "earliest"),
        ])
        .create()?;
    let timeout = Duration::from_secs(10);
    let partitions: Vec<i32> = match partitions {
        Some(p) => p.to_vec(),
        None => {
            let md = consumer.fetch_metadata(Some(topic), timeout)?;
            md.topics()
                .first()
                .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                .unwrap_or_default()
        }
    };
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    let read = ends.clone();
    if ends.is_empty() {
        return Ok(read);
    }
    consumer.assign(&tpl)?;
    let mut last_progress = Instant::now();
    let mut positions = BTreeMap::new();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let Some(&end) = ends.get(&m.partition()) else {
                    continue; // a partition already read to its end
                };
                if m.offset() >= end {
                    ends.remove(&m.partition());
                    continue;
                }
                each(&m)?;
                if m.offset() + 1 >= end {
                    ends.remove(&m.partition());
                }
            }
            // A read that cannot be sure it saw every record fails: a
            // restore from half a changelog would count wrongly.
            Some(Err(e)) => anyhow::bail!("reading {topic} to its end: {e}"),
            None => {
                let position = consumer.position()?;
                for e in position.elements_for_topic(topic) {
                    let (Offset::Offset(o), Some(&end)) = (e.offset(), ends.get(&e.partition()))
                    else {
                        continue;
                    };
                    // Skipped aborted records and markers move the position too.
                    if positions.insert(e.partition(), o) != Some(o) {
                        last_progress = Instant::now();
                    }
                    if o >= end {
                        ends.remove(&e.partition());
                    }
                }
                anyhow::ensure!(
                    last_progress.elapsed() < STALL_TIMEOUT,
                    "no progress reading {topic} for {} s (an open transaction?); partitions left: {:?}",
                    STALL_TIMEOUT.as_secs(),
                    ends
                );
            }
        }
    }
    Ok(read)
}
