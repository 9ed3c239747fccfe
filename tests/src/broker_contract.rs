//! The broker behaviours weir's exactly-once path relies on, each a
//! probe of a running broker that says what it saw: two transactions of one
//! producer commit, a zombie is fenced, transactional offsets apply only on
//! commit, a replaced producer's aborted offsets stay out of the group, and
//! a restarted static member leaves every partition one owner
//! (`group_restart`).
//! `tests/tests/broker_contract.rs` asserts them on the suite's broker;
//! `broker-probe` prints them, with the behaviours weir does not rely on,
//! for nisshi and crabka side by side.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use weir_core::kafka::KafkaConfig;
use weir_core::topic_reader::{read_to_end, Isolation};

/// A producer with a `transactional.id` (or idempotent, without one).
pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// How long any one step may take.
pub const T: Duration = Duration::from_secs(30);
/// How long a transaction a killed producer left open may live.
pub const TXN_TIMEOUT_MS: u64 = 5_000;

/// The topics the probes here write, with their partition counts: create
/// them (`create_topic`) before probing.
pub const TOPICS: [(&str, i32); 2] = [("probe.txn", 1), ("probe.offsets", 2)];

/// One behaviour's result on one broker.
pub struct Seen {
    /// The broker did what Apache Kafka specifies.
    pub kafka_like: bool,
    /// What was seen.
    pub detail: String,
}

/// The broker did as Kafka does.
pub fn yes(detail: impl Into<String>) -> Seen {
    Seen {
        kafka_like: true,
        detail: detail.into(),
    }
}

/// The broker did otherwise: what it did.
pub fn no(detail: impl Into<String>) -> Seen {
    Seen {
        kafka_like: false,
        detail: detail.into(),
    }
}

/// A librdkafka client config for `brokers`.
pub fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates `name`; `compact` with small segments, so a compacting broker
/// has sealed ones to clean.
pub async fn create_topic(
    brokers: &str,
    name: &str,
    partitions: i32,
    compact: bool,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(brokers).create()?;
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    if compact {
        t = t
            .set("cleanup.policy", "compact")
            .set("segment.bytes", "1024");
    }
    for r in admin.create_topics([&t], &AdminOptions::new()).await? {
        r.map_err(|(topic, e)| anyhow::anyhow!("creating {topic}: {e}"))?;
    }
    Ok(())
}

/// A transactional producer `id`, initialised (which fences any older one).
pub fn txn_producer(brokers: &str, id: &str) -> anyhow::Result<TxnProducer> {
    let p: TxnProducer = config(brokers)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS.to_string())
        .set("linger.ms", "0")
        .create()?;
    p.init_transactions(T)?;
    Ok(p)
}

/// Queues one record.
pub fn send(p: &TxnProducer, topic: &str, key: &str, value: &str) -> anyhow::Result<()> {
    p.send(BaseRecord::to(topic).key(key).payload(value))
        .map_err(|(e, _)| anyhow::anyhow!("{e}"))
}

/// One transaction of `records`, committed or aborted.
pub fn transaction(
    p: &TxnProducer,
    topic: &str,
    records: &[(&str, &str)],
    commit: bool,
) -> anyhow::Result<()> {
    p.begin_transaction()?;
    for (k, v) in records {
        send(p, topic, k, v)?;
    }
    if commit {
        p.commit_transaction(T)?;
    } else {
        p.flush(T)?;
        p.abort_transaction(T)?;
    }
    Ok(())
}

/// Every value in `topic`, read to its end as `isolation` shows it.
pub fn values(
    brokers: &str,
    topic: &str,
    isolation: Isolation,
) -> anyhow::Result<Vec<(String, String)>> {
    let kafka = KafkaConfig {
        brokers: brokers.into(),
        ..Default::default()
    };
    let mut out = vec![];
    read_to_end(&kafka, "broker-probe-reader", topic, None, isolation, |m| {
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        out.push((text(m.key()), text(m.payload())));
        Ok(())
    })?;
    Ok(out)
}

