//! The changelog in Kafka: the record of each entry, and reading one
//! partition back.
//!
//! Reading takes uncommitted records too and lets `restore` decide by their
//! `upto` header: that never stalls behind a transaction left open by a
//! crashed instance, and aborted records are filtered either way.

use super::format::StateRecord;
use crate::sink::OutRecord;
use rdkafka::message::Message;
use weir_core::headers::{Header, RecordHeaders};
use weir_core::kafka::KafkaConfig;
use weir_core::topic_reader::{read_to_end, Isolation};

/// The Kafka record of changelog entry `r` of input partition `p`: in
/// partition `p`, keyed `<p>/<key>`, with `upto` in a header.
pub fn state_record(topic: &str, p: i32, r: StateRecord) -> OutRecord {
    OutRecord {
        topic: topic.to_string(),
        partition: Some(p),
        key: format!("{p}/{}", r.key).into_bytes(),
        payload: r.value,
        headers: RecordHeaders::new().with(Header::Upto, r.upto).to_kafka(),
    }
}

/// Reads every record of `topic`/`partition` whose key starts with `prefix`
/// (the prefix cut off).
pub fn read_partition(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    prefix: &str,
) -> anyhow::Result<Vec<StateRecord>> {
    let mut out = vec![];
    read_to_end(
        kafka,
        "weir-processor-restore",
        topic,
        Some(&[partition]),
        Isolation::ReadUncommitted,
        |msg| {
            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
            let Some(key) = key.and_then(|k| k.strip_prefix(prefix)) else {
                return Ok(());
            };
            let Some(upto) = Header::Upto.read_i64(msg.headers()) else {
                tracing::warn!(
                    topic,
                    partition,
                    offset = msg.offset(),
                    "state record without {}; skipped",
                    Header::Upto.name()
                );
                return Ok(());
            };
            out.push(StateRecord {
                key: key.to_string(),
                value: msg.payload().map(<[u8]>::to_vec),
                upto,
            });
            Ok(())
        },
    )?;
    Ok(out)
}
