//! The processor's chaos test on the real broker, in each commit mode:
//! 200,000 events (20 % duplicate ids, 5 % late but within the allowed
//! lateness, 2 % later than that) into `events.raw` while two processor
//! instances run, five SIGKILLs land at seeded random moments and the broker
//! is killed and restarted once. The window aggregates in `aggregates.1m`,
//! read-side deduplicated by (window key, partition) keeping the highest
//! `emitted_seq`, must equal a reference computed from the distinct on-time
//! events, and `events.late` must hold exactly the too-late ones. The
//! `ordered` run keeps only 5,000 ids a partition in memory, so dedup works
//! mostly from its disk half.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use weir_core::codec::Codec;
use weir_tests::load::{now_ms, produce_raw, topic_keys, topic_records, Lcg};
use weir_tests::{Stack, Stage};

const TOTAL: usize = 200_000;
const NAMES: [&str; 3] = ["shop.view", "shop.cart_add", "shop.checkout"];
/// Event time advances this much per event: 200,000 events span 33 minutes.
const STEP_MS: i64 = 10;

/// One event to send, and what the reference makes of it.
struct Planned {
    id: String,
    name: &'static str,
    user: String,
    ts: i64,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    OnTime,
    /// Behind the watermark, but its window is still open.
    LateWithinLateness,
    /// Every window it belongs to is closed: dead-lettered.
    TooLate,
    /// An id sent before.
    Duplicate,
}

fn plan(seed: u64, t0: i64) -> Vec<Planned> {
    let mut rng = Lcg::new(seed);
    let mut out: Vec<Planned> = Vec::with_capacity(TOTAL);
    for i in 0..TOTAL {
        let now = t0 + i as i64 * STEP_MS;
        let roll = rng.below(100);
        // Late kinds only once every partition has a watermark.
        let kind = match roll {
            0..=19 if i > 100 => Kind::Duplicate,
            20..=24 if i > 1_000 => Kind::LateWithinLateness,
            25..=26 if i > 1_000 => Kind::TooLate,
            _ => Kind::OnTime,
        };
        if kind == Kind::Duplicate {
            let j = rng.below(i as u64) as usize;
            let original = &out[j];
            out.push(Planned {
                id: original.id.clone(),
                name: original.name,
                user: original.user.clone(),
                ts: original.ts,
                kind,
            });
            continue;
        }
        let ts = match kind {
            // 10 to 50 s behind: behind the 5 s out-of-orderness bound, and
            // its window closes only 60 s after its end.
            Kind::LateWithinLateness => now - 10_000 - rng.below(40_000) as i64,
            // 10 minutes behind: its windows closed long ago.
            Kind::TooLate => now - 600_000,
            _ => now,
        };
        out.push(Planned {
            id: format!("chaos-{seed}-{i}"),
            name: NAMES[rng.below(3) as usize],
            user: format!("user-{}", rng.below(2_000)),
            ts,
            kind,
        });
    }
    out
}

/// (window start, name) → (count, users) over the distinct counted events.
type Totals = BTreeMap<(i64, String), (i64, BTreeSet<String>)>;

fn reference(events: &[Planned]) -> (Totals, BTreeSet<String>) {
    let mut totals = Totals::new();
    let mut too_late = BTreeSet::new();
    for e in events {
        match e.kind {
            Kind::OnTime | Kind::LateWithinLateness => {
                let start = e.ts.div_euclid(60_000) * 60_000;
                let t = totals.entry((start, e.name.to_string())).or_default();
                t.0 += 1;
                t.1.insert(e.user.clone());
            }
            Kind::TooLate => {
                too_late.insert(e.id.clone());
            }
            Kind::Duplicate => {}
        }
    }
    (totals, too_late)
}

