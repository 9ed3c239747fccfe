//! The state machine of one input partition: dedup, windows, watermark,
//! lateness, and what must be emitted and logged at each commit.
//!
//! Everything here is a function of the partition's records in offset order,
//! never of batch boundaries or wall time. That is what makes replays safe:
//! an emission tagged with input offset `o` has the same content however
//! often, and in whatever batches, offsets up to `o` are processed.

use crate::changelog::format::{dedup_segment_key, window_key, StateRecord, StateValue, META_KEY};
use crate::changelog::restore::{restore, RestoreError};
use crate::changelog::slots::ChangelogSlots;
use crate::dedup::{dedup_key, evicted_by, DedupStore};
use crate::watermark::{self, Watermark};
use crate::window::{AggKey, Window, WindowAssigner, WindowState};
use std::collections::{BTreeMap, BTreeSet};
use weir_core::{Event, WindowAggregate};

/// How the processor's time semantics are set.
#[derive(Debug, Clone)]
pub struct TimeRules {
    /// The primary windows: lateness is judged by them.
    pub assigner: WindowAssigner,
    /// More window specs counted from the same events (spec 1, 2, ...).
    pub extra: Vec<WindowAssigner>,
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    pub dedup_horizon_ms: i64,
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; `window_start` is the first window it went into.
    Accepted { window_start: i64 },
    /// Seen before within the dedup horizon; dropped.
    Duplicate,
    /// Every primary window it belongs to is closed: the live rows no longer
    /// change, so the aggregator counts it in the late lane instead.
    /// `window_start` is its first primary window.
    Late { watermark: i64, window_start: i64 },
}

/// What a commit must write, drained from the state.
#[derive(Debug, Default)]
pub struct Drained {
    /// Rows of the primary windows.
    pub aggregates: Vec<WindowAggregate>,
    /// Rows of the extra specs, with the spec's number (1, 2, ...).
    pub extra_aggregates: Vec<(usize, WindowAggregate)>,
    pub changelog: Vec<StateRecord>,
}

#[derive(Debug)]
pub struct PartitionState {
    partition: i32,
    rules: TimeRules,
    watermark: Watermark,
    dedup: DedupStore,
    /// Open windows per spec (0 is the primary), by start.
    windows: Vec<BTreeMap<i64, WindowState>>,
    /// Dedup segments already in the changelog: first offset → max event time.
    segments: BTreeMap<i64, i64>,
    last_offset: Option<i64>,
    /// Which changelog key each state key's next version goes under.
    slots: ChangelogSlots,
    dirty: BTreeSet<(usize, i64)>,
    closed: Vec<(usize, i64)>,
    finals: Vec<(usize, WindowAggregate)>,
    pending_dedup: Vec<(u128, i64)>,
    pending_from: Option<i64>,
    meta_dirty: bool,
}

impl PartitionState {
    pub fn new(partition: i32, rules: TimeRules) -> Self {
        Self {
            partition,
            watermark: Watermark::new(rules.out_of_orderness_ms),
            dedup: DedupStore::new(),
            windows: vec![BTreeMap::new(); 1 + rules.extra.len()],
            rules,
            segments: BTreeMap::new(),
            last_offset: None,
            slots: ChangelogSlots::default(),
            dirty: BTreeSet::new(),
            closed: Vec::new(),
            finals: Vec::new(),
            pending_dedup: Vec::new(),
            pending_from: None,
            meta_dirty: false,
        }
    }

    /// Rebuilds the state of `partition` from its changelog `records` as of
    /// `committed` (the next offset to consume; `None` when the group never
    /// committed, so nothing is valid).
    pub fn restore(
        partition: i32,
        rules: TimeRules,
        records: impl IntoIterator<Item = StateRecord>,
        committed: Option<i64>,
    ) -> Result<Self, RestoreError> {
        Self::restore_into(DedupStore::new(), partition, rules, records, committed)
    }

