//! Archiver benchmark on the real local stack (a bench, not a timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-archiver -- [EVENTS]`
//!
//! Prints, in one run against the same broker, S3 server and ClickHouse:
//! - a raw consume of the preloaded `events.clean` (no decoding, no
//!   writing) and the archiver over the same records, to a directory and to
//!   S3, in Parquet, as events/s and as a ratio to the raw consume;
//! - bytes per event of the same events as Avro (the topic's records), as
//!   Parquet (zstd) and as `ndjson.gz`, in files of 100,000 events;
//! - `archiver backfill` of the whole range into ClickHouse against a raw
//!   insert of the same rows into `events`, rows/s and ratio.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use std::time::{Duration, Instant};
use weir_aggregator::clickhouse_sink::{ClickHouseSink, EventRow};
use weir_aggregator::config::ClickHouseConfig;
use weir_aggregator::store::CountStore;
use weir_archiver::config::StoreConfig;
use weir_archiver::format;
use weir_archiver::layout::Format;
use weir_archiver::reader;
use weir_archiver::record::ArchivedEvent;
use weir_archiver::store::ArchiveStore;
use weir_core::event::Event;
use weir_ingest::acked_producer::AckedProducer;
use weir_tests::archive::{archiver_stage, backfill, S3Server};
use weir_tests::load::now_ms;
use weir_tests::Stack;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HOUR: i64 = 3_600_000;
/// Events per file in the bytes-per-event comparison.
const FILE_EVENTS: usize = 100_000;

/// A UUID-shaped id with no pattern a column encoding could exploit, as an
/// SDK's random v4 ids have (sequential ids would flatter the formats).
fn random_id(i: usize) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (a, b) = (mix(i as u64 * 2 + 1), mix(i as u64 * 2 + 2));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// An event as a shop's SDK sends it: a few properties, a page context.
fn event(i: usize, start: i64, n: usize) -> Event {
    let name = ["shop.view", "shop.cart_add", "shop.checkout"][i % 3];
    let v = serde_json::json!({
        "event_id": random_id(i), "name": name,
        "user_id": format!("user-{}", i % 5_000), "channel": "web",
        "timestamp": start + (i as i64) * 2 * HOUR / n as i64,
        "properties": {"sku": format!("SKU-{}", i % 800), "price": 19.99, "qty": 1 + i % 3},
        "context": {"url": "https://shop.example/products/x", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "locale": "en-GB"},
    });
    weir_ingest::validate::to_event(&v, now_ms(), "bench", &Default::default())
        .expect("a valid event")
}

/// Fills `events.clean` (4 partitions) with `n` events over two hours;
/// returns the Avro payload bytes written.
async fn preload(stack: &Stack, n: usize) -> anyhow::Result<usize> {
    let codec = stack.codec();
    codec.register().await?;
    let kafka = weir_core::kafka::KafkaConfig {
        brokers: stack.brokers(),
        ..Default::default()
    };
    weir_core::topics::ensure_topics(
        &kafka,
        &[weir_core::topics::TopicSpec {
            name: "events.clean",
            partitions: 4,
            compacted: false,
        }],
    )
    .await?;
    // One producer and no resend: a retried chunk would land twice and
    // make the raw consume and the archiver read different counts.
    let cfg = weir_ingest::config::IngestConfig {
        kafka,
        ..Default::default()
    };
    let producer = AckedProducer::new(&weir_ingest::producer_config(&cfg))?;
    let start = now_ms() - 3 * HOUR;
    let mut avro_bytes = 0;
    for (c, chunk) in (0..n).collect::<Vec<_>>().chunks(5_000).enumerate() {
        let mut records = vec![];
        for &i in chunk {
            let e = event(i, start, n);
            let payload = codec.encode_event(&e).await?;
            avro_bytes += payload.len();
            records.push((e.event_id.clone(), payload));
        }
        producer
            .send_all(
                "events.clean",
                records.iter().map(|(k, p)| (k.as_bytes(), p.as_slice())),
                None,
                Duration::from_secs(60),
            )
            .await?;
        if c % 10 == 9 {
            eprintln!("preloaded {} of {n}", (c + 1) * 5_000);
        }
    }
    Ok(avro_bytes)
}

/// Reads `events.clean` to its end and does nothing with the records.
fn raw_consume(stack: &Stack, n: usize) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("group.id", "bench-raw-consume")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&["events.clean"])?;
    let (mut done, mut started) = (0usize, None);
    let deadline = Instant::now() + Duration::from_secs(900);
    while done < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "raw consume read {done} of {n} records in 15 minutes"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            started.get_or_insert_with(Instant::now);
            std::hint::black_box(m.payload());
            done += 1;
        }
    }
    let secs = started.map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
    Ok(n as f64 / secs)
}

