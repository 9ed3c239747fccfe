//! Event time against wrong client clocks, on the real pipeline: one device
//! whose clock runs 9 minutes fast must not make the honest events that
//! share its partition late. Every event is counted once, none dead-lettered.

use serde_json::json;
use weir_tests::load::{now_ms, topic_keys};
use weir_tests::{eventually, Pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_clock_nine_minutes_fast_makes_no_honest_event_late() {
    let p = Pipeline::start().await;
    let fast = json!({"event_id": "fast-clock", "name": "clock.tick", "user_id": "u-fast",
                      "timestamp": now_ms() + 9 * 60_000});
    assert_eq!(p.post(&[fast]).await.len(), 1);
    // Forty honest events after it: about ten share its partition, whose
    // watermark once followed the fast clock and dead-lettered them.
    let honest: Vec<_> = (0..40)
        .map(|i| json!({"event_id": format!("honest-{i}"), "name": "clock.tick", "user_id": format!("u{i}")}))
        .collect();
    assert_eq!(p.post(&honest).await.len(), 40);
    let m = eventually("all 41 are counted", || async {
        let m = p.metrics("name=clock.tick").await;
        (m["total_count"] == 41).then_some(m)
    })
    .await;
    assert_eq!(m["unique_users"], 41, "{m}");
    let late = topic_keys(&p.stack.brokers(), "events.late").unwrap();
    assert!(late.is_empty(), "dead-lettered: {late:?}\n{}", p.logs());
    // Nothing more arrives later: a count past 41 would be a double count.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(p.metrics("name=clock.tick").await["total_count"], 41);
}
