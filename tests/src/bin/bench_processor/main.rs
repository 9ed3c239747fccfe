//! Processor benchmark on the real local stack (a bench, not a timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-processor -- [EVENTS]`
//!
//! Prints, in one run against the same broker:
//! - the processor's events/s in each commit mode, over the same preloaded
//!   `events.raw` (20 % duplicate ids);
//! - a raw passthrough of the same records (consume, produce the same bytes,
//!   commit; no logic), plain and transactional, and the ratios;
//! - a peer doing the processor's job over the same records on the same
//!   broker, a Quix Streams application (`peer.rs`), with `exactly-once` and
//!   `at-least-once`: its events/s, the ratio weir / peer, and whether its
//!   window counts and unique users equal weir's and the expected ones;
//! - dedup memory per key at 10 M keys, and the time to restore a partition
//!   whose changelog holds 1 M dedup keys.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use weir_ingest::acked_producer::AckedProducer;
use weir_ingest::config::IngestConfig;
use weir_processor::dedup::{dedup_key, DedupStore};
use weir_processor::partition::{PartitionState, TimeRules};
use weir_processor::window::WindowAssigner;
use weir_tests::load::now_ms;
use weir_tests::Stack;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod peer;

/// One record per name, ten minutes of event time after the rest, so that
/// every window of the preload closes (the peer emits closed windows only).
const FLUSH_GAP_MS: i64 = 600_000;

/// Fills `events.raw` with `n` events over one hour of event time ending two
/// hours ago, one id in five a duplicate, then one flush record per name;
/// returns the records written, their Avro bytes and the windows a correct
/// processor counts.
async fn preload(stack: &Stack, n: usize) -> anyhow::Result<(usize, usize, peer::Windows)> {
    let codec = stack.codec();
    codec.register().await?;
    let mut cfg = IngestConfig::default();
    cfg.kafka.brokers = stack.brokers();
    weir_core::topics::ensure_topics(
        &cfg.kafka,
        &[weir_core::topics::TopicSpec {
            name: "events.raw",
            partitions: 4,
            compacted: false,
        }],
    )
    .await?;
    let producer = AckedProducer::new(&weir_ingest::producer_config(&cfg))?;
    const NAMES: [&str; 3] = ["shop.view", "shop.cart_add", "shop.checkout"];
    let start = now_ms() - 2 * 3_600_000;
    let limits = Default::default();
    let mut windows = peer::Windows::new();
    let mut bytes = 0;
    let flush = NAMES.iter().map(|name| {
        serde_json::json!({
            "event_id": format!("flush-{name}"), "name": name, "user_id": "flush",
            "timestamp": start + 3_600_000 + FLUSH_GAP_MS,
        })
    });
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let id = if i % 5 == 4 { i - 1 } else { i };
            let (name, user) = (NAMES[i % 3], format!("user-{}", i % 1000));
            let timestamp = start + (i as i64) * 3_600_000 / n as i64;
            // The first of an id counts (a duplicate follows its original
            // into the same partition); the flush records' windows never close.
            if id == i {
                let w = windows
                    .entry((name.to_string(), timestamp / 60_000 * 60_000))
                    .or_default();
                w.0 += 1;
                w.1.insert(user.clone());
            }
            serde_json::json!({
                "event_id": format!("bench-{id}"), "name": name,
                "user_id": user, "channel": "web", "timestamp": timestamp,
                "properties": {"sku": "SKU-12345", "price": 19.99},
            })
        })
        .chain(flush)
        .collect();
    for chunk in events.chunks(5_000) {
        let mut records = vec![];
        for v in chunk {
            let e = weir_ingest::validate::to_event(v, now_ms(), "bench", &limits)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let payload = codec.encode_event(&e).await?;
            bytes += payload.len();
            records.push((e.event_id.clone(), payload));
        }
        producer
            .send_all(
                "events.raw",
                records.iter().map(|(k, p)| (k.as_bytes(), p.as_slice())),
                None,
                Duration::from_secs(60),
            )
            .await?;
    }
    Ok((events.len(), bytes, windows))
}

