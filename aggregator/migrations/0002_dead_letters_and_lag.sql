-- Dead-lettered records: one row per record of events.late ('late') and
-- events.invalid ('invalid'), for the late and invalid rates. Keyed by the
-- record's place in Kafka, so a re-read batch replaces itself.
CREATE TABLE IF NOT EXISTS dead_letters
(
    kind LowCardinality(String),
    reason String,
    kafka_partition UInt32,
    kafka_offset UInt64,
    dead_lettered_at DateTime64(3, 'UTC'),
    event_id String,
    name LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(dead_lettered_at)
ORDER BY (kind, kafka_partition, kafka_offset);

-- When the aggregator stored each event: inserted_at - received_at is the
-- pipeline's lag from ingest's acknowledgement to ClickHouse.
ALTER TABLE events ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC');
