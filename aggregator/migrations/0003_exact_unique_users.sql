-- Exact unique users. uniqCombined64 is exact only while a state is small
-- (a few thousand users); past that it estimates, and weir's numbers must be
-- exact. uniqExact states (a set of 128-bit hashes) merge exactly over any
-- range; `users` stays for cheap estimates over long ranges.
ALTER TABLE event_counts_1m ADD COLUMN IF NOT EXISTS users_exact AggregateFunction(uniqExact, String) AFTER users;

-- The view is redefined to fill both states. Rows inserted while it is
-- being swapped would be lost, so upgrade past this migration with the
-- aggregators stopped (they apply migrations before consuming).
DROP VIEW IF EXISTS event_counts_1m_mv;

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
    arrayReduce('uniqExactState', user_ids) AS users_exact,
    emitted_seq,
    is_final
FROM event_counts_1m_in;
