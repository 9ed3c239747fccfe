//! The archive through faults, on a real broker and a real S3 server:
//! - 200,000 events through the pipeline while the archiver is SIGKILLed
//!   five times and the S3 server once: the archive holds exactly the ids
//!   ClickHouse counts, each once, and a reader
//!   running beside compaction never sees an event twice or lose one it saw;
//! - a store that does not answer, or refuses the credentials: the archiver
//!   is not ready and says why, and once the store is back, or it restarts
//!   with the right keys, nothing was lost.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir_archiver::layout::Format;
use weir_archiver::store::ArchiveStore;
use weir_core::event::Event;
use weir_tests::archive::{
    archived, archiver_stage, counted_ids, s3_store, start_archiver, ArchiveView, S3Server,
};
use weir_tests::load::{now_ms, plan, post_batches, RetryingProducer, TENANT};
use weir_tests::stack::free_port;
use weir_tests::{eventually, Pipeline, Stack, Stage};

const TOTAL: usize = 200_000;
const CHUNK: usize = 2_000;
const HOUR: i64 = 3_600_000;

/// Writes events `ids` straight to `events.clean`, as the processor does:
/// spread over the last three hours, for two tenants.
async fn produce(stack: &Stack, ids: std::ops::Range<usize>) {
    let codec = stack.codec();
    let mut producer = RetryingProducer::new(&stack.brokers()).unwrap();
    let now = now_ms();
    let mut records = vec![];
    for i in ids {
        let tenant = if i % 7 == 0 { "other" } else { TENANT };
        let ts = now - 3 * HOUR + (i as i64 * 53_987) % (3 * HOUR);
        let mut e = Event::new(tenant, &format!("ev-{i}"), "page_view", ts);
        e.user_id = Some(format!("u{}", i % 977));
        records.push((e.event_id.clone(), codec.encode_event(&e).await.unwrap()));
    }
    producer
        .send("events.clean", &records, Duration::from_secs(120))
        .await
        .unwrap();
}

/// Every id `0..n` exactly once.
fn check_exactly_once(view: &ArchiveView, n: usize) -> Result<(), String> {
    let twice: Vec<_> = view.ids.iter().filter(|(_, c)| **c > 1).take(5).collect();
    let missing = (0..n)
        .filter(|i| !view.ids.contains_key(&format!("ev-{i}")))
        .count();
    if twice.is_empty() && missing == 0 && view.ids.len() == n {
        Ok(())
    } else {
        Err(format!(
            "{} ids, {missing} missing, twice: {twice:?}",
            view.ids.len()
        ))
    }
}

