//! The archive on the real pipeline: every event ClickHouse counts is in
//! object storage once, on a real S3 server (s3s-fs) and on a directory,
//! in both formats; files roll by count and by time; compaction leaves one
//! file per tenant and hour; and ClickHouse reads the archive in place with
//! the same count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weir_archiver::config::StoreConfig;
use weir_archiver::layout::Format;
use weir_archiver::manifest::{clickhouse_live, MANIFEST_STRUCTURE};
use weir_archiver::store::ArchiveStore;
use weir_tests::archive::{
    archived, counted_ids, start_archiver, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY,
};
use weir_tests::load::{now_ms, plan, TENANT};
use weir_tests::{eventually, Pipeline};

const ROLL_EVENTS: usize = 500;

fn dir_store(dir: &std::path::Path, format: Format) -> StoreConfig {
    std::fs::create_dir_all(dir).unwrap();
    StoreConfig {
        url: format!("file://{}", dir.display()),
        options: BTreeMap::new(),
        format,
    }
}

/// Waits until the archive holds exactly the ids ClickHouse counts, each
/// once, and returns what it holds.
async fn archive_matches_clickhouse(
    p: &Pipeline,
    store: &ArchiveStore,
    what: &str,
) -> weir_tests::archive::ArchiveView {
    eventually(
        &format!("{what}: the archive holds what ClickHouse counts"),
        || async {
            let counted = counted_ids(&p.stack).await.ok()?;
            let view = archived(store).await.ok()?;
            let same = !counted.is_empty() && view.ids.keys().eq(counted.keys());
            same.then_some(view)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counted_event_is_archived_once_compacted_and_readable_in_place() {
    let p = Pipeline::start().await;
    let s3 = S3Server::start(&p.stack).await;
    let s3_store = s3.store("events", Format::Parquet);
    let fs_store = dir_store(&p.stack.dir.path().join("archive-fs"), Format::NdjsonGz);
    let time_store = dir_store(&p.stack.dir.path().join("archive-time"), Format::Parquet);
    let roll = ROLL_EVENTS.to_string();
    // On S3: rolls by count, compacts every second, hours of any age.
    let on_s3 = start_archiver(
        &p.stack,
        "s3",
        &s3_store,
        &[
            ("WEIR_ROLL__MAX_EVENTS", &roll),
            ("WEIR_ROLL__MAX_INTERVAL_MS", "2000"),
            ("WEIR_COMPACTION__INTERVAL_MS", "1000"),
            ("WEIR_COMPACTION__MIN_HOUR_AGE_MS", "-3600000"),
            ("WEIR_COMPACTION__GRACE_MS", "1000"),
        ],
    )
    .await;
    // On a directory, ndjson.gz: rolls by count, no compaction, so its
    // part files are what the roll wrote.
    let on_fs = start_archiver(
        &p.stack,
        "fs",
        &fs_store,
        &[
            ("WEIR_ROLL__MAX_EVENTS", &roll),
            ("WEIR_ROLL__MAX_INTERVAL_MS", "2000"),
            ("WEIR_COMPACTION__ENABLED", "false"),
        ],
    )
    .await;
    // Rolls by time only: a count it can never reach.
    let by_time = start_archiver(
        &p.stack,
        "time",
        &time_store,
        &[
            ("WEIR_ROLL__MAX_EVENTS", "100000000"),
            ("WEIR_ROLL__MAX_INTERVAL_MS", "1500"),
            ("WEIR_COMPACTION__ENABLED", "false"),
        ],
    )
    .await;

    // Duplicates and late events too: the archive holds what is counted.
    let plan = plan(17, 3_000, 5, 5, 40);
    let acked = p.post(&plan.events).await;
    let expected = plan.on_time_ids.len() + plan.late_ids.len();
    assert_eq!(
        acked.len(),
        expected,
        "ingest acknowledges every distinct event"
    );
    eventually("ClickHouse counts every acknowledged event", || async {
        let n = counted_ids(&p.stack).await.ok()?.len();
        (n == expected).then_some(())
    })
    .await;

    let stores: Vec<(&str, ArchiveStore)> =
        [("s3", &s3_store), ("fs", &fs_store), ("time", &time_store)]
            .into_iter()
            .map(|(n, c)| (n, ArchiveStore::build(c).unwrap()))
            .collect();
    for (name, store) in &stores {
        let view = archive_matches_clickhouse(&p, store, name).await;
        let twice: Vec<_> = view.ids.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{name}: ids archived twice: {twice:?}");
        assert_eq!(view.ids.len(), expected, "{name}");
    }

    // Rolling by count: no part file past n events, and enough files for
    // the traffic (a file per tenant and hour of each range).
    let fs = archived(&stores[1].1).await.unwrap();
    let biggest = fs.files.iter().map(|f| f.1).max().unwrap();
    assert!(
        biggest <= ROLL_EVENTS,
        "a part holds {biggest} events, more than {ROLL_EVENTS}"
    );
    assert!(
        fs.files.len() >= expected / ROLL_EVENTS,
        "{} part files",
        fs.files.len()
    );
    assert!(
        fs.files.iter().all(|f| f.0.ends_with(".ndjson.gz")),
        "{:?}",
        fs.files
    );

    // Rolling by time: one event, on its own, is archived within a few
    // intervals although the count is nowhere near.
    let sent = Instant::now();
    let tick = serde_json::json!({"event_id": "tick-1", "name": "archive.tick", "user_id": "u", "timestamp": now_ms()});
    assert_eq!(p.post(&[tick]).await.len(), 1);
    eventually("the lone event is archived by time", || async {
        let v = archived(&stores[2].1).await.ok()?;
        v.ids.contains_key("tick-1").then_some(())
    })
    .await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the time roll took {took:?}"
    );

    // Compaction: every hour on S3 ends as one compacted file, each event once.
    let compacted = eventually("every hour on S3 is one compacted file", || async {
        let v = archived(&stores[0].1).await.ok()?;
        let one_per_hour = v
            .files
            .iter()
            .all(|f| f.0.rsplit('/').next().is_some_and(|n| n.starts_with("c-")));
        (one_per_hour && v.ids.len() == expected + 1).then_some(v)
    })
    .await;
    assert!(compacted.ids.values().all(|n| *n == 1));
    let hours: std::collections::BTreeSet<String> = compacted
        .files
        .iter()
        .map(|f| f.0.rsplit_once('/').unwrap().0.to_string())
        .collect();
    assert_eq!(
        hours.len(),
        compacted.files.len(),
        "one file per tenant and hour: {:?}",
        compacted.files
    );
    let stats = on_s3.metric("weir_archiver_compaction_runs_total").await;
    assert!(stats >= 1.0, "compaction runs are counted");

    // In place: ClickHouse reads each archive through the manifest rule
    // and counts what it counts in `events`.
    let in_clickhouse = p
        .stack
        .clickhouse_query(&format!(
            "SELECT count(), uniqExact(event_id) FROM events FINAL WHERE tenant = '{TENANT}' AND event_id != 'tick-1'"
        ))
        .await
        .unwrap();
    let s3_url = format!("{}/{BUCKET}/events/tenant=*/date=*/hour=*", s3.endpoint());
    let s3_live = clickhouse_live(
        &format!("s3('{s3_url}/*.parquet', '{ACCESS_KEY}', '{SECRET_KEY}', 'Parquet')"),
        &format!("s3('{s3_url}/_manifest.json', '{ACCESS_KEY}', '{SECRET_KEY}', 'JSONEachRow', '{MANIFEST_STRUCTURE}')"),
    );
    let fs_root = p.stack.dir.path().join("archive-fs");
    let fs_glob = format!("{}/tenant=*/date=*/hour=*", fs_root.display());
    let fs_live = clickhouse_live(
        &format!("file('{fs_glob}/*.ndjson.gz', JSONEachRow)"),
        &format!("file('{fs_glob}/_manifest.json', JSONEachRow, '{MANIFEST_STRUCTURE}')"),
    );
    for (name, live) in [("s3", s3_live), ("fs", fs_live)] {
        let in_place = p
            .stack
            .clickhouse_query(&format!(
                "SELECT count(), uniqExact(event_id) FROM ({live}) WHERE tenant = '{TENANT}' AND event_id != 'tick-1'"
            ))
            .await
            .unwrap_or_else(|e| panic!("{name}: reading the archive in place: {e}"));
        assert_eq!(
            in_place, in_clickhouse,
            "{name}: read in place, the archive counts what ClickHouse counts"
        );
        assert_eq!(in_place, format!("{expected}\t{expected}"), "{name}");
    }
    for stage in [&on_s3, &on_fs, &by_time] {
        assert!(stage.metric("weir_archiver_events_archived_total").await >= expected as f64);
    }
}
