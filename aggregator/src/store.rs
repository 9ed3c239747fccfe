//! What storing one batch means, whatever holds the tables: the order of the
//! steps that makes a re-stored batch change nothing and a late event count
//! once (see `late`). `ClickHouseSink` is the store in production;
//! `MemoryStore` models ClickHouse's replacing tables for property tests of
//! the whole engine without a server.

use crate::clickhouse_sink::{AggregateRow, EventRow};
use crate::late::{self, Admitted, EventKey, LateMinute, Lookup, LATE_LANE, MINUTE_MS};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Mutex;

/// The tables a batch goes into.
pub trait CountStore {
    /// The keys of `lookup` the event history holds.
    fn stored_keys(
        &self,
        lookup: &Lookup,
    ) -> impl Future<Output = anyhow::Result<HashSet<EventKey>>> + Send;
    fn insert_events<'a>(
        &'a self,
        rows: &'a [&'a EventRow],
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a;
    /// Window rows; a higher `emitted_seq` replaces a lower one.
    fn insert_aggregates(
        &self,
        rows: &[AggregateRow],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Recomputes the late lane of `minutes` from the late events stored.
    fn recompute_late(
        &self,
        minutes: &BTreeSet<LateMinute>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Recomputes the hourly rollup of the hours these minutes fall in.
    fn refresh_hours(
        &self,
        starts: &BTreeSet<i64>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Stores a batch: `events` (in offset order) and `aggregates`. Every step
/// is redone whole when the batch is stored again after a failure: what an
/// earlier attempt stored is found by the lookup and still counted by the
/// recomputation.
pub async fn store_batch<'a, S: CountStore>(
    store: &S,
    events: &'a [EventRow],
    aggregates: &[AggregateRow],
) -> anyhow::Result<Admitted<'a>> {
    let stored = store.stored_keys(&Lookup::of(events)).await?;
    let admitted = late::admit(events, &stored);
    store.insert_events(&admitted.store).await?;
    store.insert_aggregates(aggregates).await?;
    store.recompute_late(&admitted.minutes).await?;
    let starts: BTreeSet<i64> = aggregates
        .iter()
        .map(|a| a.window_start)
        .chain(admitted.minutes.iter().map(|m| m.window_start))
        .collect();
    store.refresh_hours(&starts).await?;
    Ok(admitted)
}

/// A stored event, as far as counting goes.
#[derive(Debug, Clone)]
struct StoredEvent {
    name: String,
    channel: String,
    timestamp: i64,
    user: Option<String>,
    late: bool,
}

/// A row of the minute table: (tenant, name, channel, window start, lane).
type RowKey = (String, String, String, i64, u32);

#[derive(Default)]
struct Tables {
    /// `events FINAL`, by (tenant, event_id): the last insert wins.
    events: BTreeMap<EventKey, StoredEvent>,
    /// `event_counts_1m FINAL`: (version, count, users).
    minutes: BTreeMap<RowKey, (u64, u64, BTreeSet<String>)>,
    /// ClickHouse's clock, for the late lane's versions.
    clock: u64,
    /// Steps left before the store fails (a crash mid-batch); `None`: never.
    steps_left: Option<usize>,
}

/// ClickHouse's replacing tables in memory, with a crash that can be set to
/// strike after any number of steps.
#[derive(Default)]
pub struct MemoryStore(Mutex<Tables>);

impl MemoryStore {
    /// The next `steps` steps succeed, the one after fails, and so does
    /// every later one until `heal`.
    pub fn fail_after(&self, steps: usize) {
        self.0.lock().unwrap().steps_left = Some(steps);
    }

    pub fn heal(&self) {
        self.0.lock().unwrap().steps_left = None;
    }

    /// What the query API answers: per name, the events counted (every
    /// lane added) and the distinct users (the lanes' states merged).
    pub fn totals(&self) -> BTreeMap<String, (u64, BTreeSet<String>)> {
        let t = self.0.lock().unwrap();
        let mut out: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
        for ((_, name, ..), (_, count, users)) in &t.minutes {
            let slot = out.entry(name.clone()).or_default();
            slot.0 += count;
            slot.1.extend(users.iter().cloned());
        }
        out
    }

    /// The ids in the event history and whether each went through the late lane.
    pub fn history(&self) -> BTreeMap<EventKey, bool> {
        let t = self.0.lock().unwrap();
        t.events.iter().map(|(k, e)| (k.clone(), e.late)).collect()
    }

    fn step<T>(&self, f: impl FnOnce(&mut Tables) -> T) -> anyhow::Result<T> {
        let mut t = self.0.lock().unwrap();
        if let Some(left) = t.steps_left.as_mut() {
            anyhow::ensure!(*left > 0, "the store is down");
            *left -= 1;
        }
        Ok(f(&mut t))
    }
}

impl CountStore for MemoryStore {
    async fn stored_keys(&self, lookup: &Lookup) -> anyhow::Result<HashSet<EventKey>> {
        self.step(|t| {
            t.events
                .keys()
                .filter(|(tenant, id)| {
                    lookup.tenants.contains(tenant) && lookup.event_ids.contains(id)
                })
                .cloned()
                .collect()
        })
    }

    async fn insert_events<'a>(&'a self, rows: &'a [&'a EventRow]) -> anyhow::Result<()> {
        self.step(|t| {
            for r in rows {
                let stored = StoredEvent {
                    name: r.name.clone(),
                    channel: r.channel.clone(),
                    timestamp: r.timestamp,
                    user: r.user_id.clone().or_else(|| r.anonymous_id.clone()),
                    late: r.late == 1,
                };
                t.events
                    .insert((r.tenant.clone(), r.event_id.clone()), stored);
            }
        })
    }

    async fn insert_aggregates(&self, rows: &[AggregateRow]) -> anyhow::Result<()> {
        self.step(|t| {
            for r in rows {
                let key = (
                    r.tenant.clone(),
                    r.name.clone(),
                    r.channel.clone(),
                    r.window_start,
                    r.input_partition,
                );
                let row = (r.emitted_seq, r.count, r.user_ids.iter().cloned().collect());
                replace(&mut t.minutes, key, row);
            }
        })
    }

    async fn recompute_late(&self, minutes: &BTreeSet<LateMinute>) -> anyhow::Result<()> {
        self.step(|t| {
            t.clock += 1;
            let mut rows: BTreeMap<RowKey, (u64, u64, BTreeSet<String>)> = BTreeMap::new();
            for ((tenant, _), e) in t.events.iter().filter(|(_, e)| e.late) {
                let start = e.timestamp.div_euclid(MINUTE_MS) * MINUTE_MS;
                let minute = LateMinute {
                    tenant: tenant.clone(),
                    window_start: start,
                };
                if !minutes.contains(&minute) {
                    continue;
                }
                let key = (
                    tenant.clone(),
                    e.name.clone(),
                    e.channel.clone(),
                    start,
                    LATE_LANE,
                );
                let row = rows.entry(key).or_insert((t.clock, 0, BTreeSet::new()));
                row.1 += 1;
                row.2.extend(e.user.clone());
            }
            for (key, row) in rows {
                replace(&mut t.minutes, key, row);
            }
        })
    }

    async fn refresh_hours(&self, _starts: &BTreeSet<i64>) -> anyhow::Result<()> {
        // The model answers from its minute table; only the failure point counts.
        self.step(|_| ())
    }
}

/// A replacing table's insert: the higher version stays.
fn replace(
    table: &mut BTreeMap<RowKey, (u64, u64, BTreeSet<String>)>,
    key: RowKey,
    row: (u64, u64, BTreeSet<String>),
) {
    if table.get(&key).is_none_or(|old| row.0 >= old.0) {
        table.insert(key, row);
    }
}
