//! Late, offline and historical events on the real pipeline: whatever ingest
//! acknowledges is counted exactly once, however old (up to
//! `max_event_age_ms`), and re-sending changes nothing; an older event is
//! refused at the door, naming the limit.

use serde_json::{json, Value};
use weir_tests::load::{now_ms, utc_date, WRITE_KEY};
use weir_tests::{eventually, Pipeline};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn event(id: &str, ts: i64, user: &str) -> Value {
    json!({"event_id": id, "name": "offline.sync", "user_id": user, "timestamp": ts, "channel": "mobile"})
}

/// The query API's total and unique users of `offline.sync` in `[from, to)`.
async fn counted(p: &Pipeline, from: i64, to: i64) -> (u64, u64) {
    let m = p
        .metrics(&format!("name=offline.sync&from={from}&to={to}"))
        .await;
    (
        m["total_count"].as_u64().unwrap_or(0),
        m["unique_users"].as_u64().unwrap_or(0),
    )
}

/// Resends recognised so far: dropped by the processor's dedup, or (past
/// its horizon) found counted by the aggregator's late lane.
async fn resends_recognised(p: &Pipeline) -> f64 {
    let dropped = p
        .processor()
        .metric("weir_processor_events_total{verdict=\"duplicate\"}")
        .await;
    let found = p
        .aggregator
        .metric("weir_aggregator_late_events_total{outcome=\"already_counted\"}")
        .await;
    dropped + found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_minutes_hours_and_days_old_count_once_and_older_ones_are_refused() {
    let p = Pipeline::start().await;
    let now = now_ms();
    // On-time traffic first, so that every partition's watermark is at now
    // and the old events below are late for it.
    let fresh: Vec<Value> = (0..40)
        .map(|i| event(&format!("fresh-{i}"), now, &format!("u{}", i % 4)))
        .collect();
    assert_eq!(p.post(&fresh).await.len(), 40);
    eventually("the on-time events are counted", || async {
        (counted(&p, now - MINUTE, now + MINUTE).await.0 == 40).then_some(())
    })
    .await;

    // Five minutes, three hours and six days old: an app that was offline.
    let ages = [("5m", 5 * MINUTE), ("3h", 3 * HOUR), ("6d", 6 * DAY)];
    let mut old = vec![];
    for (label, age) in ages {
        for i in 0..5 {
            // Users u0..u4 also sent on-time events: unique users must not grow for them.
            old.push(event(
                &format!("old-{label}-{i}"),
                now - age - i * 1_000,
                &format!("u{i}"),
            ));
        }
    }
    let acked = p.post(&old).await;
    assert_eq!(acked.len(), 15, "every old event is acknowledged");
    for (label, age) in ages {
        let (from, to) = (now - age - HOUR, now - age + MINUTE);
        let got = eventually(&format!("the {label} old events are counted"), || async {
            let c = counted(&p, from, to).await;
            (c.0 == 5).then_some(c)
        })
        .await;
        assert_eq!(got, (5, 5), "{label}: 5 events of 5 users\n{}", p.logs());
    }
    let all = (now - 7 * DAY, now + HOUR);
    assert_eq!(counted(&p, all.0, all.1).await, (55, 5));
    let late_rows = p
        .stack
        .clickhouse_query("SELECT countIf(late = 1), count() FROM events FINAL")
        .await
        .unwrap();
    assert_eq!(
        late_rows, "15\t55",
        "the old events went through the late lane"
    );

    // Re-sent, as an offline queue retries: acknowledged again, counted no more.
    let before = resends_recognised(&p).await;
    assert_eq!(p.post(&old).await.len(), 15);
    // The processor still remembers the minutes- and hours-old ids (its
    // dedup horizon is a day); the days-old ones reach the aggregator, which
    // finds them counted.
    eventually("every resend was recognised", || async {
        (resends_recognised(&p).await - before >= 15.0).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        counted(&p, all.0, all.1).await,
        (55, 5),
        "resends changed nothing\n{}",
        p.logs()
    );
    assert!(
        p.aggregator
            .metric("weir_aggregator_late_correction_lag_seconds_count")
            .await
            >= 15.0,
        "the correction lag of each counted late event is exported"
    );

    // Older than max_event_age_ms (7 days): refused, naming the limit.
    let too_old = event("too-old", now - 8 * DAY, "u0");
    let r = reqwest::Client::new()
        .post(p.ingest.url("/v1/events"))
        .bearer_auth(WRITE_KEY)
        .json(&too_old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["fields"][0]["field"], "timestamp", "{v}");
    let message = v["error"]["fields"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("max_event_age_ms") && message.contains("168 h"),
        "{v}"
    );
    let r = reqwest::Client::new()
        .post(p.ingest.url("/v1/events/batch"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({"events": [too_old, event("young", now, "u0")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "the young event of the batch is taken");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["rejected"][0]["index"], 0, "{v}");
    assert_eq!(v["accepted"][0]["event_id"], "young", "{v}");
}

/// A week of history imported through the normal batch endpoint as fast as
/// it goes (every event late for the partitions' watermarks): the counts per
/// day and in total come out exact, and importing it all again changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_history_imports_exactly_through_the_normal_endpoints() {
    let p = Pipeline::start().await;
    let now = now_ms();
    assert_eq!(p.post(&[event("today", now, "u0")]).await.len(), 1);
    // 3,000 events spread over the past 7 days (an hour inside the limit),
    // from 50 users, in no particular order.
    let span = 7 * DAY - HOUR;
    let history: Vec<Value> = (0..3_000i64)
        .map(|i| {
            let ts = now - HOUR - (i * 7_919 % 3_000) * span / 3_000;
            event(&format!("import-{i}"), ts, &format!("u{}", i % 50))
        })
        .collect();
    let mut per_day: std::collections::BTreeMap<String, u64> = Default::default();
    for e in &history {
        let day = e["timestamp"].as_i64().unwrap().div_euclid(DAY);
        *per_day.entry(day.to_string()).or_default() += 1;
    }
    let started = std::time::Instant::now();
    assert_eq!(p.post(&history).await.len(), 3_000);
    let all = (now - 8 * DAY, now + HOUR);
    eventually("the import is counted", || async {
        (counted(&p, all.0, all.1).await.0 == 3_001).then_some(())
    })
    .await;
    eprintln!(
        "imported 3,000 events of the past week, counted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(counted(&p, all.0, all.1).await, (3_001, 50));
    let m = p
        .metrics(&format!(
            "name=offline.sync&from={}&to={}&group_by=day",
            all.0, all.1
        ))
        .await;
    let mut got: std::collections::BTreeMap<String, u64> = Default::default();
    for g in m["grouped_metrics"].as_array().unwrap() {
        let day = g["group_key"].as_str().unwrap();
        got.insert(day.to_string(), g["total_count"].as_u64().unwrap());
    }
    let today = now.div_euclid(DAY).to_string();
    *per_day.entry(today).or_default() += 1;
    let want: std::collections::BTreeMap<String, u64> = per_day
        .into_iter()
        .map(|(day, n)| (utc_date(day.parse().unwrap()), n))
        .collect();
    assert_eq!(got, want, "per day");

    // The same import again, as a retried job would: nothing changes.
    let before = resends_recognised(&p).await;
    assert_eq!(p.post(&history).await.len(), 3_000);
    eventually("the second import was recognised", || async {
        (resends_recognised(&p).await - before >= 3_000.0).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(counted(&p, all.0, all.1).await, (3_001, 50));
}