    /// `restore`, with the dedup ids loaded into `dedup` (a spilling store, say).
    pub fn restore_into(
        mut dedup: DedupStore,
        partition: i32,
        rules: TimeRules,
        records: impl IntoIterator<Item = StateRecord>,
        committed: Option<i64>,
    ) -> Result<Self, RestoreError> {
        let mut state = Self::new(partition, rules);
        if let Some(committed) = committed {
            let restored = restore(state.windows.len(), &mut dedup, records, committed)?;
            if restored.rolled_back > 0 {
                tracing::info!(
                    partition,
                    rolled_back = restored.rolled_back,
                    "changelog records older than an earlier version of their key were ignored"
                );
            }
            state.windows = restored.windows;
            state.segments = restored.segments;
            state.slots = restored.slots;
            state.watermark =
                Watermark::restored(state.rules.out_of_orderness_ms, restored.max_event_time);
            dedup.evict_before(
                state
                    .watermark
                    .current()
                    .saturating_sub(state.rules.dedup_horizon_ms),
            );
            state.last_offset = (committed > 0).then(|| committed - 1);
        }
        state.dedup = dedup;
        Ok(state)
    }

    pub fn watermark(&self) -> i64 {
        self.watermark.current()
    }

    pub fn last_offset(&self) -> Option<i64> {
        self.last_offset
    }

    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    pub fn dedup_heap_bytes(&self) -> usize {
        self.dedup.heap_bytes()
    }

    /// Ids kept on disk rather than in memory.
    pub fn dedup_spilled(&self) -> usize {
        self.dedup.cold_len()
    }

    /// An error of the dedup store's disk half: what was decided since is unsure.
    pub fn dedup_failure(&self) -> Option<String> {
        self.dedup.failure()
    }

    pub fn open_windows(&self) -> usize {
        self.windows.iter().map(BTreeMap::len).sum()
    }

    /// The primary spec's open windows: (start, events counted).
    pub fn open_window_counts(&self) -> Vec<(i64, i64)> {
        self.windows[0]
            .iter()
            .map(|(&start, w)| (start, w.keys.values().map(|k| k.count).sum()))
            .collect()
    }

    /// Processes the event at `offset`. Offsets must increase.
    pub fn process(&mut self, offset: i64, event: &Event) -> Verdict {
        debug_assert!(self.last_offset.is_none_or(|o| offset > o));
        self.last_offset = Some(offset);
        self.meta_dirty = true;
        let ts = event.timestamp;
        let key = dedup_key(&event.tenant, &event.event_id);
        if !self.dedup.insert(key, ts) {
            return Verdict::Duplicate;
        }
        self.pending_from.get_or_insert(offset);
        self.pending_dedup.push((key, ts));

        let wm = self.watermark.current();
        let lateness = self.rules.allowed_lateness_ms;
        let open_in = |a: &WindowAssigner| -> Vec<Window> {
            a.assign(ts)
                .filter(|w| w.end.saturating_add(lateness) > wm)
                .collect()
        };
        let primary = open_in(&self.rules.assigner);
        let Some(first) = primary.first().copied() else {
            let window_start = self
                .rules
                .assigner
                .assign(ts)
                .next()
                .map_or(ts, |w| w.start);
            return Verdict::Late {
                watermark: wm,
                window_start,
            };
        };
        let mut open = vec![primary];
        open.extend(self.rules.extra.iter().map(open_in));
        let agg_key = AggKey {
            tenant: event.tenant.clone(),
            name: event.name.clone(),
            channel: event.channel.clone().unwrap_or_default(),
        };
        for (spec, windows) in open.into_iter().enumerate() {
            for w in windows {
                let state = self.windows[spec]
                    .entry(w.start)
                    .or_insert_with(|| WindowState {
                        window: w,
                        keys: BTreeMap::new(),
                    });
                let ks = state.keys.entry(agg_key.clone()).or_default();
                ks.count += 1;
                if let Some(u) = event.user_key() {
                    ks.users.insert(u.to_string());
                }
                self.dirty.insert((spec, w.start));
            }
        }
        self.watermark
            .observe(watermark::observed_time(ts, event.received_at));
        self.close_ready(offset);
        Verdict::Accepted {
            window_start: first.start,
        }
    }