/// The same totals for 5-minute windows hopping by a minute.
fn reference_5m(events: &[Planned]) -> Totals {
    let mut totals = Totals::new();
    for e in events {
        if matches!(e.kind, Kind::OnTime | Kind::LateWithinLateness) {
            let last = e.ts.div_euclid(60_000) * 60_000;
            for k in 0..5 {
                let t = totals
                    .entry((last - k * 60_000, e.name.to_string()))
                    .or_default();
                t.0 += 1;
                t.1.insert(e.user.clone());
            }
        }
    }
    totals
}

/// Reads `topic`, keeps the highest `emitted_seq` per window key and
/// partition, and sums the partitions.
async fn observed(stack: &Stack, codec: &Codec, topic: &'static str) -> Totals {
    let brokers = stack.brokers();
    let records = tokio::task::spawn_blocking(move || topic_records(&brokers, topic))
        .await
        .unwrap()
        .unwrap();
    let mut latest: BTreeMap<(i64, String, i32), weir_core::WindowAggregate> = BTreeMap::new();
    for r in records {
        let a = codec.decode_aggregate(Some(&r.payload)).await.unwrap();
        let key = (a.window_start, a.name.clone(), a.input_partition);
        if latest
            .get(&key)
            .is_none_or(|b| a.emitted_seq > b.emitted_seq)
        {
            latest.insert(key, a);
        }
    }
    let mut totals = Totals::new();
    for ((start, name, _), a) in latest {
        let t = totals.entry((start, name)).or_default();
        t.0 += a.count;
        t.1.extend(a.users);
    }
    totals
}

/// Produces `events` to `events.raw`; a retried record may land twice,
/// which is a duplicate id.
async fn send(stack: &Stack, codec: &Codec, events: &[Planned]) {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "event_id": e.id, "name": e.name, "user_id": e.user, "timestamp": e.ts, "channel": "web",
            })
        })
        .collect();
    produce_raw(stack, codec, &events).await;
}

