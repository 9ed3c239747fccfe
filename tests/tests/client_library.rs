//! The Rust client library (`weir-client`) on the real pipeline: a
//! `BatchUploader` sends 100,000 events while ingest is killed three times
//! and the broker once, and ClickHouse counts each exactly once; and a
//! tight rate limit's 429s are waited out as `Retry-After` says.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_client::{BatchConfig, BatchUploader, ClientConfig, Event, Outcome};
use weir_tests::load::{now_ms, WRITE_KEY};
use weir_tests::pipeline::{eventually_within, PipelineOptions};
use weir_tests::Pipeline;

/// Every outcome the hook heard, with its event id.
type Heard = Arc<Mutex<Vec<(String, Outcome)>>>;

/// A `BatchUploader` into `ingest` whose every outcome is kept by event id.
fn uploader(ingest: &str, config: BatchConfig) -> (BatchUploader, Heard) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let o = outcomes.clone();
    let up = BatchUploader::new(
        ClientConfig::new(ingest, WRITE_KEY),
        config,
        Some(Box::new(move |r| {
            o.lock()
                .unwrap()
                .push((r.event_id.clone(), r.outcome.clone()))
        })),
    )
    .unwrap();
    (up, outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_uploader_loses_and_doubles_nothing_through_ingest_and_broker_kills() {
    let mut p = Pipeline::start().await;
    const EVENTS: usize = 100_000;
    let (up, outcomes) = uploader(&p.ingest.url(""), BatchConfig::default());
    let start = now_ms();
    let sender = {
        let up = up.clone();
        tokio::spawn(async move {
            for i in 0..EVENTS {
                let e = Event::new("client.load")
                    .user_id(format!("u{}", i % 1_000))
                    .timestamp_ms(start + (i as i64) / 20)
                    .property("n", i as i64);
                up.send(e).await.unwrap();
            }
        })
    };
    // Faults while the queue drains: ingest killed three times, the broker once.
    for round in 0..4 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if round == 2 {
            p.stack.kafka.kill9();
            tokio::time::sleep(Duration::from_secs(2)).await;
            p.stack.kafka.restart();
        } else {
            p.ingest.proc.kill9();
            tokio::time::sleep(Duration::from_millis(500)).await;
            p.ingest.proc.restart();
        }
        p.ingest.wait_ready().await;
    }
    sender.await.unwrap();
    up.close(Duration::from_secs(600)).await.unwrap();

    let stats = up.stats();
    println!("BatchUploader through 3 ingest kills and a broker kill: {stats:?}");
    let outcomes = outcomes.lock().unwrap().clone();
    let mut by_id: BTreeMap<&str, &Outcome> = BTreeMap::new();
    for (id, o) in &outcomes {
        assert!(by_id.insert(id, o).is_none(), "{id} answered twice");
    }
    assert_eq!(by_id.len(), EVENTS, "one outcome per event");
    assert!(
        by_id
            .values()
            .all(|o| matches!(o, Outcome::Accepted { .. })),
        "every event accepted: {:?}",
        by_id
            .values()
            .find(|o| !matches!(o, Outcome::Accepted { .. }))
    );
    assert_eq!(
        (stats.acknowledged, stats.rejected, stats.dropped),
        (EVENTS as u64, 0, 0)
    );
    assert!(stats.retried > 0, "the faults made it retry: {stats:?}");

    // ClickHouse counts each exactly once: totals, users, and the history.
    let v: Value = eventually_within(
        "every event is counted",
        Duration::from_secs(600),
        || async {
            let v = p.metrics("name=client.load").await;
            (v["total_count"].as_u64() >= Some(EVENTS as u64)).then_some(v)
        },
    )
    .await;
    assert_eq!(
        (v["total_count"].as_u64(), v["unique_users"].as_u64()),
        (Some(EVENTS as u64), Some(1_000)),
        "{v}"
    );
    let stored = p
        .stack
        .clickhouse_query("SELECT count(), uniqExact(event_id) FROM events FINAL WHERE name = 'client.load' FORMAT TSV")
        .await
        .unwrap();
    assert_eq!(stored, format!("{EVENTS}\t{EVENTS}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_uploader_waits_out_429s() {
    let p = Pipeline::start_with(
        PipelineOptions::default()
            .env("ingest", "WEIR_RATE_LIMIT__EVENTS_PER_SECOND", "500")
            .env("ingest", "WEIR_RATE_LIMIT__BURST", "500"),
    )
    .await;
    const EVENTS: usize = 4_000;
    let config = BatchConfig {
        max_batch_events: 250,
        flush_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let (up, outcomes) = uploader(&p.ingest.url(""), config);
    let t = Instant::now();
    for i in 0..EVENTS {
        up.send(Event::new("client.limited").user_id(format!("u{}", i % 10)))
            .await
            .unwrap();
    }
    up.close(Duration::from_secs(300)).await.unwrap();
    let took = t.elapsed();
    let stats = up.stats();
    println!("4,000 events at a 500/s limit: {took:?}, {stats:?}");
    assert_eq!(
        (stats.acknowledged, stats.dropped, stats.rejected),
        (EVENTS as u64, 0, 0)
    );
    assert!(stats.retried > 0, "the limit answered 429s: {stats:?}");
    // The bucket holds 500 and refills at 500/s: 4,000 events take 7 s at
    // least, however eagerly the client retries.
    assert!(took >= Duration::from_secs(6), "{took:?}");
    assert!(outcomes
        .lock()
        .unwrap()
        .iter()
        .all(|(_, o)| matches!(o, Outcome::Accepted { .. })));
    let rate_limited = p.ingest.metric("weir_ingest_rejected_requests_total").await;
    assert!(rate_limited > 0.0, "ingest counted its 429s");
}
