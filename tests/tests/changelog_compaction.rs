//! The processor's changelog on a real broker that compacts without regard
//! for transactions, as both test brokers do (`WEIR_TEST_BROKER`): each keeps
//! a key's newest record by offset, even one inside a transaction that is
//! still open or was aborted. nisshi 0.7 compacts its whole log at every
//! start; crabka 0.3.8 compacts sealed segments every 30 s, and aborts the
//! dead producer's transaction after its timeout. A broker killed while the
//! processor's commit is in flight therefore deletes the committed version of
//! every state key that commit rewrote; the chaos run lost one minute's
//! counts of two partitions that way. Each state key now has two changelog
//! slots (processor/src/slots.rs), and this test replays that crash on the
//! real broker.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;
use weir_core::kafka::KafkaConfig;
use weir_processor::changelog::kafka::{read_partition, state_record};
use weir_processor::changelog::StateRecord;
use weir_processor::config::ProcessorConfig;
use weir_processor::partition::{PartitionState, TimeRules};
use weir_tests::pipeline::eventually_ok_within;
use weir_tests::stack::Broker;

const STATE: &str = "processor.state";
/// The same writes under one key per state key, as before the slots: what
/// the broker does to it shows the crash really hit an open transaction.
const UNSLOTTED: &str = "unslotted.state";
const MINUTE: i64 = 60_000;

fn rules() -> TimeRules {
    // The defaults (one-minute windows, 5 s out of order, a minute's
    // lateness), with a dedup horizon a test can outrun.
    ProcessorConfig {
        dedup_horizon_ms: 10 * MINUTE,
        ..Default::default()
    }
    .time_rules()
}

fn process(state: &mut PartitionState, offsets: std::ops::Range<i64>, base: i64) {
    for o in offsets {
        let ts = base + o * 100;
        let v = serde_json::json!({"event_id": format!("e{o}"), "name": "shop.view", "user_id": format!("u{}", o % 7), "timestamp": ts});
        let event = weir_ingest::validate::to_event(&v, ts, "t", &Default::default())
            .expect("a valid event");
        state.process(o, &event);
    }
}

/// Writes a batch's changelog, slotted to `STATE` and unslotted to
/// `UNSLOTTED`, in the producer's open transaction; returns once the broker
/// has every record.
async fn write_batch(producer: &FutureProducer, state: &mut PartitionState) {
    let changelog = state.drain().changelog;
    assert!(!changelog.is_empty(), "the batch changed state");
    for r in changelog {
        let unslotted = StateRecord {
            key: weir_processor::changelog::slots::Slot::parse(&r.key)
                .0
                .to_string(),
            ..r.clone()
        };
        for (topic, r) in [(STATE, r), (UNSLOTTED, unslotted)] {
            let out = state_record(topic, 0, r);
            producer
                .send(out.to_future_record(), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("the broker takes the record");
        }
    }
}

/// Both topics, compacted, in segments of 100 bytes: crabka cleans only
/// sealed segments, so every batch gets its own; nisshi has no segments.
async fn create_topics(kafka: &KafkaConfig) {
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config(&[]).create().expect("admin client");
    let topics = [STATE, UNSLOTTED].map(|name| {
        NewTopic::new(name, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("segment.bytes", "100")
    });
    for created in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("the broker answers")
    {
        created.expect("the topic is created");
    }
}

/// Every record of `topic`/0 as the processor's restore reads it,
/// uncommitted ones included.
async fn read(kafka: &KafkaConfig, topic: &'static str) -> Vec<StateRecord> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || read_partition(&kafka, topic, 0, "0/"))
        .await
        .unwrap()
        .expect("the changelog reads back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_state_survives_a_broker_that_compacts_an_open_transaction() {
    let mut broker = Broker::start().await;
    let kafka = KafkaConfig {
        brokers: broker.brokers(),
        ..KafkaConfig::default()
    };
    create_topics(&kafka).await;
    let producer: FutureProducer = kafka
        .client_config(&[
            ("transactional.id", "weir-test-changelog"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // crabka aborts the transaction the crash leaves open after
            // this; nisshi never does.
            ("transaction.timeout.ms", "10000"),
        ])
        .create()
        .expect("producer");
    let txn = Duration::from_secs(30);
    tokio::task::block_in_place(|| producer.init_transactions(txn)).expect("transactions");

    // Two minutes of events, committed in three batches: the first minute's
    // window is rewritten by each, the meta key too.
    let base = 1_700_000_000_000 / MINUTE * MINUTE;
    let mut state = PartitionState::new(0, rules());
    for batch in [0..200, 200..400, 400..700] {
        process(&mut state, batch, base);
        producer.begin_transaction().expect("begin");
        write_batch(&producer, &mut state).await;
        tokio::task::block_in_place(|| producer.commit_transaction(txn)).expect("commit");
        state.changelog_committed();
    }
    let committed = 700;
    assert_eq!(state.open_windows(), 2, "both minutes are open");

    // The next commit is in flight, its records written, when the broker dies.
    process(&mut state, 700..800, base);
    producer.begin_transaction().expect("begin");
    write_batch(&producer, &mut state).await;
    let written = read(&kafka, UNSLOTTED).await.len();
    broker.kill9_and_restart().await;
    drop(producer);

    // Wait until the broker has compacted the unslotted copy: nisshi on
    // start, crabka after the open transaction's timeout sealed its segment.
    eventually_ok_within(
        "the broker compacts the changelog",
        Duration::from_secs(150),
        || async {
            let left = read(&kafka, UNSLOTTED).await.len();
            (left < written).then_some(()).ok_or_else(|| {
                format!(
                    "{left} of {written} records left (if the broker's compaction changed, \
                     revisit processor/src/changelog/slots.rs)"
                )
            })
        },
    )
    .await;

    // What a processor restoring the partition now would read.
    let restore = |topic: &'static str| {
        let kafka = kafka.clone();
        async move {
            PartitionState::restore(0, rules(), read(&kafka, topic).await, Some(committed))
                .expect("the changelog restores")
        }
    };
    let mut expected = PartitionState::new(0, rules());
    process(&mut expected, 0..committed, base);
    let restored = restore(STATE).await;
    assert_eq!(
        restored.open_window_counts(),
        expected.open_window_counts(),
        "every open window restored with its committed count"
    );
    assert_eq!(restored.watermark(), expected.watermark());
    assert_eq!(restored.dedup_len(), expected.dedup_len());

    // Without slots, the same crash loses the rewritten window.
    let unslotted = restore(UNSLOTTED).await;
    assert_ne!(
        unslotted.open_window_counts(),
        expected.open_window_counts(),
        "the unslotted copy kept every window, so compaction did not hit the open transaction"
    );
}
