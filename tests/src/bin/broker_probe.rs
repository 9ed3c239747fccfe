//! Probes what a Kafka broker does with transactions, the behaviours weir's
//! exactly-once path relies on, and how fast one consumer reads from it.
//!
//! `cargo build --release --bins && target/release/broker-probe [nisshi] [crabka]`
//!
//! Each broker named is started fresh through `deploy/local/part.sh`
//! (`kafka` is nisshi; `crabka` needs `WEIR_BROKERS=nisshi,crabka
//! deploy/local/install.sh`), probed, and stopped; then one table compares
//! them. A behaviour is "yes" when the broker does what Apache Kafka
//! specifies, "no" with what was seen instead.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use std::io::BufRead;
use std::time::{Duration, Instant};
use weir_core::topic_reader::Isolation;
use weir_tests::broker_contract::{
    abort, config, create_topic, no, send, transaction, txn_producer, values, yes, Probe, Seen,
    TxnProducer, CONTRACT, T, TOPICS, TXN_TIMEOUT_MS,
};
use weir_tests::stack::{listening_within, Broker, BrokerKind};

/// One probe, run on a started broker.
type ProbeFn = Box<dyn FnOnce(&mut Broker) -> anyhow::Result<Seen>>;

const FETCH_RECORDS: usize = 1_000_000;
/// Inside the child process: begins a transaction, writes one record `h1`
/// to `topic`, says so, and waits to be killed.
fn hang(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let p = txn_producer(brokers, &format!("{topic}-hang"))?;
    p.begin_transaction()?;
    send(&p, topic, "h", "h1")?;
    p.flush(T)?;
    println!("open");
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}

/// Starts a child producer that leaves a transaction open on `topic`, and
/// SIGKILLs it once the transaction holds a record.
fn leave_open_transaction(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["hang", brokers, topic])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "open", "the hanging producer said {line:?}");
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// Writes `after` to `topic` without a transaction, then reads the topic as
/// `read_committed` until `after` shows or 60 s pass: what it read, in order.
fn read_past_open_transaction(brokers: &str, topic: &str) -> anyhow::Result<Vec<String>> {
    let p: TxnProducer = config(brokers).set("enable.idempotence", "true").create()?;
    p.send(BaseRecord::to(topic).key("a").payload("after"))
        .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
    p.flush(T)?;
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = vec![];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) && !seen.iter().any(|v| v == "after") {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    Ok(seen)
}

/// SIGKILLs the broker, starts it again on its data, and waits for its port.
fn kill9_and_restart(broker: &mut Broker) -> anyhow::Result<()> {
    broker.proc.restart();
    wait_back(broker)
}

fn wait_back(broker: &Broker) -> anyhow::Result<()> {
    anyhow::ensure!(
        listening_within(&broker.address, Duration::from_secs(60)),
        "the broker did not come back after a restart: {}",
        broker.proc.log_tail(1)
    );
    Ok(())
}

/// A transaction left open when the broker is SIGKILLed stays invisible to
/// `read_committed` after the restart (Kafka rebuilds its producer state
/// from the log), and is aborted by its timeout.
fn open_across_restart(broker: &mut Broker) -> anyhow::Result<Seen> {
    leave_open_transaction(&broker.address, "probe.restart")?;
    kill9_and_restart(broker)?;
    let restarted = Instant::now();
    let seen = read_past_open_transaction(&broker.address, "probe.restart")?;
    Ok(
        match (
            seen.iter().any(|v| v == "after"),
            seen.iter().any(|v| v == "h1"),
        ) {
            (true, false) => yes(format!(
                "stayed invisible, aborted; the next record readable {:.1} s after the restart",
                restarted.elapsed().as_secs_f64()
            )),
            (_, true) => no("the open transaction's record was read after the restart"),
            (false, false) => no("still open 60 s after the restart: every later record blocked"),
        },
    )
}

/// Writes `values` with a new idempotent producer and waits for the acks.
fn idempotent_writes(brokers: &str, topic: &str, values: &[&str]) -> anyhow::Result<()> {
    let p: TxnProducer = config(brokers).set("enable.idempotence", "true").create()?;
    for v in values {
        send(&p, topic, v, v)?;
    }
    p.flush(T)?;
    Ok(())
}

