//! Poison records in `events.raw`: undecodable bytes, an unknown schema id,
//! an empty payload. Each goes to `events.invalid` with the error; the
//! processor neither crash-loops nor blocks the partition, and the good
//! events around them are counted.

use std::time::Duration;
use weir_core::headers::Header;
use weir_ingest::acked_producer::AckedProducer;
use weir_ingest::config::IngestConfig;
use weir_tests::load::{now_ms, topic_records};
use weir_tests::pipeline::{eventually_ok, poll_until};
use weir_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_good_ones_counted() {
    let stack = Stack::start().await;
    let processor = stack.stage("processor", "0", &[("WEIR_INSTANCE_ID", "poison")]);
    processor.wait_ready().await;
    let codec = stack.codec();
    codec.register().await.unwrap();
    let mut cfg = IngestConfig::default();
    cfg.kafka.brokers = stack.brokers();
    let producer = AckedProducer::new(&weir_ingest::producer_config(&cfg)).unwrap();

    let ts = now_ms() - 120_000;
    let mut records: Vec<(String, Vec<u8>)> = vec![];
    let good = |i: usize| {
        let v = serde_json::json!({"event_id": format!("good-{i}"), "name": "shop.view", "user_id": "u", "timestamp": ts});
        weir_ingest::validate::to_event(&v, ts, "t", &Default::default()).unwrap()
    };
    for i in 0..20 {
        records.push((
            format!("good-{i}"),
            codec.encode_event(&good(i)).await.unwrap(),
        ));
        if i == 5 {
            records.push(("poison-garbage".into(), b"not avro at all".to_vec()));
            // The Confluent frame of a schema id the registry never issued.
            let mut unknown = vec![0u8, 0, 0, 0x27, 0x0f];
            unknown.extend_from_slice(&[2, 4, 6]);
            records.push(("poison-unknown-schema".into(), unknown));
            records.push(("poison-empty".into(), vec![]));
        }
    }
    // All to one partition, so the good events after the poison wait behind it.
    for (key, payload) in &records {
        producer
            .send_all(
                "events.raw",
                std::iter::once((key.as_bytes(), payload.as_slice())),
                None,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    eventually_ok("the processor counts all 23 records", || async {
        let counted = processor.metric("weir_processor_events_total").await;
        (counted >= 23.0)
            .then_some(())
            .ok_or_else(|| format!("stuck at {counted}:\n{}", processor.proc.log_tail(30)))
    })
    .await;
    // Counted is not yet committed: read until the batch's transaction lands
    // (or 30 s pass, and the asserts below say what is missing).
    let read_invalid = || async {
        let brokers = stack.brokers();
        tokio::task::spawn_blocking(move || topic_records(&brokers, "events.invalid"))
            .await
            .unwrap()
            .unwrap()
    };
    poll_until(Duration::from_secs(30), || async {
        (read_invalid().await.len() >= 3).then_some(())
    })
    .await;
    let invalid = read_invalid().await;
    let mut keys: Vec<&str> = invalid.iter().map(|r| r.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys,
        ["poison-empty", "poison-garbage", "poison-unknown-schema"]
    );
    for r in &invalid {
        let error = r
            .headers
            .iter()
            .find(|(k, _)| k == Header::Error.name())
            .map(|(_, v)| v.as_str());
        assert!(
            error.is_some_and(|e| !e.is_empty()),
            "{} carries its error",
            r.key
        );
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == Header::Source.name() && v.starts_with("events.raw/")));
    }
    assert_eq!(
        processor
            .proc
            .log_tail(500)
            .matches("processor stopped")
            .count(),
        0,
        "the processor kept running"
    );
    let brokers = stack.brokers();
    let clean = tokio::task::spawn_blocking(move || topic_records(&brokers, "events.clean"))
        .await
        .unwrap()
        .unwrap();
    let mut clean_keys: Vec<String> = clean.into_iter().map(|r| r.key).collect();
    clean_keys.sort();
    clean_keys.dedup();
    assert_eq!(clean_keys.len(), 20, "every good event went through");
}
