//! The chaos run's CI profile (`tests/chaos/`): 50,000 events through the
//! whole real stack while every stage is SIGKILLed three times, the broker
//! and ClickHouse are killed and restarted twice each, and the aggregator's
//! link to ClickHouse is cut for 30 seconds. Every acknowledged event, on
//! time or minutes to days late, must be counted exactly once, with exact
//! unique users, and `events.late` and `events.invalid` must hold exactly the
//! late events and the poison records.

use weir_tests::chaos::{run, Profile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_counted_once_through_faults() {
    let summary = run(&Profile::ci(7)).await.expect("the chaos run completes");
    eprintln!("{summary}");
    assert_eq!(summary.dealt.len(), 17, "every scheduled fault was dealt");
    assert!(summary.acknowledged > 40_000, "the load went through");
    assert!(
        summary.retries_5xx + summary.retries_transport > 0,
        "the faults reached the load client, which retried"
    );
    assert!(
        !summary.too_late.is_empty()
            && !summary.poisoned.is_empty()
            && !summary.rejected.is_empty(),
        "the run exercised late, poison and rejected events"
    );
    let violations = summary.violations();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
