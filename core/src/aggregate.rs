//! The window aggregate the processor emits to `aggregates.1m` (schema
//! `schemas/window_aggregate.avsc`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowAggregate {
    pub tenant: String,
    pub name: String,
    pub channel: String,
    pub window_start: i64,
    pub window_end: i64,
    pub input_partition: i32,
    pub count: i64,
    /// Distinct user keys, sorted so that equal state encodes to equal bytes.
    pub users: Vec<String>,
    /// The input offset this emission reflects. Two emissions with the same
    /// seq carry the same content, so replays and aborted-but-visible records
    /// are harmless to a replacing sink.
    pub emitted_seq: i64,
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl WindowAggregate {
    /// The record key on the aggregates topics: `tenant/name/channel/window_start`.
    pub fn kafka_key(&self) -> Vec<u8> {
        format!(
            "{}/{}/{}/{}",
            self.tenant, self.name, self.channel, self.window_start
        )
        .into_bytes()
    }
}
