//! The whole counting engine against its reference model, without Kafka or
//! ClickHouse: the processor's pure core (`PartitionState`, `routing`) feeds
//! the aggregator's batch protocol (`store_batch`, the late lane) over
//! `MemoryStore`, ClickHouse's replacing tables in memory. The stream mixes
//! on-time events, events minutes to days late, re-sent events (inside and
//! past the processor's dedup horizon), and clients whose clocks run fast or
//! slow; the processor dies before a commit (what it wrote stays visible) and
//! replays from its changelog, and the aggregator crashes mid-batch at any
//! step and re-reads the batch.
//! The reference counts every accepted event once: what the query API must
//! answer. The real-stack proofs are `late_events.rs`, `pipeline.rs` and the
//! chaos run.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use weir_aggregator::clickhouse_sink::{AggregateRow, EventRow};
use weir_aggregator::store::{store_batch, MemoryStore};
use weir_core::headers::Header;
use weir_core::Event;
use weir_processor::config::ProcessorConfig;
use weir_processor::partition::{PartitionState, TimeRules};
use weir_processor::routing::{route, Origin, Output};

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

fn rules() -> TimeRules {
    // The defaults (one-minute windows, 5 s out of order, a minute's
    // lateness), with a dedup horizon a test can outrun.
    ProcessorConfig {
        // Short, so that resends past it reach the aggregator's check.
        dedup_horizon_ms: 10 * MINUTE,
        ..Default::default()
    }
    .time_rules()
}

/// How an event's time relates to the server's clock when it arrives.
#[derive(Debug, Clone, Copy)]
enum Kind {
    OnTime,
    /// 2 to 60 minutes old: an app that was offline for a while.
    MinutesLate,
    /// 1 to 7 days old: a long-offline device, or an import.
    DaysOld,
    /// Stamped by a clock 9 minutes fast.
    FastClock,
    /// Stamped by a clock 90 s slow, without `sent_at` to correct it.
    SlowClock,
    /// A resend of an earlier event, as it was.
    Resend,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        10 => Just(Kind::OnTime),
        2 => Just(Kind::MinutesLate),
        1 => Just(Kind::DaysOld),
        1 => Just(Kind::FastClock),
        1 => Just(Kind::SlowClock),
        3 => Just(Kind::Resend),
    ]
}

/// The stream ingest acknowledged, in the order the processor reads it:
/// each event with the server's receive time (which advances 5 to 60 s
/// per event, so resends land inside and past the dedup horizon).
fn stream() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        (kind(), 0u32..8, 0u32..3, 5i64..60, 0i64..1_000_000),
        1..120,
    )
    .prop_map(|items| {
        let mut out: Vec<Event> = vec![];
        let mut now = 30 * DAY;
        for (i, (kind, user, name, step, pick)) in items.into_iter().enumerate() {
            now += step * 1_000;
            let ts = match kind {
                Kind::OnTime => now - pick % 4_000,
                Kind::MinutesLate => now - 2 * MINUTE - pick % (58 * MINUTE),
                Kind::DaysOld => now - DAY - pick * 6 * DAY / 1_000_000,
                Kind::FastClock => now + 9 * MINUTE,
                Kind::SlowClock => now - 90_000,
                Kind::Resend if !out.is_empty() => {
                    let again = out[pick as usize % out.len()].clone();
                    out.push(Event {
                        received_at: now,
                        ..again
                    });
                    continue;
                }
                Kind::Resend => now,
            };
            let names = ["cart.add", "page_view", "checkout.done"];
            out.push(Event {
                received_at: now,
                user_id: Some(format!("u{user}")),
                channel: Some("web".into()),
                ..Event::new("t", &format!("e{i}"), names[name as usize], ts)
            });
        }
        out
    })
}

/// Every accepted event once, per name: (count, users).
fn reference(events: &[Event]) -> BTreeMap<String, (u64, BTreeSet<String>)> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    for e in events {
        if seen.insert(&e.event_id) {
            let slot = out.entry(e.name.clone()).or_default();
            slot.0 += 1;
            slot.1.extend(e.user_key().map(str::to_string));
        }
    }
    out
}

/// One record the aggregator reads.
enum Record {
    Event(Box<EventRow>),
    Aggregate(AggregateRow),
}

/// What the aggregator reads of the processor's output, in order. The
/// processor commits after the offsets in `commits`, and dies just before
/// the commit after `crash_at`: what that batch wrote stays visible (nisshi
/// 0.7 shows aborted records to `read_committed` readers), and the next life
/// restores the partition from its changelog and replays from the committed
/// offset.
fn process(events: &[Event], commits: &[usize], crash_at: Option<usize>) -> Vec<Record> {
    let origin = Origin {
        source: "events.raw/0",
        traceparent: None,
    };
    let mut state = PartitionState::new(0, rules());
    let (mut out, mut log) = (vec![], vec![]);
    let (mut committed, mut crashed, mut i) = (None, false, 0);
    while i < events.len() {
        let e = &events[i];
        let offset = i as i64;
        for r in route(&mut state, offset, Ok(e), origin).routes {
            if r.to == Output::Clean {
                let mut row = EventRow::new(e.clone(), 0, offset);
                row.late = r.headers.get(Header::Late).is_some() as u8;
                out.push(Record::Event(Box::new(row)));
            }
        }
        if commits.contains(&i) || i + 1 == events.len() {
            let drained = state.drain();
            out.extend(
                drained
                    .aggregates
                    .into_iter()
                    .map(|a| Record::Aggregate(a.into())),
            );
            log.extend(drained.changelog);
            if !crashed && crash_at.is_some_and(|c| i >= c) {
                crashed = true;
                state = PartitionState::restore(0, rules(), log.clone(), committed)
                    .expect("the changelog restores");
                i = committed.unwrap_or(0) as usize;
                continue;
            }
            committed = Some(offset + 1);
            state.changelog_committed();
        }
        i += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the lateness, the resends, the clocks, the batch cuts and
    /// where the aggregator crashes: the counts and unique users per name
    /// equal the reference, and the history holds each event once.
    #[test]
    fn every_accepted_event_is_counted_once(
        events in stream(),
        commits in prop::collection::vec(0usize..120, 0..12),
        cuts in prop::collection::vec(1usize..40, 1..20),
        crashes in prop::collection::vec(prop::option::weighted(0.3, 0usize..6), 1..20),
        processor_crash in prop::option::of(0usize..120),
    ) {
        let records = process(&events, &commits, processor_crash);
        let store = MemoryStore::default();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (mut at, mut n, mut restarted) = (0, 0, false);
        while at < records.len() {
            let end = (at + cuts[n % cuts.len()]).min(records.len());
            let (mut rows, mut aggregates) = (vec![], vec![]);
            for r in &records[at..end] {
                match r {
                    Record::Event(e) => rows.push(e.as_ref().clone()),
                    Record::Aggregate(a) => aggregates.push(a.clone()),
                }
            }
            n += 1;
            // A crash after some steps; the restarted aggregator reads again
            // from the batch's start (in batches cut anew).
            match crashes[n % crashes.len()] {
                Some(steps) if !restarted => store.fail_after(steps),
                _ => store.heal(),
            }
            let stored = rt.block_on(store_batch(&store, &rows, &aggregates)).is_ok();
            store.heal();
            restarted = !stored;
            if stored {
                at = end;
            }
        }
        prop_assert_eq!(store.totals(), reference(&events));
        let distinct: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        prop_assert_eq!(store.history().len(), distinct.len());
    }
}
