-- Segment's identify, group and alias calls arrive as events named
-- _identify, _group and _alias (ingest/src/segment.rs), their traits in
-- user_properties. These views keep what they say queryable: the latest
-- value of each trait of each user and group, and the aliases. A trait's
-- newest event time wins, so a replayed or late call never overwrites a
-- newer one; read with FINAL, or argMax(value, updated_at).
CREATE TABLE IF NOT EXISTS user_traits
(
    tenant LowCardinality(String),
    -- coalesce(user_id, anonymous_id), as unique users count them.
    user_id String,
    key String,
    value String,
    updated_at DateTime64(3, 'UTC'),
    event_id String
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant, user_id, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_traits_mv TO user_traits AS
SELECT tenant, coalesce(user_id, anonymous_id) AS user_id, key, value, timestamp AS updated_at, event_id
FROM events
ARRAY JOIN mapKeys(user_properties) AS key, mapValues(user_properties) AS value
WHERE name = '_identify' AND isNotNull(coalesce(user_id, anonymous_id));

-- A group call makes the group the user's `group_id` trait, so metrics
-- group by it like any trait.
CREATE MATERIALIZED VIEW IF NOT EXISTS user_group_mv TO user_traits AS
SELECT tenant, coalesce(user_id, anonymous_id) AS user_id, 'group_id' AS key,
       properties['group_id'] AS value, timestamp AS updated_at, event_id
FROM events
WHERE name = '_group' AND isNotNull(coalesce(user_id, anonymous_id));

CREATE TABLE IF NOT EXISTS group_traits
(
    tenant LowCardinality(String),
    group_id String,
    key String,
    value String,
    updated_at DateTime64(3, 'UTC'),
    event_id String
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant, group_id, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS group_traits_mv TO group_traits AS
SELECT tenant, properties['group_id'] AS group_id, key, value, timestamp AS updated_at, event_id
FROM events
ARRAY JOIN mapKeys(user_properties) AS key, mapValues(user_properties) AS value
WHERE name = '_group';

-- Aliases are stored, not merged: counts stay by coalesce(user_id, anonymous_id).
CREATE TABLE IF NOT EXISTS user_aliases
(
    tenant LowCardinality(String),
    previous_id String,
    user_id String,
    updated_at DateTime64(3, 'UTC'),
    event_id String
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant, previous_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_aliases_mv TO user_aliases AS
SELECT tenant, properties['previous_id'] AS previous_id, assumeNotNull(user_id) AS user_id,
       timestamp AS updated_at, event_id
FROM events
WHERE name = '_alias' AND isNotNull(user_id);

-- One row per user with all of its latest traits, for Grafana and SQL.
CREATE VIEW IF NOT EXISTS users AS
SELECT tenant, user_id, mapFromArrays(groupArray(key), groupArray(value)) AS traits,
       max(updated_at) AS updated_at
FROM user_traits FINAL
GROUP BY tenant, user_id;
