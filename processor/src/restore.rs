//! The `processor.state` changelog in Kafka: the record of each entry, and
//! reading one partition back.
//!
//! It reads uncommitted records too and lets `changelog::restore` decide by
//! their `upto` header: that never stalls behind a transaction left open by a
//! crashed instance, and aborted records are filtered either way.

use crate::partition::StateRecord;
use crate::sink::OutRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use weir_core::kafka::{header_str, KafkaConfig};

pub const UPTO_HEADER: &str = "weir-upto";

/// The Kafka record of changelog entry `r` of input partition `p`: in
/// partition `p`, keyed `<p>/<key>`, with `upto` in a header.
pub fn state_record(topic: &str, p: i32, r: StateRecord) -> OutRecord {
    let upto = r.upto.to_string();
    OutRecord {
        topic: topic.to_string(),
        partition: Some(p),
        key: format!("{p}/{}", r.key).into_bytes(),
        payload: r.value,
        headers: OwnedHeaders::new().insert(Header {
            key: UPTO_HEADER,
            value: Some(&upto),
        }),
    }
}

/// Reads every record of `topic`/`partition` whose key starts with `prefix`.
pub fn read_partition(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    prefix: &str,
) -> anyhow::Result<Vec<StateRecord>> {
    let consumer: BaseConsumer = kafka
        .client_config(&[
            ("group.id", "weir-processor-restore"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_uncommitted"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
    let timeout = Duration::from_secs(30);
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    let mut out = vec![];
    if high <= low {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let Some(msg) = consumer.poll(Duration::from_millis(50)) else {
            // Transaction markers take offsets but are never delivered, so the
            // end is where the consumer's position reaches the high watermark.
            let position = consumer.position()?;
            let at = position.elements().first().map(|e| e.offset());
            if matches!(at, Some(Offset::Offset(o)) if o >= high) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "restoring {topic}/{partition} timed out at {at:?} of {high}"
            );
            continue;
        };
        let msg = msg?;
        let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let Some(key) = key.strip_prefix(prefix) else {
            continue;
        };
        let upto = header_str(msg.headers(), UPTO_HEADER).and_then(|v| v.parse::<i64>().ok());
        let Some(upto) = upto else {
            tracing::warn!(
                topic,
                partition,
                offset = msg.offset(),
                "state record without {UPTO_HEADER}; skipped"
            );
            continue;
        };
        out.push(StateRecord {
            key: key.to_string(),
            value: msg.payload().map(|p| p.to_vec()),
            upto,
        });
        if msg.offset() + 1 >= high {
            break;
        }
    }
    Ok(out)
}
