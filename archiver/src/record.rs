//! `ArchivedEvent`: one counted event as the archive keeps it: the event
//! model whole, plus what the backfill needs to store it as the aggregator
//! did (the late mark and its position in `events.clean`).

use crate::layout::HourKey;
use serde::{Deserialize, Serialize};
use weir_aggregator::clickhouse_sink::EventRow;
use weir_core::Event;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    #[serde(flatten)]
    pub event: Event,
    /// Counted through the late lane (`weir-late` on `events.clean`).
    pub late: bool,
    /// Where it was read: the partition and offset of `events.clean`.
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl ArchivedEvent {
    /// The row the aggregator stores for this event in `events`.
    pub fn to_row(&self) -> EventRow {
        let mut row = EventRow::new(self.event.clone(), self.kafka_partition, self.kafka_offset);
        row.late = self.late as u8;
        row
    }

    /// The archive partition it belongs in.
    pub fn hour(&self) -> HourKey {
        HourKey::of(&self.event.tenant, self.event.timestamp)
    }

    /// What identifies an event for counting.
    pub fn key(&self) -> (&str, &str) {
        (&self.event.tenant, &self.event.event_id)
    }
}
