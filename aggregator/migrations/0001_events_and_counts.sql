-- The full event history, one row per (tenant, day, name, event_id).
-- ReplacingMergeTree makes a re-inserted event replace itself, so a replayed
-- batch never double counts; read with FINAL.
CREATE TABLE IF NOT EXISTS events
(
    tenant LowCardinality(String),
    event_id String,
    name LowCardinality(String),
    namespace LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    user_id Nullable(String),
    anonymous_id Nullable(String),
    session_id Nullable(String),
    customer_id Nullable(String),
    channel LowCardinality(String),
    service LowCardinality(String),
    properties Map(String, String),
    user_properties Map(String, String),
    context String,
    items String,
    description String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (tenant, toDate(timestamp), name, event_id);

-- Per-window counts and unique-user states, one row per window, key and input
-- partition. A later emission (higher emitted_seq) replaces an earlier one.
CREATE TABLE IF NOT EXISTS event_counts_1m
(
    tenant LowCardinality(String),
    name LowCardinality(String),
    namespace LowCardinality(String),
    channel LowCardinality(String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    input_partition UInt32,
    count UInt64,
    users AggregateFunction(uniqCombined64, String),
    emitted_seq UInt64,
    is_final UInt8
)
ENGINE = ReplacingMergeTree(emitted_seq)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant, name, channel, window_start, input_partition);

-- The aggregator inserts the distinct user ids here; the view turns them into
-- a mergeable uniqCombined64 state.
CREATE TABLE IF NOT EXISTS event_counts_1m_in
(
    tenant String,
    name String,
    channel String,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    input_partition UInt32,
    count UInt64,
    user_ids Array(String),
    emitted_seq UInt64,
    is_final UInt8
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS event_counts_1m_mv TO event_counts_1m AS
SELECT
    tenant,
    name,
    splitByChar('.', name)[1] AS namespace,
    channel,
    window_start,
    window_end,
    input_partition,
    count,
    arrayReduce('uniqCombined64State', user_ids) AS users,
    emitted_seq,
    is_final
FROM event_counts_1m_in;
