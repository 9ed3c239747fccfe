//! The `exactly_once` sink against rdkafka's built-in mock cluster
//! (`rdkafka::mocking`), the one place weir tests against a mock: it can fence
//! a zombie and inject broker errors on demand, which a real broker cannot.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use weir_processor::config::{CommitModeSetting, ProcessorConfig};
use weir_processor::sink::{Mode, OutRecord, OutputSink};

fn config(brokers: &str, instance: &str) -> ProcessorConfig {
    let mut cfg = ProcessorConfig::default();
    cfg.kafka.brokers = brokers.to_string();
    cfg.instance_id = instance.to_string();
    cfg.commit_mode = CommitModeSetting::ExactlyOnce;
    cfg
}

fn record(key: &str) -> OutRecord {
    OutRecord {
        topic: "out".into(),
        partition: Some(0),
        key: key.as_bytes().to_vec(),
        payload: Some(key.as_bytes().to_vec()),
        headers: OwnedHeaders::new(),
    }
}

fn input_consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-processor")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn offsets(next: i64) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("in", 0, Offset::Offset(next))
        .unwrap();
    tpl
}

/// The keys a read_committed reader sees in `out`.
fn committed_keys(brokers: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("out", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut keys = vec![];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
        }
    }
    keys
}

fn cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("in", 1, 1).unwrap();
    mock.create_topic("out", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    (mock, brokers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_zombie_cannot_commit_and_its_replacement_does() {
    let (mock, brokers) = cluster();
    let consumer = input_consumer(&brokers);
    let cfg = config(&brokers, "p0");

    let mut zombie = OutputSink::build(&cfg).await.unwrap();
    assert_eq!(zombie.mode(), Mode::ExactlyOnce);
    zombie.send_output(record("from-zombie")).await.unwrap();
    // The mock does not track producer epochs itself, so it is told to
    // answer the zombie's commit the way a broker answers a producer whose
    // transactional.id a newer instance has initialised: fenced.
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let zombie_commit = zombie.commit(&consumer, &offsets(1)).await;
    assert!(zombie_commit.is_err(), "a fenced zombie must not commit");
    assert!(
        zombie.fatal_error().is_some(),
        "fencing is fatal for the zombie's producer"
    );
    // (The mock neither hides open transactions from read_committed readers
    // nor reports transactional offset commits, so what is checked here is
    // the zombie's side: it cannot commit, and knows it must be replaced.
    // Visibility is checked on nisshi by the end-to-end crash tests.)

    // The runtime's recovery: abort what can be aborted, build a new
    // producer (its init_transactions takes over the transactional.id), and
    // redo the batch from the committed offsets.
    let _ = zombie.abort();
    let mut fresh = OutputSink::build(&cfg).await.unwrap();
    fresh.send_output(record("from-fresh")).await.unwrap();
    fresh.commit(&consumer, &offsets(1)).await.unwrap();
    assert!(fresh.fatal_error().is_none());
    assert!(committed_keys(&brokers).contains(&"from-fresh".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_produce_error_aborts_and_the_redone_batch_commits_once() {
    let (mock, brokers) = cluster();
    let consumer = input_consumer(&brokers);
    let cfg = config(&brokers, "p1");
    let mut sink = OutputSink::build(&cfg).await.unwrap();

    // The broker rejects the batch's record for good: the commit fails and
    // nothing of the batch is visible.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 4],
    );
    sink.send_output(record("batch-1")).await.unwrap();
    let failed = sink.commit(&consumer, &offsets(1)).await;
    assert!(
        failed.is_err(),
        "a batch with a failed record must not commit"
    );
    mock.clear_request_errors(RDKafkaApiKey::Produce);

    // Recovery as the runtime does it: abort, a new producer, redo.
    let _ = sink.abort();
    let mut sink = OutputSink::build(&cfg).await.unwrap();
    sink.send_output(record("batch-1")).await.unwrap();
    sink.commit(&consumer, &offsets(1)).await.unwrap();
    assert_eq!(committed_keys(&brokers), ["batch-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_broker_errors_are_retried_inside_the_transaction() {
    let (mock, brokers) = cluster();
    let consumer = input_consumer(&brokers);
    let mut sink = OutputSink::build(&config(&brokers, "p2")).await.unwrap();
    // Retriable errors: the idempotent producer retries them without
    // duplicating, and the transaction commits as if nothing happened.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    for k in ["a", "b", "c"] {
        sink.send_output(record(k)).await.unwrap();
    }
    sink.commit(&consumer, &offsets(3)).await.unwrap();
    assert_eq!(committed_keys(&brokers), ["a", "b", "c"]);
}
