-- Hourly rollup of event_counts_1m: the same counts and user states per
-- (tenant, name, channel, hour), ~60 times fewer rows for long ranges. It is
-- not fed by a view: a view would add every re-emission of a window, which
-- the minute table replaces. The aggregator recomputes each hour its batch
-- touched from event_counts_1m FINAL, before committing its offsets, and
-- the newest computation wins (`version` is ClickHouse's clock at the
-- computation's start, so a later one has seen every earlier insert).
CREATE TABLE IF NOT EXISTS event_counts_1h
(
    tenant LowCardinality(String),
    name LowCardinality(String),
    namespace LowCardinality(String),
    channel LowCardinality(String),
    hour DateTime('UTC'),
    count UInt64,
    users AggregateFunction(uniqCombined64, String),
    users_exact AggregateFunction(uniqExact, String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, name, channel, hour);

-- Hours stored before this migration.
INSERT INTO event_counts_1h
SELECT tenant, name, any(namespace), channel, toStartOfHour(window_start) AS hour,
       sum(count), uniqCombined64MergeState(users), uniqExactMergeState(users_exact), 0
FROM event_counts_1m FINAL
GROUP BY tenant, name, channel, hour;