/// An idempotent producer started after a broker restart has every
/// acknowledged record written, although one before the restart wrote to
/// the same partition: the broker must not hand out its producer id again.
/// Each producer here is its life's first, so a counter that restarts
/// with the broker gives both the same id.
fn producer_after_restart(broker: &mut Broker) -> anyhow::Result<Seen> {
    let topic = "probe.pid";
    kill9_and_restart(broker)?;
    idempotent_writes(&broker.address, topic, &["a0", "a1", "a2", "a3", "a4"])?;
    kill9_and_restart(broker)?;
    idempotent_writes(&broker.address, topic, &["b0", "b1", "b2"])?;
    let read: Vec<String> = values(&broker.address, topic, Isolation::ReadUncommitted)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let missing: Vec<&str> = ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
        .into_iter()
        .filter(|v| !read.iter().any(|r| r == v))
        .collect();
    Ok(if missing.is_empty() {
        yes("all 8 acknowledged records read")
    } else {
        no(format!(
            "acknowledged but never written: {missing:?} (read {read:?})"
        ))
    })
}

/// A producer killed inside a transaction: the broker aborts it after
/// `transaction.timeout.ms`, so records after it become readable and its own
/// never do.
fn timeout(brokers: &str) -> anyhow::Result<Seen> {
    leave_open_transaction(brokers, "probe.hang")?;
    let killed = Instant::now();
    let seen = read_past_open_transaction(brokers, "probe.hang")?;
    Ok(
        match (
            seen.iter().any(|v| v == "after"),
            seen.iter().any(|v| v == "h1"),
        ) {
            (true, false) => yes(format!(
                "aborted; the next record readable {:.1} s after the kill (timeout {} s)",
                killed.elapsed().as_secs_f64(),
                TXN_TIMEOUT_MS / 1000
            )),
            (true, true) => no("the killed producer's record was read"),
            (false, _) => no(format!(
                "still open after {} s: every later record blocked for read_committed",
                killed.elapsed().as_secs()
            )),
        },
    )
}

/// A compacted topic keeps a key's committed value when a later version of
/// it was aborted, through the broker's cleaning (crabka cleans every 30 s;
/// nisshi at start-up, hence the restart).
fn compaction(broker: &mut Broker) -> anyhow::Result<Seen> {
    let brokers = broker.address.clone();
    let p = txn_producer(&brokers, "probe-compact")?;
    transaction(&p, "probe.compact", &[("key", "v1")], true)?;
    transaction(&p, "probe.compact", &[("key", "v2-aborted")], false)?;
    let filler: Vec<(String, String)> = (0..200)
        .map(|i| (format!("f{i}"), "x".repeat(100)))
        .collect();
    let refs: Vec<(&str, &str)> = filler
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    transaction(&p, "probe.compact", &refs, true)?;
    drop(p);
    std::thread::sleep(Duration::from_secs(40));
    // A clean stop: what the restart reads is what the broker wrote.
    broker.proc.terminate();
    broker.proc.restart();
    wait_back(broker)?;
    let all = values(&brokers, "probe.compact", Isolation::ReadUncommitted)?;
    let key: Vec<&str> = all
        .iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.as_str())
        .collect();
    let committed: Vec<String> = values(&brokers, "probe.compact", Isolation::ReadCommitted)?
        .into_iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v)
        .collect();
    let compacted = all.len() < 202;
    Ok(match committed.last().map(String::as_str) {
        Some("v1") => yes(format!(
            "key reads v1 (versions left {key:?}; {})",
            if compacted {
                "compacted"
            } else {
                "nothing compacted yet"
            }
        )),
        other => no(format!(
            "key reads {other:?} (versions left {key:?}; {})",
            if compacted {
                "compacted"
            } else {
                "nothing compacted yet"
            }
        )),
    })
}

