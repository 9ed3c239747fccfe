//! Rebuilding a range of the tables from a full copy of its events (the
//! archive's `backfill`): `events`, the minute counts with their unique-user
//! states, and the hourly rollup, exactly and idempotently.
//!
//! The minute table holds one lane per input partition of the processor
//! (versioned by offset), the late lane, and the restore lane. A restore:
//! 1. inserts the events (`events` replaces a row by its key, so an event
//!    stored already stays one row);
//! 2. in one statement, sets every processor lane of the range to zero and
//!    writes the restore lane: every on-time event stored in the range,
//!    counted from `events FINAL`, both versioned by ClickHouse's clock, so
//!    they replace any processor emission (versions are offsets, far below);
//! 3. recomputes the late lane of the range's minutes from `events`;
//! 4. recomputes the hourly rollup of the range.
//!
//! Every step computes from what is stored, not from what this run added,
//! so a second run, or a run after a crash halfway, writes the same rows.
//! A range must be closed: a window the processor may still emit would
//! lose its later emissions to the restore's newer versions.

use crate::clickhouse_sink::{ClickHouseSink, EventRow};
use crate::late::{LateMinute, LATE_LANE, MINUTE_MS};
use crate::store::CountStore;
use std::collections::BTreeSet;

/// The `input_partition` of rows a restore writes: apart from every real
/// partition, the late lane and `replay-late`'s old lane.
pub const RESTORE_LANE: u32 = (1 << 30) + 2;

/// Rows per insert into `events`.
const CHUNK: usize = 50_000;

impl ClickHouseSink {
    /// Restores `[from_ms, to_ms)` (whole minutes) from `rows`, the events
    /// of the range.
    pub async fn restore_range(
        &self,
        rows: &[EventRow],
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            from_ms % MINUTE_MS == 0 && to_ms % MINUTE_MS == 0 && from_ms < to_ms,
            "a restored range is whole minutes, from before to"
        );
        for chunk in rows.chunks(CHUNK) {
            let refs: Vec<&EventRow> = chunk.iter().collect();
            self.insert_events(&refs).await?;
        }
        let version = "toUInt64(toUnixTimestamp64Nano(now64(9)))";
        let sql = format!(
            "INSERT INTO event_counts_1m_in \
               (tenant, name, channel, window_start, window_end, input_partition, count, \
                user_ids, emitted_seq, is_final) \
             SELECT tenant, name, channel, window_start, window_end, input_partition, 0, [], \
                    {version}, 1 \
             FROM event_counts_1m FINAL \
             WHERE window_start >= fromUnixTimestamp64Milli(?, 'UTC') \
               AND window_start < fromUnixTimestamp64Milli(?, 'UTC') \
               AND input_partition NOT IN ({LATE_LANE}, {RESTORE_LANE}) AND count > 0 \
             UNION ALL \
             SELECT tenant, name, channel, fromUnixTimestamp64Milli(ws, 'UTC'), \
                    fromUnixTimestamp64Milli(ws + {MINUTE_MS}, 'UTC'), {RESTORE_LANE}, \
                    uniqExact(event_id), \
                    groupUniqArrayIf(ifNull(user_id, ifNull(anonymous_id, '')), \
                                     isNotNull(user_id) OR isNotNull(anonymous_id)), \
                    {version}, 1 \
             FROM ( \
               SELECT tenant, name, channel, event_id, user_id, anonymous_id, \
                      intDiv(toUnixTimestamp64Milli(timestamp), {MINUTE_MS}) * {MINUTE_MS} AS ws \
               FROM events FINAL \
               WHERE late = 0 \
                 AND timestamp >= fromUnixTimestamp64Milli(?, 'UTC') \
                 AND timestamp < fromUnixTimestamp64Milli(?, 'UTC') \
             ) \
             GROUP BY tenant, name, channel, ws"
        );
        self.client()
            .query(&sql)
            .bind(from_ms)
            .bind(to_ms)
            .bind(from_ms)
            .bind(to_ms)
            .execute()
            .await?;
        let late: BTreeSet<LateMinute> = rows
            .iter()
            .filter(|r| r.late == 1)
            .map(|r| LateMinute {
                tenant: r.tenant.clone(),
                window_start: r.timestamp.div_euclid(MINUTE_MS) * MINUTE_MS,
            })
            .collect();
        self.recompute_late(&late).await?;
        let hour = 3_600_000;
        let last = (to_ms + hour - 1).div_euclid(hour) * hour;
        self.refresh_range(from_ms.div_euclid(hour) * hour, last)
            .await
    }
}