/// Consumes `events.raw` and produces the same bytes to `bench.passthrough`,
/// committing every 5,000 records or 500 ms like the processor, inside
/// transactions when `transactional`. Returns records/s.
fn passthrough(stack: &Stack, n: usize, transactional: bool) -> anyhow::Result<f64> {
    let group = format!("bench-passthrough-{transactional}");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut producer_cfg = rdkafka::ClientConfig::new();
    producer_cfg
        .set("bootstrap.servers", stack.brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    if transactional {
        producer_cfg.set("transactional.id", &group);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = producer_cfg.create()?;
    let timeout = Duration::from_secs(30);
    if transactional {
        producer.init_transactions(timeout)?;
        producer.begin_transaction()?;
    }
    consumer.subscribe(&["events.raw"])?;
    let mut done = 0usize;
    let mut in_batch = 0usize;
    let mut offsets = std::collections::BTreeMap::new();
    let mut started = None;
    let mut last_commit = Instant::now();
    while done < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            started.get_or_insert_with(Instant::now);
            let mut record =
                BaseRecord::to("bench.passthrough").payload(m.payload().unwrap_or(&[]));
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            while let Err((e, r)) = producer.send(record) {
                anyhow::ensure!(
                    e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    "{e}"
                );
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            offsets.insert(m.partition(), m.offset() + 1);
            done += 1;
            in_batch += 1;
        }
        if in_batch >= 5_000
            || (in_batch > 0 && last_commit.elapsed() > Duration::from_millis(500))
            || done >= n
        {
            let mut tpl = TopicPartitionList::new();
            for (&p, &o) in &offsets {
                tpl.add_partition_offset("events.raw", p, Offset::Offset(o))?;
            }
            if transactional {
                let meta = consumer
                    .group_metadata()
                    .ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
                producer.send_offsets_to_transaction(&tpl, &meta, timeout)?;
                producer.commit_transaction(timeout)?;
                producer.begin_transaction()?;
            } else {
                producer.flush(timeout)?;
                consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
            }
            in_batch = 0;
            last_commit = Instant::now();
        }
    }
    let secs = started.map_or(1.0, |s| s.elapsed().as_secs_f64());
    Ok(n as f64 / secs)
}

/// Runs the processor in `mode` over the preloaded topic; events/s from its
/// first processed record to its last.
async fn processor(stack: &Stack, n: usize, mode: &str) -> anyhow::Result<f64> {
    let group = format!("bench-processor-{mode}");
    let p = stack.stage(
        "processor",
        mode,
        &[
            ("WEIR_COMMIT_MODE", mode),
            ("WEIR_GROUP_ID", &group),
            ("WEIR_INSTANCE_ID", &group),
            ("WEIR_COMMIT_INTERVAL_MS", "500"),
            ("RUST_LOG", "warn"),
        ],
    );
    p.wait_ready().await;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let seen = p.metric("weir_processor_events_total").await as usize;
        if seen > 0 && started.is_none() {
            started = Some(Instant::now());
        }
        if seen >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "processor {mode} stalled at {seen}/{n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(n as f64 / started.expect("started").elapsed().as_secs_f64())
}

/// Dedup memory per key with 10 M keys: the table's own count, and RSS.
fn dedup_memory() -> (f64, f64) {
    let n = 10_000_000u64;
    let rss_bytes = || weir_tests::stack::rss_mib(None).0 * 1024.0 * 1024.0;
    let before = rss_bytes();
    let mut d = DedupStore::new();
    for i in 0..n {
        d.insert(
            dedup_key("bench", &i.to_string()),
            1_795_000_000_000 + i as i64,
        );
    }
    let after = rss_bytes();
    (
        d.heap_bytes() as f64 / n as f64,
        (after - before) / n as f64,
    )
}

/// Writes the changelog of a partition that saw 1 M distinct ids (drained
/// every 5,000 records, as commits do) and times its restore.
async fn restore_1m(stack: &Stack) -> anyhow::Result<(usize, f64)> {
    let rules = TimeRules {
        assigner: WindowAssigner::tumbling(60_000),
        extra: vec![],
        out_of_orderness_ms: 5_000,
        allowed_lateness_ms: 60_000,
        dedup_horizon_ms: 24 * 3_600_000,
    };
    let mut cfg = weir_processor::config::ProcessorConfig::default();
    cfg.kafka.brokers = stack.brokers();
    weir_core::topics::ensure_topics(
        &cfg.kafka,
        &[weir_core::topics::TopicSpec {
            name: "bench.state",
            partitions: 1,
            compacted: true,
        }],
    )
    .await?;
    let mut state = PartitionState::new(0, rules.clone());
    let producer: rdkafka::producer::FutureProducer = cfg
        .kafka
        .client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
        ])
        .create()?;
    let base = now_ms() - 3_600_000;
    let n = 1_000_000i64;
    let mut records = vec![];
    for i in 0..n {
        let e = weir_core::Event {
            received_at: base + i * 3_000_000 / n + 40,
            user_id: Some(format!("user-{}", i % 1000)),
            channel: Some("web".into()),
            ..weir_core::Event::new(
                "bench",
                &format!("restore-{i}"),
                "shop.view",
                base + i * 3_000_000 / n,
            )
        };
        state.process(i, &e);
        if (i + 1) % 5_000 == 0 {
            for r in state.drain().changelog {
                records.push(weir_processor::changelog::kafka::state_record(
                    "bench.state",
                    0,
                    r,
                ));
            }
            state.changelog_committed();
        }
    }
    let sends = records
        .iter()
        .map(|out| producer.send(out.to_future_record(), Duration::from_secs(60)));
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| anyhow::anyhow!("writing the changelog: {e}"))?;
    }
    let started = Instant::now();
    let kafka = cfg.kafka.clone();
    let read = tokio::task::spawn_blocking(move || {
        weir_processor::changelog::kafka::read_partition(&kafka, "bench.state", 0, "0/")
    })
    .await??;
    let restored = PartitionState::restore(0, rules, read, Some(n))?;
    Ok((restored.dedup_len(), started.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let (table_per_key, rss_per_key) = dedup_memory();
    let stack = Stack::start().await;
    let (records, avro_bytes, expected) = preload(&stack, n).await?;
    // The peer's fetch size bounds how far apart in event time it reads the
    // partitions (peer.rs): one minute of one partition's records, well
    // inside its 15-minute grace.
    let peer_fetch_bytes = (avro_bytes / 4 / 60).max(16_384);
    let expected = peer::counts(&expected);
    let plain = {
        let s = &stack;
        tokio::task::block_in_place(|| passthrough(s, records, false))?
    };
    let ordered = processor(&stack, records, "ordered").await?;
    let transactional = {
        let s = &stack;
        tokio::task::block_in_place(|| passthrough(s, records, true))?
    };
    let eos = processor(&stack, records, "exactly_once").await?;
    let weir_windows = peer::weir_windows(&stack).await?;
    // weir emits every window, the flush records' open ones too: those are
    // not in `expected`, so only the expected windows are compared.
    let weir_wrong: Vec<String> = peer::differences(&expected, &weir_windows, false)
        .into_iter()
        .filter(|d| !d.ends_with("not expected"))
        .collect();
    let peers: Vec<(&str, anyhow::Result<peer::PeerRun>)> = ["exactly-once", "at-least-once"]
        .into_iter()
        .map(|g| {
            let s = &stack;
            (
                g,
                tokio::task::block_in_place(|| peer::run(s, records, g, peer_fetch_bytes)),
            )
        })
        .collect();
    let (keys, restore_secs) = restore_1m(&stack).await?;

    println!(
        "weir processor benchmark: {n} events in events.raw (20 % duplicate ids, 4 partitions), {} cores",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!("| run | events/s | ratio to its passthrough |");
    println!("|---|---|---|");
    println!("| passthrough, plain produce + offset commit | {plain:.0} | |");
    println!(
        "| processor, `ordered` | {ordered:.0} | {:.2} |",
        ordered / plain
    );
    println!("| passthrough, transactional | {transactional:.0} | |");
    println!(
        "| processor, `exactly_once` | {eos:.0} | {:.2} |",
        eos / transactional
    );
    println!(
        "window counts: {} windows expected; weir (`exactly_once` and `ordered`, from aggregates.1m): {}",
        expected.len(),
        verdict(&weir_wrong)
    );
    println!(
        "peer: Quix Streams (tests/peer: a dedup and a windows application), same records, broker and registry, \
         input fetches of {peer_fetch_bytes} B (one minute of a partition):"
    );
    println!("| peer guarantee | peer events/s | weir `exactly_once` / peer | windows emitted (of expected) | emitted vs expected | emitted vs weir |");
    println!("|---|---|---|---|---|---|");
    for (guarantee, run) in &peers {
        match run {
            Ok(r) => println!(
                "| {} | {:.0} | {:.2} | {} ({}) | {} | {} |",
                r.guarantee,
                r.events_per_sec,
                eos / r.events_per_sec,
                r.windows.len(),
                expected.len(),
                verdict(&peer::differences(&expected, &r.windows, true)),
                verdict(&peer::differences(&weir_windows, &r.windows, true)),
            ),
            Err(e) => println!("| {guarantee} | did not run: {e:#} | | | | |"),
        }
    }
    for r in peers.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        println!("peer summary ({}): {}", r.guarantee, r.summary);
    }
    println!(
        "dedup memory at 10 M keys: {table_per_key:.1} B/key (table), {rss_per_key:.1} B/key (RSS growth)"
    );
    println!("restore of a partition with {keys} dedup keys: {restore_secs:.2} s");
    Ok(())
}

/// "equal", or how many windows differ and the first few.
fn verdict(differences: &[String]) -> String {
    if differences.is_empty() {
        return "equal".into();
    }
    format!(
        "{} differ ({})",
        differences.len(),
        differences
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    )
}