/// One consumer reading `FETCH_RECORDS` records of 100 bytes: records/s.
fn fetch_rate(brokers: &str) -> anyhow::Result<f64> {
    let p: TxnProducer = config(brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let value = "v".repeat(100);
    for i in 0..FETCH_RECORDS {
        let key = i.to_string();
        let mut record = BaseRecord::to("probe.fetch").key(&key).payload(&value);
        while let Err((e, r)) = p.send(record) {
            anyhow::ensure!(
                e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                "{e}"
            );
            record = r;
            p.poll(Duration::from_millis(5));
        }
    }
    p.flush(Duration::from_secs(300))?;
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", "probe-fetch")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&["probe.fetch"])?;
    let mut n = 0;
    let mut started = None;
    let mut last = Instant::now();
    while n < FETCH_RECORDS {
        anyhow::ensure!(last.elapsed() < T, "the fetch stalled at {n} records");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            m?;
            started.get_or_insert_with(Instant::now);
            n += 1;
            last = Instant::now();
        }
    }
    Ok(n as f64 / started.map_or(1.0, |s| s.elapsed().as_secs_f64()))
}

/// Every probe on one broker, in order; an error in a probe is its result.
fn probe(rt: &tokio::runtime::Runtime, kind: &str) -> anyhow::Result<Vec<(&'static str, Seen)>> {
    let mut broker = rt.block_on(Broker::start_kind(BrokerKind::named(kind)?));
    let b = broker.address.clone();
    let contract = TOPICS.map(|(topic, partitions)| (topic, partitions, false));
    for (topic, partitions, compact) in contract.into_iter().chain([
        ("probe.hang", 1, false),
        ("probe.compact", 1, true),
        ("probe.fetch", 4, false),
        ("probe.restart", 1, false),
        ("probe.pid", 1, false),
    ]) {
        rt.block_on(create_topic(&b, topic, partitions, compact))?;
    }
    // In order: the commit probe's records are what the abort probe reads,
    // and the last three restart the broker. The contract's probes carry
    // their own names, the same as in the test that asserts them.
    let contract = |(what, probe): (&'static str, Probe)| -> (&'static str, ProbeFn) {
        (what, Box::new(move |b| probe(&b.address)))
    };
    let [first, later @ ..] = CONTRACT;
    let mut probes: Vec<(&'static str, ProbeFn)> = vec![
        contract(first),
        (
            "aborted record invisible to read_committed",
            Box::new(|b| abort(&b.address)),
        ),
    ];
    probes.extend(later.into_iter().map(contract));
    probes.extend::<[(&'static str, ProbeFn); 5]>([
        (
            "killed producer's transaction times out",
            Box::new(|b| timeout(&b.address)),
        ),
        (
            "one consumer's fetch rate, 1 M records of 100 B",
            Box::new(|b| fetch_rate(&b.address).map(|r| yes(format!("{r:.0} records/s")))),
        ),
        (
            "open transaction invisible across a broker SIGKILL",
            Box::new(open_across_restart),
        ),
        (
            "idempotent producer after a broker restart has its records written",
            Box::new(producer_after_restart),
        ),
        (
            "compaction keeps the last committed version",
            Box::new(compaction),
        ),
    ]);
    let mut out = vec![];
    for (what, run) in probes {
        let seen = run(&mut broker).unwrap_or_else(|e| no(format!("error: {e:#}")));
        // As it comes, so that a probe that hangs leaves the others' results.
        eprintln!("{kind}: {what}: {}", seen.detail);
        out.push((what, seen));
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hang") {
        let arg = |i: usize| args.get(i).map_or("", String::as_str);
        return hang(arg(1), arg(2));
    }
    let kinds = if args.is_empty() {
        vec!["nisshi".to_string()]
    } else {
        args
    };
    let mut results = vec![];
    for kind in &kinds {
        eprintln!("probing {kind}");
        let rt = tokio::runtime::Runtime::new()?;
        let r = probe(&rt, kind)?;
        results.push((kind.clone(), r));
    }
    print!("| behaviour |");
    for (kind, _) in &results {
        print!(" {kind} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(results.len()));
    for (i, (what, _)) in results[0].1.iter().enumerate() {
        print!("| {what} |");
        for (_, r) in &results {
            let s = &r[i].1;
            print!(
                " {}: {} |",
                if s.kafka_like { "yes" } else { "**no**" },
                s.detail
            );
        }
        println!();
    }
    Ok(())
}
