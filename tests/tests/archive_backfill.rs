//! Backfill on the real pipeline: after a day's rows are deleted from
//! ClickHouse, `archiver backfill` rebuilds `events`, the minute counts and
//! the hourly rollup from the archive, to exactly what they were; running
//! it again, or over tables that were never lost, changes nothing.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use weir_archiver::config::StoreConfig;
use weir_archiver::layout::Format;
use weir_archiver::store::ArchiveStore;
use weir_tests::archive::{archived, backfill, counted_ids, start_archiver};
use weir_tests::load::{now_ms, TENANT};
use weir_tests::pipeline::groups;
use weir_tests::{eventually, Pipeline};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const NAMES: [&str; 2] = ["cart.add", "page_view"];

fn event(id: String, ts: i64, user: usize, name: &str) -> Value {
    json!({"event_id": id, "name": name, "user_id": format!("u{user}"), "timestamp": ts, "channel": "web"})
}

/// Everything a user reads back for a range: the query API's total and
/// unique users, the stored events, and every minute's and hour's count
/// with its unique users.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    api: (u64, u64),
    /// The query API's answer per name, grouped by hour.
    api_hours: Vec<Vec<(String, u64, u64)>>,
    events: String,
    minutes: String,
    hours: String,
}

async fn answers(p: &Pipeline, from: i64, to: i64) -> Answers {
    let mut api = (0, 0);
    let mut api_hours = vec![];
    for name in NAMES {
        let m = p
            .metrics(&format!("name={name}&from={from}&to={to}&group_by=hour"))
            .await;
        api.0 += m["total_count"].as_u64().unwrap_or(0);
        api.1 += m["unique_users"].as_u64().unwrap_or(0);
        api_hours.push(groups(&m));
    }
    let range = |col: &str| {
        format!(
            "tenant = '{TENANT}' AND {col} >= fromUnixTimestamp64Milli({from}, 'UTC') \
             AND {col} < fromUnixTimestamp64Milli({to}, 'UTC')"
        )
    };
    let q = |sql: String| async move { p.stack.clickhouse_query(&sql).await.unwrap() };
    Answers {
        api,
        api_hours,
        events: q(format!(
            "SELECT count(), uniqExact(event_id), uniqExact(user_id), sum(late) \
             FROM events FINAL WHERE {}",
            range("timestamp")
        ))
        .await,
        minutes: q(format!(
            "SELECT name, window_start, sum(count), uniqExactMerge(users_exact) \
             FROM event_counts_1m FINAL WHERE {} \
             GROUP BY name, window_start HAVING sum(count) > 0 ORDER BY name, window_start",
            range("window_start")
        ))
        .await,
        hours: q(format!(
            "SELECT name, hour, sum(count), uniqExactMerge(users_exact) \
             FROM event_counts_1h FINAL WHERE {} \
             GROUP BY name, hour HAVING sum(count) > 0 ORDER BY name, hour",
            range("hour")
        ))
        .await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_rebuilds_a_lost_range_exactly_and_is_idempotent() {
    let mut p = Pipeline::start().await;
    let dir = p.stack.dir.path().join("archive");
    let store = StoreConfig {
        url: format!("file://{}", dir.display()),
        options: BTreeMap::new(),
        format: Format::Parquet,
    };
    std::fs::create_dir_all(&dir).unwrap();
    let archiver = start_archiver(
        &p.stack,
        "backfill",
        &store,
        &[
            ("WEIR_ROLL__MAX_EVENTS", "400"),
            ("WEIR_ROLL__MAX_INTERVAL_MS", "1000"),
            ("WEIR_COMPACTION__INTERVAL_MS", "1000"),
            ("WEIR_COMPACTION__MIN_HOUR_AGE_MS", "-3600000"),
            ("WEIR_COMPACTION__GRACE_MS", "1000"),
        ],
    )
    .await;

    // On-time events (the processor's lanes), then a day two days ago
    // spread over its hours (the late lane), some of each sent twice.
    let now = now_ms();
    let day = (now - 2 * DAY).div_euclid(DAY) * DAY;
    let names = NAMES;
    let fresh: Vec<Value> = (0..300)
        .map(|i| {
            event(
                format!("fresh-{i}"),
                now - (i % 50) * 100,
                i as usize % 30,
                names[i as usize % 2],
            )
        })
        .collect();
    let old: Vec<Value> = (0..900)
        .map(|i| {
            let ts = day + (i * 137 % 1_440) * MINUTE + (i % 60) * 1_000;
            event(
                format!("old-{i}"),
                ts,
                i as usize % 45,
                names[i as usize % 2],
            )
        })
        .collect();
    assert_eq!(p.post(&fresh).await.len(), 300);
    assert_eq!(p.post(&old).await.len(), 900);
    assert_eq!(
        p.post(&old[..100]).await.len(),
        100,
        "resends are acknowledged"
    );
    assert_eq!(p.post(&fresh[..50]).await.len(), 50);

    let (from, to) = (day, (now.div_euclid(MINUTE) + 2) * MINUTE);
    let store_r = ArchiveStore::build(&store).unwrap();
    eventually("every event is counted and archived", || async {
        let counted = counted_ids(&p.stack).await.ok()?;
        let a = answers(&p, from, to).await;
        let v = archived(&store_r).await.ok()?;
        (counted.len() == 1_200 && a.api.0 == 1_200 && v.ids.len() == 1_200).then_some(())
    })
    .await;
    // The range must be closed: stop the processor (it flushes its windows)
    // before a backfill that reaches up to now.
    assert!(
        p.processors[0].proc.terminate(),
        "the processor stops cleanly"
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let before = answers(&p, from, to).await;
    let users_per_name: u64 = NAMES
        .iter()
        .map(|n| {
            let users: std::collections::BTreeSet<&str> = fresh
                .iter()
                .chain(&old)
                .filter(|e| e["name"] == *n)
                .filter_map(|e| e["user_id"].as_str())
                .collect();
            users.len() as u64
        })
        .sum();
    assert_eq!(before.api, (1_200, users_per_name), "{before:?}");
    assert!(
        before.events.starts_with("1200\t1200\t45\t900"),
        "{before:?}"
    );

    // A range that ended under an hour ago is refused while the processor
    // may still emit it, naming the way out.
    let (ok, out) = backfill(&p.stack, &store, from, to, &[]);
    assert!(!ok && out.contains("--allow-recent"), "{out}");

    // Over intact tables: nothing changes (no event counted twice).
    let (ok, out) = backfill(&p.stack, &store, from, to, &["--allow-recent"]);
    assert!(ok, "{out}");
    assert!(out.contains("backfilled 1200 events"), "{out}");
    assert_eq!(
        answers(&p, from, to).await,
        before,
        "a backfill over intact tables"
    );

    // The range is lost...
    for (table, col) in [
        ("events", "timestamp"),
        ("event_counts_1m", "window_start"),
        ("event_counts_1h", "hour"),
    ] {
        p.stack
            .clickhouse_query(&format!(
                "ALTER TABLE {table} DELETE WHERE tenant = '{TENANT}' \
                 AND {col} >= fromUnixTimestamp64Milli({from}, 'UTC') \
                 AND {col} < fromUnixTimestamp64Milli({to}, 'UTC') \
                 SETTINGS mutations_sync = 2"
            ))
            .await
            .unwrap();
    }
    let lost = answers(&p, from, to).await;
    assert_eq!(lost.api, (0, 0), "the rows are gone: {lost:?}");

    // ...and rebuilt exactly, twice over.
    for run in 1..=2 {
        let (ok, out) = backfill(&p.stack, &store, from, to, &["--allow-recent"]);
        assert!(ok, "run {run}: {out}");
        assert_eq!(
            answers(&p, from, to).await,
            before,
            "run {run}: the backfill restores what was counted"
        );
    }
    assert!(archiver.metric("weir_archiver_events_archived_total").await >= 1_200.0);
}
