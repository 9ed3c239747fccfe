//! The late lane: how an event that came after its windows closed is
//! counted, exactly once, with no operator step.
//!
//! The processor's window rows are final once the watermark passes a window
//! by the allowed lateness. An event for a closed window still goes to
//! `events.clean`, marked `weir-late`, in the same partition as any on-time
//! copy of its id. Per batch, the aggregator:
//!
//! 1. looks up the late copies' `(tenant, event_id)` in the `events` table
//!    (`ClickHouseSink::stored_keys`); a copy whose key is stored, or whose
//!    key an on-time or earlier late row of the batch has, was counted
//!    already and is not stored again (`admit`);
//! 2. stores the rest in `events` with `late = 1`;
//! 3. recomputes the late lane (`input_partition = LATE_LANE`) of every
//!    minute a late copy of the batch falls in, stored or not, from
//!    `events FINAL WHERE late = 1`, versioned by ClickHouse's clock;
//! 4. refreshes those hours of the rollup; and only then commits offsets.
//!
//! Why it counts once. The `events` table is the dedup store for old
//! events: the processor forgets ids after `dedup_horizon_ms` (a day), but
//! ingest accepts events up to `max_event_age_ms` (a week) old, so only
//! ClickHouse, which keeps the whole history, can tell that a week-old
//! resend was counted. A crash between 2 and 3 re-reads the batch: step 1
//! then finds the copies stored and skips them, and step 3 still counts
//! them, because it recomputes every minute the batch touched from what is
//! stored, not from what this attempt stored. Two recomputations of one
//! minute (two aggregators, or a redo) replace each other; the later one
//! started after every insert that preceded it, so it has seen them all
//! (the rollup's argument, migration 0004). An on-time copy is always
//! stored before a late copy of its id is checked, because both are in one
//! partition of `events.clean`, in offset order.
//!
//! An on-time copy is matched by `(tenant, event_id)` within an hour of the
//! late copy's time (the lookup reads those days only): a client that resends
//! an event keeps its id and timestamp, and the `sent_at` correction moves a
//! timestamp by network latency at most.

use crate::clickhouse_sink::EventRow;
use std::collections::{BTreeSet, HashSet};

/// The `input_partition` of late-lane rows: far above any real partition,
/// and apart from `1 << 30`, the lane earlier releases' `replay-late` wrote.
pub const LATE_LANE: u32 = (1 << 30) + 1;

/// The width of the primary window (the processor refuses any other).
pub const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// How far an on-time copy's time may be from a late copy's.
const MATCH_MS: i64 = 3_600_000;

/// What identifies an event for counting.
pub type EventKey = (String, String);

/// What the lookup of a batch's late copies asks ClickHouse.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    pub tenants: BTreeSet<String>,
    pub event_ids: BTreeSet<String>,
    /// Days (epoch ms of 00:00 UTC) an on-time copy could be stored under.
    pub days: BTreeSet<i64>,
}

impl Lookup {
    /// The lookup for the late rows of `rows`; empty when there are none.
    pub fn of(rows: &[EventRow]) -> Self {
        let mut out = Self::default();
        for r in rows.iter().filter(|r| r.late == 1) {
            out.tenants.insert(r.tenant.clone());
            out.event_ids.insert(r.event_id.clone());
            for t in [r.timestamp - MATCH_MS, r.timestamp, r.timestamp + MATCH_MS] {
                out.days.insert(t.div_euclid(DAY_MS) * DAY_MS);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }
}

/// A minute of one tenant whose late lane must be recomputed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LateMinute {
    pub tenant: String,
    pub window_start: i64,
}

/// What to do with one batch.
#[derive(Debug, Default)]
pub struct Admitted<'a> {
    /// The rows to insert into `events`: every on-time row, and each late
    /// row not counted before.
    pub store: Vec<&'a EventRow>,
    /// The late rows among `store`: counted by this batch.
    pub counted_late: Vec<&'a EventRow>,
    /// Late rows whose event was counted already (stored, or earlier in
    /// the batch).
    pub already_counted: usize,
    /// Every minute a late row of the batch falls in, stored or not.
    pub minutes: BTreeSet<LateMinute>,
}

/// Splits a batch (`rows`, in offset order) given the keys of its late
/// rows that ClickHouse has stored already (`stored`).
pub fn admit<'a>(rows: &'a [EventRow], stored: &HashSet<EventKey>) -> Admitted<'a> {
    let on_time: HashSet<(&str, &str)> = rows
        .iter()
        .filter(|r| r.late == 0)
        .map(|r| (r.tenant.as_str(), r.event_id.as_str()))
        .collect();
    let mut taken: HashSet<(&str, &str)> = HashSet::new();
    let mut out = Admitted::default();
    for r in rows {
        if r.late == 0 {
            out.store.push(r);
            continue;
        }
        out.minutes.insert(LateMinute {
            tenant: r.tenant.clone(),
            window_start: r.timestamp.div_euclid(MINUTE_MS) * MINUTE_MS,
        });
        let key = (r.tenant.as_str(), r.event_id.as_str());
        let counted = on_time.contains(&key)
            || stored.contains(&(r.tenant.clone(), r.event_id.clone()))
            || !taken.insert(key);
        if counted {
            out.already_counted += 1;
        } else {
            out.store.push(r);
            out.counted_late.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::Event;

    fn row(id: &str, ts: i64, late: bool) -> EventRow {
        let mut r = EventRow::new(Event::new("t", id, "page_view", ts), 0, 0);
        r.late = late as u8;
        r
    }

    fn key(id: &str) -> EventKey {
        ("t".into(), id.into())
    }

    #[test]
    fn a_late_copy_counts_once_whatever_else_holds_its_id() {
        let rows = vec![
            row("on-time", 120_500, false),
            row("on-time", 61_000, true), // its on-time copy is in the batch
            row("new", 61_000, true),
            row("new", 61_000, true), // twice in the batch
            row("stored", 185_000, true),
            row("fresh", 3 * DAY_MS + 10, true),
        ];
        let stored: HashSet<EventKey> = [key("stored")].into();
        let a = admit(&rows, &stored);
        let ids = |v: &[&EventRow]| v.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a.store), ["on-time", "new", "fresh"]);
        assert_eq!(ids(&a.counted_late), ["new", "fresh"]);
        assert_eq!(a.already_counted, 3);
        // Every minute a late copy touched is recomputed, counted now or not:
        // a redo after a crash finds its copies stored and must still count them.
        let minutes: Vec<i64> = a.minutes.iter().map(|m| m.window_start).collect();
        assert_eq!(minutes, [60_000, 180_000, 3 * DAY_MS]);
    }

    #[test]
    fn the_lookup_reads_the_days_an_on_time_copy_could_be_under() {
        let rows = vec![
            row("a", 5 * DAY_MS + 30 * 60_000, true), // 00:30: the day before too
            row("b", 7 * DAY_MS + 12 * 3_600_000, true),
            row("c", 9 * DAY_MS, false), // on time: not looked up
        ];
        let l = Lookup::of(&rows);
        assert_eq!(l.event_ids, ["a".to_string(), "b".into()].into());
        assert_eq!(l.days, [4 * DAY_MS, 5 * DAY_MS, 7 * DAY_MS].into());
        assert!(Lookup::of(&rows[2..]).is_empty());
    }
}