/// `spill_above`: ids a partition keeps in memory before spilling to disk.
/// With `extra_window`, a 5-minute window hopping by a minute is counted at
/// the same time, into `aggregates.5m`.
async fn chaos(mode: &str, seed: u64, spill_above: Option<&str>, extra_window: bool) {
    let mut stack = Stack::start().await;
    let codec = stack.codec();
    codec.register().await.unwrap();
    let config = stack.dir.path().join("processor.toml");
    std::fs::write(
        &config,
        if extra_window {
            "extra_windows = [{ name = \"5m\", size_ms = 300000, advance_ms = 60000 }]\n"
        } else {
            ""
        },
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let processors: Vec<Stage> = (0..2)
        .map(|i| {
            let id = format!("chaos-{i}");
            let mut env = vec![
                ("WEIR_COMMIT_MODE", mode),
                ("WEIR_INSTANCE_ID", id.as_str()),
                ("WEIR_SESSION_TIMEOUT_MS", "6000"),
                ("RUST_LOG", "warn,weir_processor=info"),
                ("WEIR_CONFIG", config.as_str()),
            ];
            if let Some(n) = spill_above {
                env.push(("WEIR_DEDUP_MAX_MEMORY_KEYS", n));
            }
            stack.stage("processor", &i.to_string(), &env)
        })
        .collect();
    for p in &processors {
        p.wait_ready().await;
    }
    let t0 = now_ms() - 3_600_000;
    let events = plan(seed, t0);
    let (expected, too_late) = reference(&events);

    // Faults at seeded moments, spread over the sending: five processor
    // SIGKILLs (each instance restarted after a moment) and a broker restart.
    let mut rng = Lcg::new(seed ^ 0x5eed);
    let mut faults: Vec<(usize, Option<usize>)> = (0..5)
        .map(|k| {
            (
                2_000 + rng.below(TOTAL as u64 - 30_000) as usize,
                Some(k % 2),
            )
        })
        .collect();
    faults.push((TOTAL / 2, None));
    faults.sort();
    let mut processors = processors;
    let mut sent = 0;
    let mut kills = [0, 0];
    let started = Instant::now();
    for (at, target) in faults {
        let at = at - at % 2_000;
        send(&stack, &codec, &events[sent..at.max(sent)]).await;
        sent = at.max(sent);
        match target {
            Some(i) => {
                processors[i].proc.kill9();
                kills[i] += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                processors[i].proc.restart();
            }
            None => {
                stack.kafka.kill9();
                tokio::time::sleep(Duration::from_secs(1)).await;
                stack.kafka.restart();
            }
        }
    }
    send(&stack, &codec, &events[sent..]).await;
    let sent_in = started.elapsed();

    // Wait until the aggregates match, or the time is up.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut got = observed(&stack, &codec, "aggregates.1m").await;
    while got != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(3)).await;
        got = observed(&stack, &codec, "aggregates.1m").await;
    }
    let lost: i64 = expected
        .iter()
        .map(|(k, v)| (v.0 - got.get(k).map_or(0, |g| g.0)).max(0))
        .sum();
    let doubled: i64 = got
        .iter()
        .map(|(k, v)| (v.0 - expected.get(k).map_or(0, |e| e.0)).max(0))
        .sum();
    let counted: i64 = expected.values().map(|v| v.0).sum();
    eprintln!(
        "[chaos {mode}] {TOTAL} sent in {:.0} s, {counted} distinct on-time, {} too late, kills {kills:?}, 1 broker restart; lost {lost}, doubled {doubled}",
        sent_in.as_secs_f64(),
        too_late.len()
    );
    if got != expected {
        let logs: Vec<String> = processors.iter().map(|p| p.proc.log_tail(40)).collect();
        panic!(
            "aggregates differ from the reference: lost {lost}, doubled {doubled}\n{}",
            logs.join("\n---\n")
        );
    }
    let brokers = stack.brokers();
    let late = tokio::task::spawn_blocking(move || topic_keys(&brokers, "events.late"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        late, too_late,
        "events.late holds exactly the too-late events"
    );
    if extra_window {
        let expected_5m = reference_5m(&events);
        let mut got_5m = observed(&stack, &codec, "aggregates.5m").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut rereads = 0;
        while got_5m != expected_5m && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(3)).await;
            got_5m = observed(&stack, &codec, "aggregates.5m").await;
            rereads += 1;
        }
        eprintln!("[chaos {mode}] 5-minute windows read {} times", rereads + 1);
        for (k, want) in &expected_5m {
            match got_5m.get(k) {
                Some(got) if got == want => {}
                Some(got) => eprintln!(
                    "5m cell {k:?}: count {} want {}, users {} want {}",
                    got.0,
                    want.0,
                    got.1.len(),
                    want.1.len()
                ),
                None => eprintln!("5m cell {k:?}: missing, want {}", want.0),
            }
        }
        for k in got_5m.keys().filter(|k| !expected_5m.contains_key(k)) {
            eprintln!("5m cell {k:?}: not expected");
        }
        assert_eq!(
            got_5m.len(),
            expected_5m.len(),
            "the 5-minute hopping windows"
        );
        assert!(
            got_5m == expected_5m,
            "the 5-minute hopping windows differ from the reference"
        );
        eprintln!(
            "[chaos {mode}] 5-minute hopping windows exact too: {}",
            got_5m.len()
        );
    }
    if spill_above.is_some() {
        let mut spilled = 0.0;
        for p in &processors {
            spilled += p.metric("weir_processor_dedup_spilled_keys").await;
        }
        eprintln!("[chaos {mode}] dedup ids on disk at the end: {spilled}");
        assert!(spilled > 0.0, "the dedup store spilled ids to disk");
    }
}

/// With a second spec, a 5-minute window hopping by a minute, counted at the
/// same time: its windows live five times longer, so many are open across
/// each restore. It caught restores that took the last changelog record of a
/// key instead of its newest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_exactly_once_mode_with_a_second_window_spec() {
    chaos("exactly_once", 11, None, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ordered_mode_with_dedup_spilling_to_disk() {
    // 50,000 ids a partition against 5,000 in memory: most live on disk.
    chaos("ordered", 12, Some("5000"), false).await;
}
