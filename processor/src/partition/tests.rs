//! The partition's properties: a crash anywhere, restore and replay end in
//! the state of a run that never crashed, compaction during open
//! transactions loses nothing, and the aggregates equal a plain reference.

use super::*;
use crate::changelog::StateRecord;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use weir_core::{Event, WindowAggregate};

fn rules() -> TimeRules {
    TimeRules {
        assigner: WindowAssigner::tumbling(1_000),
        extra: vec![WindowAssigner::hopping(3_000, 1_000)],
        out_of_orderness_ms: 500,
        allowed_lateness_ms: 1_000,
        dedup_horizon_ms: 20_000,
    }
}

fn event(id: u32, ts: i64, user: u32) -> Event {
    let name = if id.is_multiple_of(3) {
        "cart.add"
    } else {
        "page_view"
    };
    Event {
        user_id: Some(format!("u{user}")),
        channel: Some("web".into()),
        ..Event::new("t", &format!("e{id}"), name, ts)
    }
}

/// A client whose clock runs this far ahead of the server's.
const FAST_CLOCK_MS: i64 = 9 * 60_000;

/// Events with duplicate ids, disorder, some far-late stragglers and some
/// from a client whose clock runs 9 minutes fast; the server receives each
/// at `t + 700` (the stragglers and fast ones at `t`).
fn input() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0u32..60, 0i64..40_000, 0u32..10, 0u8..10), 1..150).prop_map(|v| {
        let mut t = 0;
        v.into_iter()
            .map(|(id, jitter, user, kind)| {
                t += 200;
                let (ts, received_at) = match kind {
                    0 => (t - 5_000, t),
                    1 => (t + FAST_CLOCK_MS, t),
                    _ => (t + jitter % 700, t + 700),
                };
                Event {
                    received_at,
                    ..event(id, ts, user)
                }
            })
            .collect()
    })
}

/// What a replacing sink holds: per row key, the highest emitted_seq.
fn sink(
    rows: impl IntoIterator<Item = WindowAggregate>,
) -> BTreeMap<(String, i64), WindowAggregate> {
    let mut out: BTreeMap<(String, i64), WindowAggregate> = BTreeMap::new();
    for r in rows {
        let k = (r.name.clone(), r.window_start);
        match out.get(&k) {
            Some(prev) if prev.emitted_seq > r.emitted_seq => {}
            Some(prev) if prev.emitted_seq == r.emitted_seq => {
                assert_eq!(prev.count, r.count, "same seq, different content");
                assert_eq!(prev.users, r.users, "same seq, different content");
            }
            _ => {
                out.insert(k, r);
            }
        }
    }
    out
}

/// Runs `events` committing after the offsets in `commits`; returns all
/// emitted rows and the changelog.
fn run(
    state: &mut PartitionState,
    events: &[Event],
    from: usize,
    commits: &[usize],
) -> (Vec<WindowAggregate>, Vec<StateRecord>, Vec<Verdict>) {
    let (mut rows, mut log, mut verdicts) = (vec![], vec![], vec![]);
    for (i, e) in events.iter().enumerate().skip(from) {
        verdicts.push(state.process(i as i64, e));
        if commits.contains(&i) || i + 1 == events.len() {
            drain_into(state, &mut rows, &mut log);
        }
    }
    (rows, log, verdicts)
}

/// A commit: drains `state`, its rows into `rows` (extra specs' rows
/// told apart by a `<spec>:` name prefix), its changelog into `log`.
fn drain_into(
    state: &mut PartitionState,
    rows: &mut Vec<WindowAggregate>,
    log: &mut Vec<StateRecord>,
) {
    let d = state.drain();
    rows.extend(d.aggregates);
    rows.extend(d.extra_aggregates.into_iter().map(|(spec, mut r)| {
        r.name = format!("{spec}:{}", r.name);
        r
    }));
    log.extend(d.changelog);
}