    /// Closes every window the watermark has passed by more than the allowed
    /// lateness, emitting its final rows at version `offset`.
    fn close_ready(&mut self, offset: i64) {
        let wm = self.watermark.current();
        let lateness = self.rules.allowed_lateness_ms;
        for (spec, windows) in self.windows.iter_mut().enumerate() {
            // Windows of one spec end in the order they start.
            while let Some((&start, state)) = windows.first_key_value() {
                if state.window.end.saturating_add(lateness) > wm {
                    break;
                }
                let state = windows.remove(&start).expect("present");
                self.dirty.remove(&(spec, start));
                self.closed.push((spec, start));
                self.finals
                    .extend(rows(&state, self.partition, offset, true).map(|r| (spec, r)));
            }
        }
    }

    /// Takes what the next commit must write: window rows for every window
    /// that changed or closed, and the state changes since the last drain.
    pub fn drain(&mut self) -> Drained {
        let mut out = Drained::default();
        let emit = |out: &mut Drained, spec: usize, row: WindowAggregate| {
            if spec == 0 {
                out.aggregates.push(row);
            } else {
                out.extra_aggregates.push((spec, row));
            }
        };
        for (spec, row) in std::mem::take(&mut self.finals) {
            emit(&mut out, spec, row);
        }
        let Some(upto) = self.last_offset else {
            return out;
        };
        let record =
            |key: String, value: Option<StateValue>| StateRecord::new(key, value.as_ref(), upto);
        for (spec, start) in std::mem::take(&mut self.dirty) {
            let state = &self.windows[spec][&start];
            for row in rows(state, self.partition, upto, false) {
                emit(&mut out, spec, row);
            }
            out.changelog.push(record(
                window_key(spec, start),
                Some(StateValue::Window(state.clone())),
            ));
        }
        for (spec, start) in std::mem::take(&mut self.closed) {
            out.changelog.push(record(window_key(spec, start), None));
        }
        if let Some(from) = self.pending_from.take() {
            let entries = std::mem::take(&mut self.pending_dedup);
            let max_event_time = entries.iter().map(|e| e.1).max().unwrap_or(i64::MIN);
            self.segments.insert(from, max_event_time);
            out.changelog.push(record(
                dedup_segment_key(from),
                Some(StateValue::Dedup {
                    max_event_time,
                    entries,
                }),
            ));
        }
        // Forget ids beyond the horizon, and drop changelog segments that hold only such ids.
        let cutoff = self
            .watermark
            .current()
            .saturating_sub(self.rules.dedup_horizon_ms);
        self.dedup.evict_before(cutoff);
        let expired: Vec<i64> = self
            .segments
            .iter()
            .filter(|(_, &max)| evicted_by(cutoff, max))
            .map(|(&f, _)| f)
            .collect();
        for from in expired {
            self.segments.remove(&from);
            out.changelog.push(record(dedup_segment_key(from), None));
        }
        if std::mem::take(&mut self.meta_dirty) {
            let meta = StateValue::Meta {
                max_event_time: self.watermark.max_event_time(),
            };
            out.changelog.push(record(META_KEY.to_string(), Some(meta)));
        }
        out.changelog = self.slots.place(out.changelog);
        out
    }

    /// The batch drained last is committed: its changelog records are now
    /// the versions a restore finds, so the next ones go to the other slots.
    /// (A batch that fails is never followed by another drain: the state is
    /// dropped and restored from the changelog.)
    pub fn changelog_committed(&mut self) {
        self.slots.commit();
    }
}

fn rows(
    state: &WindowState,
    partition: i32,
    seq: i64,
    is_final: bool,
) -> impl Iterator<Item = WindowAggregate> + '_ {
    state.keys.iter().map(move |(k, v)| WindowAggregate {
        tenant: k.tenant.clone(),
        name: k.name.clone(),
        channel: k.channel.clone(),
        window_start: state.window.start,
        window_end: state.window.end,
        input_partition: partition,
        count: v.count,
        users: v.users.iter().cloned().collect(),
        emitted_seq: seq,
        is_final,
    })
}

#[cfg(test)]
mod tests;
