-- Late events are counted (see aggregator/src/late.rs): a late copy the
-- processor passes on is stored with late = 1 when its (tenant, event_id)
-- is not stored yet, and the late lane of event_counts_1m
-- (input_partition 2^30 + 1) is recomputed from these rows. Rows stored
-- before this migration were counted by the live lanes: late = 0.
ALTER TABLE events ADD COLUMN IF NOT EXISTS late UInt8 DEFAULT 0;