/// Runs an archiver on `store` from the start of `events.clean` until it
/// archived `n` events; events/s from its first written range on.
async fn archive(stack: &Stack, name: &str, store: &StoreConfig, n: usize) -> f64 {
    let stage = archiver_stage(
        stack,
        name,
        store,
        &[
            ("WEIR_ROLL__MAX_EVENTS", "50000"),
            ("WEIR_COMPACTION__ENABLED", "false"),
            ("RUST_LOG", "warn"),
        ],
    );
    stage.wait_ready().await;
    let started = Instant::now();
    loop {
        let done = stage.metric("weir_archiver_events_archived_total").await;
        if done >= n as f64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1_800),
            "{name}: the archiver archived {done} of {n} in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let stack = Stack::start().await;
    let s3 = S3Server::start(&stack).await;
    let avro_bytes = preload(&stack, n).await?;
    eprintln!("preloaded {n} events; raw consume");

    let raw = {
        let s = &stack;
        tokio::task::block_in_place(|| raw_consume(s, n))?
    };
    let dir = stack.dir.path().join("bench-archive");
    std::fs::create_dir_all(&dir)?;
    let fs_store = StoreConfig {
        url: format!("file://{}", dir.display()),
        ..Default::default()
    };
    eprintln!("raw consume: {raw:.0}/s; archiver to a directory");
    let on_fs = archive(&stack, "fs", &fs_store, n).await;
    eprintln!("archiver to a directory: {on_fs:.0}/s; archiver to S3");
    let s3_store = s3.store("bench", Format::Parquet);
    let on_s3 = archive(&stack, "s3", &s3_store, n).await;

    // Bytes per event: the same events in files of FILE_EVENTS.
    let store = ArchiveStore::build(&fs_store)?;
    let mut events = reader::read_range(&store, 0, i64::MAX / 2).await?;
    anyhow::ensure!(
        events.len() == n,
        "the archive holds {} of {n}",
        events.len()
    );
    events.sort_by_key(|e| e.event.timestamp);
    let mut sizes = [(Format::Parquet, 0usize), (Format::NdjsonGz, 0usize)];
    for chunk in events.chunks(FILE_EVENTS) {
        let refs: Vec<&ArchivedEvent> = chunk.iter().collect();
        for (f, total) in &mut sizes {
            *total += format::encode(*f, &refs)?.len();
        }
    }
    let json_bytes: usize = events
        .iter()
        .map(|e| serde_json::to_vec(&e.event).map_or(0, |v| v.len()))
        .sum();

    // Backfill against a raw insert of the same rows.
    let rows: Vec<EventRow> = events.iter().map(|e| e.to_row()).collect();
    let raw_db = ClickHouseConfig {
        url: format!("http://127.0.0.1:{}", stack.clickhouse_port),
        database: "bench_raw".into(),
        ..Default::default()
    };
    let sink = ClickHouseSink::build(&raw_db, &[]).await?;
    let started = Instant::now();
    for chunk in rows.chunks(50_000) {
        let refs: Vec<&EventRow> = chunk.iter().collect();
        sink.insert_events(&refs).await?;
    }
    let raw_insert = n as f64 / started.elapsed().as_secs_f64();
    // The backfill's ClickHouse (database `weir`) must exist first.
    let weir_db = ClickHouseConfig {
        database: "weir".into(),
        ..raw_db.clone()
    };
    ClickHouseSink::build(&weir_db, &[]).await?;
    let first = events.first().map_or(0, |e| e.event.timestamp);
    let last = events.last().map_or(0, |e| e.event.timestamp);
    let (from, to) = (
        first.div_euclid(60_000) * 60_000,
        (last.div_euclid(60_000) + 1) * 60_000,
    );
    let started = Instant::now();
    let (ok, out) = backfill(&stack, &fs_store, from, to, &["--allow-recent"]);
    anyhow::ensure!(ok, "backfill failed: {out}");
    eprintln!("backfill: {out}");
    let backfilled = n as f64 / started.elapsed().as_secs_f64();

    println!(
        "weir archiver benchmark: {n} events in events.clean (4 partitions, 2 hours of event time), {} cores",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!("| run | events/s | ratio to raw consume |");
    println!("|---|---|---|");
    println!("| raw consume (read_committed, no decoding) | {raw:.0} | |");
    println!(
        "| archiver, Parquet to a directory | {on_fs:.0} | {:.2} |",
        on_fs / raw
    );
    println!(
        "| archiver, Parquet to S3 (s3s-fs) | {on_s3:.0} | {:.2} |",
        on_s3 / raw
    );
    println!();
    let per = |b: usize| b as f64 / n as f64;
    println!("| encoding | bytes/event | ratio to Avro |");
    println!("|---|---|---|");
    println!(
        "| JSON, uncompressed | {:.1} | {:.2} |",
        per(json_bytes),
        json_bytes as f64 / avro_bytes as f64
    );
    println!(
        "| Avro (Confluent wire format, the topic's records) | {:.1} | 1.00 |",
        per(avro_bytes)
    );
    for (f, total) in sizes {
        println!(
            "| {} in files of {FILE_EVENTS} | {:.1} | {:.2} |",
            f.extension(),
            per(total),
            total as f64 / avro_bytes as f64
        );
    }
    println!();
    println!("| load | rows/s | ratio to raw insert |");
    println!("|---|---|---|");
    println!("| raw insert into `events` (50,000-row inserts) | {raw_insert:.0} | |");
    println!(
        "| `archiver backfill` (read the archive, insert, restore lane, late lane, hourly rollup) | {backfilled:.0} | {:.2} |",
        backfilled / raw_insert
    );
    Ok(())
}
