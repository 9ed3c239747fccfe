//! The aggregator's crash test on the real stack: 100,000 events (10 %
//! duplicate ids) flow through the processor into ClickHouse while the
//! aggregator is SIGKILLed five times at seeded moments and ClickHouse is
//! killed and restarted once. While ClickHouse is down the aggregator must
//! hold back (no rows acknowledged, not ready) and then resume without loss.
//! At the end the totals and unique users per name, per minute and overall
//! must equal a reference over the distinct events.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use weir_tests::load::{now_ms, produce_raw, Lcg};
use weir_tests::{Stack, Stage};

const TOTAL: usize = 100_000;
const NAMES: [&str; 3] = ["shop.view", "shop.cart_add", "shop.checkout"];
const USERS: u64 = 5_000;

async fn ready(stage: &Stage) -> bool {
    reqwest::get(stage.url("/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_sigkills_and_a_clickhouse_restart_keep_counts_exact() {
    let mut stack = Stack::start().await;
    let codec = stack.codec();
    codec.register().await.unwrap();
    let processor = stack.stage("processor", "0", &[("WEIR_INSTANCE_ID", "a0")]);
    let mut aggregator = stack.stage("aggregator", "0", &[]);
    processor.wait_ready().await;
    aggregator.wait_ready().await;

    // In event-time order, 10 ms apart: nothing is late; duplicates re-send an earlier id.
    let mut rng = Lcg::new(21);
    let t0 = now_ms() - 3_600_000;
    let mut events: Vec<Value> = Vec::with_capacity(TOTAL);
    let mut distinct: BTreeMap<String, (usize, String, i64)> = BTreeMap::new();
    for i in 0..TOTAL {
        if i > 100 && rng.below(10) == 0 {
            let again = events[rng.below(i as u64) as usize].clone();
            events.push(again);
            continue;
        }
        let (name, user) = (rng.below(3) as usize, format!("user-{}", rng.below(USERS)));
        let (id, ts) = (format!("agg-{i}"), t0 + i as i64 * 10);
        distinct.insert(id.clone(), (name, user.clone(), ts));
        events.push(json!({"event_id": id, "name": NAMES[name], "user_id": user, "timestamp": ts, "channel": "web"}));
    }

    // Five aggregator kills and one ClickHouse restart, at seeded chunks.
    let mut faults: Vec<(usize, bool)> = (0..5)
        .map(|_| (5_000 + rng.below(TOTAL as u64 - 15_000) as usize, false))
        .collect();
    faults.push((TOTAL / 2, true));
    faults.sort();
    let mut sent = 0;
    let mut held_back = false;
    for (at, clickhouse) in faults {
        let at = (at - at % 2_000).max(sent);
        produce_raw(&stack, &codec, &events[sent..at]).await;
        sent = at;
        if clickhouse {
            stack.clickhouse.kill9();
            produce_raw(&stack, &codec, &events[sent..sent + 2_000]).await;
            sent += 2_000;
            // The next insert fails: the aggregator says so and holds its batch.
            let deadline = Instant::now() + Duration::from_secs(60);
            while ready(&aggregator).await {
                assert!(
                    Instant::now() < deadline,
                    "the aggregator stays ready while ClickHouse is down:\n{}",
                    aggregator.proc.log_tail(20)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let inserted = aggregator
                .metric("weir_aggregator_rows_inserted_total")
                .await;
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert_eq!(
                aggregator
                    .metric("weir_aggregator_rows_inserted_total")
                    .await,
                inserted,
                "no rows are acknowledged while ClickHouse is down"
            );
            assert!(!ready(&aggregator).await, "still not ready");
            assert!(
                aggregator
                    .metric("weir_aggregator_insert_failures_total")
                    .await
                    > 0.0,
                "failed inserts are counted"
            );
            held_back = true;
            stack.clickhouse.restart();
        } else {
            aggregator.proc.kill9();
            tokio::time::sleep(Duration::from_millis(300)).await;
            aggregator.proc.restart();
        }
    }
    produce_raw(&stack, &codec, &events[sent..]).await;
    assert!(held_back);

    // The reference, per name: distinct events and their users.
    let mut want: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for (name, user, _) in distinct.values() {
        let w = want.entry(NAMES[*name]).or_default();
        w.0 += 1;
        w.1.insert(user);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let read = |name: &'static str| {
        let aggregator = &aggregator;
        async move {
            aggregator
                .query(&format!("/v1/metrics?name={name}"))
                .await
                .1
        }
    };
    for (name, (count, users)) in &want {
        let mut got = read(name).await;
        while got["total_count"] != *count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            got = read(name).await;
        }
        assert_eq!(
            (got["total_count"].as_u64(), got["unique_users"].as_u64()),
            (Some(*count), Some(users.len() as u64)),
            "{name}: {got}\n{}",
            aggregator.proc.log_tail(30)
        );
    }
    // Overall, per minute, and the event history: no row lost or doubled.
    let (_, all) = aggregator
        .query("/v1/metrics?name=shop.*&group_by=minute")
        .await;
    let mut per_minute: BTreeMap<String, u64> = BTreeMap::new();
    for (_, _, ts) in distinct.values() {
        let minute = weir_core::event::ms_to_rfc3339(ts.div_euclid(60_000) * 60_000).unwrap();
        *per_minute
            .entry(minute.replace(":00.000Z", ":00Z"))
            .or_default() += 1;
    }
    let got: BTreeMap<String, u64> = all["grouped_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group_key"].as_str().unwrap().to_string(),
                g["total_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, per_minute, "per-minute counts");
    let users: BTreeSet<&str> = distinct.values().map(|(_, u, _)| u.as_str()).collect();
    assert_eq!(all["unique_users"], users.len(), "unique users overall");
    let stored = stack
        .clickhouse_query("SELECT count(), uniqExact(event_id) FROM events FINAL")
        .await
        .unwrap();
    assert_eq!(stored, format!("{}\t{}", distinct.len(), distinct.len()));
    eprintln!(
        "[chaos aggregator] {TOTAL} sent, {} distinct, 5 aggregator kills, 1 ClickHouse restart: lost 0, doubled 0",
        distinct.len()
    );
}