/// Exactly the ids ClickHouse counts, each once.
fn same_ids_once(
    view: &ArchiveView,
    counted: &std::collections::BTreeMap<String, usize>,
) -> Result<(), String> {
    let twice: Vec<_> = view.ids.iter().filter(|(_, c)| **c > 1).take(5).collect();
    let missing = counted
        .keys()
        .filter(|id| !view.ids.contains_key(*id))
        .count();
    let extra = view
        .ids
        .keys()
        .filter(|id| !counted.contains_key(*id))
        .count();
    if twice.is_empty() && missing == 0 && extra == 0 {
        Ok(())
    } else {
        Err(format!(
            "{missing} missing, {extra} not counted, twice: {twice:?}"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counted_event_is_archived_exactly_once_through_kills_and_an_s3_restart() {
    let p = Pipeline::start().await;
    let stack = &p.stack;
    let mut s3 = S3Server::start(stack).await;
    let store = s3.store("crash", Format::Parquet);
    let settings = [
        ("WEIR_ROLL__MAX_EVENTS", "5000"),
        ("WEIR_ROLL__MAX_INTERVAL_MS", "1000"),
        ("WEIR_COMPACTION__INTERVAL_MS", "2000"),
        ("WEIR_COMPACTION__MIN_HOUR_AGE_MS", "-3600000"),
        // Longer than the reader below takes to read the archive once.
        ("WEIR_COMPACTION__GRACE_MS", "20000"),
    ];
    let mut archiver = start_archiver(stack, "crash", &store, &settings).await;
    let reader_store = ArchiveStore::build(&store).unwrap();

    // A reader beside the archiver and its compaction: each snapshot holds
    // no event twice and every event an earlier one held.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut seen, mut snapshots, mut largest) =
                (BTreeSet::<String>::new(), 0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                // The S3 server is down at times: such a snapshot is skipped.
                let Ok(view) = archived(&reader_store).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let twice: Vec<_> = view.ids.iter().filter(|(_, c)| **c > 1).take(5).collect();
                assert!(twice.is_empty(), "a reader saw events twice: {twice:?}");
                let lost = seen.iter().filter(|id| !view.ids.contains_key(*id)).count();
                assert_eq!(lost, 0, "a reader lost {lost} events it had seen");
                seen = view.ids.into_keys().collect();
                snapshots += 1;
                largest = largest.max(seen.len());
            }
            (snapshots, largest)
        }
    });

    // Through the whole pipeline: 2 % duplicates, 1 % an hour late.
    let plan = plan(23, TOTAL, 2, 1, 500);
    let chunks: Vec<&[serde_json::Value]> = plan.events.chunks(CHUNK).collect();
    let mut acked = BTreeSet::new();
    for (c, chunk) in chunks.iter().enumerate() {
        acked.extend(post_batches(&p.ingest.url(""), chunk, 500).await.unwrap());
        // Five kills spread over the load, and the S3 server in the middle.
        if c % 20 == 10 {
            archiver.proc.kill9();
            tokio::time::sleep(Duration::from_millis(500)).await;
            archiver = archiver_stage(stack, "crash", &store, &settings);
        }
        if c == chunks.len() / 2 + 5 {
            s3.kill9_and_restart().await;
        }
    }
    archiver.wait_ready().await;
    let expected = plan.on_time_ids.len() + plan.late_ids.len();
    assert_eq!(
        acked.len(),
        expected,
        "ingest acknowledged every distinct event"
    );
    let counted = eventually("ClickHouse counts every acknowledged event", || async {
        let c = counted_ids(stack).await.ok()?;
        (c.len() == expected).then_some(c)
    })
    .await;
    assert!(
        counted.keys().eq(acked.iter()),
        "ClickHouse counts what was acknowledged"
    );

    let store_r = ArchiveStore::build(&store).unwrap();
    let view = eventually("every counted event is archived", || async {
        let v = archived(&store_r).await.ok()?;
        (v.ids.len() >= expected).then_some(v)
    })
    .await;
    same_ids_once(&view, &counted).unwrap();
    assert!(
        archiver.metric("weir_archiver_ranges_redone_total").await
            + archiver.metric("weir_archiver_events_archived_total").await
            > 0.0,
        "the last archiver instance did work"
    );

    // Compaction catches up: one file per tenant and hour, still each once.
    let compacted = eventually("every hour is compacted", || async {
        let v = archived(&store_r).await.ok()?;
        let all_compacted = v
            .files
            .iter()
            .all(|f| f.0.rsplit('/').next().is_some_and(|n| n.starts_with("c-")));
        all_compacted.then_some(v)
    })
    .await;
    same_ids_once(&compacted, &counted).unwrap();
    let hours: BTreeSet<&str> = compacted
        .files
        .iter()
        .map(|f| f.0.rsplit_once('/').unwrap().0)
        .collect();
    assert_eq!(hours.len(), compacted.files.len(), "{:?}", compacted.files);
    // Now and an hour ago (three hours at most, around a turn of the hour).
    assert!((2..=3).contains(&hours.len()), "{hours:?}");

    stop.store(true, Ordering::Relaxed);
    let (snapshots, largest) = reader.await.expect("the reader's checks hold");
    assert_eq!(
        largest, expected,
        "the reader read the whole archive at the end"
    );
    assert!(snapshots >= 3, "the reader read {snapshots} snapshots");
    eprintln!("archive crash run: {TOTAL} events posted, {expected} counted and archived, 5 archiver kills, 1 S3 restart, {snapshots} reader snapshots (the largest {largest} events), {} files after compaction", compacted.files.len());
}

/// Why the archiver's `/readyz` says its object store is not ready, while
/// it says so.
async fn store_not_ready(stage: &Stage) -> Option<String> {
    let r = reqwest::get(stage.url("/readyz")).await.ok()?;
    (r.status() == 503).then_some(())?;
    let body: serde_json::Value = r.json().await.ok()?;
    let store = &body["components"]["object-store"];
    (store["state"] == "not_ready").then_some(())?;
    Some(store["reason"].as_str()?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_or_refuses_the_keys_makes_it_unready_and_loses_nothing() {
    let stack = Stack::start().await;
    let port = free_port();
    let good = s3_store(port, "faults", Format::Parquet);

    // Nothing listens at the endpoint yet.
    let mut first = archiver_stage(
        &stack,
        "down",
        &good,
        &[("WEIR_ROLL__MAX_INTERVAL_MS", "500")],
    );
    produce(&stack, 0..1_000).await;
    let reason = eventually("the archiver reports the store down", || async {
        store_not_ready(&first).await
    })
    .await;
    assert!(
        reason.contains(&format!("127.0.0.1:{port}")) || reason.contains("reachable"),
        "the reason names the store: {reason}"
    );
    let s3 = S3Server::start_at(&stack, port).await;
    first.wait_ready().await;
    let store_r = ArchiveStore::build(&good).unwrap();
    let view = eventually(
        "the held events are archived once the store is up",
        || async {
            let v = archived(&store_r).await.ok()?;
            (v.ids.len() >= 1_000).then_some(v)
        },
    )
    .await;
    check_exactly_once(&view, 1_000).unwrap();
    assert!(first.proc.terminate(), "a clean stop");

    // The right server, the wrong secret.
    let mut wrong = good.clone();
    wrong
        .options
        .insert("aws_secret_access_key".into(), "not-the-secret".into());
    let mut refused = archiver_stage(
        &stack,
        "down",
        &wrong,
        &[("WEIR_ROLL__MAX_INTERVAL_MS", "500")],
    );
    produce(&stack, 1_000..2_000).await;
    let reason = eventually("the archiver reports the credentials refused", || async {
        store_not_ready(&refused)
            .await
            .filter(|r| r.contains("credentials refused"))
    })
    .await;
    assert!(
        !reason.contains("not-the-secret"),
        "the secret stays out of it: {reason}"
    );
    refused.proc.kill9();

    // Restarted with the right keys: everything, once.
    let fixed = start_archiver(
        &stack,
        "down",
        &good,
        &[("WEIR_ROLL__MAX_INTERVAL_MS", "500")],
    )
    .await;
    let view = eventually("every event is archived after the fix", || async {
        let v = archived(&store_r).await.ok()?;
        (v.ids.len() >= 2_000).then_some(v)
    })
    .await;
    check_exactly_once(&view, 2_000).unwrap();
    assert!(fixed.metric("weir_archiver_events_archived_total").await > 0.0);
    assert!(
        s3.proc.pid().is_some(),
        "the S3 server ran through the whole test"
    );
}
