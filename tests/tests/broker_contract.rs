//! The broker behaviours weir's exactly-once path relies on
//! (`broker_contract::CONTRACT`), asserted on the broker the suite runs:
//! `WEIR_TEST_BROKER`, nisshi, or crabka in the crabka suite.

use weir_tests::broker_contract::{create_topic, no, CONTRACT, TOPICS};
use weir_tests::stack::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_keeps_weirs_contract() {
    let broker = Broker::start().await;
    let b = broker.brokers();
    for (topic, partitions) in TOPICS {
        create_topic(&b, topic, partitions, false)
            .await
            .expect("create the probe topics");
    }
    let mut broken = vec![];
    for (what, probe) in CONTRACT {
        let b = b.clone();
        let seen = tokio::task::spawn_blocking(move || probe(&b))
            .await
            .expect("the probe ran")
            .unwrap_or_else(|e| no(format!("error: {e:#}")));
        eprintln!("{}: {what}: {}", broker.kind.name(), seen.detail);
        if !seen.kafka_like {
            broken.push(format!("{what}: {}", seen.detail));
        }
    }
    assert!(
        broken.is_empty(),
        "{} broke weir's broker contract:\n{}",
        broker.kind.name(),
        broken.join("\n")
    );
}