/// Every value in `topic` a `read_committed` reader sees.
pub fn committed_values(brokers: &str, topic: &str) -> anyhow::Result<Vec<String>> {
    Ok(values(brokers, topic, Isolation::ReadCommitted)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// Two transactions in a row commit (crabka with transaction.version 2
/// fenced librdkafka's second one), and `read_committed` sees both.
pub fn commit(brokers: &str) -> anyhow::Result<Seen> {
    let p = txn_producer(brokers, "probe-commit")?;
    for v in ["c1", "c2"] {
        if let Err(e) = transaction(&p, "probe.txn", &[("k", v)], true) {
            return Ok(no(format!("transaction {v} failed: {e}")));
        }
    }
    let seen = committed_values(brokers, "probe.txn")?;
    Ok(if seen == ["c1", "c2"] {
        yes("two transactions committed, both read")
    } else {
        no(format!("read_committed saw {seen:?}"))
    })
}

/// An aborted record is invisible to `read_committed`.
pub fn abort(brokers: &str) -> anyhow::Result<Seen> {
    let p = txn_producer(brokers, "probe-commit")?;
    transaction(&p, "probe.txn", &[("k", "a1")], false)?;
    transaction(&p, "probe.txn", &[("k", "c3")], true)?;
    let seen = committed_values(brokers, "probe.txn")?;
    Ok(if seen == ["c1", "c2", "c3"] {
        yes("aborted a1 not read; c3 after it read")
    } else {
        no(format!("read_committed saw {seen:?}"))
    })
}

/// A producer with an old epoch is fenced once another initialises its id.
pub fn zombie(brokers: &str) -> anyhow::Result<Seen> {
    let old = txn_producer(brokers, "probe-zombie")?;
    let _new = txn_producer(brokers, "probe-zombie")?;
    Ok(
        match transaction(&old, "probe.txn", &[("z", "zombie")], true) {
            Err(e) => yes(format!("fenced: {e}")),
            Ok(()) => no("the old producer committed"),
        },
    )
}

/// Offsets sent in a committed transaction are the group's; those of an
/// aborted one are not.
pub fn offsets(brokers: &str) -> anyhow::Result<Seen> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", "probe-offsets")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&["probe.txn"])?;
    let deadline = Instant::now() + T;
    while consumer.assignment()?.count() == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the probe's consumer got no partition"
        );
        consumer.poll(Duration::from_millis(100));
    }
    let p = txn_producer(brokers, "probe-offsets")?;
    let meta = consumer
        .group_metadata()
        .ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
    for (offset, commit) in [(2, true), (3, false)] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("probe.txn", 0, Offset::Offset(offset))?;
        p.begin_transaction()?;
        p.send_offsets_to_transaction(&tpl, &meta, T)?;
        if commit {
            p.commit_transaction(T)?;
        } else {
            p.abort_transaction(T)?;
        }
    }
    let committed = consumer.committed(T)?;
    let at = committed.find_partition("probe.txn", 0).map(|e| e.offset());
    Ok(match at {
        Some(Offset::Offset(2)) => yes("committed 2; the aborted 3 not applied"),
        other => no(format!("the group's offset is {other:?}, want 2")),
    })
}

/// A transaction aborted because its producer was replaced (a restart with
/// the same `transactional.id`) must leave its offsets out of the group, even
/// after the new producer commits offsets of another partition: a consumer
/// resuming from the aborted offset would skip the records whose output was
/// aborted.
pub fn fenced_offsets(brokers: &str) -> anyhow::Result<Seen> {
    let group = "probe-fenced-offsets";
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    // Not a member: a simple consumer's metadata, which the broker does not fence.
    let meta = consumer
        .group_metadata()
        .ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
    let offset = |partition: i32, at: i64| -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("probe.offsets", partition, Offset::Offset(at))?;
        Ok(tpl)
    };
    let old = txn_producer(brokers, "probe-fenced-offsets")?;
    old.begin_transaction()?;
    old.send_offsets_to_transaction(&offset(0, 7)?, &meta, T)?;
    // The restart: its InitProducerId aborts the old producer's transaction.
    let new = txn_producer(brokers, "probe-fenced-offsets")?;
    new.begin_transaction()?;
    new.send_offsets_to_transaction(&offset(1, 5)?, &meta, T)?;
    new.commit_transaction(T)?;
    let mut ask = TopicPartitionList::new();
    ask.add_partition("probe.offsets", 0);
    ask.add_partition("probe.offsets", 1);
    let got = consumer.committed_offsets(ask, T)?;
    let at = |p: i32| got.find_partition("probe.offsets", p).map(|e| e.offset());
    Ok(match (at(0), at(1)) {
        (Some(Offset::Invalid), Some(Offset::Offset(5))) => {
            yes("the new producer's 5 committed; the aborted 7 not applied")
        }
        (Some(Offset::Offset(7)), _) => {
            no("the aborted 7 was applied to partition 0 at the new producer's commit")
        }
        (p0, p1) => no(format!(
            "partition 0 is {p0:?}, want no offset; partition 1 is {p1:?}, want 5"
        )),
    })
}

/// A probe of a started broker, given its address.
pub type Probe = fn(&str) -> anyhow::Result<Seen>;

/// What weir's exactly-once path relies on: the processor commits its input
/// offsets inside the transaction of its outputs, fences a predecessor with
/// the same `transactional.id`, and resumes from the group's committed
/// offsets; every stage is a static group member that must get its share
/// back after a restart, and a cooperative one whose revoked partitions
/// reach their new owner only in the round its rejoin opens. A broker that
/// fails one of these can lose or double count events whatever weir does.
/// Each writes only its own records, in `TOPICS`, or uses its own groups.
pub const CONTRACT: [(&str, Probe); 6] = [
    ("two transactions of one producer commit", commit),
    ("a producer with an old epoch is fenced", zombie),
    ("transactional offsets apply only when committed", offsets),
    (
        "a replaced producer's aborted offsets stay out of the group",
        fenced_offsets,
    ),
    (
        "a restarted static member leaves every partition one owner",
        crate::group_restart::probe,
    ),
    (
        "a member rejoining with changed metadata opens a round",
        crate::group_rejoin::probe,
    ),
];