/// What nisshi 0.7's compaction leaves: each changelog key's newest
/// record by offset, whether its transaction committed or not.
fn compact(log: &mut Vec<StateRecord>) {
    let newest: std::collections::HashMap<String, usize> = log
        .iter()
        .enumerate()
        .map(|(i, r)| (r.key.clone(), i))
        .collect();
    let mut i = 0;
    log.retain(|r| {
        i += 1;
        newest[&r.key] == i - 1
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A crash anywhere, with uncommitted (aborted but visible) changelog
    /// entries and emissions, and older records landing again after newer
    /// ones (a retried produce, a former owner's aborted batch), then
    /// restore and replay, ends in exactly the sink state of a run that
    /// never crashed.
    #[test]
    fn crash_restore_replay_is_exact(
        events in input(),
        commits in prop::collection::vec(0usize..150, 0..10),
        crash_at in 0usize..150,
        committed_pick in 0usize..10,
        stale in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut clean = PartitionState::new(0, rules());
        let (clean_rows, _, clean_verdicts) = run(&mut clean, &events, 0, &commits);

        // First life: runs to `crash_at`, everything it wrote is visible.
        let crash_at = crash_at.min(events.len() - 1);
        let mut first = PartitionState::new(0, rules());
        let (mut rows, mut log, _) = run(&mut first, &events[..=crash_at], 0, &commits);
        if !log.is_empty() {
            let again: Vec<StateRecord> = stale.iter().map(|i| log[i.index(log.len())].clone()).collect();
            log.extend(again);
        }
        // The committed offset is one of the commit points before the crash.
        let points: Vec<usize> = commits.iter().copied().filter(|&c| c < crash_at).collect();
        let committed = if points.is_empty() { None } else { Some(points[committed_pick % points.len()] as i64 + 1) };

        let mut second = PartitionState::restore(0, rules(), log.clone(), committed).unwrap();
        let start = committed.unwrap_or(0) as usize;
        let (more, _, verdicts) = run(&mut second, &events, start, &commits);
        rows.extend(more);
        prop_assert_eq!(&verdicts[..], &clean_verdicts[start..]);
        prop_assert_eq!(sink(rows), sink(clean_rows));
    }

    /// nisshi 0.7 compacts the changelog (at every start and every 10
    /// minutes) keeping each key's newest record by offset, even one of a
    /// transaction that is still open or later aborts. Lives that commit
    /// batches and die inside one (its records written, never committed),
    /// with compaction at any point, open batches included: restore and
    /// replay still end in exactly the sink state of a run that never
    /// crashed, and the final restore has the live state's windows,
    /// watermark and dedup ids.
    #[test]
    fn compaction_during_open_transactions_loses_nothing(
        events in input(),
        commits in prop::collection::vec(0usize..150, 0..12),
        dies in prop::collection::vec(any::<bool>(), 0..8),
        compacts in prop::collection::vec(any::<bool>(), 1..40),
    ) {
        let mut clean = PartitionState::new(0, rules());
        let (clean_rows, _, _) = run(&mut clean, &events, 0, &commits);

        let (mut log, mut rows) = (vec![], vec![]);
        let mut committed: Option<i64> = None;
        let mut state = PartitionState::new(0, rules());
        let (mut dies, mut batch, mut i) = (dies.into_iter(), 0usize, 0usize);
        while i < events.len() {
            state.process(i as i64, &events[i]);
            if commits.contains(&i) || i + 1 == events.len() {
                drain_into(&mut state, &mut rows, &mut log);
                batch += 1;
                if compacts[batch % compacts.len()] {
                    compact(&mut log); // while the batch is still open
                }
                if dies.next().unwrap_or(false) {
                    state = PartitionState::restore(0, rules(), log.clone(), committed).unwrap();
                    i = committed.unwrap_or(0) as usize;
                    continue;
                }
                committed = Some(i as i64 + 1);
                state.changelog_committed();
            }
            i += 1;
        }
        prop_assert_eq!(sink(rows), sink(clean_rows));
        compact(&mut log);
        let restored = PartitionState::restore(0, rules(), log, committed).unwrap();
        prop_assert_eq!(&restored.windows, &state.windows);
        prop_assert_eq!(restored.watermark(), state.watermark());
        prop_assert_eq!(restored.dedup_len(), state.dedup_len());
    }

    /// Every accepted event is counted once; duplicates and late events never.
    #[test]
    fn counts_match_verdicts(events in input()) {
        let mut s = PartitionState::new(0, rules());
        let (rows, _, verdicts) = run(&mut s, &events, 0, &[]);
        let accepted = verdicts.iter().filter(|v| matches!(v, Verdict::Accepted { .. })).count() as i64;
        let counted: i64 = sink(rows)
            .values()
            .filter(|r| !r.name.contains(':'))
            .map(|r| r.count)
            .sum();
        prop_assert_eq!(counted, accepted);
        let distinct: std::collections::HashSet<_> = events.iter().map(|e| &e.event_id).collect();
        let dups = verdicts.iter().filter(|v| **v == Verdict::Duplicate).count();
        prop_assert_eq!(dups, events.len() - distinct.len());
    }
}

/// The engine's meaning, written plainly: an id counts the first time
/// it is seen, if the watermark (max event time seen before it, each capped
/// at its receive time, minus the out-of-orderness bound) has not closed (window end + allowed lateness)
/// every primary window of its time; it then counts into every open
/// window of every spec. Keyed by (spec, name, window start).
fn reference(
    events: &[Event],
    rules: &TimeRules,
) -> BTreeMap<(usize, String, i64), (i64, BTreeSet<String>)> {
    let mut seen = BTreeSet::new();
    let mut max_ts: Option<i64> = None;
    let mut out: BTreeMap<(usize, String, i64), (i64, BTreeSet<String>)> = BTreeMap::new();
    let specs: Vec<&WindowAssigner> = std::iter::once(&rules.assigner)
        .chain(&rules.extra)
        .collect();
    for e in events {
        if !seen.insert(e.event_id.clone()) {
            continue;
        }
        let wm = max_ts.map_or(i64::MIN, |m| m - rules.out_of_orderness_ms);
        let open = |a: &WindowAssigner| -> Vec<i64> {
            a.assign(e.timestamp)
                .filter(|w| w.end.saturating_add(rules.allowed_lateness_ms) > wm)
                .map(|w| w.start)
                .collect()
        };
        if open(specs[0]).is_empty() {
            continue; // late: dead-lettered, and its time still moves nothing
        }
        for (spec, a) in specs.iter().enumerate() {
            for start in open(a) {
                let slot = out.entry((spec, e.name.clone(), start)).or_default();
                slot.0 += 1;
                slot.1.extend(e.user_key().map(str::to_string));
            }
        }
        // The watermark never runs ahead of the server's clock.
        let observed = e.timestamp.min(e.received_at);
        max_ts = Some(max_ts.map_or(observed, |m| m.max(observed)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// For any interleaving, duplication and delay of the stream, and
    /// any commit points, with a tumbling or hopping primary spec and a
    /// hopping extra spec counted at once: what a replacing sink ends up
    /// with equals the reference.
    #[test]
    fn emitted_aggregates_equal_the_reference(
        events in input(),
        commits in prop::collection::vec(0usize..150, 0..10),
        hopping in any::<bool>(),
    ) {
        let rules = TimeRules {
            assigner: if hopping {
                WindowAssigner::hopping(1_000, 250)
            } else {
                WindowAssigner::tumbling(1_000)
            },
            extra: vec![WindowAssigner::hopping(3_000, 1_000)],
            dedup_horizon_ms: i64::MAX / 4, // the stream is shorter: nothing is forgotten
            ..rules()
        };
        let mut s = PartitionState::new(0, rules.clone());
        let mut rows = vec![];
        for (i, e) in events.iter().enumerate() {
            s.process(i as i64, e);
            if commits.contains(&i) || i + 1 == events.len() {
                let d = s.drain();
                rows.extend(d.aggregates.into_iter().map(|a| (0, a)));
                rows.extend(d.extra_aggregates);
            }
        }
        let mut got: BTreeMap<(usize, String, i64), WindowAggregate> = BTreeMap::new();
        for (spec, r) in rows {
            let k = (spec, r.name.clone(), r.window_start);
            if got.get(&k).is_none_or(|p| r.emitted_seq >= p.emitted_seq) {
                got.insert(k, r);
            }
        }
        let got: BTreeMap<_, _> = got
            .into_iter()
            .map(|(k, r)| (k, (r.count, r.users.into_iter().collect::<BTreeSet<_>>())))
            .collect();
        prop_assert_eq!(got, reference(&events, &rules));
    }
}

#[test]
fn late_event_goes_late_and_in_lateness_reemits() {
    let mut s = PartitionState::new(0, rules());
    assert!(matches!(
        s.process(0, &event(1, 1_100, 1)),
        Verdict::Accepted {
            window_start: 1_000
        }
    ));
    // watermark 3_000 - 500 = 2_500: window [1000,2000) is within lateness (2000 + 1000 > 2500)
    s.process(1, &event(2, 3_000, 1));
    assert!(matches!(
        s.process(2, &event(3, 1_500, 2)),
        Verdict::Accepted {
            window_start: 1_000
        }
    ));
    // watermark 4_000 - 500 = 3_500 closes [1000,2000)
    s.process(3, &event(4, 4_000, 1));
    assert!(matches!(
        s.process(4, &event(5, 1_200, 3)),
        Verdict::Late {
            watermark: 3_500,
            window_start: 1_000
        }
    ));
    let rows = s.drain().aggregates;
    let w1: Vec<_> = rows.iter().filter(|r| r.window_start == 1_000).collect();
    assert!(!w1.is_empty() && w1.iter().all(|r| r.is_final && r.emitted_seq == 3));
    assert_eq!(w1.iter().map(|r| r.count).sum::<i64>(), 2);
}

#[test]
fn a_fast_client_clock_makes_no_honest_event_late() {
    let mut s = PartitionState::new(0, rules());
    let honest = |id: u32, t: i64| Event {
        received_at: t + 50,
        ..event(id, t, 1)
    };
    assert!(matches!(
        s.process(0, &honest(1, 10_000)),
        Verdict::Accepted { .. }
    ));
    // One device 9 minutes fast: counted in its (future) window...
    let fast = Event {
        received_at: 10_100,
        ..event(2, 10_100 + FAST_CLOCK_MS, 2)
    };
    assert!(matches!(s.process(1, &fast), Verdict::Accepted { .. }));
    // ...but the watermark stays at the server's clock, so the honest events
    // that follow are on time (before, they were all late).
    assert_eq!(s.watermark(), 10_100 - 500);
    for (i, t) in [(3, 10_200), (4, 10_300), (5, 9_800)] {
        assert!(
            matches!(s.process(i as i64, &honest(i, t)), Verdict::Accepted { .. }),
            "honest event at {t}"
        );
    }
}
